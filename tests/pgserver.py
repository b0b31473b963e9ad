"""A throw-away PostgreSQL server for tests and benchmarks: Debian's `postgresql`, in a temporary folder,
listening on a Unix socket only, stopped and removed afterwards.

    with temporary_server() as pg:
        url = pg.url("workbench")      # postgresql://postgres@/workbench?host=/tmp/wb-pg-xxxx
        pg.restart()                   # fast restart: every connection is cut, the data stays

`initdb` and `pg_ctl` refuse to run as root, so as root they run as the `postgres` user (`runuser`).
`make test` installs the package when it is missing (apt-get, as root).
"""
from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path


def binaries() -> Path | None:
    """The folder of initdb/pg_ctl (Debian keeps them out of PATH), or None if PostgreSQL is not installed."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


class Server:
    def __init__(self, root: Path, bindir: Path):
        self.root, self.bindir = root, bindir
        self.data, self.socket_dir, self.log = root / "data", root, root / "server.log"

    def _run(self, *args: str) -> None:
        command = [str(self.bindir / args[0]), *args[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def _ctl(self, action: str, *extra: str) -> None:
        options = f"-k {self.socket_dir} -c listen_addresses='' -c fsync=off -c max_connections=200"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-o", options, *extra, action)

    def start(self) -> None:
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync")
        self._ctl("start")

    def restart(self) -> None:
        """Stop (cutting every connection, `-m fast`) and start again on the same socket."""
        self._ctl("restart", "-m", "fast")

    def stop(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self._run("pg_ctl", "-D", str(self.data), "-w", "-m", "immediate", "stop")

    def create_database(self, name: str) -> None:
        subprocess.run([str(self.bindir / "createdb"), "-h", str(self.socket_dir), "-U", "postgres", name],
                       check=True, capture_output=True, timeout=60)

    def url(self, database: str) -> str:
        """A storage URL for workbench (psycopg 3 is chosen by workbench for postgresql://)."""
        return f"postgresql://postgres@/{database}?host={self.socket_dir}"


@contextlib.contextmanager
def temporary_server():
    bindir = binaries()
    if bindir is None:
        raise RuntimeError("PostgreSQL is not installed: apt-get install -y postgresql (make test does it as root)")
    root = Path(tempfile.mkdtemp(prefix="wb-pg-", dir="/tmp"))  # short: a Unix socket path has ~100 bytes
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    server = Server(root, bindir)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
