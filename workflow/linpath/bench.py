"""Benchmarks that print figures (speed goals live here, not in timed tests).

    python -m linpath.bench paths [--arch resnet18 --width 16 --device cpu]

times the project's path evaluator against a plain reference loop (a deep
copy of the model and load_state_dict per α, DataLoader batches of 128) on
the full path plus every group-wise path of one model, checks that both agree
to 1e-4 and prints the speed-up. Options add the digits test split
(--test-samples), another version of the evaluator to compare with
(--baseline FILE, e.g. `git show <rev>:workflow/linpath/paths.py > FILE`;
agreement checked at 1e-5), and a measurement of evaluating K α at once with
torch.func.functional_call + vmap (--alpha-batch K).

    python -m linpath.bench paths --cifar [--train-samples N --test-samples N --width W --alphas A]

sweeps the full path and every block path of a ResNet-18 (width 64) over
CIFAR-10-sized synthetic data (50 000 + 10 000 images of 3×32×32) and reports
the time, the peak memory (CUDA max_memory_allocated, or the process's peak
RSS on a CPU) and, on CUDA, the largest loss difference between strict fp32
and TF32. On a CPU shrink it with the options; the full size is for a GPU.
`--json PATH` writes every figure printed.

    python -m linpath.bench train [--images 2048 --epochs 2 --width 16 --device cpu --json out.json]

times training steps on synthetic CIFAR-shaped data, from the same initial
weights: the plain loop training used before the device-resident loader (a
DataLoader over per-image torchvision v2 transforms, fp32; kept below as the
reference), then each addition in turn. It checks that, without augmentation
and in fp32, the per-step losses of both loops agree to 1e-5 (else exit 1).
It then times packs of K seeds (--packs, default 2,4,8; linpath.pack): one
vmapped model of K stacked copies, each seed with its own init and its own
batches, reporting images/s over all seeds, the ratio to the fastest single
run and peak memory, and checks that the first step of a pack of 2 gives the
losses of two single runs on the same batches (no augmentation, fp32) to 1e-5
(else exit 1); later steps drift apart by float rounding and are reported.
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from . import augment
from . import data as data_mod
from . import models
from .hparams import DataSpec, ModelSpec
from .objective import strict_fp32, summed_loss_and_correct
from .paths import FULL, EvalSplit, PathEvaluator, alpha_grid
from .pack import StackedModel, packed_batches, packed_step
from .train import StepSettings, pick_device, train_step


def reference_sweep(model, start, end, keys, alphas, x, y, loss, device) -> list[float]:
    """What one would write first: copy the model, load θ(α), DataLoader of 128."""
    losses = []
    loader = DataLoader(TensorDataset(x, y), batch_size=128)
    for alpha in alphas:
        net = copy.deepcopy(model)
        state = {k: v.clone() for k, v in end.items()}
        for k in keys:
            state[k] = start[k] + float(alpha) * (end[k] - start[k])
        net.load_state_dict(state)
        net.to(device).eval()
        total, n = 0.0, 0
        with torch.no_grad():
            for xb, yb in loader:
                s, _ = summed_loss_and_correct(net(xb.to(device)), yb.to(device), loss)
                total += s.item()
                n += len(yb)
        losses.append(total / n)
    return losses


def bench_paths(args: argparse.Namespace) -> dict:
    """Run the benchmark the options ask for; print its lines, write --json, return the figures (with "ok")."""
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.threads:
        torch.set_num_threads(args.threads)
    result = bench_cifar(args, device) if args.cifar else bench_digits(args, device)
    if args.json:
        from .io import write_text

        write_text(json.dumps(result, indent=2) + "\n", args.json)
        print(f"figures -> {args.json}")
    return result


def bench_digits(args: argparse.Namespace, device: torch.device) -> dict:
    """The evaluator against the reference loop (and optionally another evaluator, and vmap over α)."""
    prep = data_mod.prepare(DataSpec(dataset=args.dataset, root=args.root))
    n_train = prep.train_x.shape[0] if args.train_samples is None else args.train_samples
    raw = [("train", prep.train_x[:n_train], prep.train_y[:n_train])]
    if args.test_samples:
        raw.append(("test", prep.test_x[: args.test_samples], prep.test_y[: args.test_samples]))
    if args.input_size and args.input_size != prep.input_size:
        raw = [(n, torch.nn.functional.interpolate(x, size=args.input_size, mode="bilinear", align_corners=False), y)
               for n, x, y in raw]
    width = args.width or 16
    x, y = raw[0][1], raw[0][2]
    spec = ModelSpec(arch=args.arch, width=width, num_classes=prep.num_classes,
                     in_channels=prep.in_channels, input_size=x.shape[-1])
    torch.manual_seed(0)
    start = models.build(spec).state_dict()
    torch.manual_seed(1)
    model = models.build(spec)
    _fake_training(model, x, y)
    end = {k: v.clone() for k, v in model.state_dict().items()}
    alphas = alpha_grid(f"0:1:{args.alphas}")
    splits = [EvalSplit(n, sx, sy) for n, sx, sy in raw]
    bn_data = x[:512].clone() if args.bn_mode == "recompute" else None

    evaluator = PathEvaluator(model, splits, "ce", device=device, batch_size=args.batch_size, bn_data=bn_data)
    paths = [FULL, *models.groups(model)]
    t_ours, ours = _timed_sweeps(evaluator, start, end, alphas, paths, args.bn_mode, device)
    result = {"benchmark": "paths", "device": str(device), "threads": torch.get_num_threads(), "arch": args.arch,
              "width": width, "bn_mode": args.bn_mode, "paths": len(paths), "alphas": len(alphas),
              "samples": {s.name: len(s.y) for s in splits}, "linpath_s": t_ours}
    print(f"model {args.arch} width {width}, splits {result['samples']} of {tuple(x.shape[1:])}, "
          f"{len(paths)} paths × {len(alphas)} α, bn_mode {args.bn_mode}, on {device} "
          f"(threads: {torch.get_num_threads()})")
    print(f"linpath        : {t_ours:8.2f} s")
    ok = True
    if not args.no_reference:
        if len(splits) > 1 or args.bn_mode != "interpolate":
            raise SystemExit("the reference loop covers one split in bn_mode interpolate: add --no-reference")
        reference_model = models.build(spec)
        t0 = _sync_time(device)
        ref = {g: np.array(reference_sweep(reference_model, start, end, evaluator.moving_keys(g), alphas, x, y, "ce",
                                           device)) for g in paths}
        t_ref = _sync_time(device) - t0
        worst = max(float(np.max(np.abs(ours[g] - ref[g]))) for g in paths)
        ok &= worst <= 1e-4
        result.update(reference_s=t_ref, speedup=t_ref / t_ours, max_abs_diff=worst)
        print(f"reference loop : {t_ref:8.2f} s")
        print(f"speed-up       : {t_ref / t_ours:8.2f} ×")
        print(f"agreement      : max |Δloss| = {worst:.2e} ({'OK' if worst <= 1e-4 else 'FAIL'} at 1e-4)")
    if args.baseline:
        other = _evaluator_class(args.baseline)(models.build(spec), splits, "ce", device=device,
                                                batch_size=args.batch_size, bn_data=bn_data)
        t_base, base = _timed_sweeps(other, start, end, alphas, paths, args.bn_mode, device)
        worst = max(float(np.max(np.abs(ours[g] - base[g]))) for g in paths)
        ok &= worst <= 1e-5
        result.update(baseline=str(args.baseline), baseline_s=t_base, baseline_max_abs_diff=worst)
        print(f"baseline       : {t_base:8.2f} s  ({args.baseline})")
        print(f"vs baseline    : {t_base / t_ours:8.2f} × faster; max |Δloss| = {worst:.2e} "
              f"({'OK' if worst <= 1e-5 else 'FAIL'} at 1e-5)")
    if args.alpha_batch:
        probe = alpha_batch_probe(evaluator, start, end, alphas, args.alpha_batch, device)
        ok &= probe["max_abs_diff"] <= 1e-5
        result["alpha_batch"] = probe
        print(f"full path, one α at a time      : {probe['one_at_a_time_s']:8.2f} s")
        print(f"full path, {args.alpha_batch:3d} α at once (vmap) : {probe['vmap_s']:8.2f} s; "
              f"max |Δloss| = {probe['max_abs_diff']:.2e}")
    result["ok"] = bool(ok)
    return result


def bench_cifar(args: argparse.Namespace, device: torch.device) -> dict:
    """Time and peak memory of a 51-α full + block sweep at CIFAR-10 size; strict fp32 vs TF32 on CUDA."""
    n_train = 50_000 if args.train_samples is None else args.train_samples
    n_test = 10_000 if args.test_samples is None else args.test_samples
    width = args.width or 64
    spec = ModelSpec(arch=args.arch, width=width, num_classes=10, in_channels=3, input_size=32)
    g = torch.Generator().manual_seed(0)
    patterns = torch.randn(10, 3, 32, 32, generator=g)  # a class signal, so the loss is not flat

    def synthetic(name: str, n: int) -> EvalSplit:
        labels = torch.randint(10, (n,), generator=g)
        return EvalSplit(name, torch.randn(n, 3, 32, 32, generator=g) + patterns[labels], labels)

    splits = [synthetic("train", n_train), synthetic("test", n_test)]
    torch.manual_seed(0)
    start = models.build(spec).state_dict()
    torch.manual_seed(1)
    model = models.build(spec).to(device)
    fit = splits[0].x[:512].to(device), splits[0].y[:512].to(device)
    _fake_training(model, *fit, steps=5)
    end = {k: v.detach().clone() for k, v in model.state_dict().items()}
    alphas = alpha_grid(f"0:1:{args.alphas}")
    evaluator = PathEvaluator(model, splits, "ce", device=device, batch_size=args.batch_size)
    del splits, fit  # the evaluator holds the device copies
    paths = [FULL, *models.groups(model)]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds, strict = _timed_sweeps(evaluator, start, end, alphas, paths, "interpolate", device)
    if device.type == "cuda":
        peak, peak_what = torch.cuda.max_memory_allocated(device), "CUDA max_memory_allocated"
    else:
        peak, peak_what = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "peak RSS of the process"
    result = {"benchmark": "paths --cifar", "device": str(device), "threads": torch.get_num_threads(),
              "arch": args.arch, "width": width, "samples": {"train": n_train, "test": n_test},
              "paths": len(paths), "alphas": len(alphas), "batch_size": args.batch_size, "seconds": seconds,
              "peak_memory_bytes": peak, "peak_memory_kind": peak_what, "tf32_max_abs_diff": None}
    print(f"model {args.arch} width {width}, {n_train} + {n_test} synthetic 3×32×32 images, {len(paths)} paths "
          f"(full + blocks) × {len(alphas)} α, chunk {args.batch_size}, on {device} (threads: {torch.get_num_threads()})")
    print(f"strict fp32    : {seconds:8.2f} s")
    print(f"peak memory    : {peak / 2**30:8.2f} GiB ({peak_what})")
    if device.type == "cuda":
        evaluator.allow_tf32 = True
        t_tf32, tf32 = _timed_sweeps(evaluator, start, end, alphas, paths, "interpolate", device)
        worst = max(float(np.max(np.abs(strict[p] - tf32[p]))) for p in paths)
        result.update(tf32_seconds=t_tf32, tf32_max_abs_diff=worst)
        print(f"TF32           : {t_tf32:8.2f} s")
        print(f"fp32 vs TF32   : max |Δloss| = {worst:.2e}")
    else:
        print("fp32 vs TF32   : not measured (TF32 exists only on CUDA devices; run with a GPU)")
    result["ok"] = True
    return result


def _timed_sweeps(evaluator, start, end, alphas, paths, bn_mode, device) -> tuple[float, dict[str, np.ndarray]]:
    """Seconds for one sweep per path, and each path's losses (splits concatenated, α-major)."""
    t0 = _sync_time(device)
    losses = {g: evaluator.sweep(start, end, alphas, group=g, bn_mode=bn_mode)["loss"].to_numpy() for g in paths}
    return _sync_time(device) - t0, losses


