"""Where a study lives, from one URL: Optuna's storage for it, and the URL of our rows beside it.

    storage: sqlite:///results/workbench.db          one worker (the default)
    storage: journal:///results/sweep.journal         several workers on one host, no server (Optuna JournalStorage)
    storage: postgresql://user@host:5432/db          many workers on many hosts (Optuna RDBStorage, psycopg 3)
    storage: ${WORKBENCH_STORAGE}                     any of these, read from the environment (keep passwords there)

Our table of rows (`workbench.study.store`) lives in the same database as Optuna's tables. A journal is not a database:
its rows go to a SQLite file beside it, `<journal file>.sqlite` (one small write per trial, SQLite's locking and
our retries are enough for that). Relative paths follow SQLAlchemy's `sqlite:///relative` convention: relative to
the working folder, which for a notebook is `workbench.paths.project_root()`.

On a database server that restarts, every Optuna storage call and every row write is retried until the server
is back (`RETRY_S`); rows are written in one transaction, so they are whole or absent.
"""
from __future__ import annotations

import abc
import contextlib
import fcntl
import hashlib
import logging
import os
import re
import threading
import time
import warnings
from functools import lru_cache
from pathlib import Path

import optuna
import sqlalchemy as sa
from optuna.storages import BaseStorage

from workbench.errors import ConfigError
from workbench.study.optuna_compat import STALE_TRIALS_METHOD, BaseHeartbeat, cached

_log = logging.getLogger("workbench.storages")
RETRY_S = 120.0  # how long a lost database connection is retried before the call fails (a server restart)
JOURNAL = "journal:///"
_VAR = re.compile(r"\$\{(\w+)\}")
# Ask-and-tell with our own heartbeat thread is what Optuna's warning asks for in other words; its heartbeat and
# retry APIs are marked experimental. Both warnings would print once per trial in every worker.
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
warnings.filterwarnings("ignore", r".*(heartbeat|RetryHeartbeatStaleTrialCallback|fail_stale_trials)",
                        optuna.exceptions.ExperimentalWarning)
_EXAMPLES = ("sqlite:///results/workbench.db (one worker), journal:///results/<name>.journal (several on one "
             "host) or postgresql://user@host/db (many hosts)")


def expand(url: str, field: str = "storage") -> str:
    """Replace `${VAR}` with the environment's value; an unset variable is one clear error."""
    def value(match: re.Match) -> str:
        name = match[1]
        if name not in os.environ:
            raise ConfigError(f"{field}: ${{{name}}} is not set in the environment; export {name}=<storage URL>, "
                              f"e.g. {_EXAMPLES}")
        return os.environ[name]
    return _VAR.sub(value, url)


def backend(url: str) -> str:
    """'journal', 'sqlite', 'postgresql' or another SQLAlchemy backend name."""
    url = expand(url)
    if url.startswith(JOURNAL):
        return "journal"
    scheme = url.split(":", 1)[0].split("+", 1)[0]
    return "postgresql" if scheme in ("postgres", "postgresql") else scheme


def journal_path(url: str) -> Path:
    return Path(expand(url)[len(JOURNAL):])


def rows_url(url: str) -> str:
    """The SQLAlchemy URL of our rows for a storage URL (PostgreSQL through psycopg 3 unless a driver is named)."""
    url = expand(url)
    if url.startswith(JOURNAL):
        return f"sqlite:///{journal_path(url)}.sqlite"
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            return "postgresql+psycopg://" + url[len(plain):]
    return url


def identity(url: str) -> str:
    """The storage a URL names, spelled one way: variables expanded, SQLite and journal files as absolute paths,
    the password left out (it never names the database, and this string is hashed into folder names)."""
    url = expand(url)
    if url.startswith(JOURNAL):
        return f"{JOURNAL}{journal_path(url).expanduser().resolve()}"
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        parsed = parsed.set(database=str(Path(parsed.database).expanduser().resolve()))
    if parsed.drivername.split("+")[0] in ("postgres", "postgresql"):
        parsed = parsed.set(drivername="postgresql")  # postgres://, postgresql+psycopg:// name one database
    return parsed.render_as_string(hide_password=True).replace(":***@", "@")


