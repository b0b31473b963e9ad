"""The artifact cache of compressed models: built once per (inputs, code version), shared by every trial.

    art = cached("pruned-unet", inputs, build=lambda folder: ..., )   # -> Artifact(folder, key, meta, built)

The key hashes the inputs (model fingerprint, method, ratio, budgets, seed) and the source of this package, so a
code change never reuses a stale artifact. A file lock per key makes parallel workers (papermill kernels, Optuna
workers on one host or a shared file system) wait for the one that builds instead of building twice. The build
writes into a temporary folder that is renamed into place only when complete, so a killed build leaves nothing
that looks finished. `meta.json` records the inputs and the build cost (seconds per phase) for the trial's row,
and the size and SHA-256 of every file the build wrote: an artifact damaged after it was built (a truncated
`model.onnx`, a file deleted by hand) is found when it is next loaded, logged in one line naming the artifact and
the file, and rebuilt, so no trial measures a damaged model.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from filelock import FileLock

PACKAGE = Path(__file__).resolve().parent
_log = logging.getLogger("workbench.compress")


def root() -> Path:
    """Where artifacts live: results/compressed (follows WORKBENCH_RESULTS like every other result)."""
    return Path(os.environ.get("WORKBENCH_RESULTS", "results")) / "compressed"


def code_version() -> str:
    """Hash of this package's source: artifacts built by other code are never reused."""
    h = hashlib.sha256()
    for path in sorted(PACKAGE.glob("*.py")):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:12]


def state_fingerprint(module) -> str:
    """Hash of a module's weights and buffers (names, shapes, values): identifies a model, whatever its source."""
    import torch

    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def artifact_key(kind: str, inputs: dict) -> str:
    """Readable prefix + hash of (kind, inputs, code version)."""
    blob = json.dumps({"kind": kind, "inputs": inputs, "code": code_version()}, sort_keys=True, default=str)
    return f"{kind}-{hashlib.sha256(blob.encode()).hexdigest()[:16]}"


@dataclass(frozen=True)
class Artifact:
    key: str
    folder: Path
    meta: dict      # inputs, code version, build cost {"phase_s": ...}, whatever the builder returned
    built: bool     # True when this call built it, False when it was loaded from the cache


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def manifest(folder: Path) -> dict[str, dict]:
    """Size and SHA-256 of every file under `folder` but meta.json, by path relative to it."""
    return {str(p.relative_to(folder)): {"bytes": p.stat().st_size, "sha256": _sha256(p)}
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "meta.json"}


def damage(folder: Path, meta: dict) -> str | None:
    """What is wrong with a built artifact's files against the manifest in its meta.json, or None if nothing is.

    Sizes first (a truncated or missing file costs no read), then hashes."""
    files = meta.get("files")
    if not isinstance(files, dict):
        return "meta.json records no files (built by older code)"
    for name, want in files.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != want["bytes"]:
            return f"{name} has {path.stat().st_size:,} bytes, {want['bytes']:,} were written"
    for name, want in files.items():
        if _sha256(folder / name) != want["sha256"]:
            return f"{name} has changed since it was built (SHA-256 differs)"
    return None


def cached(kind: str, inputs: dict, build: Callable[[Path], dict], where: Path | None = None) -> Artifact:
    """Return the artifact for (kind, inputs), building it with `build(folder) -> info` at most once.

    `build` writes its files into `folder` and returns a JSON-able dict (its costs under "cost_s") that is
    stored in meta.json next to the inputs. A cached artifact whose files do not match the sizes and hashes in
    its meta.json is removed and built again (one warning line says which and why).
    """
    key = artifact_key(kind, inputs)
    base = (where or root())
    base.mkdir(parents=True, exist_ok=True)
    folder = base / key
    with FileLock(str(base / f"{key}.lock")):
        if (folder / "meta.json").is_file():
            try:
                meta = json.loads((folder / "meta.json").read_text())
                wrong = damage(folder, meta)
            except (ValueError, OSError) as e:
                meta, wrong = {}, f"meta.json is unreadable ({type(e).__name__})"
            if wrong is None:
                return Artifact(key, folder, meta, built=False)
            _log.warning("artifact %s is damaged: %s; rebuilding it", folder, wrong)
            shutil.rmtree(folder)
        tmp = base / f".{key}.partial-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        t0 = time.time()
        try:
            info = build(tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        meta = {"key": key, "kind": kind, "inputs": inputs, "code_version": code_version(),
                "built_at": time.time(), "build_s": time.time() - t0, **info, "files": manifest(tmp)}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1, default=str))
        tmp.rename(folder)
    return Artifact(key, folder, meta, built=True)
