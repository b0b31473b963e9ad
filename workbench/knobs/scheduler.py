"""Scheduler knob: swap the sampler through diffusers' `from_config`, keeping the model's noise schedule."""
from __future__ import annotations

import diffusers

from workbench.errors import ConfigError

# alias -> (diffusers class, from_config overrides; explicit, so a swap never inherits a previous sampler's options). Aliases follow the names of the classic A1111/k-diffusion tables.
ALIASES: dict[str, tuple[str, dict]] = {
    "ddim": ("DDIMScheduler", {}),
    "pndm": ("PNDMScheduler", {"skip_prk_steps": True}),
    "dpm++2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "use_karras_sigmas": False}),
    "dpm++2m-karras": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "use_karras_sigmas": True}),
    "dpm++sde": ("DPMSolverSDEScheduler", {"use_karras_sigmas": False}),
    "dpm++2s": ("DPMSolverSinglestepScheduler", {"solver_order": 2}),
    "dpm++2m-sde": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": False}),
    "dpm++2m-sde-karras": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": True}),
    "unipc": ("UniPCMultistepScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {"use_karras_sigmas": False}),
    "euler-a": ("EulerAncestralDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "lms": ("LMSDiscreteScheduler", {}),
    "lcm": ("LCMScheduler", {}),
}

# the explorer's widget (workbench.fields): any diffusers scheduler class name is valid too; swapped per call
FIELDS = {"scheduler": {"choices": tuple(ALIASES), "open": True, "call_time": True}}


def resolve(name: str) -> tuple[type, dict]:
    """Alias or diffusers class name -> (scheduler class, from_config kwargs)."""
    key = name.strip()
    if key.lower() in ALIASES:
        cls_name, kwargs = ALIASES[key.lower()]
    else:
        cls_name, kwargs = key, {}
    cls = getattr(diffusers, cls_name, None)
    if cls is None or not cls_name.endswith("Scheduler") or not hasattr(cls, "from_config"):
        raise ConfigError(f"unknown scheduler {name!r}; use a diffusers scheduler class name or one of: "
                          + ", ".join(ALIASES))
    return cls, dict(kwargs)


def apply(pipe, cfg):
    """Replace pipe.scheduler by the configured sampler, from the model's own scheduler config.

    The model's config (kept by `build_pipeline`) rather than the current scheduler's, so that swapping again
    on a kept pipeline (the explorer) gives exactly the sampler a freshly built one would."""
    cls, kwargs = resolve(cfg.scheduler)
    if cls.__name__ in ("DPMSolverSDEScheduler",):
        kwargs.setdefault("noise_sampler_seed", cfg.seed_list[0])  # its Brownian tree is seeded, not the generator
    source = getattr(pipe, "model_scheduler_config", None) or pipe.scheduler.config
    pipe.scheduler = cls.from_config(source, **kwargs)
    return pipe
