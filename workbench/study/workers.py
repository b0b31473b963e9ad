"""Many workers on one study: heartbeats, lost workers, and the processes of `workbench sweep --workers N`.

A worker is one process running a study's trials ask-and-tell (`workbench.study.sweep.work`). While a trial runs, a
thread records Optuna's heartbeat for it (`storage.record_heartbeat`: Optuna's own heartbeat thread only runs
inside `study.optimize`). Before each ask a worker calls `optuna.storages.fail_stale_trials`: a trial whose
worker has not beaten for `grace_s` is failed, and `LostTrials` writes its row (reason "worker lost") and queues
it once more through Optuna's `RetryHeartbeatStaleTrialCallback`. JournalStorage has no heartbeat; it serves one
host, where a worker's process id says as much: a trial whose process is gone is lost the same way.
"""
from __future__ import annotations

import contextlib
import copy
import datetime
import os
import signal
import socket
import subprocess
import sys
import threading

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback

from workbench.study.optuna_compat import is_heartbeat_enabled, storage_of, trial_id
from workbench.study.storages import backend
from workbench.study.store import Store, failed_row

LOST = "worker lost"
MAX_RETRIES = 1  # a lost trial runs once more; lost again, it stays failed (and counts)
HOST = socket.gethostname()


def identity() -> dict:
    """This worker, as recorded on each of its trials (user attribute `worker`)."""
    gpu = os.environ.get("CUDA_VISIBLE_DEVICES")
    name = f"{HOST}:{os.getpid()}" + (f" gpu{gpu}" if gpu else "")
    return {"name": name, "host": HOST, "pid": os.getpid(), "start": _start_time(os.getpid())}


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (tells a live worker from a reused pid)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(worker: dict) -> bool:
    try:
        os.kill(worker["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return worker.get("start") is None or _start_time(worker["pid"]) in (None, worker["start"])


class Heartbeat:
    """Records the trial's heartbeat now and every `interval_s` in a thread (Optuna's HeartbeatThread, tolerant:
    a beat that fails while the database restarts is simply the next one)."""

    def __init__(self, storage, trial_id: int, interval_s: int):
        self.storage, self.trial_id, self.interval_s = storage, trial_id, interval_s
        self.enabled = is_heartbeat_enabled(storage)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"heartbeat-{trial_id}")

    def __enter__(self):
        if self.enabled:
            self.storage.record_heartbeat(self.trial_id)  # retried: the trial is never without a first beat
            self._thread.start()
        return self

    def _run(self) -> None:
        once = getattr(self.storage, "inner", self.storage)  # no retry loop here: the next beat is the retry
        while not self._stop.wait(self.interval_s):
            try:
                once.record_heartbeat(self.trial_id)
            except Exception:  # noqa: BLE001 - the database is away; the grace period covers a few misses
                pass

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


class LostTrials:
    """Optuna's heartbeat-stale callback: the lost trial's row says 'worker lost', and it is retried once."""

    def __init__(self, exp, grace_s: int):
        self.exp, self.grace_s = exp, grace_s
        self.retry = RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES)
        self.seen: list[optuna.trial.FrozenTrial] = []

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        worker = trial.user_attrs.get("worker", {}).get("name", "a worker that never tagged it")
        again = len(trial.system_attrs.get("retry_history", [])) < MAX_RETRIES
        reason = (f"{LOST}: {worker} stopped (no heartbeat or process for {self.grace_s} s); "
                  + ("retried once" if again else f"not retried again (lost {MAX_RETRIES + 1} times)"))
        self.write(trial, reason)
        self.retry(study, trial)
        self.seen.append(trial)

    def write(self, trial: optuna.trial.FrozenTrial, reason: str) -> None:
        try:
            config = self.exp.trial_config(trial.params).to_dict()
        except Exception:  # noqa: BLE001 - a trial lost while its parameters were being asked
            config = {**self.exp.fixed, **trial.params}
        Store(self.exp.storage).write(self.exp.name, trial.number, failed_row(config, reason))


def reap_lost(study: optuna.Study, exp, lost: LostTrials):
    """Fail and retry the trials whose workers are gone; returns (the study's trials, the lost ones).

    Heartbeat storages: Optuna's `fail_stale_trials`. Journal (one host): trials of this host whose process is
    gone. Any storage: a RUNNING trial that no worker tagged within `grace_s` (its worker died while asking).
    """
    lost.seen = []
    optuna.storages.fail_stale_trials(study)
    journal = backend(exp.storage) == "journal"
    now = datetime.datetime.now()
    trials = study.get_trials(deepcopy=False)
    for t in trials:
        if t.state != optuna.trial.TrialState.RUNNING:
            continue
        worker = t.user_attrs.get("worker")
        if worker is None:
            gone = t.datetime_start is not None and (now - t.datetime_start).total_seconds() > lost.grace_s
        else:
            gone = journal and worker.get("host") == HOST and not _alive(worker)
        if gone and _fail(study, t):
            lost(study, copy.deepcopy(t))
    if lost.seen:
        trials = study.get_trials(deepcopy=False)
    return trials, lost.seen


def _fail(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
    """Mark a RUNNING trial failed; False if another worker finished or failed it first."""
    try:
        return storage_of(study).set_trial_state_values(trial_id(trial), state=optuna.trial.TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        return False


def visible_gpus() -> list[str]:
    """The GPUs this host lets us use: CUDA_VISIBLE_DEVICES if set, else every device torch sees."""
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        return [g for g in os.environ["CUDA_VISIBLE_DEVICES"].split(",") if g.strip() and g.strip() != "-1"]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def start(worker_args: list[str], n: int) -> list[subprocess.Popen]:
    """Start n `workbench worker` processes: one per visible GPU, pinned (round-robin if n exceeds them); on a
    CPU host each gets an equal share of the cores."""
    gpus, procs = visible_gpus(), []
    for i in range(n):
        env = dict(os.environ)
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = gpus[i % len(gpus)]
        elif "OMP_NUM_THREADS" not in env:
            env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // n))
        procs.append(subprocess.Popen([sys.executable, "-m", "workbench.cli", "worker", *worker_args, "--quiet"],
                                      env=env, stdin=subprocess.DEVNULL))
    return procs


def stop(procs: list[subprocess.Popen], timeout_s: float = 60.0) -> None:
    """After Ctrl-C: a terminal sent it to every worker too; those that did not get it (or hang) get it now,
    then are killed if they still run after `timeout_s`. Each marks its trial interrupted."""
    with no_interrupts():
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@contextlib.contextmanager
def no_interrupts():
    """Ignore Ctrl-C while a trial is being marked interrupted (main thread only; restored afterwards)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
