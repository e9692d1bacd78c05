"""Shared fixtures and helpers of the tests (a test file imports helpers from here, never from another
test file): tiny run settings and run directories, the workflow as a subprocess, the repository's
configs, hand-made plans and table rows, and dataset files written in their official formats.

Everything here is real: real datasets (scikit-learn's bundled digits, the
generated spiral, or small files the tests write in the genuine on-disk
formats), real torch / torchvision models and real training. Models are tiny
(ResNet width 4-8, MLP hidden [16]) and runs last a few epochs so that the
whole suite stays well under a minute on two CPU cores.
"""

from __future__ import annotations

import io
import os
import pickle
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from hypothesis import settings as hypothesis_settings
from linpath.foundations.convert import deep_merge
from linpath.foundations.hparams import RunSpec
from linpath.paths.shapes import ShapeThresholds
from linpath.study.plan import TRAINING_ROLES, Plan

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


# --- the workflow as a subprocess, and the repository's configs (test_workflow, test_targets, ...) ---

SNAKEFILE = REPO / "Snakefile"
CONFIGS = REPO / "tests" / "configs"

# The training rules of runs with a path sweep of their own (spawned children are measured in pairs).
TRAINING_RULES = tuple(r for r in TRAINING_ROLES if r != "spawn")


def snakemake(workdir: Path, *args: str, timeout: float = 300, snakefile: Path = SNAKEFILE) -> subprocess.CompletedProcess:
    """`snakemake --snakefile <repo>/Snakefile --directory <workdir> ...`, started inside workdir."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    # The `linpath` console script of this environment, whatever else is on PATH.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1", MPLBACKEND="Agg")
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(snakefile), "--directory", str(workdir), *args]
    return subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)


def output_of(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout + proc.stderr


def tail(proc: subprocess.CompletedProcess, n: int = 4000) -> str:
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout[-n:]}\n--- stderr\n{proc.stderr[-n:]}"


def job_stats(text: str) -> dict[str, int]:
    """The last 'Job stats' table Snakemake printed: rule -> job count."""
    assert "Job stats:" in text, "no 'Job stats' table in the output"
    counts: dict[str, int] = {}
    for line in text.rsplit("Job stats:", 1)[1].splitlines():
        line = line.strip()
        if not line or line.split() == ["job", "count"] or set(line) <= {"-", " "}:
            if counts:
                break
            continue
        m = re.fullmatch(r"(\w+)\s+(\d+)", line)
        assert m, f"unexpected line in the job stats table: {line!r}"
        if m[1] == "total":
            assert int(m[2]) == sum(counts.values())
            break
        counts[m[1]] = int(m[2])
    return counts


def with_default_config(workdir: Path) -> Path:
    shutil.copytree(REPO / "config", workdir / "config")
    return workdir


def load(name: str) -> dict:
    """config/<name> of the repository, as parsed YAML."""
    return yaml.safe_load((REPO / "config" / name).read_text())


def merged(*names: str) -> dict:
    """config.yaml with each overlay merged over it, as Snakemake merges a --configfile."""
    from snakemake.utils import update_config

    config = load("config.yaml")
    for name in names:
        update_config(config, load(name))
    return config


def default_config() -> dict:
    return load("config.yaml")


def paper_config() -> dict:
    """config.yaml with paper.yaml merged over it."""
    return merged("paper.yaml")


def resolved(plan, setting: str, seed: int = 0, groups: dict | None = None) -> dict:
    """A planned run's settings, with placeholder barrier groups for every setting unless `groups` is given."""
    placeholder = {s: {"with_barrier": ["block2", "block3"], "without_barrier": ["stem", "block1", "block4", "head"],
                       "ranked": ["block3", "block2"], "widenable": []} for s in plan.settings}
    return plan.resolve(plan.by_setting[(setting, seed)], groups or placeholder)


# --- hand-made plans, runs and shape rows (test_tables, test_table1_rows, test_figure_content, ...) ---

SEEDS = [0, 1, 2, 3]


def config(settings: dict, table1_rows: list[dict], seeds=SEEDS, shapes: dict | None = None) -> dict:
    """A config of width-4 ResNets on the digits with these settings and Table 1 rows."""
    return {"seeds": seeds, "base": {"model": {"arch": "resnet18", "width": 4}, "data": {"dataset": "digits"}},
            "settings": settings, "table1": table1_rows, "shapes": shapes or {}}


