"""Scheduler knob: swap the sampler through diffusers' `from_config`, keeping the model's noise schedule.

Call time: every pipeline call gets a fresh sampler built from the model's own scheduler config (kept by
`workbench.models.load_pipeline`), so a kept pipeline (the explorer) samples exactly as a freshly built one. The
first call of a sampler builds it (`from_config`, ~1 ms of host time in which the GPU waits: a GPU image's latency);
later calls get a deep copy of that pristine one (~0.2 ms), the same object state as a fresh build. DPM-Solver++ and
UniPC come as `workbench.models.sync_free_sampler`'s subclasses: the same steps, without waiting for the GPU (UniPC's
every step, both samplers' first)."""
from __future__ import annotations

import copy

from workbench.errors import ConfigError
from workbench.knobs.spec import Field
from workbench.models import sync_free_sampler

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

FIELDS = (Field("scheduler", "dpm++2m", "diffusers class name or alias (workbench.knobs.scheduler.ALIASES)",
                choices=tuple(ALIASES), open=True, call_time=True),)


def resolve(name: str) -> tuple[type, dict]:
    """Alias or diffusers class name -> (scheduler class, from_config kwargs)."""
    import diffusers  # heavy: torch

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


def check(cfg, where: str = "config") -> None:
    try:
        resolve(cfg.scheduler)
    except ConfigError as e:
        raise ConfigError(f"{where}.scheduler: {e}") from None


def call(pipe, cfg) -> dict:
    """Replace pipe.scheduler by the configured sampler, built from the model's own scheduler config."""
    cls, kwargs = resolve(cfg.scheduler)
    if cls.__name__ in ("DPMSolverSDEScheduler",):
        kwargs.setdefault("noise_sampler_seed", cfg.seed_list[0])  # its Brownian tree is seeded, not the generator
    if getattr(pipe, "model_scheduler_config", None) is None:  # a pipeline built by hand, not by load_pipeline
        pipe.model_scheduler_config = pipe.scheduler.config   # its first scheduler is the model's own
    pristine = pipe.__dict__.setdefault("_workbench_samplers", {})
    key = (cls, repr(sorted(kwargs.items())), id(pipe.model_scheduler_config))
    if key not in pristine:  # DPM-Solver++ / UniPC: subclasses that never wait for the GPU (workbench.models)
        pristine[key] = sync_free_sampler(cls).from_config(pipe.model_scheduler_config, **kwargs)
    pipe.scheduler = copy.deepcopy(pristine[key])
    return {}
