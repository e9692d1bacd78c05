"""The installed `linpath` console script, as a user meets it: for input errors of every verb, stderr is
exactly one line "linpath <verb>: error: ..." with no traceback, and the exit status says what kind of
error it was (2 bad input, 3 diverged). `--debug` shows the traceback. The message of each error is
tested in-process (test_cli.py, test_corrupt_files.py); here each verb runs as a subprocess.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import run_cli


def _bad_number(tmp: Path, _) -> list[str]:
    config = tmp / "bad.yaml"
    config.write_text("model: {arch: mlp, hidden: [8]}\ntrain: {lr: .nan, device: cpu}\n")
    return ["train", "--config", str(config), "--out", str(tmp / "run")]


def _diverging(tmp: Path, _) -> list[str]:
    config = tmp / "diverging.yaml"
    config.write_text("model: {arch: mlp, hidden: [8]}\ntrain: {lr: 1.0e+12, epochs: 2, device: cpu}\n")
    return ["train", "--config", str(config), "--out", str(tmp / "run"), "--no-progress", "--threads", "1"]


def _damaged_final_state(tmp: Path, run: Path) -> list[str]:
    shutil.copytree(run, tmp / "run")
    (tmp / "run" / "final.pt").write_bytes((run / "final.pt").read_bytes()[:100])
    return ["interpolate", "--run", str(tmp / "run"), "--out", str(tmp / "p.parquet"), "--eval-cache",
            str(tmp / "cache"), "--no-progress"]


def _bad_alphas(tmp: Path, run: Path) -> list[str]:
    return ["interpolate", "--run", str(run), "--out", str(tmp / "p.parquet"), "--alphas", "0:inf:5"]


def _not_parquet(tmp: Path, _) -> list[str]:
    (tmp / "paths.parquet").write_text("alpha,loss\n0,2.3\n")
    return ["barrier-init", "--sweep", str(tmp / "paths.parquet"), "--out", str(tmp / "barrier")]


def _shapes_not_parquet(tmp: Path, run: Path) -> list[str]:
    (tmp / "shapes.parquet").write_bytes(b"PAR1 and then nothing")
    return ["barrier-groups", "--shapes", str(tmp / "shapes.parquet"), "--run-yaml", str(run / "run.yaml"),
            "--out", str(tmp / "groups.yaml")]


def _no_verb(tmp: Path, _) -> list[str]:
    return []


CASES = [  # (command, verb in the message, exit status, part of the message)
    (_bad_number, "train", 2, "train.lr must be a finite number"),
    (_diverging, "train", 3, "diverged: training loss nan in epoch 1"),
    (_damaged_final_state, "interpolate", 2, "final.pt"),
    (_bad_alphas, "interpolate", 2, "argument --alphas: must hold finite numbers"),
    (_not_parquet, "barrier-init", 2, "is not a readable parquet table"),
    (_shapes_not_parquet, "barrier-groups", 2, "is not a readable parquet table"),
    (_no_verb, "", 2, "the following arguments are required"),
]


@pytest.mark.parametrize("command, verb, status, message", CASES, ids=[c[0].__name__.strip("_") for c in CASES])
def test_one_line_and_the_exit_status(command, verb, status, message, tmp_path, trained_mlp):
    proc = run_cli(command(tmp_path, trained_mlp[0]))
    assert proc.returncode == status, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"linpath {verb}: error: " if verb else "linpath: error: ") and message in lines[0]
    assert proc.stdout == ""
    assert not (tmp_path / "run" / "final.pt").exists() or command is _damaged_final_state, "no trained run is left"


def test_debug_shows_the_traceback(tmp_path):
    proc = run_cli(["--debug", *_bad_number(tmp_path, None)])
    assert proc.returncode == 2
    assert "Traceback (most recent call last)" in proc.stderr and "SettingsError" in proc.stderr
    assert proc.stderr.splitlines()[-1].startswith("linpath train: error: ")


def test_help_lists_the_exit_statuses():
    proc = run_cli(["--help"])
    assert proc.returncode == 0
    for status in ("0 ", "1 ", "2 ", "3 ", "130 "):
        assert f"\n  {status}" in proc.stdout
    assert "--debug" in proc.stdout
