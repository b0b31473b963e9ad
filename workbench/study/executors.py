"""How a trial runs: in a fresh Jupyter kernel through papermill (the default), or in this process.

Both end the same way: the trial's row is in the store, `ok` or `failed` with its reason (`record_trial`). The
sweep reads the outcome from the store, never from the notebook's output. Only the in-process executor imports
torch in the sweep's own process; with papermill the ML stack lives in each trial's kernel.
"""
from __future__ import annotations

import time
import traceback
from pathlib import Path

from workbench import paths
from workbench.study.store import Store, failed_row

TRIAL_NOTEBOOK = paths.NOTEBOOKS / "trial.ipynb"
KERNEL_START_S = 300  # a fresh kernel imports torch and diffusers: on a busy 2-core machine that took over 60 s


def _ipc_kernel_manager():
    """A kernel manager on IPC (Unix socket) transport: the kernel talks to us through files in the Jupyter
    runtime folder instead of loopback TCP, so nothing listens on a port and the kernel has nothing to warn of."""
    from jupyter_client.manager import AsyncKernelManager

    class IPCKernelManager(AsyncKernelManager):
        def __init__(self, **kwargs):
            import uuid

            from jupyter_core.paths import jupyter_runtime_dir

            super().__init__(**kwargs)
            self.transport = "ipc"
            # a socket path of its own: the default ("kernel-ipc" in the working folder, numbered from 1) is
            # shared by every kernel started at once, so parallel workers' kernels would race for the same sockets
            Path(jupyter_runtime_dir()).mkdir(parents=True, exist_ok=True)
            self.ip = str(Path(jupyter_runtime_dir()) / f"wb-{uuid.uuid4().hex[:12]}-ipc")

    return IPCKernelManager


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
    """Execute notebooks/trial.ipynb in a fresh kernel with a time limit; keep the executed notebook."""
    import papermill

    artifacts_dir.mkdir(parents=True, exist_ok=True)
    out = artifacts_dir / "trial.ipynb"
    params = {**config, "storage": storage, "study": study, "trial_number": trial_number,
              "baseline_dir": baseline_dir or "", "artifacts_dir": str(artifacts_dir), "notebook_out": str(out)}
    t0 = time.time()
    try:
        papermill.execute_notebook(str(TRIAL_NOTEBOOK), str(out), parameters=params, kernel_name=kernel,
                                   execution_timeout=timeout_s, progress_bar=False, log_output=False,
                                   cwd=str(Path.cwd()), kernel_manager_class=_ipc_kernel_manager(),
                                   start_timeout=KERNEL_START_S)
    except Exception as e:  # noqa: BLE001 - classified below; the sweep goes on
        store = Store(storage)
        if not store.has(study, trial_number):  # the kernel died or timed out before writing its row
            store.write(study, trial_number, failed_row(config, _reason(e, timeout_s), {"total_s": time.time() - t0}))


def _reason(error: Exception, timeout_s: int) -> str:
    name = type(error).__name__
    text = str(error).strip().splitlines()
    if "Timeout" in name or any("timed out" in line.lower() for line in text[:3]):
        return f"timeout: the trial ran past timeout_s={timeout_s} s"
    if "DeadKernel" in name or any("kernel died" in line.lower() for line in text[:3]):
        return f"kernel died: {text[0] if text else name}"[:500]
    return f"{name}: {text[0] if text else ''}"[:500]


EXECUTORS = {"papermill": run_papermill, "inprocess": run_inprocess}
