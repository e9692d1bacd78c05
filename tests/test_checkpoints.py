"""Checkpoints: kill-and-resume is bit-identical, unsafe pickles are refused, writes are atomic."""

from __future__ import annotations

import builtins
import os
import pickle
import shlex
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import (assert_states_equal, checkpoint_epoch, kill_when, linpath_command, load_tensors, run_dict,
                      subprocess_env)
from linpath.cli import commands as cli
from linpath.engine.data import DataError, load_eval_split
from linpath.foundations.hparams import RunSpec, SettingsError
from linpath.foundations.io import CheckpointError, atomic_path, load_checkpoint, load_state, save_torch
from linpath.engine.train import train

# --- kill -9 in the middle of a run, resume, compare with an uninterrupted run -------

EPOCHS = 6
RESUME_RUN = run_dict(
    "resnet18_w4",
    name="resume",
    data={"augment": "standard"},  # order, crops and flips are redrawn from (train.seed, epoch) on resume
    train={"epochs": EPOCHS, "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "batch_size": 64,
           "milestones": [4], "gamma": 0.1, "seed": 3, "save_epochs": [2]},
    init={"seed": 1},
)
SPARSE = {"checkpoint_every": 2, "eval_every": 3}  # checkpoints after 2 and 4; metrics at 0, 2, 3, 4, 6


