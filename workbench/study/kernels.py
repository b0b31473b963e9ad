"""Warm Jupyter kernels for papermill trials: while trial k runs, the kernel for trial k+1 is started, with the ML
stack imported and what it safely can prepared (`workbench.study.prepare`); every kernel serves one trial and is
shut down after it, never reused.

Where the platform forks (Linux, macOS), each kernel is a process forked from the pool's fork server, which
imported and prepared once for the whole sweep (`workbench.study.forkserver`): a kernel is ready in well under a
second instead of re-importing for ~10 s of one core, which a 2-core machine cannot hide behind a trial that uses
both. Elsewhere (or for a kernel other than python3) each kernel imports and prepares in its start-up code.

    pool = KernelPool()
    kernel = pool.take(config)   # ready; one that died while waiting is replaced; the next one starts now
    try:
        papermill.execute_notebook(..., engine_name=ENGINE, kernel=kernel)
    finally:
        kernel.shutdown()
    pool.close()                 # the waiting kernel too (end of the sweep, Ctrl-C; at exit in any case)

Only papermill's and jupyter_client's extension points are used: a kernel manager whose kernel command is the fork
server's launcher (`ForkedKernelManager.format_kernel_cmd`), or the preparation as the kernel's start-up code
(`IPKernelApp.exec_lines`), so that the kernel answers kernel_info once it is prepared; a papermill engine (ENGINE,
`WarmKernelEngine`) hands the started kernel manager to nbclient (`NotebookClient(km=...)`), which then neither
starts nor shuts the kernel down. Every kernel gets the host's timing fence (`workbench.measure.fence`), so a
preparation never runs while a trial on this host times its generation.
"""
from __future__ import annotations

import atexit
import json
import os
import sys
import uuid
from pathlib import Path

from jupyter_client.manager import AsyncKernelManager
from jupyter_core.paths import jupyter_runtime_dir
from jupyter_core.utils import run_sync
from papermill.engines import NBClientEngine, papermill_engines

from workbench.measure import fence
from workbench.study import forkserver

ENGINE = "workbench-warm"
CONFIG_ENV = "WORKBENCH_PREPARE_CONFIG"  # the previous trial's configuration, JSON, read by the start-up code
START_UP = ("import json as _j, os as _o, workbench.study.prepare as _p; "
            f"_p.prepare(_j.loads(_o.environ['{CONFIG_ENV}'])); del _j, _o, _p")
READY_TRIES = 3  # kernels in a row that may die before their trial before the trial fails with the reason


class IPCKernelManager(AsyncKernelManager):
    """A kernel manager on IPC (Unix socket) transport: the kernel talks to us through files in the Jupyter
    runtime folder instead of loopback TCP, so nothing listens on a port and the kernel has nothing to warn of.
    It remembers the clients it hands out, so that whoever shuts the kernel down can close their channels too."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.transport = "ipc"
        # a socket path of its own: the default ("kernel-ipc" in the working folder, numbered from 1) is shared by
        # every kernel started at once, so parallel workers' kernels would race for the same sockets
        Path(jupyter_runtime_dir()).mkdir(parents=True, exist_ok=True)
        self.ip = str(Path(jupyter_runtime_dir()) / f"wb-{uuid.uuid4().hex[:12]}-ipc")
        self.clients: list = []

    def client(self, **kwargs):
        kc = super().client(**kwargs)
        self.clients.append(kc)
        return kc


class ForkedKernelManager(IPCKernelManager):
    """A kernel manager whose kernel is forked by a fork server: it starts the server's launcher, which stands in
    for the kernel (signals forwarded, its exit status), in place of `python -m ipykernel_launcher`."""

    server_socket = ""

    def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
        cmd = super().format_kernel_cmd(extra_arguments)
        return [sys.executable, forkserver.LAUNCHER, self.server_socket, *cmd[cmd.index("-f"):]]


def fence_path() -> str:
    """The host's timing fence: one lock file in the Jupyter runtime folder for every worker of this host."""
    Path(jupyter_runtime_dir()).mkdir(parents=True, exist_ok=True)
    return str(Path(jupyter_runtime_dir()) / "workbench-timing.lock")


