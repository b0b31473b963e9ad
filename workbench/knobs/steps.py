"""Steps knob: how many denoising steps the scheduler takes (`num_inference_steps` of the pipeline call)."""
from __future__ import annotations

from workbench.knobs.spec import Field

FIELDS = (Field("steps", 25, "denoising steps", low=1, call_time=True),)


def call(pipe, cfg) -> dict:
    return {"num_inference_steps": cfg.steps}
