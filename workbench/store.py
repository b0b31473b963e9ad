"""The results store: one relational table of trial rows, through SQLAlchemy (SQLite by default, any URL).

The Optuna study lives in the same database (its own tables); ours is `workbench_trials`, one row per
(study, trial number), written in a single transaction so a row is either whole or absent. With a journal
storage the rows go to a SQLite file beside the journal (`workbench.storages.rows_url`).
"""
from __future__ import annotations

import json
import time
from functools import lru_cache
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

from workbench.errors import ConfigError
from workbench.storages import RETRY_S, retrying, rows_url

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


@lru_cache(maxsize=None)
def engine(url: str) -> sa.Engine:
    """One engine (connection pool) per database and process; PostgreSQL connections are pinged before use."""
    backend = sa.engine.make_url(url).get_backend_name()
    kwargs = {"pool_pre_ping": True} if backend == "postgresql" else {}
    if backend == "sqlite":  # a fresh connection per use: a deleted and re-created file is seen as such
        kwargs.update(connect_args={"timeout": 30}, poolclass=sa.pool.NullPool)  # 30 s: journal workers share it
    return sa.create_engine(url, **kwargs)


def _engine(url: str, field: str = "storage") -> sa.Engine:
    """Parse, create the SQLite folder if needed and build the engine (no connection yet); one line on failure."""
    try:
        parsed = sa.engine.make_url(rows_url(url))
    except sa.exc.ArgumentError:
        raise ConfigError(f"{field}: {url!r} is not a SQLAlchemy URL or journal path; use e.g. "
                          "sqlite:///results/workbench.db, "
                          "journal:///results/<name>.journal or postgresql://user@host/db") from None
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        folder = Path(parsed.database).expanduser().parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"{field}: cannot create the folder of {parsed.database!r} ({e.strerror})") from None
    try:
        return engine(rows_url(url))
    except (sa.exc.NoSuchModuleError, ModuleNotFoundError, ImportError) as e:
        raise ConfigError(f"{field}: no driver for {parsed.drivername!r} ({e}); install it, e.g. "
                          "pip install -e '.[postgres]' for PostgreSQL (psycopg 3)") from None


def _unreachable(url: str, error: Exception, field: str = "storage") -> ConfigError:
    reason = str(getattr(error, "orig", error)).strip().splitlines()[0]
    shown = sa.engine.make_url(rows_url(url)).render_as_string(hide_password=True)
    return ConfigError(f"{field}: cannot connect to {shown}: {reason}")


def check_storage_url(url: str, field: str = "storage") -> sa.Engine:
    """Parse, create the SQLite folder if needed, and connect once; one clear line on any failure."""
    eng = _engine(url, field)
    try:
        with eng.connect():
            pass
    except sa.exc.SQLAlchemyError as e:
        raise _unreachable(url, e, field) from None
    return eng


class Store:
    """Rows of trials, keyed by (study, trial number).

    `url` is a storage URL (`workbench.storages`); a lost connection is retried for `retry_s` seconds, so a
    database restart in the middle of a sweep loses no row.
    """

    def __init__(self, url: str = DEFAULT_URL, retry_s: float = RETRY_S):
        self.url, self.retry_s = url, retry_s
        self.engine = _engine(url)
        try:
            retrying(lambda: _meta.create_all(self.engine), retry_s)
        except sa.exc.SQLAlchemyError as e:
            raise _unreachable(url, e) from None

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


def trials(study: str | None = None, storage: str = DEFAULT_URL) -> pd.DataFrame:
    """The store as a DataFrame (for notebooks): `workbench.store.trials("quickstart")`."""
    return Store(storage).frame(study)
