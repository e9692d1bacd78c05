"""One training run: θ₀ from its init spec, SGD/Adam with a step schedule,
metrics every `train.eval_every` epochs and a checkpoint every
`train.checkpoint_every` epochs, so a killed run resumes.

Run directory layout (all written atomically):
    run.yaml          full settings, model spec resolved against the data
    init.pt           θ₀ as a plain state_dict
    epoch_<k>.pt      θ after epoch k, for k in train.save_epochs
    spawn_<k>.pt      the whole training state after epoch k (checkpoint format), for k in train.spawn_epochs:
                      spawned children start there (init.spawn; their init.pt is that θ and their
                      metrics start at epoch k)
    final.pt          θ_T (its presence marks a finished run)
    metrics.parquet   epoch, lr, train/test loss and accuracy of the evaluated epochs (epoch 0 = θ₀)
    summary.yaml      final metrics, distance travelled θ₀ → θ_T, and how the steps ran
    checkpoint.pt     model, optimiser, scheduler, global RNG states and metrics so far (removed at the end)
    outcome.yaml      how the run ended (linpath.foundations.outcome), written last: trained, or diverged / failed
    failed.yaml       a deterministic failure's record (kind, epoch, last metrics, message)

Invariants: resuming needs only checkpoint.pt and the settings. The data order and
augmentation of epoch e are redrawn from (train.seed, e) (linpath.engine.augment); θ₀ is read
from init.pt or, if a workflow manager deleted it, recomputed (it is deterministic).
On CPU a resumed run is bit-identical to an uninterrupted one. Metrics are computed in
strict fp32 whatever `train.precision` the steps use.

Precision of the steps: they run inside `strict_fp32` (linpath.engine.objective), so an fp32 step is IEEE
fp32 on every device: on Ampere and later GPUs PyTorch would otherwise run fp32 convolutions in TF32 (its
cuDNN default), and on a CPU oneDNN may be set to reduced precision. The paper trained on V100s, which have
no TF32, so fp32 there meant IEEE fp32. `train.precision: bf16` autocasts the step's forward pass inside
that context on CUDA. summary.yaml's `step_precision` is read from the backend flags in force during the
steps (linpath.foundations.device.fp32_precision_in_force), not copied from the settings.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from ..foundations.device import fp32_precision_in_force, pick_device, synced_time
from ..foundations.hparams import RunSpec, SettingsError, TrainSpec
from ..foundations.io import load_checkpoint, load_state, save_torch, write_parquet, write_yaml
from ..foundations.layout import RUN_FILES, RunDir
from ..foundations.outcome import Outcome, write_outcome
from . import data as data_mod
from . import models
from .augment import seeded_global_rng, stream_seed
from .objective import strict_fp32, summed_loss, summed_loss_and_correct


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite; `run`, `epoch` and `loss` say where, `metrics` holds the
    last evaluated metrics row before it."""

    def __init__(self, run: str, epoch: int, loss: float, metrics: dict | None = None):
        self.run, self.epoch, self.loss, self.metrics = run, int(epoch), float(loss), dict(metrics or {})
        super().__init__(f"run {run}: training loss became {self.loss} in epoch {self.epoch}")

    def __reduce__(self):
        return type(self), (self.run, self.epoch, self.loss, self.metrics)


class TargetNotReached(SettingsError):
    """`train.until_train_acc` was not reached within `train.epochs`: the run has no θ_T. `images` is the
    size of the training split the accuracy was measured on; with it the error names how many images were
    wrong (one wrong image of 50 000 reads 1.0000 at four decimals)."""

    def __init__(self, run: str, reached: float, target: float, epochs: int, metrics: dict | None = None,
                 images: int | None = None):
        self.run, self.reached, self.target, self.epochs = run, float(reached), float(target), int(epochs)
        self.metrics = dict(metrics or {})
        self.images = None if images is None else int(images)
        super().__init__(f"run {run}: train accuracy {self.reached:.4f}{self._wrong_words()} < "
                         f"train.until_train_acc={self.target} after train.epochs={self.epochs}; no {RUN_FILES['final']} written")

    @property
    def wrong(self) -> int | None:
        """Training images still classified wrongly (eval mode), where the split's size is known."""
        return None if self.images is None else wrong_images(self.reached, self.images)

    def _wrong_words(self) -> str:
        return "" if self.images is None else f" ({self.wrong} of {self.images} training images wrong)"

    def __reduce__(self):
        return type(self), (self.run, self.reached, self.target, self.epochs, self.metrics, self.images)


