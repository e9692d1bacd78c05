"""Warm start (linpath.cli.warm): a command forwarded to the server's child does what it does alone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from conftest import assert_states_equal, linpath_command, load_tensors, run_dict, subprocess_env
from linpath.cli.commands import EXIT_INPUT
from linpath.cli.warm import OWNER_ENV, PREFIX_ENV, SOCKET_ENV
from linpath.cli.warm_server import Server

WARM_LINE = "warm-started job"


@pytest.fixture
def server(tmp_path):
    started = Server(log=tmp_path / "warm.log")
    yield started
    started.stop()


def warm_env(server: Server) -> dict[str, str]:
    return {**subprocess_env(), **server.job_variables()}


def linpath(args, env, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(linpath_command() + args, capture_output=True, text=True, timeout=300, env=env, **kwargs)


def wait_for(condition, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.mark.slow
def test_a_forwarded_training_run_equals_one_run_alone(server, write_config, tmp_path):
    config = write_config(run_dict("mlp", train={"epochs": 3}))
    warm = linpath(["train", "--config", str(config), "--out", str(tmp_path / "warm"), "--threads", "1",
                    "--no-progress"], warm_env(server))
    alone = linpath(["train", "--config", str(config), "--out", str(tmp_path / "alone"), "--threads", "1",
                     "--no-progress"], subprocess_env())
    assert warm.returncode == 0 and alone.returncode == 0, warm.stderr + alone.stderr
    assert WARM_LINE in warm.stderr and WARM_LINE not in alone.stderr  # it really ran in the server's child
    assert "3 epochs" in warm.stdout  # the child wrote to the command's own stdout
    assert_states_equal(load_tensors(tmp_path / "warm" / "final.pt"), load_tensors(tmp_path / "alone" / "final.pt"))


def test_the_child_works_in_the_commands_folder_and_environment(server, write_config, tmp_path):
    config = write_config(run_dict("mlp", train={"epochs": 1}))
    (tmp_path / "here").mkdir()
    done = linpath(["train", "--config", str(config), "--out", "relative/run", "--no-progress"], warm_env(server),
                   cwd=tmp_path / "here")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "here" / "relative" / "run" / "final.pt").is_file()


def test_errors_and_exit_status_come_back_unchanged(server, write_config, tmp_path):
    bad = write_config(run_dict("mlp", train={"lr": -1.0}))
    args = ["train", "--config", str(bad), "--out", str(tmp_path / "run"), "--no-progress"]
    warm = linpath(args, warm_env(server))
    alone = linpath(args, subprocess_env())
    assert warm.returncode == alone.returncode == EXIT_INPUT
    assert "train.lr" in warm.stderr
    assert warm.stderr.splitlines()[0] == alone.stderr.splitlines()[0]
    usage = ["train", "--out", str(tmp_path / "run"), "--config", str(bad), "--no-such-flag"]
    warm, alone = linpath(usage, warm_env(server)), linpath(usage, subprocess_env())
    assert warm.returncode == alone.returncode == 2 and "--no-such-flag" in warm.stderr
    assert warm.stderr.splitlines()[0] == alone.stderr.splitlines()[0]


def test_without_a_server_the_command_runs_by_itself(write_config, tmp_path):
    config = write_config(run_dict("mlp", train={"epochs": 1}))
    env = {**subprocess_env(), SOCKET_ENV: str(tmp_path / "nobody-listens")}
    done = linpath(["train", "--config", str(config), "--out", str(tmp_path / "run"), "--no-progress"], env)
    assert done.returncode == 0, done.stderr
    assert WARM_LINE not in done.stderr and (tmp_path / "run" / "final.pt").is_file()


@pytest.mark.parametrize("which", ["another interpreter", "not the server's job"])
def test_a_command_the_server_does_not_serve_runs_by_itself(server, write_config, tmp_path, which):
    """Under `--sdm conda` a job runs its environment's python, not the server's; a cluster job that lands
    on Snakemake's machine descends from the cluster's daemon, not from Snakemake. Both run by themselves."""
    config = write_config(run_dict("mlp", train={"epochs": 1}))
    env = warm_env(server)
    stranger = None
    if which == "another interpreter":
        env[PREFIX_ENV] = str(tmp_path / "another-prefix")
    else:
        stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        env[OWNER_ENV] = str(stranger.pid)  # alive, but no ancestor of the command
    try:
        done = linpath(["train", "--config", str(config), "--out", str(tmp_path / "run"), "--no-progress"], env)
    finally:
        if stranger is not None:
            stranger.kill()
            stranger.wait()
    assert done.returncode == 0, done.stderr
    assert WARM_LINE not in done.stderr and (tmp_path / "run" / "final.pt").is_file()
    assert not psutil.Process(server.process.pid).children(), "the server forked nothing"


def _long_run(server, write_config, tmp_path) -> tuple[subprocess.Popen, psutil.Process]:
    config = write_config(run_dict("mlp", train={"epochs": 100_000, "checkpoint_every": 100_000}))
    command = subprocess.Popen(linpath_command() + ["train", "--config", str(config), "--out", str(tmp_path / "run"),
                                                    "--no-progress"],
                               env=warm_env(server), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parent = psutil.Process(server.process.pid)
    wait_for(lambda: parent.children(), "the server to fork the command's child")
    return command, parent.children()[0]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_command_reaches_its_child(server, write_config, tmp_path, signum):
    command, child = _long_run(server, write_config, tmp_path)
    command.send_signal(signum)
    assert command.wait(60) != 0
    wait_for(lambda: not child.is_running() or child.status() == psutil.STATUS_ZOMBIE, "the child to end")
    assert not (tmp_path / "run" / "final.pt").exists()


def test_a_killed_command_takes_its_child_with_it(server, write_config, tmp_path):
    command, child = _long_run(server, write_config, tmp_path)
    command.kill()
    command.wait(60)
    wait_for(lambda: not child.is_running() or child.status() == psutil.STATUS_ZOMBIE, "the orphaned child to end")


def test_the_server_ends_with_its_parent(tmp_path):
    parent = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    folder = tmp_path / "linpath-warm-test"  # named as Server names its folder
    folder.mkdir()
    path = str(folder / "socket")
    serving = subprocess.Popen([sys.executable, "-m", "linpath.cli.warm_server", path, "--parent", str(parent.pid)],
                               env=subprocess_env())
    wait_for(lambda: os.path.exists(path), "the socket")
    time.sleep(1)
    assert serving.poll() is None
    parent.kill()
    parent.wait()
    assert serving.wait(90) == 0  # after its imports (seconds; more on a loaded machine)
    assert not os.path.exists(path)  # it cleans up after itself: the socket
    assert not folder.exists()  # and the folder Server made for it (Snakemake SIGKILLed never calls stop)
    assert tmp_path.exists()  # but nothing above it


def test_stop_ends_the_server_and_removes_its_socket(tmp_path):
    started = Server(log=tmp_path / "warm.log")
    assert os.path.exists(started.path)
    started.stop()
    assert started.process.poll() is not None
    assert not os.path.exists(started.path)
    assert not os.path.exists(started.folder)