def tag(url: str) -> str:
    """8 hex digits naming the storage (`identity`): what tells apart two studies of one name in two storages."""
    return hashlib.sha256(identity(url).encode()).hexdigest()[:8]


def is_transient(error: BaseException) -> bool:
    """A lost or refused database connection (server restarting, SQLite busy): worth retrying."""
    sa_exc = sa.exc
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, (sa_exc.OperationalError, sa_exc.InterfaceError)):
            return True
        if isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated:
            return True
        if type(error).__module__.startswith("psycopg") and type(error).__name__ in ("OperationalError",
                                                                                      "InterfaceError"):
            return True
        error = error.__cause__ or error.__context__
    return False


def retrying(call, retry_s: float = RETRY_S, also=()):
    """`call()`, retried with back-off while it fails with a transient database error (or one of `also`)."""
    start = time.monotonic()
    pause, failed = 0.1, None
    while True:
        try:
            result = call()
        except Exception as e:  # noqa: BLE001 - re-raised unless transient
            if not (is_transient(e) or isinstance(e, also)) or time.monotonic() + pause > start + retry_s:
                raise
            if failed is None:
                failed = e
                text = str(getattr(e, "orig", e)).strip().splitlines() or [type(e).__name__]
                _log.warning("database call failed (%s); retrying for up to %.0f s", text[0][:120], retry_s)
            time.sleep(pause)
            pause = min(pause * 2, 2.0)
            continue
        if failed is not None:
            _log.warning("database call succeeded after %.1f s of retries", time.monotonic() - start)
        return result


def optuna_storage(url: str, *, heartbeat_s: int | None = None, grace_s: int | None = None,
                   on_lost=None, retry_s: float = RETRY_S):
    """Optuna's storage for the URL: JournalStorage on a file, else RDBStorage with heartbeats, retried calls.

    `on_lost(study, trial)` is Optuna's heartbeat-stale callback: it runs once for each trial whose worker
    stopped beating for `grace_s` (see `optuna.storages.fail_stale_trials`).
    """
    url = expand(url)
    if url.startswith(JOURNAL):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        return JournalStorage(JournalFileBackend(str(journal_path(url))))
    kwargs = {}
    if backend(url) == "postgresql":
        kwargs["engine_kwargs"] = {"pool_pre_ping": True}  # Optuna sets it for MySQL only; survives restarts
    elif backend(url) == "sqlite":
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 30}}
    storage = retrying(lambda: optuna.storages.RDBStorage(
        rows_url(url), heartbeat_interval=heartbeat_s, grace_period=grace_s,
        heartbeat_stale_trial_callback=on_lost, **kwargs), retry_s)
    return RetryingStorage(cached(storage), retry_s)


class RetryingStorage(BaseStorage, BaseHeartbeat):
    """An RDB storage whose every call is retried while the database connection is lost (a server restart)."""

    def __init__(self, inner: BaseStorage, retry_s: float = RETRY_S):
        self.inner, self.retry_s = inner, retry_s

    def set_trial_state_values(self, trial_id, state, values=None) -> bool:
        """Retried like the rest; a retry that finds the trial already in `state` was our own committed call."""
        attempts = []

        def call():
            attempts.append(1)
            try:
                return self.inner.set_trial_state_values(trial_id, state, values)
            except optuna.exceptions.UpdateFinishedTrialError:
                if len(attempts) > 1 and self.inner.get_trial(trial_id).state == state:
                    return True
                raise
        return retrying(call, self.retry_s)


def _delegate(name: str):
    def call(self, *args, **kwargs):
        return retrying(lambda: getattr(self.inner, name)(*args, **kwargs), self.retry_s)
    call.__name__ = name
    return call


for _name in sorted({n for cls in (BaseStorage, BaseHeartbeat) for n in vars(cls) if callable(getattr(cls, n))
                     and (not n.startswith("_") or n == STALE_TRIALS_METHOD)} - set(vars(RetryingStorage))):
    setattr(RetryingStorage, _name, _delegate(_name))
abc.update_abstractmethods(RetryingStorage)