def wrong_images(accuracy: float, images: int) -> int:
    """How many of `images` a measured accuracy leaves wrong. `evaluate` divides an exact count of correct
    images by the split's size in float64, so this recovers that count exactly."""
    return int(round((1.0 - accuracy) * images))


def target_counts(t: TrainSpec, accuracy: float, images: int) -> dict:
    """What outcome.yaml records of a run with `train.until_train_acc`: the wrong images at its last epoch
    and how many the target allows (0 at the paper's 100 %)."""
    return {"train_images": int(images), "train_wrong": wrong_images(accuracy, images),
            "train_wrong_allowed": int(images - np.ceil(t.until_train_acc * images - 1e-9))}


def failure_outcome(err: TrainingDiverged | TargetNotReached, spec: RunSpec) -> Outcome:
    """What a deterministic failure leaves in the run directory: the same settings would fail again."""
    metrics = {k: float(v) for k, v in err.metrics.items() if isinstance(v, (int, float))}
    if isinstance(err, TrainingDiverged):
        return Outcome("diverged", kind="diverged", run=err.run, epoch=err.epoch, metrics=metrics,
                       reason=f"training loss {err.loss} in epoch {err.epoch}", settings_digest=spec.digest())
    if err.images is not None:
        metrics.update(target_counts(spec.train, err.reached, err.images))
    return Outcome("failed", kind="target_not_reached", run=err.run, epoch=err.epochs, metrics=metrics,
                   reason=f"train accuracy {err.reached:.4f}{err._wrong_words()} < train.until_train_acc="
                          f"{err.target} after {err.epochs} epochs", settings_digest=spec.digest())


def record_failure(out: Path, spec: RunSpec, err: TrainingDiverged | TargetNotReached) -> Outcome:
    """failed.yaml and outcome.yaml for a deterministic failure. A diverged run also loses its states:
    checkpoint.pt would make a rerun resume into the same failure, and init.pt / epoch_<k>.pt would make
    the directory look like (part of) a trained run. A run that missed its target keeps checkpoint.pt, so
    a forced rerun fails at once instead of training again. run.yaml stays: it says what was tried."""
    outcome = failure_outcome(err, spec)
    if outcome.kind == "diverged":
        run = RunDir(out)
        for stale in [run.checkpoint, run.init, *run.epoch_states(), *run.spawn_states()]:
            stale.unlink(missing_ok=True)
    record = {"kind": outcome.kind, "run": outcome.run, "epoch": outcome.epoch, "metrics": outcome.metrics,
              "settings_digest": outcome.settings_digest, "message": str(err)}
    if isinstance(err, TrainingDiverged):
        record["loss"] = err.loss
    write_yaml(record, RunDir(out).failed)
    write_outcome(outcome, out)
    return outcome


@dataclass
class RunResult:
    run_dir: Path
    epochs: int
    train_loss: float
    train_acc: float
    test_loss: float
    test_acc: float
    seconds: float
    compile_seconds: float | None = None

    def summary(self) -> str:
        compiled = "" if self.compile_seconds is None else f" (torch.compile: first step {self.compile_seconds:.1f}s)"
        return (
            f"{self.run_dir}: {self.epochs} epochs in {self.seconds:.1f}s{compiled}; "
            f"train loss {self.train_loss:.4f} acc {self.train_acc:.4f}; "
            f"test loss {self.test_loss:.4f} acc {self.test_acc:.4f}"
        )


@dataclass(frozen=True)
class StepSettings:
    """What the speed settings become on this device: on CPU every step is plain fp32."""

    device: torch.device
    bf16: bool
    channels_last: bool
    compile: bool

    @classmethod
    def of(cls, t: TrainSpec, device: torch.device, arch: str) -> "StepSettings":
        cuda = device.type == "cuda"
        return cls(device, cuda and t.precision == "bf16", cuda and t.channels_last and arch != "mlp", t.compile)

    def precision(self) -> str:
        """The precision the steps run in, read from the backend flags in force now: bf16 (autocast), else
        what the flags make of fp32 products on this device (fp32, or tf32 where TF32 is allowed)."""
        return "bf16" if self.bf16 else fp32_precision_in_force(self.device)

    def record(self) -> dict:
        """The run summary's account of the steps; call it where the steps ran (inside `strict_fp32`)."""
        return {"step_device": str(self.device), "step_precision": self.precision(),
                "step_channels_last": self.channels_last}


def resolve(spec: RunSpec, prep: data_mod.Prepared) -> RunSpec:
    """Fill the model's input/output shape from the data and check the result."""
    m = spec.model
    m.num_classes, m.in_channels, m.input_size = prep.num_classes, prep.in_channels, prep.input_size
    m.binary = spec.train.loss == "bce"
    if m.binary and m.num_classes != 2:
        raise SettingsError(f"train.loss='bce' needs a two-class dataset; data.dataset={spec.data.dataset} has {m.num_classes} classes")
    spec.validate()
    return spec


