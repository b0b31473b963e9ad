"""How a trial runs: in a fresh Jupyter kernel through papermill (the default: a warm kernel), or in this process.

    EXECUTORS[name](config, storage=..., study=..., trial_number=..., baseline_dir=..., artifacts_dir=..., timeout_s=...)

- `papermill`: the trial notebook in a warm kernel, forked from a process that imported the stack and prepared the
  experiment's model and quality networks once, and waiting since the previous trial started
  (`workbench.study.kernels`, `forkserver`); one kernel per trial, never reused, with the trial's time limit and
  its executed notebook kept. `close()` ends the waiting kernel and the fork server.
- `papermill-cold`: the same notebook in a kernel started for the trial, which imports and loads everything during
  the trial (what `papermill` did before warm kernels; kept for comparison, `benchmarks/executor_overhead.py`).
- `inprocess`: `record_trial` in this process: fastest, no time limit, a crash takes the sweep with it.

All end the same way: the trial's row is in the store, `ok` or `failed` with its reason (`record_trial`). The
sweep reads the outcome from the store, never from the notebook's output. Only the in-process executor imports
torch in the sweep's own process; with papermill the ML stack lives in each trial's kernel.
"""
from __future__ import annotations

import time
import traceback
from pathlib import Path

from workbench import paths
from workbench.study import prepare
from workbench.study.store import Store, failed_row

TRIAL_NOTEBOOK = paths.NOTEBOOKS / "trial.ipynb"
KERNEL_START_S = 300  # a fresh kernel imports torch and diffusers: on a busy 2-core machine that took over 60 s
_POOL = None  # the warm executor's kernel pool: one waiting kernel per process (each worker has its own)


def record_trial(config: dict, storage: str, study: str, trial_number: int, baseline_dir: str | None,
                 artifacts_dir: str, progress: bool = True, notebook_out: str | None = None) -> dict:
    """Run a trial and write its row (ok or failed with the reason) to the store; re-raise on failure.

    What every executor ends in: called here in process, or by notebooks/trial.ipynb inside its kernel."""
    from workbench.trial import run_trial  # heavy: torch, diffusers (in the trial's process only)

    store = Store(storage)
    t0 = time.time()
    try:
        row = run_trial(config, baseline_dir=baseline_dir, artifacts_dir=artifacts_dir, progress=progress)
    except BaseException as e:  # noqa: BLE001 - the row must say why, whatever it was
        reason = f"{type(e).__name__}: {e}".splitlines()[0][:500]
        if isinstance(e, KeyboardInterrupt):
            raise
        store.write(study, trial_number, failed_row(config, reason, {"total_s": time.time() - t0}),
                    traceback_text=traceback.format_exc())
        raise
    row["artifacts"]["notebook"] = notebook_out
    row["provenance"]["prepared"] = prepare.report()  # what a warm kernel loaded before the trial (None: nothing)
    store.write(study, trial_number, row)
    return row


def run_inprocess(config: dict, *, storage: str, study: str, trial_number: int, baseline_dir: str | None,
                  artifacts_dir: Path, timeout_s: int) -> None:
    """Run the trial in this Python process (fast; no time limit, a crash takes the sweep with it)."""
    try:
        record_trial(config, storage, study, trial_number, baseline_dir, str(artifacts_dir), progress=False)
    except Exception:  # noqa: BLE001 - record_trial already wrote the failed row with its reason
        pass


