"""A fork server for trial kernels: one process per sweep imports the ML stack and prepares the experiment's model
and quality networks once (`workbench.study.prepare`), then forks a fresh process for every trial's kernel.

    server = ForkServer(config)        # starts preparing now; `socket` is where launchers connect
    ... jupyter_client starts `forklaunch.py <server.socket> -f <connection file>` for each kernel ...
    server.close()

Why: a kernel started from scratch imports torch, diffusers, transformers and torchmetrics (about 10 s of one core
on a 2-core CPU) and loads the model and the FID and CLIP networks again. On such a machine that work cannot hide
behind a trial that itself uses both cores, so a kernel that prepares while the previous trial runs still costs
about as much as one started for the trial. A forked process has all of it at once (copy-on-write), and it is
still a new process: every trial gets its own kernel, its own globals and its own module state, and a trial's
changes never reach the server or a later trial.

Fork safety: the server computes on one thread (`torch.set_num_threads(1)` before any work), so no OpenMP thread
pool exists to be lost across fork (GNU OpenMP hangs in a child whose parent had one); each kernel sets the
caller's thread count again. The server never touches a GPU (`PYTORCH_NVML_BASED_CUDA_CHECK=1`: asking whether
CUDA is there does not initialise it), so each kernel initialises CUDA itself. Linux and macOS (fork and Unix
sockets); elsewhere the warm executor starts kernels as before.

A kernel process ends when its launcher goes (its connection closes), when the server goes (Linux: parent-death
signal), or as any ipykernel does when shut down.
"""
from __future__ import annotations

import contextlib
import ctypes
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import traceback
from pathlib import Path

from workbench.study import prepare

LAUNCHER = str(Path(__file__).with_name("forklaunch.py"))
SERVER_OF = "WORKBENCH_FORK_SERVER_OF"  # in the server's (and so every forked kernel's) initial environment
UNSAFE = 3  # the server's exit status when forking would not be safe (CUDA initialised while preparing)
SUPPORTED = hasattr(os, "fork") and hasattr(socket, "send_fds") and sys.platform != "win32"