@torch.inference_mode()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: str, batch_size: int = 1024) -> tuple[float, float]:
    """Mean loss and accuracy of `model` (in eval mode, strict fp32) over tensors on the model's device."""
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    correct = torch.zeros((), dtype=torch.int64, device=x.device)
    with strict_fp32(x.device):
        for i in range(0, len(y), batch_size):
            s, c = summed_loss_and_correct(model(x[i : i + batch_size]), y[i : i + batch_size], loss)
            total += s.double()
            correct += c
    model.train(was_training)
    return (total / len(y)).item(), (correct.double() / len(y)).item()


def initial_state(spec: RunSpec) -> dict[str, torch.Tensor]:
    """θ₀: the seeded random init, replaced by `init.source`, then per group by `init.groups`.
    Drawn from its own stream (init.seed): the caller's global RNG is left as it was."""
    with seeded_global_rng(spec.init.seed):
        model = models.build(spec.model)
    if spec.init.spawn:  # a spawned child: its parent's weights after epoch k (linpath.study.spawn)
        spawned = _read_matching(model, spec.init.spawn, "init.spawn", spawned=True)
        return {k: spawned[k].detach().clone() for k in model.state_dict()}
    random_state = {k: v.clone() for k, v in model.state_dict().items()}
    models.check_group_names(model, spec.init.groups, "init.groups")
    models.check_group_names(model, spec.init.exclude, "init.exclude")
    group_keys = models.groups(model)
    kept_random = {k for g in spec.init.exclude for k in group_keys[g]}
    source = spec.init.source
    if source == "imagenet":
        models.load_pretrained(model, models.imagenet_state(spec.model, spec.init.imagenet_weights))
    elif source != "random":
        loaded = _read_matching(model, source, "init.source", skip=kept_random)
        model.load_state_dict({k: (random_state[k] if k in kept_random else loaded[k]) for k in random_state})
    state = model.state_dict()
    for key in kept_random:
        state[key] = random_state[key].clone()
    for group, src in spec.init.groups.items():
        donor = random_state if src == "random" else _read_matching(model, src, f"init.groups.{group}")
        for key in group_keys[group]:
            state[key] = donor[key].clone()
    return {k: v.detach().clone() for k, v in state.items()}


def _read_matching(model: nn.Module, path: str, where: str, skip=frozenset(), spawned: bool = False) -> dict[str, torch.Tensor]:
    """A state file's tensors (`spawned`: the weights of a spawn state) for every key of `model` (but
    `skip`), checked for presence and shape."""
    if not Path(path).is_file():
        raise SettingsError(f"{where}: state file not found: {path}")
    state = spawn_state(path)["model"] if spawned else load_state(path)
    own = {k: v for k, v in model.state_dict().items() if k not in skip}
    missing = [k for k in own if k not in state]
    if missing:
        raise SettingsError(f"{where}: {path} does not fit model {model.__class__.__name__} (missing {missing[0]})")
    for k, v in own.items():
        if state[k].shape != v.shape:
            raise SettingsError(f"{where}: {path}: tensor {k} has shape {tuple(state[k].shape)}, model expects {tuple(v.shape)}")
    return state


def spawn_state(path: str | Path) -> dict:
    """A parent's whole training state after epoch k (spawn_<k>.pt: epoch, model, optimizer, scheduler)."""
    saved = load_checkpoint(path)
    if not isinstance(saved, dict) or not {"epoch", "model", "optimizer", "scheduler"} <= saved.keys():
        raise SettingsError(f"{path} is not a spawn state (the spawn_<k>.pt a run writes for train.spawn_epochs)")
    return saved


def continue_from_spawn(spec: RunSpec, optimizer: torch.optim.Optimizer, scheduler) -> int:
    """Set a spawned child's optimiser and LR schedule from its parent's state after epoch k, as
    init.spawn_optimizer and init.spawn_schedule ask; returns k, the epoch the child continues from.
    A fresh optimiser with a continued schedule takes the parent's LR at k; a carried optimiser with a
    restarted schedule goes back to the initial LR."""
    saved = spawn_state(spec.init.spawn)
    if not 0 <= int(saved["epoch"]) <= spec.train.epochs:
        raise SettingsError(f"init.spawn: {spec.init.spawn} is the state after epoch {saved['epoch']}, beyond "
                            f"train.epochs={spec.train.epochs}")
    if spec.init.spawn_optimizer:
        optimizer.load_state_dict(saved["optimizer"])
    if spec.init.spawn_schedule:
        scheduler.load_state_dict(saved["scheduler"])
        for group, parent in zip(optimizer.param_groups, saved["optimizer"]["param_groups"]):
            group["lr"] = parent["lr"]
    else:
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"]
    return int(saved["epoch"])


