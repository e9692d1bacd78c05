"""Warm start: `linpath` jobs forked from one process that has already imported torch.

Why: a workflow job of the embedded default computes for a few seconds, and
importing torch, torchvision (which pulls in torch._dynamo) and pandas costs
about 4.5 s of CPU per process on the development machine: over 128 jobs,
a quarter of the default run. With warm start on, Snakemake (locally, never
on a cluster) starts one server that imports those modules once and listens
on a Unix socket; every `linpath` command of a job then sends its arguments,
working directory, environment and stdin/stdout/stderr to the server, which
forks a child that runs the verb exactly as the command would have, and
returns its exit status. When no server answers, the command runs by itself.

What stays the same: the child is a fresh process (fork: its own memory,
seeds set by the verb), it writes through the job's own file descriptors,
and the command exits with the verb's status. A SIGTERM or SIGINT to the
command is passed on to the child; a command that dies (SIGKILL) takes its
child with it. What differs: Snakemake's `benchmark:` files time the command
correctly but see only its thin client for CPU and memory, so the child
writes its own CPU time and peak RSS at the end of the job's log.

The server exits when its parent (Snakemake) is gone, after `idle_exit`
seconds without a job, or on SIGTERM; it is started with start_new_session,
so a Ctrl-C in the terminal reaches the jobs' commands, not the server.
"""

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

SOCKET_ENV = "LINPATH_WARM_SOCKET"
# What the verbs import; a module missing here only costs its import in each child.
PRELOAD = ("torch", "torchvision", "pandas", "pyarrow.parquet", "linpath.train", "linpath.paths",
           "linpath.barrier", "linpath.shapes", "linpath.tables", "linpath.cli")
_LENGTH = struct.Struct("!Q")
_STDIO = (0, 1, 2)


# --- the command's side ------------------------------------------------------------------------


def forward(argv: list[str]) -> int | None:
    """Run `linpath argv` in a child of the warm-start server named by $LINPATH_WARM_SOCKET and return
    its exit status; None when no server is set or none answers (the caller then runs it itself)."""
    path = os.environ.get(SOCKET_ENV)
    if not path:
        return None
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
    except OSError:
        conn.close()
        return None
    with conn:
        env = {k: v for k, v in os.environ.items() if k != SOCKET_ENV}
        request = json.dumps({"argv": list(argv), "cwd": os.getcwd(), "env": env}).encode()
        fds = [fd for fd in _STDIO if _is_open(fd)]
        socket.send_fds(conn, [json.dumps(fds).encode().ljust(64)], fds)
        conn.sendall(_LENGTH.pack(len(request)) + request)
        reader = conn.makefile("rb")
        hello = reader.readline()
        if not hello:
            return None  # the server went away before forking: run it here
        child = json.loads(hello)["pid"]
        passed_on: list[int] = []

        def pass_on(signum, _frame):
            passed_on.append(signum)
            try:
                os.kill(child, signum)
            except ProcessLookupError:
                pass

        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, pass_on)
        status = reader.readline()
    if not status and passed_on:
        return 128 + passed_on[-1]
    if not status:
        print(f"linpath: the warm-start child {child} ended without an exit status (killed?)", file=sys.stderr)
        return 1
    return int(json.loads(status)["exit"])


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


# --- the server's side -------------------------------------------------------------------------


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
        header, fds, _, _ = socket.recv_fds(conn, 64, len(_STDIO))
        targets = json.loads(header.decode())
        (length,) = _LENGTH.unpack(_read_exactly(conn, _LENGTH.size))
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
    from . import cli

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
        self.folder = tempfile.mkdtemp(prefix="linpath-warm-")  # short (Unix socket paths ≤ 107 bytes), private (0700)
        self.path = os.path.join(self.folder, "socket")
        env = dict(os.environ)
        env.pop(SOCKET_ENV, None)
        if python_path:
            env["PYTHONPATH"] = python_path + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        if log:
            Path(log).parent.mkdir(parents=True, exist_ok=True)
        out = open(log, "ab") if log else subprocess.DEVNULL
        self.process = subprocess.Popen(
            [sys.executable, "-m", "linpath.warm", self.path, "--parent", str(os.getpid()), "--idle-exit", str(idle_exit)],
            env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)
        if log:
            out.close()
        self._wait_bound()

    def _wait_bound(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not os.path.exists(self.path) and self.process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)

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
    p = argparse.ArgumentParser(prog="python -m linpath.warm", description=__doc__.splitlines()[0])
    p.add_argument("socket", help="Unix socket path to listen on")
    p.add_argument("--parent", type=int, default=None, help="exit when this process is gone")
    p.add_argument("--idle-exit", type=float, default=900.0, help="exit after this many seconds without a job")
    args = p.parse_args(argv)
    serve(args.socket, parent=args.parent, idle_exit=args.idle_exit)


if __name__ == "__main__":
    main()
