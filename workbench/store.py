"""The results store: one relational table of trial rows, through SQLAlchemy (SQLite by default, any URL).

The Optuna study lives in the same database (its own tables); ours is `workbench_trials`, one row per
(study, trial number), written in a single transaction so a row is either whole or absent.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

from workbench.errors import ConfigError

DEFAULT_URL = "sqlite:///results/workbench.db"
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


def check_storage_url(url: str, field: str = "storage") -> sa.Engine:
    """Parse, create the SQLite folder if needed, and connect once; one clear line on any failure."""
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        raise ConfigError(f"{field}: {url!r} is not a SQLAlchemy URL; use e.g. sqlite:///results/workbench.db "
                          "or postgresql://user:pass@host/db") from None
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        folder = Path(parsed.database).expanduser().parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"{field}: cannot create the folder of {parsed.database!r} ({e.strerror})") from None
    try:
        engine = sa.create_engine(url)
    except (sa.exc.NoSuchModuleError, ModuleNotFoundError, ImportError) as e:
        raise ConfigError(f"{field}: no driver for {parsed.drivername!r} ({e}); install it, e.g. "
                          "pip install psycopg2-binary for PostgreSQL") from None
    try:
        with engine.connect():
            pass
    except sa.exc.SQLAlchemyError as e:
        reason = str(getattr(e, "orig", e)).strip().splitlines()[0]
        raise ConfigError(f"{field}: cannot connect to {parsed.render_as_string(hide_password=True)}: {reason}") from None
    return engine


class Store:
    """Rows of trials, keyed by (study, trial number)."""

    def __init__(self, url: str = DEFAULT_URL):
        self.url = url
        self.engine = check_storage_url(url)
        _meta.create_all(self.engine)

    def write(self, study: str, trial_number: int, row: dict, traceback_text: str | None = None) -> None:
        """Insert or replace the row of one trial, atomically."""
        values = {"study": study, "trial_number": trial_number, "status": row["status"], "reason": row.get("reason"),
                  "quality_meaningful": row.get("quality_meaningful"), "traceback": traceback_text,
                  "written_at": time.time(),
                  **{name: json.dumps(row.get(name) or {}, default=str) for name in JSON_FIELDS}}
        with self.engine.begin() as conn:
            conn.execute(sa.delete(TRIALS).where(TRIALS.c.study == study, TRIALS.c.trial_number == trial_number))
            conn.execute(sa.insert(TRIALS).values(**values))

    def has(self, study: str, trial_number: int) -> bool:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(TRIALS.c.id).where(TRIALS.c.study == study,
                                                             TRIALS.c.trial_number == trial_number)).first() is not None

    def rows(self, study: str | None = None, trial_number: int | None = None) -> list[dict]:
        """Rows (JSON fields decoded), ordered by study and trial; optionally of one study or one trial."""
        query = sa.select(TRIALS).order_by(TRIALS.c.study, TRIALS.c.trial_number)
        if study is not None:
            query = query.where(TRIALS.c.study == study)
        if trial_number is not None:
            query = query.where(TRIALS.c.trial_number == trial_number)
        with self.engine.connect() as conn:
            out = []
            for r in conn.execute(query).mappings():
                row = dict(r)
                for name in JSON_FIELDS:
                    row[name] = json.loads(row[name])
                out.append(row)
        return out

    def studies(self) -> list[str]:
        with self.engine.connect() as conn:
            return [r[0] for r in conn.execute(sa.select(TRIALS.c.study).distinct().order_by(TRIALS.c.study))]

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


def trials(study: str | None = None, storage: str = DEFAULT_URL) -> pd.DataFrame:
    """The store as a DataFrame (for notebooks): `workbench.store.trials("quickstart")`."""
    return Store(storage).frame(study)
