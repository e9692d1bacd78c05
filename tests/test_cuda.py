"""The CUDA path against the CPU reference: training step, loader, short runs, path evaluator, seed
packs and checkpoints that move between devices.

Every test compares a result computed on a device (parameter `device`) with the same computation on
the CPU, within a tolerance stated below. The `cuda` variants carry the `cuda` marker and are skipped,
with their reason, where CUDA is absent (`pytest -m cuda` selects them; benchmarks/gpu_check.sh runs
them). The `cpu` variants run the same comparison with a second CPU computation that differs where a
CPU can differ (bf16 autocast, channels_last, the unfolded evaluator, grouped kernels of a pack), so
the comparison logic and its tolerances are exercised on any machine; `test_the_comparisons_tell_*`
shows that each comparison fails on a genuinely different computation.

Tolerances, and what they were set from (ResNet-18 width 8 with the stem max-pool, 3×32×32 inputs,
SGD lr 0.1, momentum 0.9, as the paper's recipe; figures measured on a CPU, where channels_last
stands in for another device's fp32 rounding and CPU bf16 autocast for the device's bf16):

- One step, fp32 (strict fp32 on both sides: TF32 off): step loss relative 1e-5 (measured 2e-7),
  parameter update relative 2e-2 (measured 1.8e-3: the update of a freshly initialised BN network is
  a small difference of large terms), BN running statistics relative 1e-5 (measured 3e-7).
- One step, bf16 autocast against fp32: loss relative 1e-2 (measured 3e-4), update relative 0.6
  (measured 0.29-0.32), BN statistics relative 1e-2 (measured 4e-4). Another batch: update 1.3-1.4.
- A short run (2 epochs of one step): final parameters apart by at most 0.15 of the distance the
  reference travelled in fp32 (measured up to 0.037 over six inits) and 0.8 in bf16 (measured
  0.39-0.49). Another data order moves them 1.28-1.37 apart. Longer runs are not compared: this
  network parts from itself at fp32 rounding within a few steps (0.2 after 10 steps, 0.9 after 40),
  so only short runs can tell a wrong computation from rounding.
- Path evaluator (strict fp32 everywhere): loss 1e-4 absolute (the agreement `python -m linpath.bench
  paths` asks of its reference loop), accuracy 2 images of the split.
- Loader: exact (crops and flips are indexed copies, drawn on the CPU from (seed, epoch)).
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from conftest import REPO, assert_states_equal, load_tensors, subprocess_env
from linpath.engine import data as data_mod
from linpath.engine import models
from linpath.engine.augment import seeded_global_rng
from linpath.foundations.hparams import DataSpec, RunSpec, TrainSpec
from linpath.foundations.io import load_checkpoint
from linpath.engine.objective import strict_fp32
from linpath.paths.evaluator import FULL, EvalSplit, PathEvaluator
from linpath.paths.sweeps import alpha_grid
from linpath.engine.train import StepSettings, make_optimizer, train, train_step
from conftest import write_cifar10

CUDA = torch.cuda.is_available()
NO_CUDA = (f"needs a CUDA GPU: torch {torch.__version__} (CUDA build {torch.version.cuda}) "
           "sees none here (torch.cuda.is_available() is False)")
needs_cuda = pytest.mark.skipif(not CUDA, reason=NO_CUDA)
DEVICES = [pytest.param("cpu", id="cpu-vs-cpu"),
           pytest.param("cuda", id="cuda-vs-cpu", marks=[pytest.mark.cuda, needs_cuda])]

STEP_TOLERANCE = {"fp32": {"loss": 1e-5, "update": 2e-2, "buffers": 1e-5},
                  "bf16": {"loss": 1e-2, "update": 0.6, "buffers": 1e-2}}
RUN_DRIFT = {"fp32": 0.15, "bf16": 0.8}
PATH_LOSS = 1e-4
PATH_ACCURACY_IMAGES = 2

MODEL = {"arch": "resnet18", "width": 8, "maxpool": True}
RECIPE = {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4}


def pack_module():
    """linpath's seed packing (a benchmark tool, linpath.bench.pack)."""
    from linpath.bench import pack

    return pack


