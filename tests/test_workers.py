"""Many workers on one study, with real processes: a real PostgreSQL server, a journal file, SIGKILL, Ctrl-C."""
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import optuna
import pytest

from tests import pgserver
from workbench.cli import main
from workbench.errors import ConfigError
from workbench.study.storages import optuna_storage, rows_url
from workbench.study.store import Store
from workbench.study.sweep import counted, finished

EXP = """
name: {name}
model: tiny-random
fixed: {{seeds: "0-5", batch_size: 2, timing_repeats: 2, quality: false}}
baseline: {{scheduler: ddim, steps: 4}}
search_space:
  scheduler: {{type: categorical, choices: [ddim, euler, dpm++2m]}}
  steps: {{type: int, low: 2, high: 6}}
objectives: {{latency_s: minimize, unet_s: minimize}}
sampler: {{name: TPESampler, seed: 0, constant_liar: true}}
n_trials: {n}
storage: {storage}
executor: {executor}
heartbeat_s: 1
grace_s: 6
timeout_s: 300
"""


def _write(tmp_path, name, storage, n, executor="inprocess"):
    path = tmp_path / f"{name}.yaml"
    path.write_text(textwrap.dedent(EXP.format(name=name, storage=storage, n=n, executor=executor)))
    return str(path)


def _start(args, results_dir, extra_env=None):
    """`workbench ...` as a real process group of its own (so Ctrl-C can be sent to it and its workers)."""
    env = {**os.environ, "WORKBENCH_RESULTS": results_dir, "OMP_NUM_THREADS": "1", **(extra_env or {})}
    return subprocess.Popen([sys.executable, "-m", "workbench.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True,
                            preexec_fn=_ctrl_c_works)


def _ctrl_c_works():
    """SIGINT back to its default in the child: a test suite started in the background (`make test &`) runs with it
    ignored, which Python's KeyboardInterrupt handler then respects, and Ctrl-C would never reach the sweep."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wait_for(condition, timeout_s, what):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


@pytest.fixture(scope="module")
def postgres():
    if pgserver.binaries() is None:
        if os.environ.get("WORKBENCH_REQUIRE_POSTGRES"):
            pytest.fail("PostgreSQL is not installed although make test should have installed it")
        pytest.skip("PostgreSQL is not installed (make test installs it as root: apt-get install -y postgresql)")
    with pgserver.temporary_server() as server:
        yield server


@pytest.mark.slow
def test_three_workers_survive_a_killed_worker_and_a_database_restart(tmp_path, results_dir, postgres, capsys):
    """3 workers x 12 trials on PostgreSQL; one worker SIGKILLed mid-trial; the server restarted once."""
    postgres.create_database("fault")
    url, n = postgres.url("fault"), 12
    path = _write(tmp_path, "fault", url, n)
    t0 = time.monotonic()
    proc = _start(["sweep", path, "--workers", "3"], results_dir)
    try:
        study = _wait_for(lambda: _load(url, "fault"), 120, "the study")

        def running_trial():
            return next((t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
                         if "worker" in t.user_attrs), None)
        victim = _wait_for(running_trial, 180, "a running trial")
        time.sleep(0.3)  # its heartbeat thread is running: the trial is under way (a first trial takes seconds)
        assert study._storage.get_trial(victim._trial_id).state == optuna.trial.TrialState.RUNNING
        os.kill(victim.user_attrs["worker"]["pid"], signal.SIGKILL)
        _wait_for(lambda: finished(study.get_trials(deepcopy=False)) >= 4, 300, "4 finished trials")
        postgres.restart()
        restarted_at = finished(study.get_trials(deepcopy=False))
        out, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    wall = time.monotonic() - t0
    assert proc.returncode == 0, out[-3000:]

    trials = study.get_trials(deepcopy=False)
    rows = Store(url).rows("fault")
    numbers = [r["trial_number"] for r in rows]
    # every trial number has exactly one row: no duplicate, no trial without its row
    assert sorted(numbers) == [t.number for t in trials] and len(set(numbers)) == len(numbers)
    by_number = {r["trial_number"]: r for r in rows}
    lost = [t for t in trials if by_number[t.number]["reason"] and by_number[t.number]["reason"].startswith(
        "worker lost")]
    assert [t.number for t in lost] == [victim.number], [r["reason"] for r in rows]
    assert lost[0].state == optuna.trial.TrialState.FAIL
    retries = [t for t in trials if t.system_attrs.get("retry_history")]
    assert [t.system_attrs["retry_history"] for t in retries] == [[victim.number]]
    assert retries[0].state == optuna.trial.TrialState.COMPLETE and by_number[retries[0].number]["status"] == "ok"
    assert retries[0].params == victim.params
    # the study ends with exactly n_trials counted, nothing left running or queued
    assert len(counted(trials)) == n and finished(trials) == n
    assert not [t for t in trials if t.state in (optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)]
    assert sum(bool(t.user_attrs.get("baseline")) for t in trials) == 1 + (victim.user_attrs.get("baseline") is True)
    assert f"#{victim.number}" in out and "died (SIGKILL)" in out
    assert main(["report", path]) == 0
    with capsys.disabled():  # the figures belong in make test's output
        print(f"\nfault test (PostgreSQL {postgres.bindir.parent.name}, 3 workers x {n} trials, in-process): "
              f"{len(trials)} trials, {len(rows)} rows, {len(numbers) - len(set(numbers))} duplicates, "
              f"lost #{victim.number} -> retried as #{retries[0].number} ({retries[0].state.name}), "
              f"{len(counted(trials))} counted; server restarted after {restarted_at} finished trials, "
              f"{out.count('retrying for up to')} database calls retried; {wall:.0f} s")


def _load(url, name):
    try:
        return optuna.load_study(study_name=name, storage=optuna_storage(url, retry_s=0))
    except Exception:  # noqa: BLE001 - not created yet
        return None


@pytest.mark.slow
def test_ctrl_c_stops_every_worker_cleanly_and_resume_finishes_on_a_journal(tmp_path, results_dir):
    """Two papermill workers on a journal file; Ctrl-C to the whole group; then the same command finishes."""
    storage = f"journal:///{tmp_path}/ctrl.journal"
    path = _write(tmp_path, "ctrl", storage, 3, executor="papermill")
    proc = _start(["sweep", path, "--workers", "2"], results_dir)
    study = _wait_for(lambda: _load(storage, "ctrl"), 120, "the study")
    _wait_for(lambda: len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))) == 2, 300,
              "two running trials")
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 0 and "interrupted" in out, out[-3000:]
    trials = study.get_trials(deepcopy=False)
    assert not [t for t in trials if t.state == optuna.trial.TrialState.RUNNING], out[-4000:]
    interrupted = [t.number for t in trials if t.user_attrs.get("interrupted")]
    assert interrupted and not {r["trial_number"] for r in Store(storage).rows("ctrl")} & set(interrupted)
    proc = _start(["sweep", path, "--workers", "2"], results_dir)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    trials = study.get_trials(deepcopy=False)
    rows = Store(storage).rows("ctrl")
    assert finished(trials) == 3 and all(r["status"] == "ok" for r in rows), [r["reason"] for r in rows]
    assert all(Path(r["artifacts"]["notebook"]).is_file() for r in rows)  # papermill ran them
    assert Path(rows_url(storage)[len("sqlite:///"):]).is_file()  # the rows live beside the journal


def test_more_than_one_worker_on_sqlite_is_refused_in_one_line(tmp_path, capsys):
    path = _write(tmp_path, "lite", f"sqlite:///{tmp_path}/wb.db", 2)
    assert main(["sweep", path, "--workers", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "SQLite takes one worker" in err and "journal:///" in err and "postgresql://" in err
    assert not (tmp_path / "wb.db").exists()  # refused before anything was written
    assert main(["worker", path]) == 2


def test_storage_url_from_the_environment(tmp_path, monkeypatch, capsys):
    path = _write(tmp_path, "env", "${WB_TEST_STORAGE}", 1)
    assert main(["sweep", path, "--workers", "2"]) == 2
    assert "${WB_TEST_STORAGE} is not set" in capsys.readouterr().err
    monkeypatch.setenv("WB_TEST_STORAGE", f"journal:///{tmp_path}/env.journal")
    assert main(["sweep", path]) == 0
    assert [r["status"] for r in Store("${WB_TEST_STORAGE}").rows("env")] == ["ok"]
    assert (tmp_path / "env.journal").is_file() and (tmp_path / "env.journal.sqlite").is_file()


@pytest.mark.parametrize("url, hint", [
    ("postgresql://nobody@/nodb?host=/nonexistent-socket-dir", "cannot connect"),
    ("journal:///", "names no journal file"),
])
def test_unusable_scale_out_storages_are_one_clear_line(url, hint):
    from workbench.study.storages import check

    with pytest.raises(ConfigError) as err:
        check(url, workers=3)
    assert hint in str(err.value) and "\n" not in str(err.value)
