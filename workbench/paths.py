"""Where things live: the results folder and its parts, the bundled assets, the default storage.

    paths.results() / "figures"          # results/, or $WORKBENCH_RESULTS when set

Every folder under the results folder is a function, read when called rather than when this module is imported,
so a test or a notebook that sets WORKBENCH_RESULTS after importing workbench still gets its own folder. Nothing
here imports more than the standard library: the report and the CLI learn where results are without torch.
"""
from __future__ import annotations

import os
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
ASSETS = PACKAGE / "assets"
REFERENCE_SD = ASSETS / "reference" / "sd"          # the bundled reference model (a diffusers folder)
REFERENCE_CLIP = ASSETS / "reference" / "clip"      # its CLIP (alignment, CLIP score)
PROMPT_DIR = ASSETS / "prompts"                     # bundled prompt sets, one prompt a line
NOTEBOOKS = PACKAGE.parent / "notebooks"            # trial.ipynb (the papermill executor), explore, report
DEFAULT_STORAGE = "sqlite:///results/workbench.db"  # relative to the working folder, as SQLAlchemy reads it


def results() -> Path:
    """The results folder: $WORKBENCH_RESULTS, else `results` in the working folder."""
    return Path(os.environ.get("WORKBENCH_RESULTS", "results"))


REGENERATED = "regenerated.json"  # in a baseline trial's folder whose images a worker regenerated on its host


def artifacts(folder: str, trial_number: int | None = None) -> Path:
    """A study's artifacts (images, grids, executed notebooks), or one trial's folder in it. `folder` is the study's
    folder name (`workbench.study.studies.folder`: the name, plus its storage's tag outside the default store)."""
    base = results() / "artifacts" / folder
    return base if trial_number is None else base / f"trial-{trial_number:04d}"


def figures(folder: str) -> Path:
    """Figures and tables of a study (its folder name, as for `artifacts`) or of a comparison."""
    return results() / "figures" / folder


def compressed() -> Path:
    """Cached model artifacts: pruned UNets, calibration sets, importance rankings, ONNX and INT8 models."""
    return results() / "compressed"


def fid_reference() -> Path:
    """Cached FID reference features, by set, N and extractor."""
    return results() / "fid-reference"


def cache() -> Path:
    """Small files built on first use outside the results (the tiny test models' tokenizer): $WORKBENCH_CACHE."""
    return Path(os.environ.get("WORKBENCH_CACHE", Path.home() / ".cache" / "workbench"))


def lab_storage() -> str:
    """The store beside the results folder as an absolute URL, wherever a notebook kernel's working folder is."""
    return f"sqlite:///{(results() / 'workbench.db').resolve()}"


def project_root(start: Path | None = None) -> Path:
    """The folder relative paths are taken from, as by the CLI run in the project (`workbench sweep
    experiments/quickstart.yaml`): the working folder, or the nearest parent holding `experiments/` when a
    notebook kernel runs below it (JupyterLab starts each kernel in its notebook's folder, `notebooks/`)."""
    here = Path(start or Path.cwd()).resolve()
    return next((p for p in (here, *here.parents) if (p / "experiments").is_dir()), here)