def run_papermill(config: dict, *, storage: str, study: str, trial_number: int, baseline_dir: str | None,
                  artifacts_dir: Path, timeout_s: int, kernel: str = "python3") -> None:
    """Execute notebooks/trial.ipynb in a warm kernel (started and prepared while the previous trial ran; used by
    this trial only) with a time limit; keep the executed notebook. `close()` ends the waiting kernel."""
    from workbench.study import kernels  # heavy: jupyter_client and papermill (the CLI starts without them)

    global _POOL
    if _POOL is None or _POOL.kernel_name != kernel:
        close()
        _POOL = kernels.KernelPool(kernel, start_timeout_s=KERNEL_START_S)
    t0 = time.time()
    try:
        warm = _POOL.take(config, str(Path.cwd()), label=f"trial #{trial_number}")
    except Exception as e:  # noqa: BLE001 - every kernel died before the trial: a failed trial with the reason
        _fail_unless_written(config, storage, study, trial_number, e, timeout_s, t0)
        return
    interrupted = False
    try:
        _execute(config, storage=storage, study=study, trial_number=trial_number, baseline_dir=baseline_dir,
                 artifacts_dir=artifacts_dir, timeout_s=timeout_s, engine_name=kernels.ENGINE, kernel=warm)
    except KeyboardInterrupt:
        interrupted = True
        raise
    finally:
        warm.shutdown(now=interrupted)


def run_papermill_cold(config: dict, *, storage: str, study: str, trial_number: int, baseline_dir: str | None,
                       artifacts_dir: Path, timeout_s: int, kernel: str = "python3") -> None:
    """Execute notebooks/trial.ipynb in a kernel started for it now (it imports the stack and loads every model
    during the trial) with a time limit; keep the executed notebook. For comparison with the warm executor."""
    from workbench.study.kernels import IPCKernelManager  # heavy: jupyter_client and papermill

    _execute(config, storage=storage, study=study, trial_number=trial_number, baseline_dir=baseline_dir,
             artifacts_dir=artifacts_dir, timeout_s=timeout_s, kernel_name=kernel,
             kernel_manager_class=IPCKernelManager)


def close() -> None:
    """End what an executor keeps between trials (the warm executor's waiting kernel); the sweep calls it when
    it stops, however it stops."""
    global _POOL
    if _POOL is not None:
        _POOL.close()
        _POOL = None


def _execute(config: dict, *, storage: str, study: str, trial_number: int, baseline_dir: str | None,
             artifacts_dir: Path, timeout_s: int, **engine_kwargs) -> None:
    """papermill on the trial notebook with this trial's parameters; a failure the notebook did not record itself
    (the kernel died, the time ran out) becomes the trial's failed row."""
    import papermill

    artifacts_dir.mkdir(parents=True, exist_ok=True)
    out = artifacts_dir / "trial.ipynb"
    params = {**config, "storage": storage, "study": study, "trial_number": trial_number,
              "baseline_dir": baseline_dir or "", "artifacts_dir": str(artifacts_dir), "notebook_out": str(out)}
    t0 = time.time()
    try:
        papermill.execute_notebook(str(TRIAL_NOTEBOOK), str(out), parameters=params, execution_timeout=timeout_s,
                                   progress_bar=False, log_output=False, cwd=str(Path.cwd()),
                                   start_timeout=KERNEL_START_S, **engine_kwargs)
    except Exception as e:  # noqa: BLE001 - classified below; the sweep goes on
        _fail_unless_written(config, storage, study, trial_number, e, timeout_s, t0)


def _fail_unless_written(config: dict, storage: str, study: str, trial_number: int, error: Exception,
                         timeout_s: int, t0: float) -> None:
    store = Store(storage)
    if not store.has(study, trial_number):  # the kernel died or timed out before writing its row
        store.write(study, trial_number, failed_row(config, _reason(error, timeout_s), {"total_s": time.time() - t0}))


def _reason(error: Exception, timeout_s: int) -> str:
    name = type(error).__name__
    text = str(error).strip().splitlines()
    if "Timeout" in name or any("timed out" in line.lower() for line in text[:3]):
        return f"timeout: the trial ran past timeout_s={timeout_s} s"
    if "DeadKernel" in name or any("kernel died" in line.lower() for line in text[:3]):
        return f"kernel died: {text[0] if text else name}"[:500]
    return f"{name}: {text[0] if text else ''}"[:500]


# every CLI choice and experiment check reads this registry
EXECUTORS = {"papermill": run_papermill, "papermill-cold": run_papermill_cold, "inprocess": run_inprocess}
