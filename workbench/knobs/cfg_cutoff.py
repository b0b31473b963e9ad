"""CFG cutoff knob: stop classifier-free guidance after a fraction of the steps.

After the cutoff the UNet runs on the conditional half only (batch halves), through diffusers'
`callback_on_step_end`, as in the diffusers guide on dynamic classifier-free guidance.
"""
from __future__ import annotations

import math

FIELDS = {"cfg_cutoff": {"low": 0.0, "high": 1.0, "call_time": True}}  # workbench.fields; a per-call callback


def cutoff_step(cfg) -> int | None:
    """Index of the first step without guidance, or None when guidance runs throughout (or never)."""
    if cfg.cfg_scale <= 1.0 or cfg.cfg_cutoff >= 1.0:
        return None
    return math.ceil(cfg.cfg_cutoff * cfg.steps)


def call_kwargs(cfg) -> dict:
    """Extra pipeline-call arguments: the step callback that turns guidance off at the cutoff."""
    stop = cutoff_step(cfg)
    if stop is None:
        return {}

    def callback(pipe, step: int, timestep, callback_kwargs: dict) -> dict:
        if step + 1 == stop:  # called at the end of step `step`; the next one runs unguided
            pipe._guidance_scale = 0.0
            callback_kwargs["prompt_embeds"] = callback_kwargs["prompt_embeds"].chunk(2)[-1]
        return callback_kwargs

    if stop == 0:
        return {"guidance_scale": 1.0}
    return {"callback_on_step_end": callback, "callback_on_step_end_tensor_inputs": ["prompt_embeds"]}
