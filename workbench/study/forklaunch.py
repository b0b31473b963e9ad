"""The process jupyter_client starts for a forked kernel: asks the study's fork server for a kernel and stands in
for it until it ends. Run by path with the standard library only, so it starts in tens of milliseconds.

    python forklaunch.py SERVER_SOCKET -f CONNECTION_FILE [kernel arguments...]

It sends the server its arguments, working folder, environment and standard streams (SCM_RIGHTS), gets the forked
kernel's pid, forwards every signal jupyter_client sends it (an interrupt is SIGINT) to the kernel, and exits with
the kernel's exit status. If this process is killed, its socket closes and the kernel ends itself
(`workbench.study.forkserver`); if its parent (the sweep) dies, it ends the kernel and exits.
"""
import json
import os
import select
import signal
import socket
import struct
import sys
import time

CONNECT_S = 60.0
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


def main(argv: list[str]) -> int:
    path, kernel_args = argv[0], argv[1:]
    parent = os.getppid()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    deadline = time.monotonic() + CONNECT_S
    while True:  # the server binds its socket as it starts, a moment after it was launched
        try:
            sock.connect(path)
            break
        except OSError as e:
            if time.monotonic() > deadline or os.getppid() != parent:
                print(f"workbench fork server at {path} cannot be reached ({e}); the kernel was not started",
                      file=sys.stderr, flush=True)
                return 1
            time.sleep(0.05)
    request = json.dumps({"argv": kernel_args, "cwd": os.getcwd(), "env": dict(os.environ),
                          "launcher": os.getpid()}).encode()
    socket.send_fds(sock, [struct.pack("!Q", len(request)) + request], [0, 1, 2])
    lines = _Lines(sock)
    first = lines.next(None) or []
    if first[:1] != ["pid"]:
        print(f"workbench fork server gave no kernel ({' '.join(first) or 'it closed the connection'})",
              file=sys.stderr, flush=True)
        return 1
    kernel = int(first[1])

    def forward(signum, _frame):
        try:
            os.kill(kernel, signum)
        except ProcessLookupError:
            pass

    for signum in FORWARDED:
        signal.signal(signum, forward)
    while True:
        line = lines.next(1.0)
        if line is None:
            if os.getppid() != parent:  # the sweep is gone: end the kernel with it
                forward(signal.SIGKILL, None)
                return 1
            continue
        if line[:1] == ["exit"]:
            status = int(line[1])
            return status if status >= 0 else 128 - status
        return 1  # the server went away (an empty line): its kernels went with it


class _Lines:
    """Lines from a socket: next(timeout) is a line's words, [] at end of stream, None if none came in time."""

    def __init__(self, sock: socket.socket):
        self.sock, self.buffer = sock, b""

    def next(self, timeout: float | None):
        while b"\n" not in self.buffer:
            try:
                ready, _, _ = select.select([self.sock], [], [], timeout)
            except InterruptedError:
                continue
            if not ready:
                return None
            chunk = self.sock.recv(4096)
            if not chunk:
                return []
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode().split()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
