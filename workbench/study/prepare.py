"""What a warm kernel does before its trial is known: import the ML stack, then load, read-only, what a trial of
the experiment will load the same way. `workbench.study.kernels` runs it as each kernel's start-up code.

    prepare(config)   # the previous trial's configuration: the experiment's fixed knobs are the same

Steps, each holding the host's timing fence (`workbench.measure.fence`) so that none runs while a trial on this
host times its generation: the imports; the pipeline of a model read from disk (`models.prepare_pipeline`: taken
once by the trial's `load_pipeline`); with quality on, the FID Inception network, the CLIP, the world captions'
embeddings and the cached reference features with their moments (`quality.prepare`). Nothing goes to a GPU, and
torch's global random state is the same afterwards. A trial unlike the previous one (another model) loads what it
needs as usual. A step that fails is noted, not raised: the trial then does that work itself and fails, if it
must, with its own reason. `report()` is what the row's provenance records.
"""
from __future__ import annotations

import os
import sys
import time

from workbench import paths
from workbench.measure import fence

_REPORT: dict | None = None


def prepare(config: dict) -> dict:
    """Run every preparation step for a trial like `config`; returns (and keeps for `report`) what was done."""
    global _REPORT
    t0 = time.perf_counter()
    done: dict[str, float] = {}
    failed: dict[str, str] = {}
    state: dict = {}
    initialised_by = None
    for name, step in (("imports", _imports), ("pipeline", _pipeline), ("quality", _quality)):
        t = time.perf_counter()
        try:
            with fence.background():
                prepared = step(config, state)
        except Exception as e:  # noqa: BLE001 - noted; the trial does this work (and the later steps) itself
            failed[name] = (f"{type(e).__name__}: {e}".splitlines() or [name])[0][:300]
            break
        for item in prepared:
            done[item] = round(time.perf_counter() - t, 3)
        if initialised_by is None and _cuda_initialised():
            initialised_by = f"the {name} step"  # a fork server cannot fork from here on: say which step did it
    _REPORT = {"prepared": done, "failed": failed, "seconds": round(time.perf_counter() - t0, 3),
               "model": config.get("model"), "pid": os.getpid(), "cuda_initialised_by": initialised_by}
    return _REPORT


def _cuda_initialised() -> bool:
    torch = sys.modules.get("torch")  # never imported here for the question alone
    return bool(torch is not None and torch.cuda.is_initialized())


def forked() -> None:
    """In a kernel forked from a process that prepared (`workbench.study.forkserver`): what was prepared is this
    process's now; the report names it and the process it was forked from."""
    if _REPORT is not None:
        _REPORT.update({"forked_from": _REPORT["pid"], "pid": os.getpid()})


def report() -> dict | None:
    """What this process prepared before its trial (each item with the seconds of its step), once: the row of the
    first trial after `prepare` gets it, any later call None (as in a cold kernel or the sweep's own process)."""
    global _REPORT
    taken, _REPORT = _REPORT, None
    return taken


def _imports(config: dict, state: dict) -> list[str]:
    import torch  # heavy: the stack a trial imports (about 3-11 s on a 2-core CPU)

    from workbench.config import TrialConfig  # heavy: with the stack above
    from workbench.models import resolve_device  # heavy: with the stack above
    from workbench import trial  # noqa: F401  # heavy: diffusers, transformers, torchmetrics

    state["cfg"] = TrialConfig.from_dict(config)
    state["device"] = resolve_device(state["cfg"].device)
    state["torch"] = torch
    return ["imports"]


def _pipeline(config: dict, state: dict) -> list[str]:
    from workbench.models import prepare_pipeline  # heavy: diffusers

    with state["torch"].random.fork_rng(devices=[]):
        return ["pipeline"] if prepare_pipeline(state["cfg"].model) else []


def _quality(config: dict, state: dict) -> list[str]:
    from workbench.measure import quality  # heavy: torch, torchmetrics

    cfg = state["cfg"]
    if not cfg.quality:
        return []
    with state["torch"].random.fork_rng(devices=[]):
        return quality.prepare(cfg, state["device"], paths.fid_reference())
