"""Guidance knob: the classifier-free guidance scale, its schedule over the steps, and a cutoff after which
guidance stops.

Schedules (`cfg_schedule`) go from `cfg_start` at the first step to `cfg_scale` at the last: `constant` (cfg_scale
throughout), `linear`, `cosine` (half a cosine period) and `staircase` (three equal stages, e.g. 5 -> 7 -> 9), as
dynamic-CFG papers sweep them; the value of each next step is set from `callback_on_step_end`.

After the cutoff the UNet runs on the conditional half only (batch halves), through diffusers'
`callback_on_step_end`, as in the diffusers guide on dynamic classifier-free guidance. Every batched conditioning
tensor the pipeline hands its callback is halved: SD's prompt embeddings; SDXL's also its pooled text embeddings
and size/crop time ids (`add_text_embeds`, `add_time_ids`, which its UNet takes as added conditions).
"""
from __future__ import annotations

import math

from workbench.errors import ConfigError
from workbench.knobs.spec import Field

FIELDS = (Field("cfg_scale", 7.5, "classifier-free guidance scale, 1 or less disables guidance", low=0.0,
                call_time=True),
          Field("cfg_cutoff", 1.0, "fraction of steps that use CFG, after it the UNet batch halves", low=0.0,
                high=1.0, call_time=True),
          Field("cfg_schedule", "constant", "constant | linear | cosine | staircase: CFG from cfg_start to cfg_scale",
                choices=("constant", "linear", "cosine", "staircase"), call_time=True),
          Field("cfg_start", 3.0, "CFG scale at the first step of a non-constant schedule (more than 1)", low=0.0,
                call_time=True))


CONDITIONING = ("prompt_embeds", "add_text_embeds", "add_time_ids")  # SD has the first, SDXL all three


def check(cfg, where: str = "config") -> None:
    if cfg.cfg_schedule != "constant" and cfg.cfg_scale > 1.0 and cfg.cfg_start <= 1.0:
        raise ConfigError(f"{where}.cfg_start: a {cfg.cfg_schedule} CFG schedule starts at cfg_start, which must be "
                          "more than 1 (at 1 or less the pipeline stops batching the unconditional half); set "
                          "cfg_start > 1, or cfg_cutoff to stop guidance")


def scale_at(cfg, step: int) -> float:
    """The guidance scale of step `step` (0-based) under the configured schedule."""
    if cfg.cfg_schedule == "constant" or cfg.cfg_scale <= 1.0:
        return cfg.cfg_scale
    p = step / max(1, cfg.steps - 1)
    shape = {"linear": p, "cosine": (1 - math.cos(math.pi * p)) / 2,
             "staircase": min(2, 3 * step // max(1, cfg.steps)) / 2}[cfg.cfg_schedule]
    return cfg.cfg_start + (cfg.cfg_scale - cfg.cfg_start) * shape


def cutoff_step(cfg) -> int | None:
    """Index of the first step without guidance, or None when guidance runs throughout (or never)."""
    if cfg.cfg_scale <= 1.0 or cfg.cfg_cutoff >= 1.0:
        return None
    return math.ceil(cfg.cfg_cutoff * cfg.steps)


def call(pipe, cfg) -> dict:
    """The first step's guidance scale, and the step callback that schedules it and turns it off at the cutoff."""
    stop = cutoff_step(cfg)
    if stop == 0:
        return {"guidance_scale": 1.0}
    scheduled = cfg.cfg_schedule != "constant" and cfg.cfg_scale > 1.0
    if stop is None and not scheduled:
        return {"guidance_scale": cfg.cfg_scale}

    conditioning = [name for name in CONDITIONING if name in pipe._callback_tensor_inputs] if stop else []

    def callback(pipe, step: int, timestep, callback_kwargs: dict) -> dict:
        if step + 1 == stop:  # called at the end of step `step`; the next one runs unguided
            pipe._guidance_scale = 0.0
            for name in conditioning:  # batched [unconditional, conditional]: keep the conditional half
                callback_kwargs[name] = callback_kwargs[name].chunk(2)[-1]
        elif scheduled and (stop is None or step + 1 < stop):
            pipe._guidance_scale = scale_at(cfg, step + 1)
        return callback_kwargs

    return {"guidance_scale": scale_at(cfg, 0), "callback_on_step_end": callback,
            "callback_on_step_end_tensor_inputs": conditioning}