def optimizer_groups(spec: RunSpec, model: nn.Module) -> list[dict]:
    """Every parameter tensor of the model in exactly one group of (lr, weight decay): the groups named in
    `train.group_overrides` get theirs, every other tensor the recipe's. Model groups that share (lr, weight
    decay) share one optimiser group: the update of each tensor is the same, and the optimiser runs its
    foreach kernels once per group, which on the small models of the default is a large part of a step (a
    2-50-50-1 Adam step: 1.41 -> 1.11 ms with one group)."""
    t = spec.train
    models.check_group_names(model, t.group_overrides, "train.group_overrides")
    named = dict(model.named_parameters())
    by_hparams: dict[tuple[float, float], dict] = {}
    for group, keys in models.groups(model).items():
        names = [k for k in keys if k in named]
        if not names:
            continue
        override = t.group_overrides.get(group)
        lr = override.lr if override and override.lr is not None else t.lr
        wd = override.weight_decay if override and override.weight_decay is not None else t.weight_decay
        entry = by_hparams.setdefault((lr, wd), {"params": [], "names": [], "lr": lr, "weight_decay": wd, "groups": []})
        entry["params"].extend(named[k] for k in names)
        entry["names"].extend(names)
        entry["groups"].append(group)
    return list(by_hparams.values())


def describe_optimizer_groups(groups: list[dict]) -> str:
    """'lr 0.1, weight decay 0: stem, head (4 tensors); ...': where each tensor trained, for summary.yaml."""
    return "; ".join(f"lr {g['lr']:g}, weight decay {g['weight_decay']:g}: {', '.join(g['groups'])} "
                     f"({len(g['names'])} tensors)" for g in groups)


def make_optimizer(spec: RunSpec, model: nn.Module) -> torch.optim.Optimizer:
    t = spec.train
    param_groups = [{k: v for k, v in g.items() if k != "names"} for g in optimizer_groups(spec, model)]
    # foreach: one multi-tensor update instead of a Python loop over tensors. It is torch's default on
    # CUDA; on CPU it gives bit-identical updates (checked for SGD and Adam) and saves ~1 ms of the
    # ~25 ms step of the default's ResNet-18 (62 tensors).
    if t.optimizer == "sgd":
        return torch.optim.SGD(param_groups, lr=t.lr, momentum=t.momentum, nesterov=t.nesterov,
                               weight_decay=t.weight_decay, foreach=True)
    return torch.optim.Adam(param_groups, lr=t.lr, betas=tuple(t.betas), weight_decay=t.weight_decay, foreach=True)


def train(spec: RunSpec, out: str | Path, *, threads: int | None = None, progress: bool = True,
          eval_cache: str | Path | None = None, checkpoint_minutes: float | None = None) -> RunResult:
    """Train the run `spec` into directory `out`, resuming from `out/checkpoint.pt` if present.

    A checkpoint is written every `train.checkpoint_every` epochs and, where `checkpoint_minutes` is
    given, after the first epoch that ends that long after the last one. Ends with outcome.yaml.
    Raises TrainingDiverged at the first epoch with a non-finite step loss, and TargetNotReached when
    `train.until_train_acc` is set and not reached; both are recorded first (record_failure)."""
    out = Path(out)
    try:
        result = _train(spec, out, threads, progress, eval_cache, checkpoint_minutes)
    except (TrainingDiverged, TargetNotReached) as err:
        record_failure(out, spec, err)
        raise
    RunDir(out).failed.unlink(missing_ok=True)
    return result


def _train(spec: RunSpec, out: Path, threads: int | None, progress: bool, eval_cache: str | Path | None,
           checkpoint_minutes: float | None) -> RunResult:
    """`train` in its steps: open the directory, set up where training stands, run the epochs, finish."""
    started = time.perf_counter()
    if threads:
        torch.set_num_threads(threads)
    prep = data_mod.prepare(spec.data)
    opened = _open_run(spec, out, prep, eval_cache)
    if opened.finished is not None:
        return _already_finished(opened.spec, out, opened.finished, started)
    run = _set_up(opened, out, prep)
    # Every step in IEEE fp32 (no TF32, no reduced-precision oneDNN), bf16 autocast inside it where
    # train.precision asks; summary.yaml reads the precision from the flags in force here.
    with strict_fp32(run.how.device):
        compile_seconds = _run_epochs(run, progress, checkpoint_minutes)
        return _finish(run, compile_seconds, started)