class ForkServer:
    """The server process of one kernel pool, preparing a trial like `config` before it forks any kernel."""

    def __init__(self, config: dict, env: dict | None = None):
        self.folder = tempfile.mkdtemp(prefix="wb-fork-")
        self.socket = os.path.join(self.folder, "server.sock")
        env = {**(env or os.environ), SERVER_OF: str(os.getpid()), "PYTORCH_NVML_BASED_CUDA_CHECK": "1"}
        self.process = subprocess.Popen([sys.executable, "-m", "workbench.study.forkserver", self.socket,
                                         json.dumps(config)], env=env, start_new_session=True,
                                        stdin=subprocess.DEVNULL)

    def alive(self) -> bool:
        return self.process.poll() is None

    def close(self) -> None:
        """End the server; kernels it forked end with it."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for name in os.listdir(self.folder):
            os.unlink(os.path.join(self.folder, name))
        os.rmdir(self.folder)


@contextlib.contextmanager
def torchao_hidden(torch):
    """On a CUDA host, preparation imports the stack with torchao looking absent. transformers and diffusers import an
    installed torchao for their own torchao quantizers, and torchao's import reads the device's compute capability,
    which initialises CUDA: the server could then fork no kernel (seen on an H100, where every kernel started cold).
    Afterwards torchao is importable again: a kernel imports it when its trial asks for the torchao knob (the
    workbench calls torchao itself, never through the libraries' quantizer classes, which stay off in kernels forked
    from here)."""
    if "torchao" in sys.modules or not torch.cuda.is_available():  # NVML-based here: no CUDA context either way
        yield
        return
    sys.modules["torchao"] = None  # importlib: a None entry makes `import torchao` fail and find_spec answer None
    try:
        yield
    finally:
        if sys.modules.get("torchao", 0) is None:
            del sys.modules["torchao"]


def serve(path: str, config: dict) -> None:
    """The server: bind first (launchers queue while it prepares), prepare, then fork one kernel per request."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(16)
    parent = os.getppid()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    import torch  # heavy: the stack every kernel needs, imported once here

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # before any work: no OpenMP pool may exist when we fork

    with torchao_hidden(torch):  # imports the trial's stack (torch, diffusers, transformers, torchmetrics)
        report = prepare.prepare(config)
    import ipykernel.kernelapp  # noqa: F401  # heavy: IPython, zmq and tornado, imported once for every kernel

    if torch.cuda.is_initialized():  # a forked child could not use the GPU: let the pool start kernels itself
        by = report.get("cuda_initialised_by") or "importing ipykernel"
        print(f"workbench fork server: CUDA was initialised while preparing (by {by}); kernels will not be forked",
              file=sys.stderr, flush=True)
        sys.exit(UNSAFE)

    launchers: dict[int, socket.socket] = {}  # kernel pid -> its launcher's connection
    while True:
        ready, _, _ = select.select([listener], [], [], 0.2)
        if ready:
            conn, _ = listener.accept()
            try:
                request, fds = _receive(conn)
            except (OSError, ValueError) as e:
                print(f"workbench fork server: a bad request ({e})", file=sys.stderr, flush=True)
                conn.close()
                continue
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:  # the kernel
                listener.close()
                for other in launchers.values():
                    other.close()
                _kernel(request, fds, conn, threads)  # never returns
            for fd in fds:
                os.close(fd)
            conn.sendall(f"pid {pid}\n".encode())
            launchers[pid] = conn
        while launchers:  # reap ended kernels; tell their launchers how they ended
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            conn = launchers.pop(pid, None)
            if conn is not None:
                code = os.waitstatus_to_exitcode(status)
                try:
                    conn.sendall(f"exit {code}\n".encode())
                except OSError:
                    pass
                conn.close()
        if os.getppid() != parent:  # the sweep is gone
            return


def _receive(conn: socket.socket) -> tuple[dict, list[int]]:
    data, fds, _, _ = socket.recv_fds(conn, 1 << 16, 3)
    if len(data) < 8:
        raise ValueError("no length")
    (size,) = struct.unpack("!Q", data[:8])
    data = data[8:]
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ValueError("connection closed")
        data += chunk
    return json.loads(data), list(fds)


def _kernel(request: dict, fds: list[int], conn: socket.socket, threads: int) -> None:
    """In the forked child: become the launcher's kernel (its streams, folder, environment), run ipykernel, exit."""
    code = 1
    try:
        os.setsid()
        for signum in (signal.SIGTERM, signal.SIGCHLD, signal.SIGHUP):
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        _die_with_server()
        for target, fd in zip((0, 1, 2), fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        import torch  # heavy: already imported by the server

        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or threads))
        threading.Thread(target=_die_with_launcher, args=(conn,), daemon=True).start()
        prepare.forked()
        from ipykernel.kernelapp import IPKernelApp  # heavy: already imported by the server

        # its parent is this server, not the process that asked for it: ipykernel's parent poller (and its
        # connection banner, printed only without a parent) must watch the server
        IPKernelApp.launch_instance(argv=[*request["argv"], f"--IPKernelApp.parent_handle={os.getppid()}"])
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 0
    except BaseException:  # noqa: BLE001 - reported on the kernel's stderr, then the process ends
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001
                pass
        os._exit(code)


def _die_with_launcher(conn: socket.socket) -> None:
    """The launcher never writes after its request: end of stream means it is gone (killed), and so is this kernel."""
    try:
        while conn.recv(1):
            pass
    except OSError:
        pass
    os.kill(os.getpid(), signal.SIGKILL)


def _die_with_server() -> None:
    """Linux: this kernel gets SIGKILL when the server ends (elsewhere ipykernel's parent poller ends it)."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


if __name__ == "__main__":
    serve(sys.argv[1], json.loads(sys.argv[2]))
