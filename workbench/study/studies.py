"""What a study in the store is: its objectives, its baseline trial and its folders, read back for reports and
browsers.

A study is named by (storage, name): two storages may each hold a study `quickstart`. Its images and executed
notebooks go to `results/artifacts/<folder>/` and its figures to `results/figures/<folder>/`, where `<folder>` is
the name for a study in the results folder's own store (`results/workbench.db`, the default) and
`<name>-<8 hex digits of the storage>` for a study anywhere else, so that no study overwrites another's trial
images (its later trials' fidelity reference) or figures. A sweep records the folder in the study's user attributes
when it creates the study, and every reader takes it from there (hosts that spell the URL differently agree).
"""
from __future__ import annotations

from pathlib import Path

import optuna
import pandas as pd

from workbench import paths
from workbench.errors import ConfigError
from workbench.study.storages import identity, optuna_storage, tag

FOLDER = "folder"  # the study's user attribute holding its folder name


def objectives(study: str, storage: str, explicit: list[str] | None = None) -> list[str]:
    """The study's objectives as its sweep recorded them (or `explicit`); one line if there is no such study."""
    if explicit:
        return explicit
    try:
        return list(optuna.load_study(study_name=study, storage=optuna_storage(storage)).user_attrs["objectives"])
    except Exception as e:  # noqa: BLE001 - missing study or missing objectives attribute
        raise ConfigError(f"study: no Optuna study {study!r} with objectives in {storage} ({type(e).__name__}); "
                          "run `workbench sweep` first or pass --objectives") from None


def baseline_number(study: str, storage: str, frame: pd.DataFrame | None = None) -> int | None:
    """The study's baseline: Optuna's flagged trial for a sweep, else the explorer's baseline row in `frame`."""
    try:
        trials = optuna.load_study(study_name=study, storage=optuna_storage(storage)).get_trials(deepcopy=False)
        number = next((t.number for t in trials if t.user_attrs.get("baseline")), None)
    except Exception:  # noqa: BLE001 - a store without an Optuna study (the explorer's): no baseline marker
        number = None
    if number is not None or frame is None:
        return number
    marked = [int(r["trial"]) for _, r in frame.iterrows()
              if isinstance(r.get("provenance"), dict) and r["provenance"].get("explore", {}).get("role") == "baseline"]
    return marked[-1] if marked else None


def folder_name(study: str, storage: str) -> str:
    """The folder of `study` in `storage` as computed from the two (see the module docstring)."""
    own = f"sqlite:///{(paths.results() / 'workbench.db').resolve()}"
    return study if identity(storage) == identity(own) else f"{study}-{tag(storage)}"


def folder(study: str, storage: str) -> str:
    """The folder name a study's artifacts and figures use: the one its sweep recorded, else `folder_name`
    (a store without an Optuna study, e.g. the explorer's or an ablation ladder's)."""
    try:
        recorded = optuna.load_study(study_name=study, storage=optuna_storage(storage)).user_attrs.get(FOLDER)
    except KeyError:  # no Optuna study of that name
        recorded = None
    return recorded or folder_name(study, storage)


def where(study: str, storage: str) -> tuple[Path, Path]:
    """(artifacts folder, figures folder) of a study."""
    name = folder(study, storage)
    return paths.artifacts(name), paths.figures(name)