@dataclass
class _OpenedRun:
    """A run directory claimed for `spec` and where its training stands: finished (its metrics),
    to resume (its checkpoint, digest checked) or new (θ₀ written to init.pt)."""

    spec: RunSpec  # resolved against the data
    device: torch.device
    init_state: dict[str, torch.Tensor] | None = None  # θ₀; None for a finished run
    checkpoint: dict | None = None
    finished: pd.DataFrame | None = None


def _open_run(spec: RunSpec, out: Path, prep: data_mod.Prepared, eval_cache: str | Path | None = None) -> _OpenedRun:
    """Everything a run does before its first step; bad settings fail before anything is written."""
    spec = resolve(spec, prep)
    t = spec.train
    device = pick_device(t.device)
    models.check_group_names(models.build(spec.model), t.group_overrides, "train.group_overrides")
    run = RunDir(out)
    ckpt_path = run.checkpoint
    resuming = ckpt_path.exists()
    init_state = None if resuming else initial_state(spec)  # fails on bad init settings before anything is written
    _claim_directory(spec, out)
    if eval_cache is not None:
        for split in ("train", "test"):
            data_mod.write_eval_split(spec.data, split, eval_cache, prep)
    if run.final.exists() and run.metrics.exists():
        return _OpenedRun(spec, device, finished=pd.read_parquet(run.metrics))
    if resuming:
        ckpt = load_checkpoint(ckpt_path)
        if ckpt.get("digest") != spec.digest():
            raise SettingsError(f"{ckpt_path} belongs to other settings; remove it or use another output directory")
        return _OpenedRun(spec, device, _init_for_resume(spec, out), ckpt)
    save_torch(init_state, run.init)
    return _OpenedRun(spec, device, init_state)


def _already_finished(spec: RunSpec, out: Path, metrics: pd.DataFrame, started: float) -> RunResult:
    """A finished run trains nothing: a rerun (a workflow manager's retry) reports its metrics, and writes
    the outcome.yaml it did not live to write if it was killed just after final.pt."""
    if not RunDir(out).outcome.is_file():
        write_outcome(Outcome("trained", run=spec.name, settings_digest=spec.digest()), out)
    return _run_result(out, metrics, started)


@dataclass
class _Training:
    """A run while it trains: what checkpoint.pt holds (model, optimiser, schedule, metrics so far and
    `done`, the last finished epoch) and what its steps and evaluations read."""

    spec: RunSpec
    out: RunDir
    init_state: dict[str, torch.Tensor]
    model: nn.Module
    forward: Callable[[torch.Tensor], torch.Tensor]  # the model, or its compiled version
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    history: list[dict]
    done: int
    how: StepSettings
    eval_sets: dict
    loader: data_mod.DeviceLoader
    checkpointed: int = 0  # the epoch checkpoint.pt holds (`done` where training starts)

    @property
    def train_images(self) -> int:
        """The size of the training split (the stop rule's accuracy is measured on it)."""
        return len(self.eval_sets["train"][1])

    def save(self, path: Path, epoch: int) -> None:
        """checkpoint.pt (or spawn_<k>.pt) of the state now, recorded as the state after `epoch`."""
        _save_checkpoint(path, self.spec, epoch, self.model, self.optimizer, self.scheduler, self.history,
                         self.how.device)


def _set_up(opened: _OpenedRun, out: Path, prep: data_mod.Prepared) -> _Training:
    """Model, optimiser and schedule as they stand before the next epoch (from the checkpoint, a spawn
    parent's state, or θ₀), moved to the device with the step settings, and the metrics of the starting
    point when nothing was measured yet: after this the epoch loop treats every run alike."""
    spec, device, t = opened.spec, opened.device, opened.spec.train
    model = models.build(spec.model)
    if opened.checkpoint is not None:
        optimizer, scheduler, history, done = _resume(spec, model, opened.checkpoint, device)
    else:
        optimizer, scheduler, history, done = _start(spec, model, opened.init_state)

    how = StepSettings.of(t, device, spec.model.arch)
    model.to(device)
    _optimizer_to(optimizer, device)
    if how.channels_last:
        model.to(memory_format=torch.channels_last)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not t.deterministic
        torch.backends.cudnn.deterministic = t.deterministic
    forward = torch.compile(model) if how.compile else model
    eval_sets = {"train": (prep.train_x.to(device), prep.train_y.to(device)),
                 "test": (prep.test_x.to(device), prep.test_y.to(device))}
    loader = data_mod.DeviceLoader(*eval_sets["train"], t.batch_size, t.seed, prep.augment, device, prep.pad_value)
    run = _Training(spec, RunDir(out), opened.init_state, model, forward, optimizer, scheduler, history, done, how,
                    eval_sets, loader, checkpointed=done)
    if not history:  # epoch 0, or a spawned child's epoch k
        history.append(_epoch_metrics(model, eval_sets, t.loss, done, optimizer.param_groups[0]["lr"], how))
        if done == 0 and 0 in t.spawn_epochs:
            run.save(run.out.spawn(0), 0)
    return run


