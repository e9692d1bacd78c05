"""One training run: θ₀ from its init spec, SGD/Adam with a step schedule,
per-epoch metrics, and a checkpoint every epoch so a killed run resumes.

Run directory layout (all written atomically):
    run.yaml          full settings, model spec resolved against the data
    init.pt           θ₀ as a plain state_dict
    epoch_<k>.pt      θ after epoch k, for k in train.save_epochs
    final.pt          θ_T (written last: its presence marks a finished run)
    metrics.parquet   epoch, lr, train/test loss and accuracy (epoch 0 = θ₀)
    summary.yaml      final metrics and distance travelled θ₀ → θ_T
    checkpoint.pt     model, optimiser, scheduler and RNG states and θ₀ (removed at the end)
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from . import data as data_mod
from . import models
from .hparams import RunSpec, SettingsError
from .io import load_checkpoint, load_state, save_torch, write_parquet, write_yaml
from .objective import summed_loss_and_correct



class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass
class RunResult:
    run_dir: Path
    epochs: int
    train_loss: float
    train_acc: float
    test_loss: float
    test_acc: float
    seconds: float

    def summary(self) -> str:
        return (
            f"{self.run_dir}: {self.epochs} epochs in {self.seconds:.1f}s; "
            f"train loss {self.train_loss:.4f} acc {self.train_acc:.4f}; "
            f"test loss {self.test_loss:.4f} acc {self.test_acc:.4f}"
        )


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SettingsError(f"train.device={name!r} but CUDA is not available here")
    return torch.device(name)


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
    """Mean loss and accuracy of `model` (in eval mode) over tensors on the model's device."""
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    correct = torch.zeros((), dtype=torch.int64, device=x.device)
    for i in range(0, len(y), batch_size):
        s, c = summed_loss_and_correct(model(x[i : i + batch_size]), y[i : i + batch_size], loss)
        total += s.double()
        correct += c
    model.train(was_training)
    return (total / len(y)).item(), (correct.double() / len(y)).item()


def initial_state(spec: RunSpec) -> dict[str, torch.Tensor]:
    """θ₀: the seeded random init, replaced by `init.source`, then per group by `init.groups`."""
    torch.manual_seed(spec.init.seed)
    model = models.build(spec.model)
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


def _read_matching(model: nn.Module, path: str, where: str, skip=frozenset()) -> dict[str, torch.Tensor]:
    """A state file's tensors for every key of `model` (but `skip`), checked for presence and shape."""
    if not Path(path).is_file():
        raise SettingsError(f"{where}: state file not found: {path}")
    state = load_state(path)
    own = {k: v for k, v in model.state_dict().items() if k not in skip}
    missing = [k for k in own if k not in state]
    if missing:
        raise SettingsError(f"{where}: {path} does not fit model {model.__class__.__name__} (missing {missing[0]})")
    for k, v in own.items():
        if state[k].shape != v.shape:
            raise SettingsError(f"{where}: {path}: tensor {k} has shape {tuple(state[k].shape)}, model expects {tuple(v.shape)}")
    return state


def make_optimizer(spec: RunSpec, model: nn.Module) -> torch.optim.Optimizer:
    t = spec.train
    models.check_group_names(model, t.group_overrides, "train.group_overrides")
    named = dict(model.named_parameters())
    param_groups = []
    for group, keys in models.groups(model).items():
        params = [named[k] for k in keys if k in named]
        if not params:
            continue
        override = t.group_overrides.get(group)
        lr = override.lr if override and override.lr is not None else t.lr
        wd = override.weight_decay if override and override.weight_decay is not None else t.weight_decay
        param_groups.append({"params": params, "lr": lr, "weight_decay": wd, "group": group})
    if t.optimizer == "sgd":
        return torch.optim.SGD(param_groups, lr=t.lr, momentum=t.momentum, nesterov=t.nesterov, weight_decay=t.weight_decay)
    return torch.optim.Adam(param_groups, lr=t.lr, betas=tuple(t.betas), weight_decay=t.weight_decay)


