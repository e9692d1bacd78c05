"""Shared fixtures of the linpath engine tests: tiny run settings and run directories.

Everything here is real: real datasets (scikit-learn's bundled digits, the
generated spiral, or small files the tests write in the genuine on-disk
formats), real torch / torchvision models and real training. Models are tiny
(ResNet width 4-8, MLP hidden [16]) and runs last a few epochs so that the
whole suite stays well under a minute on two CPU cores.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from hypothesis import settings as hypothesis_settings
from linpath.foundations.convert import deep_merge
from linpath.foundations.hparams import RunSpec

# Tiny models are dominated by per-op overhead; one intra-op thread is both the
# fastest setting for them and immune to oversubscription when other work
# shares the two cores. Subprocesses get the same via `--threads 1`, so that
# in-process and subprocess runs compute bit-identical results.
torch.set_num_threads(1)

# Property tests: no deadline (two shared cores make timings noisy); under CI the same examples every
# run. No example database (it would leave .hypothesis/ in the checkout). Each test fixes its own max_examples.
hypothesis_settings.register_profile("ci", derandomize=True, deadline=None, database=None, print_blob=True)
hypothesis_settings.register_profile("dev", deadline=None, database=None)
hypothesis_settings.load_profile("ci" if os.environ.get("CI") else "dev")

REPO = Path(__file__).resolve().parents[1]


TINY_MODELS: dict[str, dict[str, Any]] = {
    "mlp": {"arch": "mlp", "hidden": [16]},
    "resnet18": {"arch": "resnet18", "width": 8},
    "resnet18_w4": {"arch": "resnet18", "width": 4},
}


def run_dict(model: str = "mlp", **sections: dict) -> dict:
    """Settings of a tiny run on the digits (as read from a run YAML); `sections` are merged in."""
    base = {
        "name": f"test-{model}",
        "model": dict(TINY_MODELS[model]),
        "data": {"dataset": "digits", "augment": "none"},
        "train": {
            "optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4,
            "batch_size": 64, "epochs": 2, "seed": 0, "device": "cpu",
        },
        "init": {"seed": 0},
    }
    return deep_merge(base, sections)


def run_spec(model: str = "mlp", **sections: dict) -> RunSpec:
    return RunSpec.from_dict(run_dict(model, **sections))


@pytest.fixture
def make_dict():
    """Factory: `make_dict("resnet18", train={"epochs": 3})` -> settings dict."""
    return run_dict


@pytest.fixture
def make_spec():
    """Factory: `make_spec("mlp", train={"lr": 0.1})` -> validated RunSpec."""
    return run_spec


@pytest.fixture
def write_config(tmp_path):
    """Factory: write a settings dict as a run YAML, return its path."""

    def write(raw: dict, name: str = "run.yaml") -> Path:
        path = tmp_path / "configs" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        return path

    return write


@pytest.fixture
def run_dir(tmp_path) -> Path:
    """A fresh, not yet existing run directory."""
    return tmp_path / "runs" / "r1"


@pytest.fixture(scope="session")
def trained_mlp(tmp_path_factory):
    """One finished MLP run on the digits, shared by the tests that only read it."""
    from linpath.engine.train import train

    out = tmp_path_factory.mktemp("trained") / "mlp"
    spec = run_spec("mlp", train={"epochs": 3, "lr": 0.1, "save_epochs": [1, 2]})
    result = train(spec, out, progress=False)
    return out, spec, result


def linpath_command() -> list[str]:
    """The installed `linpath` console script of this environment."""
    script = Path(sys.executable).with_name("linpath")
    assert script.is_file(), f"console script not installed next to {sys.executable}"
    return [str(script)]


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


def run_cli(args: list[str], timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(linpath_command() + args, capture_output=True, text=True, timeout=timeout,
                          env=subprocess_env(), **kwargs)


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_states_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"tensors differ: {different[:5]} ({len(different)} of {len(a)})"


# --- fixtures of the path-engine tests (test_paths, test_barrier, test_interpolate_cli) ---


def run_spec_with(model: str, model_extra: dict | None = None, **sections: dict) -> RunSpec:
    """Like `run_spec`, with extra `model` settings merged in (e.g. {"hidden": []})."""
    raw = run_dict(model, **sections)
    raw["model"].update(model_extra or {})
    return RunSpec.from_dict(raw)


@pytest.fixture(scope="session")
def digits():
    """The digits prepared as training sees them (normalised, no augmentation)."""
    from linpath.engine.data import prepare
    from linpath.foundations.hparams import DataSpec

    return prepare(DataSpec())


@pytest.fixture(scope="session")
def trained_resnet(tmp_path_factory):
    """One finished BatchNorm ResNet-18 run (width 4) on a quarter of the digits, with epoch_1.pt."""
    from linpath.engine.train import train

    out = tmp_path_factory.mktemp("trained") / "resnet"
    spec = run_spec("resnet18_w4", data={"subset": 0.25},
                    train={"epochs": 4, "lr": 0.01, "save_epochs": [1]})
    result = train(spec, out, progress=False)
    return out, spec, result


def checkpoint_epoch(path: Path) -> int | None:
    """The finished epoch a checkpoint.pt records, or None while it is absent or half written."""
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["epoch"])
    except (FileNotFoundError, RuntimeError, EOFError, KeyError):
        return None


def kill_when(proc: subprocess.Popen, ready, what: str, timeout: float = 240) -> None:
    """SIGKILL `proc` as soon as ready() holds; fail if it ends first or ready() never holds."""
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            if proc.poll() is not None:
                pytest.fail(f"{what} ended (rc {proc.returncode}) before it could be killed:\n{proc.stdout.read().decode()}")
            assert time.monotonic() < deadline, f"{what}: no checkpoint appeared"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