def _resume(spec: RunSpec, model: nn.Module, ckpt: dict, device: torch.device):
    """A killed run continues from checkpoint.pt: its states, metrics, finished epoch and global RNG
    states (the data order and augmentation need none: they are redrawn from the epoch)."""
    model.load_state_dict(ckpt["model"])
    optimizer, scheduler = _optimizer_and_schedule(spec, model)
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    history, done = list(ckpt["metrics"]), int(ckpt["epoch"])
    torch.set_rng_state(ckpt["rng_torch"])
    if device.type == "cuda" and ckpt.get("rng_cuda") is not None:
        torch.cuda.set_rng_state(ckpt["rng_cuda"])
    return optimizer, scheduler, history, done


def _start(spec: RunSpec, model: nn.Module, init_state: dict[str, torch.Tensor]):
    """A new run starts at θ₀ with a fresh optimiser, at epoch 0; a spawned child at its parent's epoch k
    with the optimiser and schedule that init.spawn_optimizer / init.spawn_schedule carry over."""
    model.load_state_dict(init_state)
    optimizer, scheduler = _optimizer_and_schedule(spec, model)
    history, done = [], 0
    if spec.init.spawn:
        done = continue_from_spawn(spec, optimizer, scheduler)
    torch.manual_seed(stream_seed(spec.train.seed, "model"))  # randomness inside the model (dropout) has its own stream
    return optimizer, scheduler, history, done


def _run_epochs(run: _Training, progress: bool, checkpoint_minutes: float | None) -> float | None:
    """Epochs from `run.done + 1` until train.epochs or the stop rule, each followed by what it keeps
    (metrics, states, checkpoints); returns the first step's seconds (compilation included) when compiled."""
    t = run.spec.train
    compile_seconds = None
    last_checkpoint = time.monotonic()
    bar = tqdm(range(run.done + 1, t.epochs + 1), desc=run.spec.name, unit="epoch", disable=not progress,
               initial=run.done, total=t.epochs)
    for epoch in bar:
        if _target_reached(t, run.history):
            break
        lr = run.optimizer.param_groups[0]["lr"]
        first_step = _train_epoch(run, epoch, progress, time_first_step=run.how.compile and compile_seconds is None)
        compile_seconds = first_step if compile_seconds is None else compile_seconds
        run.done = epoch
        if evaluated(t, epoch):
            run.history.append(_epoch_metrics(run.model, run.eval_sets, t.loss, epoch, lr, run.how))
            bar.set_postfix(train_acc=f"{run.history[-1]['train_acc']:.3f}", test_acc=f"{run.history[-1]['test_acc']:.3f}")
        if epoch in t.save_epochs:
            save_torch(_cpu_state(run.model), run.out.epoch(epoch))
        if epoch in t.spawn_epochs:
            run.save(run.out.spawn(epoch), epoch)
        overdue = checkpoint_minutes is not None and time.monotonic() - last_checkpoint >= 60 * checkpoint_minutes
        if (epoch % t.checkpoint_every == 0 or overdue) and epoch < t.epochs:
            run.save(run.out.checkpoint, epoch)
            run.checkpointed, last_checkpoint = epoch, time.monotonic()
    return compile_seconds


def _train_epoch(run: _Training, epoch: int, progress: bool, time_first_step: bool) -> float | None:
    """The steps of one epoch, then the LR schedule's step. Raises TrainingDiverged (nothing of the epoch
    kept) when a step loss is not finite; the losses stay on the device until then, so a step waits for
    no other. Returns the seconds to the end of the first step where `time_first_step`."""
    run.model.train()
    losses, first_step, t0 = [], None, synced_time(run.how.device)
    for xb, yb in tqdm(run.loader.epoch(epoch), total=len(run.loader), desc=f"epoch {epoch}", leave=False,
                       disable=not progress, unit="batch"):
        losses.append(train_step(run.forward, run.optimizer, xb, yb, run.spec.train.loss, run.how))
        if time_first_step and first_step is None:
            first_step = synced_time(run.how.device) - t0
    _check_finite(torch.stack(losses), run.spec.name, epoch, run.history[-1])
    run.scheduler.step()
    return first_step


