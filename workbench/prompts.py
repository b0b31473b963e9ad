"""Prompt sets: versioned text files, one prompt a line, under workbench/assets/prompts/."""
from __future__ import annotations

import hashlib
from pathlib import Path

from workbench.errors import ConfigError
from workbench.paths import PROMPT_DIR


def prompt_path(name: str, field: str = "prompt_set") -> Path:
    """A bundled set by name ('world-v1') or any text file path."""
    path = PROMPT_DIR / f"{name}.txt"
    if path.is_file():
        return path
    if Path(name).is_file():
        return Path(name)
    bundled = ", ".join(sorted(p.stem for p in PROMPT_DIR.glob("*.txt")))
    raise ConfigError(f"{field}: no prompt set {name!r}; use one of {bundled} or the path of a text file "
                      "with one prompt a line")


def load_prompts(name: str) -> list[str]:
    prompts = [line.strip() for line in prompt_path(name).read_text().splitlines() if line.strip()]
    if not prompts:
        raise ConfigError(f"prompt_set: {name!r} holds no prompts")
    return prompts


def prompt_set_version(name: str) -> str:
    """Name plus a short content hash, recorded on every row so edited sets never mix silently."""
    return f"{Path(name).stem}@{hashlib.sha256(prompt_path(name).read_bytes()).hexdigest()[:10]}"


def prompts_for(prompts: list[str], images) -> list[str]:
    """The prompts of images 0..n-1 (`images` = n) or of these image indices: image i uses prompt i mod P (every
    trial, calibration, distillation and benchmark)."""
    indices = range(images) if isinstance(images, int) else images
    return [prompts[i % len(prompts)] for i in indices]