class StudyLock:
    """Serialises 'count the study's trials, then ask for one' across every worker of a study.

    Without it two workers can both see n_trials - 1 and both ask (Optuna's MaxTrialsCallback overshoots the
    same way). PostgreSQL: a session advisory lock, released by the server when the worker's connection dies;
    journal: an flock on a file beside the journal, released by the kernel when the worker dies; SQLite (one
    worker): a thread lock. `lost` is True when the server dropped the lock while it was held (a restart):
    the caller then re-checks what it did under it.
    """

    def __init__(self, url: str, study: str, retry_s: float = RETRY_S):
        self.kind, self.retry_s, self.lost = backend(url), retry_s, False
        self.key = int.from_bytes(hashlib.sha256(f"workbench:{study}".encode()).digest()[:8], "big", signed=True)
        self._thread_lock = threading.Lock()
        if self.kind == "journal":
            self.path = Path(f"{journal_path(url)}.workbench-lock")
        elif self.kind == "postgresql":
            self.engine = engine(rows_url(url))

    def __enter__(self):
        self._thread_lock.acquire()
        self.lost = False
        if self.kind == "journal":
            self._file = open(self.path, "a")
            fcntl.flock(self._file, fcntl.LOCK_EX)
        elif self.kind == "postgresql":
            def acquire():
                conn = self.engine.connect()
                try:
                    conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": self.key})
                    conn.commit()
                except BaseException:
                    conn.invalidate()
                    conn.close()
                    raise
                return conn
            self._conn = retrying(acquire, self.retry_s)
        return self

    def __exit__(self, *exc):
        try:
            if self.kind == "journal":
                fcntl.flock(self._file, fcntl.LOCK_UN)
                self._file.close()
            elif self.kind == "postgresql":
                try:
                    held = self._conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": self.key}).scalar()
                    self._conn.commit()
                    self.lost = not held
                except Exception as e:  # noqa: BLE001 - the session died with the lock in it
                    if not is_transient(e):
                        raise
                    self.lost = True
                    with contextlib.suppress(Exception):
                        self._conn.invalidate()
                finally:
                    with contextlib.suppress(Exception):
                        self._conn.close()
        finally:
            self._thread_lock.release()


def check(url: str, workers: int = 1, field: str = "storage", joining: bool = False) -> None:
    """Fail before any work, in one line, on a storage that cannot be used by `workers` workers (or by a
    `workbench worker` joining others)."""
    kind = backend(expand(url, field))
    if (workers > 1 or joining) and kind == "sqlite":
        who = "and `workbench worker` joins others" if joining else f"not --workers {workers}"
        raise ConfigError(f"{field}: SQLite takes one worker, {who} (concurrent writers lock it); use storage: "
                          "journal:///results/<name>.journal for several workers on this host, or "
                          "postgresql://user@host/db for many hosts (docs/scale-out.md)")
    if kind == "journal":
        path = journal_path(url)
        if not path.name or path.is_dir():
            raise ConfigError(f"{field}: {url!r} names no journal file; write journal:///results/<name>.journal")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a"):
                pass
        except OSError as e:
            raise ConfigError(f"{field}: cannot write the journal {str(path)!r} ({e.strerror})") from None
    check_storage_url(rows_url(url), field)


@lru_cache(maxsize=None)
def engine(url: str) -> sa.Engine:
    """One engine (connection pool) per database and process; PostgreSQL connections are pinged before use."""
    backend = sa.engine.make_url(url).get_backend_name()
    kwargs = {"pool_pre_ping": True} if backend == "postgresql" else {}
    if backend == "sqlite":  # a fresh connection per use: a deleted and re-created file is seen as such
        kwargs.update(connect_args={"timeout": 30}, poolclass=sa.pool.NullPool)  # 30 s: journal workers share it
    return sa.create_engine(url, **kwargs)


def engine_for(url: str, field: str = "storage") -> sa.Engine:
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


def unreachable(url: str, error: Exception, field: str = "storage") -> ConfigError:
    reason = str(getattr(error, "orig", error)).strip().splitlines()[0]
    shown = sa.engine.make_url(rows_url(url)).render_as_string(hide_password=True)
    return ConfigError(f"{field}: cannot connect to {shown}: {reason}")


def check_storage_url(url: str, field: str = "storage") -> sa.Engine:
    """Parse, create the SQLite folder if needed, and connect once; one clear line on any failure."""
    eng = engine_for(url, field)
    try:
        with eng.connect():
            pass
    except sa.exc.SQLAlchemyError as e:
        raise unreachable(url, e, field) from None
    return eng