def _evaluator_class(path: str):
    """PathEvaluator of another version of linpath/paths.py, loaded as a module of this package."""
    import importlib.util
    import sys

    name = f"{__package__}._baseline_paths"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None:
        raise SystemExit(f"--baseline: cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module.PathEvaluator


def alpha_batch_probe(evaluator: PathEvaluator, start, end, alphas, k: int, device: torch.device) -> dict:
    """The full path evaluated with K α at once (torch.func.functional_call + vmap over K stacked, folded
    states: batched convolutions become grouped ones) against the evaluator's one α at a time."""
    import warnings

    from torch.func import functional_call, vmap

    t0 = _sync_time(device)
    ours = evaluator.sweep(start, end, alphas)["loss"].to_numpy()
    t_ours = _sync_time(device) - t0
    keys = evaluator.moving_keys(FULL)
    a = {key: start[key].to(device, torch.float32) for key in keys}
    b = {key: end[key].to(device, torch.float32) for key in keys}
    runner = evaluator.runner
    t0 = _sync_time(device)
    totals = np.zeros((len(alphas), len(evaluator.splits)))
    with torch.inference_mode(), strict_fp32(device), warnings.catch_warnings():
        # adaptive_avg_pool2d has no batching rule and falls back to a loop over α: part of what is timed
        warnings.filterwarnings("ignore", message="There is a performance drop because we have not yet implemented")
        for first in range(0, len(alphas), k):
            block = alphas[first : first + k]
            states = []
            for alpha in block:
                for key in keys:
                    torch.lerp(a[key], b[key], float(alpha), out=evaluator.live[key])
                if evaluator.twin is not None:
                    evaluator.twin.refresh(keys)
                states.append({n: t.clone() for n, t in runner.state_dict().items()})
            stacked = {n: torch.stack([s[n] for s in states]) for n in states[0]}
            for s, split in enumerate(evaluator.splits):
                for i in range(0, len(split.y), evaluator.batch_size):
                    x, y = split.x[i : i + evaluator.batch_size], split.y[i : i + evaluator.batch_size]
                    logits = vmap(lambda state: functional_call(runner, state, (x,)))(stacked)
                    for j in range(len(block)):
                        totals[first + j, s] += summed_loss_and_correct(logits[j], y, evaluator.loss)[0].item()
    t_vmap = _sync_time(device) - t0
    sizes = np.array([len(split.y) for split in evaluator.splits])
    theirs = (totals / sizes).reshape(-1)
    return {"k": k, "one_at_a_time_s": t_ours, "vmap_s": t_vmap, "max_abs_diff": float(np.max(np.abs(ours - theirs)))}


def _fake_training(model, x, y, steps: int = 20) -> None:
    """A few SGD steps so the end state has non-trivial BatchNorm statistics."""
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for i in range(steps):
        idx = torch.randint(len(y), (64,), generator=torch.Generator().manual_seed(i))
        loss, _ = summed_loss_and_correct(model(x[idx]), y[idx], "ce")
        opt.zero_grad()
        (loss / 64).backward()
        opt.step()
    model.eval()


# --- train: the training step against the plain loop it replaced ---------------


class PerImageDataset(Dataset):
    """Reference: the Dataset training used before (one torchvision v2 call per image)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, transform):
        self.x, self.y, self.transform = x, y, transform

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        xi = self.x[i]
        return (self.transform(xi) if self.transform else xi), self.y[i]


def plain_epoch(model, loader, optimizer, device) -> list[torch.Tensor]:
    """Reference: the training epoch as it stood before (fp32), returning its per-step losses."""
    model.train()
    losses = []
    for xb, yb in loader:
        xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
        loss_sum, _ = summed_loss_and_correct(model(xb), yb, "ce")
        optimizer.zero_grad(set_to_none=True)
        (loss_sum / len(yb)).backward()
        optimizer.step()
        losses.append((loss_sum / len(yb)).detach())
    return losses


def synthetic_cifar(n: int, size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random uint8 images and labels, normalised as training normalises images."""
    g = torch.Generator().manual_seed(seed)
    raw = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    pixels = raw.float().div(255)
    mean, std = pixels.mean(dim=(0, 2, 3), keepdim=True), pixels.std(dim=(0, 2, 3), keepdim=True)
    return (pixels - mean) / std, torch.randint(0, 10, (n,), generator=g)


class TrainBench:
    """The same initial weights, data and optimiser settings for every variant."""

    def __init__(self, args: argparse.Namespace, device: torch.device):
        self.args, self.device = args, device
        self.x, self.y = synthetic_cifar(args.images, args.size)
        self.spec = ModelSpec(arch=args.arch, width=args.width, num_classes=10, in_channels=3, input_size=args.size)
        with augment.seeded_global_rng(0):
            self.init = models.build(self.spec).state_dict()

    def fresh(self):
        model = models.build(self.spec)
        model.load_state_dict(self.init)
        model.to(self.device)
        return model, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)

    def seed_init(self, seed: int) -> dict:
        if seed == 0:
            return self.init
        with augment.seeded_global_rng(seed):
            return models.build(self.spec).state_dict()

    def fresh_pack(self, k: int):
        """Seeds 0..k-1 stacked (seed 0 starts where the single runs start), the single runs' optimiser."""
        model = StackedModel(self.spec, [self.seed_init(s) for s in range(k)], self.device)
        return model, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)

    def pack_loaders(self, level: str, k: int) -> list[data_mod.DeviceLoader]:
        """One loader per seed (train.seed = s), all over the same images."""
        return [data_mod.DeviceLoader(self.x, self.y, self.args.batch_size, s, level, self.device) for s in range(k)]

    def plain_loader(self, level: str, order: list[int] | None = None) -> DataLoader:
        ds = PerImageDataset(self.x, self.y, augment.per_image_pipeline(level, self.args.size))
        if order is not None:
            return DataLoader(ds, batch_size=self.args.batch_size, sampler=order)
        return DataLoader(ds, batch_size=self.args.batch_size, shuffle=True, generator=torch.Generator().manual_seed(0))

    def device_loader(self, level: str) -> data_mod.DeviceLoader:
        return data_mod.DeviceLoader(self.x, self.y, self.args.batch_size, 0, level, self.device)

    def agreement(self, plain_seed: int = 0) -> dict:
        """Per-step losses without augmentation, fp32, TF32 off, deterministic cuDNN, the same
        batches (the plain loop gets the device loader's order, unless `plain_seed` differs)."""
        steps, fast = self.args.agree_steps, self.device_loader("none")
        order = augment.draw_epoch(len(self.y), plain_seed, 1, "none", 0).order.tolist()
        saved = torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, True
        try:
            with strict_fp32(self.device):
                model, opt = self.fresh()
                ref = torch.stack(plain_epoch(model, _take(self.plain_loader("none", order), steps), opt, self.device))
                model, opt = self.fresh()
                how = StepSettings(self.device, False, False, False)
                ours = torch.stack([train_step(model, opt, xb, yb, "ce", how) for xb, yb in _take(fast.epoch(1), steps)])
        finally:
            torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved
        worst = float((ref.double() - ours.double()).abs().max())
        return {"steps": len(ref), "max_abs_diff": worst, "ok": len(ref) == len(ours) and worst <= 1e-5}

    def pack_agreement(self, k: int = 2) -> dict:
        """A pack of `k` against `k` single runs on the same batches (no augmentation, fp32, TF32 off,
        deterministic cuDNN). The first step's losses, from the same states, must agree to 1e-5: the pack
        computes in grouped kernels what the single runs compute one by one. The parameters after that
        step and the losses of later steps are reported, not checked: a narrow BatchNorm ResNet is
        chaotic at float rounding (a ReLU input within rounding of zero switches its gradient), and two
        single runs that differ only in their convolution kernels (oneDNN on or off) differ as much
        (ResNet-18 width 2, 16×16: 1.7e-5 in the parameters after one step, 7e-4 in the loss after 4)."""
        steps, loaders = self.args.agree_steps, self.pack_loaders("none", k)
        saved = torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, True
        how = StepSettings(self.device, False, False, False)
        try:
            with strict_fp32(self.device):
                single_losses, single_first = [], []
                for s, loader in enumerate(loaders):
                    model = models.build(self.spec)
                    model.load_state_dict(self.seed_init(s))
                    model.to(self.device)
                    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
                    losses = []
                    for xb, yb in _take(loader.epoch(1), steps):
                        losses.append(train_step(model, opt, xb, yb, "ce", how))
                        if len(losses) == 1:
                            single_first.append({n: p.detach().clone() for n, p in model.named_parameters()})
                    single_losses.append(torch.stack(losses))
                model, opt = self.fresh_pack(k)
                losses = []
                for xb, yb in _take(packed_batches(loaders, 1), steps):
                    losses.append(packed_step(model, opt, xb, yb, "ce", how))
                    if len(losses) == 1:
                        packed_first = {n: p.detach().clone() for n, p in model.module.named_parameters()}
                packed = torch.stack(losses)
        finally:
            torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved
        diffs = (torch.stack(single_losses, 1).double() - packed.double()).abs()
        first_state = max(float((packed_first[n][s] - p).abs().max()) for s, state in enumerate(single_first)
                          for n, p in state.items())
        return {"seeds": k, "steps": len(packed), "first_loss_max_abs_diff": float(diffs[0].max()),
                "first_step_parameters_max_abs_diff": first_state, "drift_max_abs_diff": float(diffs.max()),
                "ok": float(diffs[0].max()) <= 1e-5}

    def time_once(self, run_epoch, compiled: bool, fresh=None) -> tuple[float, float, dict]:
        """Warm-up steps (untimed; compilation happens here), then `epochs` timed epochs."""
        model, opt = (fresh or self.fresh)()
        forward = torch.compile(model) if compiled else model
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        t0 = _sync_time(self.device)
        run_epoch(forward, opt, 0, self.args.warmup_steps)
        t1 = _sync_time(self.device)
        for epoch in range(1, self.args.epochs + 1):
            run_epoch(forward, opt, epoch, None)
        return _sync_time(self.device) - t1, t1 - t0, _peak_memory(self.device)


