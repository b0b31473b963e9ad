"""Guidance knob: the classifier-free guidance scale, and a cutoff after which guidance stops.

After the cutoff the UNet runs on the conditional half only (batch halves), through diffusers'
`callback_on_step_end`, as in the diffusers guide on dynamic classifier-free guidance.
"""
from __future__ import annotations

import math

from workbench.knobs.spec import Field

FIELDS = (Field("cfg_scale", 7.5, "classifier-free guidance scale, 1 or less disables guidance", low=0.0,
                call_time=True),
          Field("cfg_cutoff", 1.0, "fraction of steps that use CFG, after it the UNet batch halves", low=0.0,
                high=1.0, call_time=True))


def cutoff_step(cfg) -> int | None:
    """Index of the first step without guidance, or None when guidance runs throughout (or never)."""
    if cfg.cfg_scale <= 1.0 or cfg.cfg_cutoff >= 1.0:
        return None
    return math.ceil(cfg.cfg_cutoff * cfg.steps)


def call(pipe, cfg) -> dict:
    """The guidance scale, and the step callback that turns guidance off at the cutoff."""
    stop = cutoff_step(cfg)
    if stop is None:
        return {"guidance_scale": cfg.cfg_scale}
    if stop == 0:
        return {"guidance_scale": 1.0}

    def callback(pipe, step: int, timestep, callback_kwargs: dict) -> dict:
        if step + 1 == stop:  # called at the end of step `step`; the next one runs unguided
            pipe._guidance_scale = 0.0
            callback_kwargs["prompt_embeds"] = callback_kwargs["prompt_embeds"].chunk(2)[-1]
        return callback_kwargs

    return {"guidance_scale": cfg.cfg_scale, "callback_on_step_end": callback,
            "callback_on_step_end_tensor_inputs": ["prompt_embeds"]}