def shape_row(setting: str, seed: int, label: str, delta: float, *, path="full", group="all") -> dict:
    return {"run_id": f"{setting}-s{seed}", "setting": setting, "seed": seed, "path": path, "start": "init",
            "group": group, "param_group": "all", "bn_mode": "interpolate", "split": "train", "label": label,
            "delta": delta, "monotonic": label != "B", "label_rule": ShapeThresholds().rule()}


def run_row(setting: str, seed: int, test_acc: float, model: str = "resnet18") -> dict:
    return {"run_id": f"{setting}-s{seed}", "setting": setting, "seed": seed, "test_acc": test_acc,
            "train_acc": 1.0, "model": model, "relative_distance_mean": 0.5, "relative_distance_global": 0.4}


def fixed_lr_plan() -> Plan:
    """Three fixed learning rates: the middle one compared with each other one (Table 1 and Figure A11)."""
    settings = {"mid": {"experiment": "E10"}, "high": {"experiment": "E10", "baseline": "mid"},
                "low": {"experiment": "E10", "baseline": "mid"}}
    return Plan(config(settings, [
        {"intervention": "fixed LR = 0.01", "settings": ["mid"], "compare": {"mid": ["high", "low"]},
         "paper_shape": "P", "paper_acc": "better"},
        {"intervention": "fixed LR != 0.01", "settings": ["high", "low"], "paper_shape": "NB", "paper_acc": "worse"}]))


def fixed_lr_runs(low_acc: float) -> pd.DataFrame:
    acc = {"mid": 0.92, "high": 0.90, "low": low_acc}
    return pd.DataFrame([run_row(n, s, a + 0.001 * s * (1 if n == "mid" else -1)) for n, a in acc.items() for s in SEEDS])


# --- dataset files in their official on-disk formats (test_data, test_paper_dag, test_cuda) ---


class _Py2Pickler(pickle._Pickler):
    """Writes `bytes` as Python 2 `str` (BINSTRING), the way the official CIFAR batches were pickled:
    read back with encoding="latin1" (torchvision) the keys are str, with encoding="bytes" they are b"data"."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_bytes(self, obj: bytes) -> None:
        n = len(obj)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_bytes


def _py2_pickle(obj, path: Path) -> None:
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    path.write_bytes(buf.getvalue())


CIFAR_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
CIFAR_LABEL_NAMES = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]


def write_cifar10(root: Path, per_batch: int = 4, n_test: int = 6, seed: int = 0) -> dict[str, np.ndarray]:
    """Write cifar-10-batches-py/ as the official archive lays it out; return the arrays written."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rows, labels = [], []
    for i, name in enumerate(CIFAR_TRAIN + ["test_batch"]):
        n = n_test if name == "test_batch" else per_batch
        x = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        y = [int(v) for v in rng.integers(0, 10, size=n)]
        label = b"testing batch 1 of 1" if name == "test_batch" else b"training batch %d of 5" % (i + 1)
        _py2_pickle({b"batch_label": label, b"labels": y, b"data": x,
                     b"filenames": [b"img_%d_%d.png" % (i, j) for j in range(n)]}, folder / name)
        rows.append(x)
        labels.append(np.asarray(y, dtype=np.int64))
    _py2_pickle({b"num_cases_per_batch": per_batch, b"label_names": CIFAR_LABEL_NAMES, b"num_vis": 3072},
                folder / "batches.meta")
    return {"train_x": np.concatenate(rows[:5]), "train_y": np.concatenate(labels[:5]),
            "test_x": rows[5], "test_y": labels[5]}


def _write_idx(path: Path, array: np.ndarray, magic: int) -> None:
    header = struct.pack(">i", magic) + b"".join(struct.pack(">i", d) for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_mnist(root: Path, folder: str = "MNIST", n_train: int = 12, n_test: int = 5, seed: int = 0) -> dict:
    """Write <folder>/raw/ as the official MNIST idx files; return the arrays written."""
    rng = np.random.default_rng(seed)
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", images, 2051)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels, 2049)
        out[prefix] = (images, labels)
    return out