def torch_device(name: str) -> torch.device:
    return torch.device("cuda" if name == "cuda" else "cpu")


def precise(device: str | torch.device):
    """Strict fp32 (TF32 off) on `device`: fp32 comparisons then measure the kernels, not TF32."""
    return strict_fp32(torch_device(device) if isinstance(device, str) else device)


# --- data and settings ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory) -> Path:
    """CIFAR-10 in its on-disk format: 40 training images (one step of 40 per epoch), 40 test images."""
    root = tmp_path_factory.mktemp("cifar")
    write_cifar10(root, per_batch=8, n_test=40)
    return root


def run_settings(root: Path, device: str, *, seed: int = 0, **train_extra) -> dict:
    """A run of the paper's recipe at test size: 2 epochs of one step on the written CIFAR files."""
    return {"name": "cuda-check", "model": dict(MODEL),
            "data": {"dataset": "cifar10", "root": str(root), "augment": "standard", "verify_checksums": False,
                     "seed": seed},
            "train": {**RECIPE, "batch_size": 40, "epochs": 2, "seed": seed, "device": device, **train_extra},
            "init": {"seed": seed}}


def synthetic(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-shaped images with a class signal (a pattern per class plus noise), and their labels."""
    g = torch.Generator().manual_seed(seed)
    patterns = torch.randn(10, 3, 32, 32, generator=g)
    y = torch.randint(10, (n,), generator=g)
    return torch.randn(n, 3, 32, 32, generator=g) + 2 * patterns[y], y


def model_spec():
    return RunSpec.from_dict({"model": dict(MODEL)}).model


def init_state(seed: int) -> dict[str, torch.Tensor]:
    with seeded_global_rng(seed):
        return models.build(model_spec()).state_dict()


# --- comparisons ---------------------------------------------------------------------------------


def parameter_keys(state: dict) -> list[str]:
    return [k for k in state if "running_" not in k and "num_batches" not in k]


def flat(state: dict, keys: list[str]) -> torch.Tensor:
    return torch.cat([state[k].detach().cpu().double().flatten() for k in keys])


def step_gap(start: dict, ref: tuple[float, dict], other: tuple[float, dict]) -> dict[str, float]:
    """Relative differences of two steps from `start`: loss, parameter update, BN running statistics."""
    (loss_a, a), (loss_b, b) = ref, other
    params, buffers = parameter_keys(a), [k for k in a if "running_" in k]
    update_a, update_b = flat(a, params) - flat(start, params), flat(b, params) - flat(start, params)
    stats_a, stats_b = flat(a, buffers), flat(b, buffers)
    return {"loss": abs(loss_a - loss_b) / abs(loss_a),
            "update": float((update_a - update_b).norm() / update_a.norm()),
            "buffers": float((stats_a - stats_b).norm() / stats_a.norm())}


def beyond(gap: dict[str, float], tolerance: dict[str, float]) -> dict[str, float]:
    """The entries of `gap` over their tolerance (empty: within)."""
    return {k: v for k, v in gap.items() if not v <= tolerance[k]}


def drift(start: dict, ref: dict, other: dict) -> float:
    """Distance between two final states, relative to the distance the reference travelled (parameters)."""
    keys = parameter_keys(ref)
    return float((flat(ref, keys) - flat(other, keys)).norm() / (flat(ref, keys) - flat(start, keys)).norm())


def path_gap(ref: pd.DataFrame, other: pd.DataFrame) -> tuple[float, float]:
    """Largest |Δ loss| and |Δ accuracy| of two sweeps, row by row (same α, split, path)."""
    key = ["group", "param_group", "bn_mode", "alpha", "split"]
    assert ref[key].equals(other[key]), "the sweeps cover different points"
    return float((ref["loss"] - other["loss"]).abs().max()), float((ref["accuracy"] - other["accuracy"]).abs().max())


def first_difference(ref: list[tuple[torch.Tensor, torch.Tensor]], other: list[tuple[torch.Tensor, torch.Tensor]]):
    """Where two epochs of batches first differ (None: identical)."""
    if len(ref) != len(other):
        return f"{len(ref)} vs {len(other)} batches"
    for b, ((xa, ya), (xb, yb)) in enumerate(zip(ref, other)):
        if not torch.equal(ya.cpu(), yb.cpu()):
            return f"batch {b}: labels (order)"
        if not torch.equal(xa.cpu(), xb.cpu()):
            return f"batch {b}: images (crops or flips)"
    return None


# --- one training step ---------------------------------------------------------------------------


def one_step(start: dict, x: torch.Tensor, y: torch.Tensor, how: StepSettings) -> tuple[float, dict]:
    """One step of the training code (its optimiser, its step) from `start`; loss and state on the CPU."""
    spec = RunSpec.from_dict({"model": dict(MODEL), "train": dict(RECIPE)})
    model = models.build(spec.model)
    model.load_state_dict(start)
    model.to(how.device)
    if how.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(spec, model)
    loss = train_step(model, optimizer, x.to(how.device), y.to(how.device), "ce", how)
    return float(loss), {k: v.detach().cpu() for k, v in model.state_dict().items()}


def step_settings(device: str, precision: str) -> StepSettings:
    """The step as training runs it on CUDA; on the CPU the same switches forced on (training itself
    would drop them there), so that the CPU variant compares a genuinely different computation."""
    if device == "cuda":
        return StepSettings.of(TrainSpec(precision=precision, channels_last=True), torch_device(device), "resnet18")
    return StepSettings(torch.device("cpu"), precision == "bf16", True, False)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("device", DEVICES)
def test_one_training_step_matches_the_cpu_reference(device, precision, record_property):
    x, y = synthetic(32)
    start = init_state(0)
    how = step_settings(device, precision)
    assert how.bf16 == (precision == "bf16") and how.channels_last
    with precise("cpu"):
        ref = one_step(start, x, y, StepSettings(torch.device("cpu"), False, False, False))
    with precise(device) if precision == "fp32" else contextlib.nullcontext():  # bf16: as training runs it
        other = one_step(start, x, y, how)
    gap = step_gap(start, ref, other)
    record_property("gap", gap)
    assert not beyond(gap, STEP_TOLERANCE[precision]), f"{precision} step on {device}: {gap}"


# --- the device-resident loader ------------------------------------------------------------------


def loader_batches(prep: data_mod.Prepared, device: str, seed: int, epoch: int, batch_size: int = 16):
    pad = {"pad_value": prep.pad_value} if getattr(prep, "pad_value", None) is not None else {}
    loader = data_mod.DeviceLoader(prep.train_x, prep.train_y, batch_size, seed, prep.augment,
                                   torch_device(device), **pad)
    return [(x.cpu(), y.cpu()) for x, y in loader.epoch(epoch)]


@pytest.mark.parametrize("augment", ["none", "crop", "standard"])
@pytest.mark.parametrize("device", DEVICES)
def test_device_loader_batches_equal_the_cpu_loaders(cifar_root, device, augment):
    prep = data_mod.prepare(DataSpec(dataset="cifar10", root=str(cifar_root), augment=augment, verify_checksums=False))
    ref = loader_batches(prep, "cpu", seed=3, epoch=2)
    other = loader_batches(prep, device, seed=3, epoch=2)
    assert first_difference(ref, other) is None
    assert sum(len(yb) for _, yb in other) == len(prep.train_y)
    if augment != "none":  # the batches are augmented, not the plain images in loader order
        plain = loader_batches(data_mod.prepare(DataSpec(dataset="cifar10", root=str(cifar_root),
                                                         verify_checksums=False)), device, seed=3, epoch=2)
        assert first_difference(plain, other) is not None


# --- a short run: channels_last, compile, the configured precision -------------------------------


SHORT_RUNS = {  # variant -> (train settings, tolerance key, strict fp32 around the run)
    "fp32-channels_last-compile": ({"precision": "fp32", "channels_last": True, "compile": True}, "fp32", True),
    "bf16-channels_last": ({"precision": "bf16", "channels_last": True, "compile": False}, "bf16", False),
}


@pytest.mark.parametrize("variant", list(SHORT_RUNS))
@pytest.mark.parametrize("device", DEVICES)
def test_short_run_matches_the_cpu_reference(tmp_path, cifar_root, device, variant, record_property):
    settings, tolerance, strict = SHORT_RUNS[variant]
    if device == "cpu":  # compiling on a CPU takes tens of seconds; the CUDA variant compiles
        settings = {**settings, "compile": False}
    with precise("cpu"):
        train(RunSpec.from_dict(run_settings(cifar_root, "cpu")), tmp_path / "ref", progress=False)
    with precise(device) if strict else contextlib.nullcontext():
        result = train(RunSpec.from_dict(run_settings(cifar_root, device, **settings)), tmp_path / "other",
                       progress=False)

    start = load_tensors(tmp_path / "ref" / "init.pt")
    assert_states_equal(start, load_tensors(tmp_path / "other" / "init.pt"))  # θ₀ is drawn on the CPU
    ref_final, final = load_tensors(tmp_path / "ref" / "final.pt"), load_tensors(tmp_path / "other" / "final.pt")
    gap = drift(start, ref_final, final)
    record_property("drift", gap)
    assert gap <= RUN_DRIFT[tolerance], f"{variant} on {device}: final state {gap:.3g} of the distance travelled"
    assert all(v.device.type == "cpu" and v.is_contiguous() for v in final.values())

    ref_metrics = pd.read_parquet(tmp_path / "ref" / "metrics.parquet")
    metrics = pd.read_parquet(tmp_path / "other" / "metrics.parquet")
    assert list(metrics["epoch"]) == list(ref_metrics["epoch"]) == [0, 1, 2]
    # epoch 0 evaluates the same θ₀ in strict fp32 on both devices
    for column in ("train_loss", "test_loss"):
        assert metrics[column].iloc[0] == pytest.approx(ref_metrics[column].iloc[0], abs=PATH_LOSS)
    summary = yaml.safe_load((tmp_path / "other" / "summary.yaml").read_text())
    cuda = device == "cuda"
    assert summary["step_device"].startswith(device)
    assert summary["step_precision"] == (settings["precision"] if cuda else "fp32")
    assert summary["step_channels_last"] is cuda
    assert ("compile_seconds" in summary) is settings["compile"]
    assert (result.compile_seconds is not None) is settings["compile"]


# --- the path evaluator --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def path_states():
    """θ_0 (seed 0) and a trained end state (seed 1 after five steps), with the data of the sweeps."""
    x, y = synthetic(192, seed=1)
    start, end = init_state(0), init_state(1)
    how = StepSettings(torch.device("cpu"), False, False, False)
    for i in range(5):
        at = slice(32 * i, 32 * (i + 1))
        _, end = one_step(end, x[at], y[at], how)
    return start, end, x, y


def sweep(states, device: torch.device, group: str, bn_mode: str, **options) -> pd.DataFrame:
    start, end, x, y = states
    splits = [EvalSplit("train", x[:128], y[:128]), EvalSplit("test", x[128:], y[128:])]
    evaluator = PathEvaluator(models.build(model_spec()), splits, "ce", device=device, batch_size=64,
                              bn_data=x[:64].clone(), bn_batch_size=32, **options)
    return evaluator.sweep(start, end, alpha_grid("0:1:5"), group=group, bn_mode=bn_mode)


@pytest.mark.parametrize("bn_mode", ["interpolate", "recompute"])
@pytest.mark.parametrize("device", DEVICES)
def test_path_evaluator_matches_the_cpu_reference(path_states, device, bn_mode, record_property):
    # CPU variant: the evaluator without its folded twin and prefix reuse, i.e. the model run as it is
    options = {} if device == "cuda" else {"fold_bn": False, "reuse_prefix": False}
    for group in (FULL, "block2"):
        ref = sweep(path_states, torch.device("cpu"), group, bn_mode)
        other = sweep(path_states, torch_device(device), group, bn_mode, **options)
        loss_gap, accuracy_gap = path_gap(ref, other)
        record_property(f"{group}_loss_gap", loss_gap)
        assert loss_gap <= PATH_LOSS, f"{group} path, {bn_mode}, on {device}: |Δ loss| {loss_gap:.2e}"
        assert accuracy_gap <= PATH_ACCURACY_IMAGES / 64, f"{group} path, {bn_mode}: |Δ accuracy| {accuracy_gap}"
        assert ref["loss"].nunique() > 1  # the path moves the loss: a constant sweep would compare nothing


# --- seed packs ----------------------------------------------------------------------------------

SEEDS = 3


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("device", DEVICES)
def test_a_packed_step_matches_single_steps_on_the_cpu(device, precision, record_property):
    pack = pack_module()
    x, y = synthetic(16 * SEEDS, seed=2)
    xs, ys = x.view(SEEDS, 16, 3, 32, 32), y.view(SEEDS, 16)
    starts = [init_state(s) for s in range(SEEDS)]
    with precise("cpu"):
        singles = [one_step(starts[s], xs[s], ys[s], StepSettings(torch.device("cpu"), False, False, False))
                   for s in range(SEEDS)]
    dev = torch_device(device)
    how = StepSettings(dev, precision == "bf16", False, False)  # a pack's batches are 5-D: no channels_last
    spec = RunSpec.from_dict({"model": dict(MODEL), "train": dict(RECIPE)})
    stacked = pack.StackedModel(spec.model, starts, dev)
    optimizer = make_optimizer(spec, stacked.module)
    with precise(device) if precision == "fp32" else contextlib.nullcontext():
        losses = pack.packed_step(stacked, optimizer, xs.to(dev), ys.to(dev), "ce", how)
    for s in range(SEEDS):
        gap = step_gap(starts[s], singles[s], (float(losses[s]), stacked.state(s)))
        record_property(f"seed{s}", gap)
        assert not beyond(gap, STEP_TOLERANCE[precision]), f"seed {s} of a {precision} pack on {device}: {gap}"


# --- checkpoints that move between devices -------------------------------------------------------


def run_with_a_failure_after_epoch_1(settings: dict, out: Path, device: str, config: Path) -> None:
    """Train on `device` until the write after epoch 2 fails (a directory stands where epoch_2.pt goes,
    as a full disk would fail it): checkpoint.pt then holds epoch 1, written on that device."""
    (out / "epoch_2.pt").mkdir(parents=True)
    if device == "cpu":
        done = cli_train(config, out)
        assert done.returncode == 2 and "epoch_2.pt" in done.stderr, done.stderr
    else:
        with precise(device), pytest.raises(IsADirectoryError):
            train(RunSpec.from_dict(settings), out, progress=False)
    (out / "epoch_2.pt").rmdir()


def resume(settings: dict, out: Path, device: str, config: Path) -> None:
    if device == "cpu":
        done = cli_train(config, out)
        assert done.returncode == 0, done.stderr
    else:
        with precise(device):
            train(RunSpec.from_dict(settings), out, progress=False)


def cli_train(config: Path, out: Path) -> subprocess.CompletedProcess:
    """`linpath train` on the CPU of this machine (CUDA hidden, so `train.device: auto` means the CPU)."""
    env = {**subprocess_env(), "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(REPO / "workflow")}
    return subprocess.run([sys.executable, "-m", "linpath", "train", "--config", str(config), "--out", str(out),
                           "--threads", "1", "--no-progress"], capture_output=True, text=True, timeout=300, env=env)


CHECKPOINT_MOVES = [
    pytest.param("cpu", "cpu", id="cpu-to-cpu"),
    pytest.param("cuda", "cpu", id="cuda-to-cpu", marks=[pytest.mark.cuda, needs_cuda]),
    pytest.param("cpu", "cuda", id="cpu-to-cuda", marks=[pytest.mark.cuda, needs_cuda]),
]


@pytest.mark.parametrize("writer, resumer", CHECKPOINT_MOVES)
def test_a_checkpoint_resumes_on_the_other_device(tmp_path, cifar_root, writer, resumer, record_property):
    # device auto: the same settings (the same digest) on a GPU node and on a CPU node
    settings = run_settings(cifar_root, "auto", precision="fp32", save_epochs=[2])
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(settings))
    out = tmp_path / "moved"
    run_with_a_failure_after_epoch_1(settings, out, writer, config)
    ckpt = load_checkpoint(out / "checkpoint.pt")
    assert ckpt["epoch"] == 1 and not (out / "final.pt").exists()
    assert (ckpt["rng_cuda"] is not None) is (writer == "cuda")
    assert all(v.device.type == "cpu" and v.is_contiguous() for v in ckpt["model"].values())
    resume(settings, out, resumer, config)

    with precise("cpu"):
        train(RunSpec.from_dict({**settings, "train": {**settings["train"], "device": "cpu"}}), tmp_path / "ref",
              progress=False)
    metrics = pd.read_parquet(out / "metrics.parquet")
    assert list(metrics["epoch"]) == [0, 1, 2]
    pd.testing.assert_frame_equal(metrics.iloc[:2].drop(columns="run").reset_index(drop=True),
                                  pd.DataFrame(ckpt["metrics"]), check_dtype=False)  # carried over as written
    summary = yaml.safe_load((out / "summary.yaml").read_text())
    assert summary["step_device"].startswith(resumer)
    start, ref, final = (load_tensors(p / name) for p, name in
                         [(out, "init.pt"), (tmp_path / "ref", "final.pt"), (out, "final.pt")])
    if writer == resumer == "cpu":  # the documented invariant: resumed on CPU = uninterrupted, bit for bit
        assert_states_equal(ref, final)
        assert (out / "epoch_2.pt").is_file()
        return
    gap = drift(start, ref, final)
    record_property("drift", gap)
    assert gap <= RUN_DRIFT["fp32"], f"written on {writer}, resumed on {resumer}: drift {gap:.3g}"


# --- controls: each comparison fails on a different computation ----------------------------------


def test_the_comparisons_tell_a_different_step_apart():
    x, y = synthetic(32)
    start = init_state(0)
    plain = StepSettings(torch.device("cpu"), False, False, False)
    with precise("cpu"):
        ref = one_step(start, x, y, plain)
        other_batch = one_step(start, x.flip(0), y, plain)
    for precision in ("fp32", "bf16"):
        assert "update" in beyond(step_gap(start, ref, other_batch), STEP_TOLERANCE[precision])


def test_the_comparisons_tell_another_epoch_and_another_path_apart(cifar_root, path_states):
    prep = data_mod.prepare(DataSpec(dataset="cifar10", root=str(cifar_root), augment="standard", verify_checksums=False))
    assert first_difference(loader_batches(prep, "cpu", 3, 2), loader_batches(prep, "cpu", 3, 3)) is not None
    assert first_difference(loader_batches(prep, "cpu", 3, 2), loader_batches(prep, "cpu", 4, 2)) is not None
    cpu = torch.device("cpu")
    loss_gap, _ = path_gap(sweep(path_states, cpu, "block2", "interpolate"),
                           sweep(path_states, cpu, "block3", "interpolate").assign(group="block2"))
    assert loss_gap > 100 * PATH_LOSS


def test_the_comparisons_tell_another_data_order_apart(tmp_path, cifar_root):
    for seed in (0, 1):  # the same θ₀, batches drawn in another order with other crops and flips
        settings = run_settings(cifar_root, "cpu")
        settings["train"]["seed"] = seed
        train(RunSpec.from_dict(settings), tmp_path / f"order{seed}", progress=False)
    start = load_tensors(tmp_path / "order0" / "init.pt")
    gap = drift(start, load_tensors(tmp_path / "order0" / "final.pt"), load_tensors(tmp_path / "order1" / "final.pt"))
    assert gap > max(RUN_DRIFT.values())
