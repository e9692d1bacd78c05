"""The warm-start server (linpath.cli.warm describes it): imports the heavy modules once, then forks one child per
`linpath` command that connects, and runs the command's verb in it."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from . import commands as cli
from .warm import LENGTH, OWNER_ENV, PREFIX_ENV, SOCKET_ENV, STDIO

FOLDER_PREFIX = "linpath-warm-"  # Server's socket folder under the temp dir

# What the verbs import; a module missing here only costs its import in each child.
PRELOAD = ("torch", "torchvision", "pandas", "pyarrow.parquet", "linpath.engine.train", "linpath.paths.sweeps",
           "linpath.paths.barrier", "linpath.paths.shapes", "linpath.report.tables", "linpath.report.figures")


def serve(path: str, *, parent: int | None = None, idle_exit: float = 900.0, preload=PRELOAD) -> None:
    """Listen on `path`, import `preload`, then fork one child per connection until the parent is
    gone, nothing connected for `idle_exit` seconds, or SIGTERM."""
    os.environ.pop(SOCKET_ENV, None)  # a child must run its verb, not forward it again
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)  # bound before the imports: early commands wait in the backlog instead of falling back
    listener.listen(64)
    for name in preload:
        importlib.import_module(name)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    listener.settimeout(2.0)
    last = time.monotonic()
    try:
        while True:
            if parent is not None and not _alive(parent):
                return
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                if time.monotonic() - last > idle_exit:
                    return
                continue
            last = time.monotonic()
            sys.stdout.flush()
            sys.stderr.flush()
            if os.fork() == 0:
                listener.close()
                os._exit(_child(conn))
            conn.close()
    finally:
        listener.close()
        Path(path).unlink(missing_ok=True)
        _remove_own_folder(Path(path).parent)


def _remove_own_folder(folder: Path) -> None:
    """The empty folder Server made for the socket: gone too when Snakemake died before `stop`."""
    if folder.name.startswith(FOLDER_PREFIX):
        try:
            folder.rmdir()
        except OSError:  # not empty, or already gone
            pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _child(conn: socket.socket) -> int:
    """Become the command: its stdio, directory and environment; run the verb; report the status."""
    for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        header, fds, _, _ = socket.recv_fds(conn, 64, len(STDIO))
        targets = json.loads(header.decode())
        (length,) = LENGTH.unpack(_read_exactly(conn, LENGTH.size))
        request = json.loads(_read_exactly(conn, length))
    except (OSError, ValueError, struct.error):
        return 1
    for fd, target in zip(fds, targets):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    conn.sendall(json.dumps({"pid": os.getpid()}).encode() + b"\n")
    threading.Thread(target=_exit_with_command, args=(conn,), daemon=True).start()
    try:
        code = cli.run_verb(cli.build_parser().parse_args(request["argv"]))
    except SystemExit as stop:  # argparse: --help, or bad arguments
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 2)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(f"linpath: warm-started job: {usage.ru_utime + usage.ru_stime:.1f} CPU-s, peak RSS "
          f"{usage.ru_maxrss / 1024:.0f} MB (Snakemake's benchmark file sees only the forwarding command)",
          file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        conn.sendall(json.dumps({"exit": code}).encode() + b"\n")
    except OSError:
        pass
    return code


def _exit_with_command(conn: socket.socket) -> None:
    """The command sends nothing after its request: a return from recv means it is gone."""
    try:
        conn.recv(1)
    except OSError:
        pass
    os._exit(137)


def _read_exactly(conn: socket.socket, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = conn.recv(left)
        if not chunk:
            raise ValueError("connection closed")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


# --- starting and stopping (Snakefile onstart / onsuccess / onerror) ---------------------------


class Server:
    """A warm-start server process and its socket, started for the lifetime of a Snakemake run."""

    def __init__(self, log: str | Path | None = None, python_path: str | None = None, idle_exit: float = 900.0):
        self.folder = tempfile.mkdtemp(prefix=FOLDER_PREFIX)  # short (Unix socket paths ≤ 107 bytes), private (0700)
        self.path = os.path.join(self.folder, "socket")
        env = dict(os.environ)
        env.pop(SOCKET_ENV, None)
        if python_path:
            env["PYTHONPATH"] = python_path + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        if log:
            Path(log).parent.mkdir(parents=True, exist_ok=True)
        out = open(log, "ab") if log else subprocess.DEVNULL
        self.process = subprocess.Popen(
            [sys.executable, "-m", "linpath.cli.warm_server", self.path, "--parent", str(os.getpid()), "--idle-exit", str(idle_exit)],
            env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)
        if log:
            out.close()
        self._wait_bound()

    def _wait_bound(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not os.path.exists(self.path) and self.process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)

    def job_variables(self) -> dict[str, str]:
        """The environment under which a job's `linpath` command is forwarded here (linpath.cli.warm.forward):
        the socket, this interpreter and the process the jobs must descend from (this one)."""
        return {SOCKET_ENV: self.path, PREFIX_ENV: os.path.realpath(sys.prefix), OWNER_ENV: str(os.getpid())}

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        Path(self.path).unlink(missing_ok=True)
        try:
            os.rmdir(self.folder)
        except OSError:
            pass


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m linpath.cli.warm_server", description=__doc__.splitlines()[0])
    p.add_argument("socket", help="Unix socket path to listen on")
    p.add_argument("--parent", type=int, default=None, help="exit when this process is gone")
    p.add_argument("--idle-exit", type=float, default=900.0, help="exit after this many seconds without a job")
    args = p.parse_args(argv)
    serve(args.socket, parent=args.parent, idle_exit=args.idle_exit)


if __name__ == "__main__":
    main()