def _take(batches, steps: int | None):
    for i, batch in enumerate(batches):
        if steps is not None and i >= steps:
            return
        yield batch


def _peak_memory(device: torch.device) -> dict:
    if device.type == "cuda":
        return {"peak_memory_mib": torch.cuda.max_memory_allocated(device) / 2**20, "memory": "cuda max allocated"}
    return {"peak_memory_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "memory": "process peak RSS so far"}


def bench_train(args: argparse.Namespace) -> dict:
    device = pick_device(args.device)
    cuda = device.type == "cuda"
    if args.threads:
        torch.set_num_threads(args.threads)
    args.images = args.images or (16384 if cuda else 1024)
    bench, level = TrainBench(args, device), args.augment

    def plain(forward, opt, epoch, steps):
        plain_epoch(forward, _take(bench.plain_loader(level), steps), opt, device)

    loader = bench.device_loader(level)  # shared by the device-resident variants

    def fast(how):
        def run(forward, opt, epoch, steps):
            for xb, yb in _take(loader.epoch(epoch), steps):
                train_step(forward, opt, xb, yb, "ce", how)
        return run

    fp32, bf16_cl = StepSettings(device, False, False, False), StepSettings(device, True, True, False)
    compile_on = args.compile if args.compile is not None else cuda
    plan = [  # (variant, epoch runner, compiled, why skipped)
        ("plain loop (DataLoader + per-image v2)", plain, False, None),
        ("device-resident batched loader", fast(fp32), False, None),
        ("+ bf16 autocast + channels_last", fast(bf16_cl) if cuda else None, False, None if cuda else "CUDA only"),
        ("+ torch.compile", fast(bf16_cl if cuda else fp32), True,
         None if compile_on else "off (--compile to time it; default off on CPU)"),
    ]
    # Seed packing: K seeds in one vmapped model, each with its own init and batches, in the
    # step settings of the fast single run (bf16 on CUDA; channels_last does not apply to 5-D batches).
    pack_how = StepSettings(device, cuda, False, False)

    def packed(k):
        loaders = bench.pack_loaders(level, k)

        def run(forward, opt, epoch, steps):
            for xb, yb in _take(packed_batches(loaders, epoch), steps):
                packed_step(forward, opt, xb, yb, "ce", pack_how)
        return run

    pack_plan = [(f"pack of {k} seeds (vmap)", packed(k), False, k) for k in args.packs]

    torch.backends.cudnn.benchmark = cuda
    timed = [(name, run, compiled, None) for name, run, compiled, why in plan if why is None] + pack_plan
    runs = {name: [] for name, *_ in timed}
    for _ in range(args.repeats):  # interleaved, so a change in load hits every variant alike
        for name, run, compiled, k in timed:
            runs[name].append(bench.time_once(run, compiled, None if k is None else (lambda k=k: bench.fresh_pack(k))))
    variants = []
    for name, _, compiled, why in plan:
        if why is not None:
            variants.append({"variant": name, "skipped": why})
            continue
        seconds, _, memory = min(runs[name], key=lambda r: r[0])
        v = {"variant": name, "seconds": seconds, "images_per_s": args.images * args.epochs / seconds, **memory}
        v["ratio_to_plain"] = v["images_per_s"] / (variants[0]["images_per_s"] if variants else v["images_per_s"])
        if compiled:
            v["compile_seconds"] = runs[name][0][1]
        variants.append(v)
    singles = [v for v in variants[1:] if "skipped" not in v]
    fastest = max(singles, key=lambda v: v["images_per_s"]) if singles else None
    packing = []
    for name, _, _, k in pack_plan:
        seconds, _, memory = min(runs[name], key=lambda r: r[0])
        rate = k * args.images * args.epochs / seconds
        packing.append({"variant": name, "seeds": k, "seconds": seconds, "images_per_s": rate,
                        "ratio_to_single": rate / fastest["images_per_s"], "single": fastest["variant"], **memory})
    agreement = bench.agreement()
    pack_agreement = bench.pack_agreement() if args.packs else None

    result = {"device": str(device), "threads": torch.get_num_threads(), "arch": args.arch, "width": args.width,
              "images": args.images, "size": args.size, "batch_size": args.batch_size, "epochs": args.epochs,
              "repeats": args.repeats, "augment": level, "variants": variants, "packing": packing,
              "agreement": agreement, "pack_agreement": pack_agreement,
              "ok": agreement["ok"] and (pack_agreement is None or pack_agreement["ok"])}
    print(f"train: {args.arch} width {args.width}, {args.images} synthetic images 3×{args.size}×{args.size}, "
          f"batch {args.batch_size}, {args.epochs} epochs (best of {args.repeats}), augmentation {level}, "
          f"on {device} (threads: {torch.get_num_threads()})")
    for v in variants:
        if "skipped" in v:
            print(f"  {v['variant']:<40} skipped: {v['skipped']}")
            continue
        extra = f"; compile + warm-up {v['compile_seconds']:.1f} s" if "compile_seconds" in v else ""
        print(f"  {v['variant']:<40} {v['images_per_s']:9.1f} images/s {v['ratio_to_plain']:6.2f} × plain  "
              f"peak {v['peak_memory_mib']:.0f} MiB ({v['memory']}){extra}")
    for v in packing:
        print(f"  {v['variant']:<40} {v['images_per_s']:9.1f} images/s (all seeds) {v['ratio_to_single']:6.2f} × "
              f"fastest single  peak {v['peak_memory_mib']:.0f} MiB ({v['memory']})")
    print(f"agreement: max |Δ step loss| over {agreement['steps']} steps (no augmentation, fp32) = "
          f"{agreement['max_abs_diff']:.2e} ({'OK' if agreement['ok'] else 'FAIL'} at 1e-5)")
    if pack_agreement is not None:
        a = pack_agreement
        print(f"pack agreement: a pack of {a['seeds']} vs single runs: first step max |Δ loss| = "
              f"{a['first_loss_max_abs_diff']:.2e} ({'OK' if a['ok'] else 'FAIL'} at 1e-5); not checked (rounding "
              f"grows): |Δ parameter| after it {a['first_step_parameters_max_abs_diff']:.2e}, |Δ loss| over "
              f"{a['steps']} steps {a['drift_max_abs_diff']:.2e}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


def _sync_time(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


def _add_train_parser(sub) -> None:
    p = sub.add_parser("train", help="training steps: the plain loop vs the device-resident loader and speed settings")
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--images", type=int, default=None, help="synthetic training images (default: 1024 on CPU, 16384 on CUDA)")
    p.add_argument("--size", type=int, default=32, help="image side (CIFAR: 32)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=2, help="timed epochs per variant")
    p.add_argument("--warmup-steps", type=int, default=2, help="untimed steps before timing (compilation happens here)")
    p.add_argument("--repeats", type=int, default=1, help="time each variant this often, report the best")
    p.add_argument("--agree-steps", type=int, default=20, help="steps compared by the agreement check")
    p.add_argument("--augment", default="standard", choices=["none", "crop", "standard"])
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="also time torch.compile (default: on with CUDA, off on CPU)")
    p.add_argument("--packs", type=lambda v: [int(k) for k in v.split(",") if k], default=[2, 4, 8],
                   help="seeds per pack to time, comma-separated (empty: none)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default=None, help="also write the figures as JSON here")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m linpath.bench")
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("paths", help="path evaluator vs a plain reference loop; --cifar: time and memory at CIFAR size")
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--width", type=int, default=None, help="default 16 (digits) or 64 (--cifar)")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--root", default="data")
    p.add_argument("--train-samples", "--samples", dest="train_samples", type=int, default=None,
                   help="default: the whole digits training set, or 50 000 with --cifar")
    p.add_argument("--test-samples", type=int, default=None, help="default: none (digits), or 10 000 with --cifar")
    p.add_argument("--input-size", type=int, default=None, help="resize inputs (e.g. 32 for CIFAR-sized maps)")
    p.add_argument("--alphas", type=int, default=51)
    p.add_argument("--batch-size", type=int, default=2048, help="the evaluator's chunk")
    p.add_argument("--bn-mode", choices=["interpolate", "recompute"], default="interpolate")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (workflow jobs use 1)")
    p.add_argument("--no-reference", action="store_true", help="skip the reference loop")
    p.add_argument("--baseline", metavar="FILE", help="another linpath/paths.py to time and compare with")
    p.add_argument("--alpha-batch", type=int, default=0, metavar="K", help="also time K α at once with vmap")
    p.add_argument("--cifar", action="store_true", help="CIFAR-10-sized synthetic data, ResNet-18 width 64")
    p.add_argument("--json", metavar="PATH", help="write the figures as JSON")
    _add_train_parser(sub)
    args = parser.parse_args(argv)
    if args.what == "train":
        return 0 if bench_train(args)["ok"] else 1
    result = bench_paths(args)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
