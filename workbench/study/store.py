"""The results store: one relational table of trial rows, through SQLAlchemy (SQLite by default, any URL).

The Optuna study lives in the same database (its own tables); ours is `workbench_trials`, one row per
(study, trial number), written in a single transaction so a row is either whole or absent. With a journal
storage the rows go to a SQLite file beside the journal (`workbench.study.storages.rows_url`).
"""
from __future__ import annotations

import json
import time

import pandas as pd
import sqlalchemy as sa

from workbench.paths import DEFAULT_STORAGE
from workbench.study.storages import RETRY_S, engine_for, retrying, unreachable

JSON_FIELDS = ("config", "metrics", "protocols", "absent", "timings", "provenance", "artifacts")

_meta = sa.MetaData()
TRIALS = sa.Table(
    "workbench_trials", _meta,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("study", sa.String(200), nullable=False, index=True),
    sa.Column("trial_number", sa.Integer, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("reason", sa.Text),
    *(sa.Column(name, sa.Text, nullable=False) for name in JSON_FIELDS),
    sa.Column("quality_meaningful", sa.Boolean),
    sa.Column("traceback", sa.Text),
    sa.Column("written_at", sa.Float, nullable=False),
    sa.UniqueConstraint("study", "trial_number", name="uq_study_trial"),
)


class Store:
    """Rows of trials, keyed by (study, trial number).

    `url` is a storage URL (`workbench.study.storages`); a lost connection is retried for `retry_s` seconds, so a
    database restart in the middle of a sweep loses no row.
    """

    def __init__(self, url: str = DEFAULT_STORAGE, retry_s: float = RETRY_S):
        self.url, self.retry_s = url, retry_s
        self.engine = engine_for(url)
        try:
            retrying(lambda: _meta.create_all(self.engine), retry_s)
        except sa.exc.SQLAlchemyError as e:
            raise unreachable(url, e) from None

    def write(self, study: str, trial_number: int, row: dict, traceback_text: str | None = None) -> None:
        """Insert or replace the row of one trial, atomically."""
        values = {"study": study, "trial_number": trial_number, "status": row["status"], "reason": row.get("reason"),
                  "quality_meaningful": row.get("quality_meaningful"), "traceback": traceback_text,
                  "written_at": time.time(),
                  **{name: json.dumps(row.get(name) or {}, default=str) for name in JSON_FIELDS}}

        def replace():
            with self.engine.begin() as conn:
                conn.execute(sa.delete(TRIALS).where(TRIALS.c.study == study, TRIALS.c.trial_number == trial_number))
                conn.execute(sa.insert(TRIALS).values(**values))
        # IntegrityError: another process wrote the same trial at the same moment (a lost worker's late row)
        retrying(replace, self.retry_s, also=(sa.exc.IntegrityError,))

    def has(self, study: str, trial_number: int) -> bool:
        return bool(self.rows(study, trial_number))

    def rows(self, study: str | None = None, trial_number: int | None = None) -> list[dict]:
        """Rows (JSON fields decoded), ordered by study and trial; optionally of one study or one trial."""
        query = sa.select(TRIALS).order_by(TRIALS.c.study, TRIALS.c.trial_number)
        if study is not None:
            query = query.where(TRIALS.c.study == study)
        if trial_number is not None:
            query = query.where(TRIALS.c.trial_number == trial_number)

        def read():
            with self.engine.connect() as conn:
                return [dict(r) for r in conn.execute(query).mappings()]
        out = retrying(read, self.retry_s)
        for row in out:
            for name in JSON_FIELDS:
                row[name] = json.loads(row[name])
        return out

    def studies(self) -> list[str]:
        def read():
            with self.engine.connect() as conn:
                return [r[0] for r in conn.execute(sa.select(TRIALS.c.study).distinct().order_by(TRIALS.c.study))]
        return retrying(read, self.retry_s)

    def frame(self, study: str | None = None) -> pd.DataFrame:
        """One DataFrame row per trial: identity, status, every config knob and metric as columns."""
        records = []
        for row in self.rows(study):
            flat = {"study": row["study"], "trial": row["trial_number"], "status": row["status"],
                    "reason": row["reason"], "quality_meaningful": row["quality_meaningful"]}
            flat.update(row["config"])
            flat.update(row["metrics"])
            flat.update({f"time_{k}": v for k, v in row["timings"].items()})
            flat.update({"protocols": row["protocols"], "absent": row["absent"], "provenance": row["provenance"],
                         "artifacts": row["artifacts"]})
            records.append(flat)
        return pd.DataFrame.from_records(records)


def failed_row(config: dict, reason: str, timings: dict | None = None) -> dict:
    """The row of a trial that raised, timed out or lost its kernel (or its worker)."""
    return {"config": config, "status": "failed", "reason": reason, "metrics": {}, "protocols": {}, "absent": {},
            "timings": timings or {}, "quality_meaningful": None, "provenance": {}, "artifacts": {}}


def trials(study: str | None = None, storage: str = DEFAULT_STORAGE) -> pd.DataFrame:
    """The store as a DataFrame (for notebooks): `workbench.study.store.trials("quickstart")`."""
    return Store(storage).frame(study)
