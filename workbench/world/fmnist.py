"""Fashion-MNIST loading from the standard IDX files (Xiao et al., 2017), with no network access."""
from __future__ import annotations

import gzip
import os
from functools import lru_cache
from pathlib import Path

import numpy as np

from workbench.errors import ConfigError

BUNDLED_DIR = Path(__file__).resolve().parent.parent / "assets" / "fashion-mnist"
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _find(name: str, search: list[Path]) -> Path | None:
    for folder in search:
        for candidate in (folder / f"{name}.gz", folder / name):
            if candidate.is_file():
                return candidate
    return None


def _read_idx(path: Path) -> np.ndarray:
    """Parse one IDX file (LeCun's MNIST format): magic, dims, then raw uint8 data."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


@lru_cache(maxsize=4)
def load_split(split: str, data_dir: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Return (images uint8 [N,28,28], labels uint8 [N]) of one Fashion-MNIST split.

    Looks in `data_dir`, then $WORKBENCH_FMNIST_DIR, then the bundled test split, then the Debian
    package `dataset-fashion-mnist`.
    """
    if split not in FILES:
        raise ConfigError(f"split: unknown Fashion-MNIST split {split!r}; use 'train' or 'test'")
    search = [Path(p) for p in (data_dir, os.environ.get("WORKBENCH_FMNIST_DIR")) if p]
    search += [BUNDLED_DIR, DEBIAN_DIR]
    image_name, label_name = FILES[split]
    image_path, label_path = _find(image_name, search), _find(label_name, search)
    if image_path is None or label_path is None:
        raise ConfigError(
            f"fmnist_dir: no Fashion-MNIST {split} split (IDX files {image_name}[.gz]) in "
            f"{', '.join(map(str, search))}; install the Debian package dataset-fashion-mnist "
            "or pass a folder holding the standard IDX files")
    images, labels = _read_idx(image_path), _read_idx(label_path)
    if images.shape[0] != labels.shape[0] or images.shape[1:] != (28, 28):
        raise ConfigError(f"fmnist_dir: {image_path} is not a Fashion-MNIST IDX image file")
    return images, labels
