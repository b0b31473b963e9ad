"""Feature-caching knob (DeepCache, Ma et al., CVPR 2024): reuse the UNet's deep features for `cache_interval - 1`
of every `cache_interval` UNet calls, rerunning only the shallow skip branch `cache_depth` around them.

Thin: validates its fields and wraps the UNet in `workbench.skip.deepcache.DeepCacheUNet` after every other knob
changed the UNet's modules, before `compile`, which compiles its full and shallow paths separately (with CUDA
graphs too). Composes with the CFG cutoff (the kept feature's conditional half is reused once the batch halves),
every scheduler (counted in UNet calls), pruning, torchao, fused projections and attention knobs."""
from __future__ import annotations

from workbench.errors import ConfigError
from workbench.knobs.spec import Field, Row

FIELDS = (
    Field("cache_interval", 1, "feature caching: 1 (off), or N: one full UNet call in N, the others shallow", low=1,
          high=20),
    Field("cache_depth", 0, "feature caching: the skip branch rerun on shallow calls, 0 (outermost, most reuse) .. "
          "levels-1", low=0, high=5),
    Field("cache_schedule", "uniform", "feature caching: uniform (every N-th call full) | quadratic (full calls "
          "denser early)", choices=("uniform", "quadratic")),
)


def check(cfg, where: str = "config") -> None:
    if cfg.cache_interval > 1 and cfg.backend != "torch":
        raise ConfigError(f"{where}.cache_interval: feature caching splits the torch UNet; backend {cfg.backend} runs "
                          "ONNX graphs. Set cache_interval: 1 or backend: torch")
    if cfg.cache_interval > 1 and cfg.compile_scope == "blocks" and cfg.compile == "reduce-overhead":
        raise ConfigError(f"{where}.compile_scope: CUDA graphs of regional compilation are refused already; with "
                          "feature caching use compile_scope: unet")


def apply(pipe, cfg, device) -> Row | None:
    if cfg.cache_interval <= 1:
        return None
    from workbench.skip.deepcache import DeepCacheUNet, FullSteps  # heavy: torch

    levels = len(pipe.unet.down_blocks)
    if cfg.cache_depth >= levels:
        raise ConfigError(f"cache_depth: this UNet has {levels} levels; use 0..{levels - 1}")
    try:
        pipe.unet = DeepCacheUNet(pipe.unet, cfg.cache_depth, FullSteps(cfg.cache_interval, cfg.cache_schedule,
                                                                        cfg.steps))
    except ValueError as err:
        raise ConfigError(f"cache_interval: {err}") from None
    return Row(protocols={"feature_cache": {
        "method": "DeepCache (Ma et al., CVPR 2024), block-level skip branch", "interval": cfg.cache_interval,
        "depth": cfg.cache_depth, "schedule": cfg.cache_schedule,
        "counted": "UNet calls (a scheduler that calls the UNet twice a step counts both)"}})


def call(pipe, cfg) -> dict:
    """Each pipeline call starts a new loop: its first UNet call runs in full."""
    if cfg.cache_interval > 1:
        pipe.unet.start()
    return {}


def observe(pipe, cfg) -> Row | None:
    """Full and shallow UNet calls made, over every pipeline call of the trial."""
    if cfg.cache_interval <= 1:
        return None
    calls = pipe.unet.calls
    total = calls["full"] + calls["shallow"]
    return Row({"unet_full_fraction": calls["full"] / total if total else None})
