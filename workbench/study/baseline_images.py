"""The baseline's images on a host that did not run the baseline: regenerated once from its configuration.

Fidelity objectives (PSNR/SSIM) compare each trial's images with the baseline trial's at the same seeds, read from
the baseline's artifacts folder. A worker on another host (a cluster without a shared `results/`, or a study resumed
on a fresh GPU machine from its committed store) has the baseline's row but not its images; every trial there would
record fidelity as absent, and a sweep whose objective is PSNR would fail them all. So before its first trial such a
worker generates the baseline's images itself: the baseline's own configuration (the same seeds, prompts and
knobs; generation only, no timing or quality), in the worker's own process (its cached GPU memory released afterwards), into a temporary folder
renamed into place, with `regenerated.json` beside them saying where and when. The baseline's row is not touched. Images regenerated on another GPU model or software stack may differ
from the originals by rounding: the trials' fidelity protocol then names the regeneration.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path

from workbench import paths
from workbench.paths import REGENERATED as MARK


def missing(images: Path, seeds: list[int]) -> list[int]:
    from workbench.images import image_name  # heavy (torch): sweeps import this module, reports must not load torch

    return [s for s in seeds if not (images / image_name(s)).is_file()]


def ensure(folder: str, base, exp, echo=print) -> None:
    """Regenerate the baseline trial's images under `results/artifacts/<folder>/` when this host lacks any of them."""
    from workbench.trial import regenerate  # heavy: torch

    target = paths.artifacts(folder, base.number)
    cfg = exp.trial_config(base.params)
    lacking = missing(target / "images", cfg.seed_list)
    if not lacking:
        return
    echo(f"baseline #{base.number}: {len(lacking)} of its {len(cfg.seed_list)} images are not on this host "
         f"({target / 'images'}); regenerating them from its configuration for the fidelity metrics")
    t0 = time.perf_counter()
    scratch = target.with_name(f"{target.name}.regenerating-{socket.gethostname()}-{os.getpid()}")
    try:
        where = regenerate(cfg, scratch / "images")
        if missing(scratch / "images", cfg.seed_list):
            raise RuntimeError("the regenerated baseline lacks some of its seeds' images")
        target.mkdir(parents=True, exist_ok=True)
        if not missing(target / "images", cfg.seed_list):
            return  # another worker of this host finished first
        shutil.rmtree(target / "images", ignore_errors=True)  # an incomplete copy (the complete one is elsewhere)
        os.replace(scratch / "images", target / "images")
        (target / MARK).write_text(json.dumps({
            "host": socket.gethostname(), "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "seconds": round(time.perf_counter() - t0, 1), "device": where["device_name"], "torch": where["torch"],
            "reason": "this host lacked the baseline's images"}, indent=1))
        echo(f"baseline #{base.number}: {len(cfg.seed_list)} images regenerated in {time.perf_counter() - t0:.0f} s")
    except Exception as err:  # fidelity is then absent with its reason, as before; the sweep goes on
        echo(f"baseline #{base.number}: could not regenerate its images ({type(err).__name__}: {err}); fidelity "
             "metrics of this host's trials will be absent")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        _release_device_memory()  # the regeneration ran in this (driver) process; its trials run in their kernels


def _release_device_memory() -> None:
    import torch  # heavy: already imported by the regeneration

    if torch.cuda.is_available():
        torch.cuda.empty_cache()