class WarmKernel:
    """A kernel started ahead of its trial: forked from `server` (prepared already), or preparing a trial like
    `config` in its own start-up code."""

    def __init__(self, config: dict | None, kernel_name: str, cwd: str, server: forkserver.ForkServer | None = None):
        self.km = ForkedKernelManager(kernel_name=kernel_name) if server else IPCKernelManager(kernel_name=kernel_name)
        env = {**os.environ, fence.ENV: fence_path()}
        args = []
        if server is not None:  # forked from a process that prepared already
            self.km.server_socket = server.socket
        elif config is not None:
            env[CONFIG_ENV] = json.dumps(config)
            args.append(f"--IPKernelApp.exec_lines={START_UP}")
        run_sync(self.km.start_kernel)(extra_arguments=args, env=env, cwd=cwd)

    @property
    def pid(self) -> int | None:
        process = getattr(self.km.provisioner, "process", None)
        return process.pid if process is not None else None

    def exit_code(self) -> int | None:
        """None while the kernel process runs; its exit status (negative: the signal) once it has ended."""
        process = getattr(self.km.provisioner, "process", None)
        return process.poll() if process is not None else 0

    def wait_ready(self, timeout_s: float) -> bool:
        """Wait until the kernel answers (it does once prepared); False if it died first. A kernel that is alive
        but silent after timeout_s counts as ready: nbclient then waits for it and fails the trial if it must."""
        kc = self.km.client()
        kc.start_channels()
        try:
            run_sync(kc.wait_for_ready)(timeout=timeout_s)
        except RuntimeError:
            return self.exit_code() is None
        finally:
            kc.stop_channels()
        return True

    def shutdown(self, now: bool = False) -> None:
        """Stop the kernel (at once with `now`, else after a shutdown request) and close every client's channels."""
        for kc in self.km.clients:
            kc.stop_channels()
        try:
            if self.km.has_kernel:
                run_sync(self.km.shutdown_kernel)(now=now)
        except Exception:  # noqa: BLE001 - already gone; its process is reaped below either way
            pass
        process = getattr(self.km.provisioner, "process", None)
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()


class KernelPool:
    """One kernel waiting for the next trial, started as soon as the previous trial's kernel is handed out."""

    def __init__(self, kernel_name: str = "python3", start_timeout_s: float = 300.0):
        self.kernel_name, self.start_timeout_s = kernel_name, start_timeout_s
        self.waiting: WarmKernel | None = None
        self.server: forkserver.ForkServer | None = None
        self.server_ended = 0  # fork servers that died; after two, kernels start on their own
        self.replaced = 0
        atexit.register(self.close)

    def take(self, config: dict, cwd: str, label: str = "this trial") -> WarmKernel:
        """A ready kernel for a trial like `config`: the waiting one, or a fresh one if it died while waiting (told
        on stderr, not a failure of the trial); then the next kernel starts, preparing a trial like this one."""
        kernel, self.waiting = self.waiting, None
        try:
            for _ in range(READY_TRIES):
                if kernel is None:
                    kernel = WarmKernel(config, self.kernel_name, cwd, self._server(config))
                if kernel.wait_ready(self.start_timeout_s):
                    break
                print(f"warm kernel {kernel.pid} died while waiting (exit {kernel.exit_code()}); starting a fresh "
                      f"one for {label}", file=sys.stderr, flush=True)
                kernel.shutdown(now=True)
                kernel = None
                self.replaced += 1
            else:
                raise RuntimeError(f"kernel died: {READY_TRIES} kernels in a row died before {label} started; "
                                   "see the kernel's own error by running notebooks/trial.ipynb by hand")
            self.waiting = WarmKernel(config, self.kernel_name, cwd, self._server(config))
        except BaseException:
            if kernel is not None:
                kernel.shutdown(now=True)
            raise
        return kernel

    def _server(self, config: dict) -> forkserver.ForkServer | None:
        """The fork server kernels are forked from, prepared for a trial like the first one asked for (started
        again once if it died); None where kernels start on their own: no fork, not the python3 kernel, a server
        that found forking unsafe (CUDA initialised while preparing), or two servers ended."""
        if not forkserver.SUPPORTED or self.kernel_name != "python3":
            return None
        if self.server is not None and not self.server.alive():
            code = self.server.process.returncode
            self.server_ended += 1 if code != forkserver.UNSAFE else 2
            print(f"fork server {self.server.process.pid} ended (exit {code}); "
                  + ("starting another" if self.server_ended < 2 else "kernels start on their own from now on"),
                  file=sys.stderr, flush=True)
            self.server.close()
            self.server = None
        if self.server is None and self.server_ended < 2:
            self.server = forkserver.ForkServer(config, env={**os.environ, fence.ENV: fence_path()})
        return self.server

    def close(self) -> None:
        """Shut the waiting kernel and the fork server down (the sweep is over or interrupted)."""
        kernel, self.waiting = self.waiting, None
        if kernel is not None:
            kernel.shutdown(now=True)
        server, self.server = self.server, None
        if server is not None:
            server.close()


class WarmKernelEngine(NBClientEngine):
    """papermill's nbclient engine on a kernel started beforehand (`kernel=`, a WarmKernel): nbclient connects to
    it and neither starts nor shuts it down; the executor shuts it down after the trial."""

    @classmethod
    def execute_managed_notebook(cls, nb_man, kernel_name, kernel: WarmKernel | None = None, **kwargs):
        if kernel is None:
            raise ValueError(f"engine {ENGINE!r}: pass kernel=<a started WarmKernel>")
        return super().execute_managed_notebook(nb_man, kernel_name, km=kernel.km, **kwargs)


papermill_engines.register(ENGINE, WarmKernelEngine)