def train(spec: RunSpec, out: str | Path, *, threads: int | None = None, progress: bool = True,
          eval_cache: str | Path | None = None) -> RunResult:
    """Train the run `spec` into directory `out`, resuming from `out/checkpoint.pt` if present."""
    out = Path(out)
    started = time.perf_counter()
    if threads:
        torch.set_num_threads(threads)
    prep = data_mod.prepare(spec.data)
    spec = resolve(spec, prep)
    device = pick_device(spec.train.device)
    models.check_group_names(models.build(spec.model), spec.train.group_overrides, "train.group_overrides")
    resuming = (out / "checkpoint.pt").exists()
    state = None if resuming else initial_state(spec)  # fails on bad init settings before anything is written
    _claim_directory(spec, out)
    fast = device.type == "cuda" and spec.train.fast_cuda
    if eval_cache is not None:
        for split in ("train", "test"):
            data_mod.write_eval_split(spec.data, split, eval_cache, prep)

    if (out / "final.pt").exists() and (out / "metrics.parquet").exists():
        metrics = pd.read_parquet(out / "metrics.parquet")
        return _result(out, metrics, started)

    model = models.build(spec.model)
    optimizer = None
    ckpt_path = out / "checkpoint.pt"
    generator = torch.Generator().manual_seed(spec.train.seed)
    if resuming:
        ckpt = load_checkpoint(ckpt_path)
        if ckpt.get("digest") != spec.digest():
            raise SettingsError(f"{ckpt_path} belongs to other settings; remove it or use another output directory")
        model.load_state_dict(ckpt["model"])
        optimizer = make_optimizer(spec, model)
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, spec.train.milestones, spec.train.gamma)
        scheduler.load_state_dict(ckpt["scheduler"])
        torch.set_rng_state(ckpt["rng_torch"])
        generator.set_state(ckpt["rng_data"])
        if device.type == "cuda" and ckpt.get("rng_cuda") is not None:
            torch.cuda.set_rng_state(ckpt["rng_cuda"])
        history, start_epoch = list(ckpt["metrics"]), ckpt["epoch"] + 1
        init_state = ckpt["init"]
        if not (out / "init.pt").exists():  # a workflow manager removes a failed job's outputs
            save_torch(init_state, out / "init.pt")
    else:
        init_state = state
        save_torch(state, out / "init.pt")
        model.load_state_dict(state)
        history, start_epoch = [], 1

    model.to(device)
    if fast and spec.model.arch != "mlp":
        model.to(memory_format=torch.channels_last)
    if optimizer is None:
        optimizer = make_optimizer(spec, model)
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, spec.train.milestones, spec.train.gamma)
        torch.manual_seed(spec.train.seed)  # augmentation draws
    else:
        _optimizer_to(optimizer, device)

    eval_sets = {
        "train": (prep.train_x.to(device), prep.train_y.to(device)),
        "test": (prep.test_x.to(device), prep.test_y.to(device)),
    }
    if not history:
        history.append(_epoch_metrics(model, eval_sets, spec, 0, optimizer.param_groups[0]["lr"]))
    loader = data_mod.train_loader(prep, spec.train.batch_size, generator)
    target = spec.train.until_train_acc
    epochs = tqdm(range(start_epoch, spec.train.epochs + 1), desc=spec.name, unit="epoch",
                  disable=not progress, initial=start_epoch - 1, total=spec.train.epochs)
    for epoch in epochs:
        if target is not None and history[-1]["train_acc"] >= target:
            break
        lr = optimizer.param_groups[0]["lr"]
        _train_epoch(model, loader, optimizer, spec, device, fast, epoch, progress)
        scheduler.step()
        row = _epoch_metrics(model, eval_sets, spec, epoch, lr)
        history.append(row)
        epochs.set_postfix(train_acc=f"{row['train_acc']:.3f}", test_acc=f"{row['test_acc']:.3f}")
        cpu_state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        if epoch in spec.train.save_epochs:
            save_torch(cpu_state, out / f"epoch_{epoch}.pt")
        save_torch({
            "epoch": epoch, "digest": spec.digest(), "model": cpu_state,
            "optimizer": _optimizer_cpu_state(optimizer), "scheduler": scheduler.state_dict(),
            "rng_torch": torch.get_rng_state(), "rng_data": generator.get_state(),
            "rng_cuda": torch.cuda.get_rng_state() if device.type == "cuda" else None,
            "metrics": history, "init": init_state,
        }, ckpt_path)
    if target is not None and history[-1]["train_acc"] < target:
        print(f"warning: {spec.name} reached train accuracy {history[-1]['train_acc']:.4f} < "
              f"train.until_train_acc={target} within train.epochs={spec.train.epochs}")

    metrics = pd.DataFrame(history)
    metrics.insert(0, "run", spec.name)
    write_parquet(metrics, out / "metrics.parquet")
    final = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    write_yaml(_summary(spec, model, init_state, final, history), out / "summary.yaml")
    save_torch(final, out / "final.pt")
    ckpt_path.unlink(missing_ok=True)
    return _result(out, metrics, started)