def _finish(run: _Training, compile_seconds: float | None, started: float) -> RunResult:
    """The run's outputs (final.pt last), or TargetNotReached with the last state checkpointed, so that a
    retry fails at once instead of training again."""
    t = run.spec.train
    if _missed_target(t, run.history):
        if run.checkpointed < run.done:
            run.save(run.out.checkpoint, run.done)
        raise TargetNotReached(run.spec.name, run.history[-1]["train_acc"], t.until_train_acc, t.epochs,
                               run.history[-1], images=run.train_images)
    return _write_outputs(run.spec, run.out.path, run.model, run.init_state, _cpu_state(run.model), run.history,
                          run.how, compile_seconds, started, train_images=run.train_images)


def _missed_target(t: TrainSpec, history: list[dict]) -> bool:
    """Whether a run that stopped training ends without θ_T (TargetNotReached)."""
    return t.until_train_acc is not None and history[-1]["train_acc"] < t.until_train_acc


def _target_reached(t: TrainSpec, history: list[dict]) -> bool:
    """Whether the stop rule ends the run before its next epoch."""
    return t.until_train_acc is not None and history[-1]["train_acc"] >= t.until_train_acc


def _write_outputs(spec: RunSpec, out: Path, model: nn.Module, init_state: dict, final: dict, history: list[dict],
                  how: StepSettings, compile_seconds: float | None, started: float,
                  train_images: int | None = None) -> RunResult:
    """metrics.parquet, summary.yaml, then final.pt (its presence marks a finished run); removes
    checkpoint.pt. `model` names the parameters (its values are not read). With `train.until_train_acc`
    and the training split's size (`train_images`), outcome.yaml records how many images were wrong."""
    metrics = pd.DataFrame(history)
    metrics.insert(0, "run", spec.name)
    run = RunDir(out)
    write_parquet(metrics, run.metrics)
    summary = {**_summary(spec, model, init_state, final, history), **how.record()}
    if compile_seconds is not None:
        summary["compile_seconds"] = compile_seconds
    write_yaml(summary, run.summary)
    save_torch(final, run.final)
    counts = (target_counts(spec.train, history[-1]["train_acc"], train_images)
              if spec.train.until_train_acc is not None and train_images else {})
    write_outcome(Outcome("trained", run=spec.name, epoch=int(history[-1]["epoch"]), metrics=counts,
                          settings_digest=spec.digest()), out)
    run.checkpoint.unlink(missing_ok=True)
    result = _run_result(out, metrics, started)
    result.compile_seconds = compile_seconds
    return result


def train_step(forward: Callable[[torch.Tensor], torch.Tensor], optimizer: torch.optim.Optimizer,
               xb: torch.Tensor, yb: torch.Tensor, loss: str, how: StepSettings) -> torch.Tensor:
    """One optimiser step on a batch; returns the batch's mean loss, detached and left on the
    device (no sync). `forward` is the model, its compiled version, or any module of the same
    contract (logits of a batch)."""
    if how.channels_last:
        xb = xb.contiguous(memory_format=torch.channels_last)
    if how.bf16:
        with torch.autocast(how.device.type, dtype=torch.bfloat16):
            logits = forward(xb)
    else:
        logits = forward(xb)
    mean = summed_loss(logits, yb, loss) / len(yb)
    optimizer.zero_grad(set_to_none=True)
    mean.backward()
    optimizer.step()
    return mean.detach()


def evaluated(t: TrainSpec, epoch: int) -> bool:
    """Whether epoch `epoch` (≥ 1) gets a metrics row. With until_train_acc set every epoch
    does: the stop rule reads the train accuracy after each epoch."""
    return (t.until_train_acc is not None or epoch % t.eval_every == 0 or epoch == t.epochs
            or epoch in t.milestones or epoch in t.save_epochs)


def _check_finite(losses: torch.Tensor, run: str, epoch: int, last_metrics: dict | None = None) -> None:
    bad = ~torch.isfinite(losses)
    if bad.any():
        raise TrainingDiverged(run, epoch, losses[bad][0].item(), last_metrics)


def _init_for_resume(spec: RunSpec, out: Path) -> dict[str, torch.Tensor]:
    """θ₀ of a resumed run: init.pt, or recomputed and rewritten when a workflow manager
    removed it with the failed job's other outputs."""
    path = RunDir(out).init
    if path.exists():
        return load_state(path)
    state = initial_state(spec)
    save_torch(state, path)
    return state


