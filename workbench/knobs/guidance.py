"""Guidance knob: the classifier-free guidance scale, and a cutoff after which guidance stops.

After the cutoff the UNet runs on the conditional half only (batch halves), through diffusers'
`callback_on_step_end`, as in the diffusers guide on dynamic classifier-free guidance. Every batched conditioning
tensor the pipeline hands its callback is halved: SD's prompt embeddings; SDXL's also its pooled text embeddings
and size/crop time ids (`add_text_embeds`, `add_time_ids`, which its UNet takes as added conditions).
"""
from __future__ import annotations

import math

from workbench.knobs.spec import Field

FIELDS = (Field("cfg_scale", 7.5, "classifier-free guidance scale, 1 or less disables guidance", low=0.0,
                call_time=True),
          Field("cfg_cutoff", 1.0, "fraction of steps that use CFG, after it the UNet batch halves", low=0.0,
                high=1.0, call_time=True))


CONDITIONING = ("prompt_embeds", "add_text_embeds", "add_time_ids")  # SD has the first, SDXL all three


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

    conditioning = [name for name in CONDITIONING if name in pipe._callback_tensor_inputs]

    def callback(pipe, step: int, timestep, callback_kwargs: dict) -> dict:
        if step + 1 == stop:  # called at the end of step `step`; the next one runs unguided
            pipe._guidance_scale = 0.0
            for name in conditioning:  # batched [unconditional, conditional]: keep the conditional half
                callback_kwargs[name] = callback_kwargs[name].chunk(2)[-1]
        return callback_kwargs

    return {"guidance_scale": cfg.cfg_scale, "callback_on_step_end": callback,
            "callback_on_step_end_tensor_inputs": conditioning}
