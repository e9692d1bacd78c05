"""Warm start: `linpath` jobs forked from one process that has already imported torch.

This package is the client (`forward`, imported by linpath.__main__ before anything heavy) and
the protocol both sides share; linpath.cli.warm_server is the server, and its Server starts one.

Why: a workflow job of the embedded default computes for a few seconds, and
importing torch, torchvision (which pulls in torch._dynamo) and pandas costs
about 4.5 s of CPU per process on the development machine: over 128 jobs,
about a third of the default run. With warm start on, Snakemake (locally, never
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

The server (linpath.cli.warm_server) exits when its parent (Snakemake) is gone, after `idle_exit`
seconds without a job, or on SIGTERM; it is started with start_new_session,
so a Ctrl-C in the terminal reaches the jobs' commands, not the server.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import sys

SOCKET_ENV = "LINPATH_WARM_SOCKET"
# Set beside SOCKET_ENV (warm_server.Server.job_variables): what a command checks before it forwards. The
# server runs one interpreter (its sys.prefix) and serves the jobs of one process (the Snakemake that
# started it): a command in another interpreter (a job under `--sdm conda` runs its environment's python)
# or outside that process's descendants (a cluster job that landed on the same machine) runs by itself.
PREFIX_ENV = "LINPATH_WARM_PREFIX"
OWNER_ENV = "LINPATH_WARM_OWNER"
LENGTH = struct.Struct("!Q")  # the request's length, sent before it
STDIO = (0, 1, 2)


# --- the command's side ------------------------------------------------------------------------


def forward(argv: list[str]) -> int | None:
    """Run `linpath argv` in a child of the warm-start server named by $LINPATH_WARM_SOCKET and return
    its exit status; None when no server is set or none answers (the caller then runs it itself)."""
    path = os.environ.get(SOCKET_ENV)
    if not path or not servable():
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
        fds = [fd for fd in STDIO if _is_open(fd)]
        socket.send_fds(conn, [json.dumps(fds).encode().ljust(64)], fds)
        conn.sendall(LENGTH.pack(len(request)) + request)
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


def servable() -> bool:
    """Whether the server named in the environment may run this command: it runs in the server's interpreter
    and descends from the process the server serves (PREFIX_ENV, OWNER_ENV). Facts of this process, not of
    how Snakemake was started: a command that fails either check runs by itself, as it would without a server."""
    if os.environ.get(PREFIX_ENV) != os.path.realpath(sys.prefix):
        return False
    try:
        owner = int(os.environ.get(OWNER_ENV, ""))
    except ValueError:
        return False
    pid = os.getppid()
    while pid > 1:
        if pid == owner:
            return True
        pid = _parent_of(pid)
    return False


def _parent_of(pid: int) -> int:
    """The parent of process `pid` (0 when it cannot be read): /proc on Linux, else `ps`."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[1])  # after "(command name)": state, then the parent
    except FileNotFoundError:
        if os.path.isdir("/proc/self"):
            return 0  # Linux, and that process is gone
    except (OSError, ValueError, IndexError):
        return 0
    import subprocess

    try:
        out = subprocess.run(["ps", "-o", "ppid=", "-p", str(pid)], capture_output=True, text=True, timeout=10).stdout
        return int(out.strip() or 0)
    except (OSError, ValueError, subprocess.SubprocessError):
        return 0


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True
