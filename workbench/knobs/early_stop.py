"""Early-stop knob: end sampling once the latent stops changing (relative change below `early_stop_tol` after at
least `early_stop_min` of the steps) and decode the scheduler's clean-sample estimate. Each image stops on its
own (its latent held at its estimate), the batch when all have; rows count the steps each image needed and the
UNet calls the batch made. Thin: `workbench.skip.early_stop` holds the mechanism."""
from __future__ import annotations

import math
import weakref

from workbench.errors import ConfigError
from workbench.knobs.spec import Field, Row

FIELDS = (
    Field("early_stop_tol", 0.0, "early stop: relative latent change per step below which an image stops, 0 (off)",
          low=0.0, high=1.0, call_time=True),
    Field("early_stop_min", 0.5, "early stop: fraction of the steps always run", low=0.0, high=1.0, call_time=True),
)
# schedulers whose step gives no clean-sample estimate, by alias and class (tests/test_skip.py tries every alias)
NO_ESTIMATE = ("dpm++sde", "DPMSolverSDEScheduler")
_WATCHERS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def check(cfg, where: str = "config") -> None:
    if cfg.early_stop_tol <= 0:
        return
    if cfg.scheduler.strip() in NO_ESTIMATE or cfg.scheduler.strip().lower() in NO_ESTIMATE:
        raise ConfigError(f"{where}.early_stop_tol: {cfg.scheduler} gives no clean-sample estimate to decode when "
                          "the loop stops; pick another scheduler or set early_stop_tol: 0")


def min_steps(cfg) -> int:
    return max(1, math.ceil(cfg.early_stop_min * cfg.steps))


def call(pipe, cfg) -> dict:
    """Watch this call's scheduler (fresh each call) and stop the loop from the step callback."""
    if cfg.early_stop_tol <= 0:
        return {}
    from workbench.skip.early_stop import EarlyStop  # heavy: torch

    watcher = _WATCHERS.get(pipe)
    if watcher is None or (watcher.tolerance, watcher.min_steps) != (cfg.early_stop_tol, min_steps(cfg)):
        watcher = _WATCHERS[pipe] = EarlyStop(cfg.early_stop_tol, min_steps(cfg))
    watcher.watch(pipe.scheduler)
    return {"callback_on_step_end": watcher.callback, "callback_on_step_end_tensor_inputs": ["latents"]}


def observe(pipe, cfg) -> Row | None:
    watcher = _WATCHERS.get(pipe)
    if cfg.early_stop_tol <= 0 or watcher is None:
        return None
    watcher.finish()
    if not watcher.stops:
        return None
    steps = sum(watcher.stops) / len(watcher.stops)
    return Row({"steps_run": steps, "steps_saved_frac": 1 - steps / cfg.steps},
               {"early_stop": {"tolerance": cfg.early_stop_tol, "min_steps": min_steps(cfg),
                               "images": len(watcher.stops), "batch_steps": watcher.calls,
                               "steps_run": "mean over the trial's generated images of the steps each ran before "
                                            "its latent's relative change fell below the tolerance"}})