def _summary(spec: RunSpec, model: nn.Module, init: dict, final: dict, history: list[dict]) -> dict:
    """Final metrics and distance travelled θ₀ → θ_T, so tables need no checkpoint reading."""
    from .shapes import distances

    last = history[-1]
    params = [k for k, _ in model.named_parameters()]
    return {"run": spec.name, "epochs": int(last["epoch"]),
            **{k: float(last[k]) for k in ("train_loss", "train_acc", "test_loss", "test_acc")},
            **distances(init, final, params)}


def _claim_directory(spec: RunSpec, out: Path) -> None:
    """Write run.yaml, refusing a directory that already holds another run."""
    settings = out / "run.yaml"
    if settings.exists():
        existing = RunSpec.from_yaml(settings)
        if existing.digest() != spec.digest():
            raise SettingsError(f"{out} already holds a run with other settings ({settings}); use another --out")
        return
    write_yaml(spec.to_dict(), settings)


def _train_epoch(model, loader, optimizer, spec: RunSpec, device, fast: bool, epoch: int, progress: bool) -> None:
    model.train()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if fast else contextlib.nullcontext()
    total = torch.zeros((), dtype=torch.float64, device=device)
    seen = 0
    for xb, yb in tqdm(loader, desc=f"epoch {epoch}", leave=False, disable=not progress, unit="batch"):
        xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
        if fast and xb.dim() == 4:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with autocast:
            logits = model(xb)
        loss_sum, _ = summed_loss_and_correct(logits, yb, spec.train.loss)
        optimizer.zero_grad(set_to_none=True)
        (loss_sum / len(yb)).backward()
        optimizer.step()
        total += loss_sum.detach().double()
        seen += len(yb)
    mean = (total / max(seen, 1)).item()
    if not math.isfinite(mean):
        raise TrainingDiverged(f"run {spec.name}: training loss became {mean} in epoch {epoch}; stopping")


def _epoch_metrics(model, eval_sets, spec: RunSpec, epoch: int, lr: float) -> dict:
    row = {"epoch": epoch, "lr": lr}
    for split, (x, y) in eval_sets.items():
        loss, acc = evaluate(model, x, y, spec.train.loss)
        row[f"{split}_loss"], row[f"{split}_acc"] = loss, acc
    return row


def _optimizer_cpu_state(optimizer: torch.optim.Optimizer) -> dict:
    state = optimizer.state_dict()
    state["state"] = {k: {n: (t.cpu() if torch.is_tensor(t) else t) for n, t in v.items()} for k, v in state["state"].items()}
    return state


def _optimizer_to(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    for per_param in optimizer.state.values():
        for name, value in per_param.items():
            if torch.is_tensor(value) and name != "step":
                per_param[name] = value.to(device)


def _result(out: Path, metrics: pd.DataFrame, started: float) -> RunResult:
    last = metrics.iloc[-1]
    return RunResult(out, int(last["epoch"]), float(last["train_loss"]), float(last["train_acc"]),
                     float(last["test_loss"]), float(last["test_acc"]), time.perf_counter() - started)
