"""What a study in the store is: its objectives and its baseline trial, read back for reports and browsers."""
from __future__ import annotations

import optuna
import pandas as pd

from workbench.errors import ConfigError
from workbench.study.storages import optuna_storage


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