def _optimizer_and_schedule(spec: RunSpec, model: nn.Module):
    """The run's optimiser and its step schedule (milestones, gamma)."""
    optimizer = make_optimizer(spec, model)
    return optimizer, torch.optim.lr_scheduler.MultiStepLR(optimizer, spec.train.milestones, spec.train.gamma)


def _save_checkpoint(path: Path, spec: RunSpec, epoch: int, model, optimizer, scheduler, history, device) -> None:
    """checkpoint.pt (or spawn_<k>.pt): CPU copies of the training state after `epoch`, the metrics so far
    and the global RNG states, with the settings digest a resume checks."""
    save_torch({
        "epoch": epoch, "digest": spec.digest(), "model": _cpu_state(model),
        "optimizer": _optimizer_cpu_state(optimizer), "scheduler": scheduler.state_dict(),
        "rng_torch": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state() if device.type == "cuda" else None, "metrics": history,
    }, path)


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def _summary(spec: RunSpec, model: nn.Module, init: dict, final: dict, history: list[dict]) -> dict:
    """Final metrics and distance travelled θ₀ → θ_T, so tables need no checkpoint reading."""
    last = history[-1]
    params = [k for k, _ in model.named_parameters()]
    return {"run": spec.name, "epochs": int(last["epoch"]),
            **{k: float(last[k]) for k in ("train_loss", "train_acc", "test_loss", "test_acc")},
            **distances(init, final, params),
            "optimizer_groups": describe_optimizer_groups(optimizer_groups(spec, model))}


def _claim_directory(spec: RunSpec, out: Path) -> None:
    """Write run.yaml, refusing a directory that already holds another run."""
    settings = RunDir(out).settings
    if settings.exists():
        existing = RunSpec.from_yaml(settings)
        if existing.digest() != spec.digest():
            raise SettingsError(f"{out} already holds a run with other settings ({settings}); use another --out")
        return
    write_yaml(spec.to_dict(), settings)


def _epoch_metrics(model: nn.Module, eval_sets: dict, loss: str, epoch: int, lr: float, how: StepSettings) -> dict:
    """One metrics row, in strict fp32 and the default memory layout."""
    row = {"epoch": epoch, "lr": lr}
    layout = _default_layout(model) if how.channels_last else contextlib.nullcontext()
    with layout:
        for split, (x, y) in eval_sets.items():
            row[f"{split}_loss"], row[f"{split}_acc"] = evaluate(model, x, y, loss)
    return row


@contextlib.contextmanager
def _default_layout(model: nn.Module):
    model.to(memory_format=torch.contiguous_format)
    try:
        yield
    finally:
        model.to(memory_format=torch.channels_last)


def _optimizer_cpu_state(optimizer: torch.optim.Optimizer) -> dict:
    state = optimizer.state_dict()
    state["state"] = {k: {n: (t.cpu() if torch.is_tensor(t) else t) for n, t in v.items()} for k, v in state["state"].items()}
    return state


def _optimizer_to(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """The optimiser's state tensors onto `device` (a checkpoint loads them on the CPU)."""
    for per_param in optimizer.state.values():
        for name, value in per_param.items():
            if torch.is_tensor(value) and name != "step":
                per_param[name] = value.to(device)


def _run_result(out: Path, metrics: pd.DataFrame, started: float) -> RunResult:
    """What `train` returns: the last epoch's metrics and the wall time."""
    last = metrics.iloc[-1]
    return RunResult(out, int(last["epoch"]), float(last["train_loss"]), float(last["train_acc"]),
                     float(last["test_loss"]), float(last["test_acc"]), time.perf_counter() - started)


# --- distance travelled ------------------------------------------------------


def distances(start: dict[str, torch.Tensor], end: dict[str, torch.Tensor], parameter_keys: list[str]) -> dict:
    """Relative distance θ₀ → θ_T.

    `relative_distance_mean`: ‖θ_T − θ₀‖_F / ‖θ₀‖_F per weight tensor (conv/linear
    weights of dimension ≥ 2), averaged (eq. 4). `relative_distance_global`:
    the same over all parameters at once, BN buffers excluded (Lucas et al.)."""
    per_tensor = []
    diff_sq = base_sq = 0.0
    for key in parameter_keys:
        a, b = start[key].double(), end[key].double()
        d, n = torch.linalg.vector_norm(b - a).item(), torch.linalg.vector_norm(a).item()
        diff_sq += d**2
        base_sq += n**2
        if a.dim() >= 2 and n > 0:
            per_tensor.append(d / n)
    return {
        "relative_distance_mean": float(np.mean(per_tensor)) if per_tensor else float("nan"),
        "relative_distance_global": float(np.sqrt(diff_sq) / np.sqrt(base_sq)) if base_sq > 0 else float("nan"),
    }