def _kill_after_first_checkpoint(config: Path, out: Path) -> int:
    """Start `linpath train` and SIGKILL it once checkpoint.pt records a finished epoch."""
    proc = subprocess.Popen(
        linpath_command() + ["train", "--config", str(config), "--out", str(out), "--threads", "1",
                             "--no-progress", "--name", "resume"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=subprocess_env())
    kill_when(proc, lambda: (checkpoint_epoch(out / "checkpoint.pt") or 0) >= 1, "linpath train")
    return checkpoint_epoch(out / "checkpoint.pt")


@pytest.mark.parametrize("sparse", [False, True], ids=["every-epoch", "sparse-checkpoints-and-metrics"])
@pytest.mark.slow
def test_kill_and_resume_is_bit_identical(tmp_path, write_config, sparse):
    raw = {**RESUME_RUN, "train": {**RESUME_RUN["train"], **(SPARSE if sparse else {})}}
    config = write_config(raw)

    whole = tmp_path / "A"
    train(RunSpec.from_dict(raw), whole, progress=False)

    killed = tmp_path / "B"
    _kill_after_first_checkpoint(config, killed)
    assert not (killed / "final.pt").exists(), "the run was killed before it finished"
    ckpt = load_checkpoint(killed / "checkpoint.pt")
    k = ckpt["epoch"]
    assert 1 <= k < EPOCHS
    if sparse:
        assert k % 2 == 0, "checkpoints only after every second epoch"
    assert "init" not in ckpt and "rng_data" not in ckpt, "θ₀ lives in init.pt; data draws follow from the epoch"
    init_stamp = (killed / "init.pt").stat().st_ino, (killed / "init.pt").stat().st_mtime_ns

    # C: the same checkpoint, but init.pt deleted (as Snakemake does with a failed job's outputs)
    # and the global torch RNG scrambled: neither the data order nor the augmentation draw from it.
    control = tmp_path / "C"
    shutil.copytree(killed, control)
    (control / "init.pt").unlink()
    scrambled = dict(ckpt, rng_torch=torch.Generator().manual_seed(999).get_state())
    save_torch(scrambled, control / "checkpoint.pt")

    spec = RunSpec.from_yaml(config)
    result = train(spec, killed, progress=False)

    assert ((killed / "init.pt").stat().st_ino, (killed / "init.pt").stat().st_mtime_ns) == init_stamp, \
        "resuming must continue from checkpoint.pt, not start again"
    assert not (killed / "checkpoint.pt").exists()
    assert result.epochs == EPOCHS
    a = pd.read_parquet(whole / "metrics.parquet")
    for run in (killed, control):
        if run is control:
            train(RunSpec.from_yaml(config), control, progress=False)
        for name in ("final.pt", "epoch_2.pt", "init.pt"):
            assert_states_equal(load_tensors(run / name), load_tensors(whole / name))
        pd.testing.assert_frame_equal(a, pd.read_parquet(run / "metrics.parquet"), check_exact=True)
    if sparse:
        assert a["epoch"].tolist() == [0, 2, 3, 4, 6] and a["lr"].tolist() == pytest.approx([0.05] * 4 + [0.005])
    else:
        assert a["lr"].tolist() == pytest.approx([0.05] * 5 + [0.005] * 2), "milestone 4 lowers the LR for epochs 5-6"

        # D: the checkpoint claims one epoch less, so epoch k is trained again with its own data draws:
        # the epoch number is what picks the order and augmentation, so the result must differ.
        shifted = tmp_path / "D"
        shutil.copytree(tmp_path / "C", shifted, ignore=shutil.ignore_patterns("final.pt", "metrics.parquet"))
        save_torch(dict(ckpt, epoch=k - 1, metrics=ckpt["metrics"][:-1]), shifted / "checkpoint.pt")
        train(RunSpec.from_yaml(config), shifted, progress=False)
        assert not torch.equal(load_tensors(whole / "final.pt")["fc.weight"], load_tensors(shifted / "final.pt")["fc.weight"])


def test_checkpoint_of_other_settings_is_refused(tmp_path, make_spec):
    out = tmp_path / "run"
    save_torch({"epoch": 1, "digest": "0123456789"}, out / "checkpoint.pt")
    with pytest.raises(SettingsError, match="belongs to other settings"):
        train(make_spec(), out, progress=False)
    assert not (out / "final.pt").exists()


# --- unsafe pickles -------------------------------------------------------------


class RunsShell:
    """Unpickling this runs a shell command: the classic malicious checkpoint."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


class OpensFile:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return builtins.open, (str(self.marker), "w")


@pytest.fixture(params=["torch.save-system", "pickle-system", "torch.save-open"])
def evil(request, tmp_path):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pt"
    if request.param == "torch.save-system":
        torch.save({"fc.weight": torch.zeros(2, 2), "fc.bias": RunsShell(marker)}, path)
    elif request.param == "pickle-system":
        with open(path, "wb") as f:
            pickle.dump({"fc.weight": RunsShell(marker)}, f, protocol=2)
    else:
        torch.save({"state_dict": {"fc.weight": OpensFile(marker)}}, path)
    yield path, marker
    # control: the payload is live, so "no marker" above really means "refused"
    if not marker.exists():
        try:
            torch.load(path, weights_only=False)
        except Exception:  # noqa: BLE001 - whatever the payload returns, it has run by now
            pass
        assert marker.exists(), "the malicious file does not do what the test assumes"


def test_load_state_refuses_code(evil):
    path, marker = evil
    with pytest.raises(CheckpointError, match=r"refused to load .*evil\.pt.*weights_only"):
        load_state(path)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="refused"):
        load_eval_split(path)
    assert not marker.exists()


def test_training_refuses_malicious_init_source(evil, tmp_path, make_spec):
    path, marker = evil
    out = tmp_path / "run"
    with pytest.raises(CheckpointError, match="refused"):
        train(make_spec(init={"source": str(path)}), out, progress=False)
    with pytest.raises(CheckpointError, match="refused"):
        train(make_spec(init={"groups": {"layer1": str(path)}}), tmp_path / "run2", progress=False)
    assert not marker.exists()
    assert not (out / "init.pt").exists() and not (out / "final.pt").exists()


def test_cli_refuses_malicious_init_source(evil, tmp_path, write_config, capsys):
    path, marker = evil
    config = write_config(run_dict(init={"source": str(path)}))
    code = cli.main(["train", "--config", str(config), "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert "linpath train: error:" in err and "evil.pt" in err
    assert not marker.exists()


def test_resume_refuses_malicious_checkpoint(evil, tmp_path, make_spec):
    path, marker = evil
    out = tmp_path / "run"
    out.mkdir()
    shutil.copy(path, out / "checkpoint.pt")
    with pytest.raises(CheckpointError, match="refused"):
        train(make_spec(), out, progress=False)
    assert not marker.exists()


# --- other unreadable files and atomic writes -------------------------------------


def test_unreadable_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_state(tmp_path / "missing.pt")
    good = tmp_path / "good.pt"
    torch.save({"w": torch.arange(1000.0)}, good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(CheckpointError, match=r"could not read checkpoint .*truncated\.pt"):
        load_state(truncated)
    not_state = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], not_state)
    with pytest.raises(CheckpointError, match="is not a state_dict"):
        load_state(not_state)
    mixed = tmp_path / "mixed.pt"
    torch.save({"w": torch.zeros(1), "epoch": 3}, mixed)
    with pytest.raises(CheckpointError, match="is not a state_dict"):
        load_state(mixed)
    assert torch.equal(load_state(good)["w"], torch.arange(1000.0))


def test_atomic_writes_leave_no_partial_file(tmp_path):
    target = tmp_path / "sub" / "state.pt"
    with pytest.raises(ZeroDivisionError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half a file")
            1 / 0
    assert not target.exists() and list(target.parent.iterdir()) == []
    save_torch({"w": torch.ones(3)}, target)
    assert torch.equal(load_state(target)["w"], torch.ones(3))
    assert [p.name for p in target.parent.iterdir()] == ["state.pt"]


def test_eval_split_of_the_wrong_kind(tmp_path):
    path = tmp_path / "x.pt"
    torch.save(torch.zeros(3), path)
    with pytest.raises(DataError, match="not an evaluation split"):
        load_eval_split(path)
