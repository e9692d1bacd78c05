"""Benchmarks that print figures (speed goals live here, not in timed tests).

    python -m linpath.bench paths [--arch resnet18 --width 16 --device cpu]

times the project's path evaluator against a plain reference loop (a deep
copy of the model and load_state_dict per α, DataLoader batches of 128) on
the full path plus every group-wise path of one model, checks that both agree
to 1e-4 and prints the speed-up.

    python -m linpath.bench train [--images 2048 --epochs 2 --width 16 --device cpu --json out.json]

times training steps on synthetic CIFAR-shaped data, from the same initial
weights: the plain loop training used before the device-resident loader (a
DataLoader over per-image torchvision v2 transforms, fp32; kept below as the
reference), then each addition in turn. It checks that, without augmentation
and in fp32, the per-step losses of both loops agree to 1e-5 (else exit 1).
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
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    prep = data_mod.prepare(DataSpec(dataset=args.dataset, root=args.root))
    x, y = prep.train_x[: args.samples], prep.train_y[: args.samples]
    if args.input_size and args.input_size != prep.input_size:
        x = torch.nn.functional.interpolate(x, size=args.input_size, mode="bilinear", align_corners=False)
    spec = ModelSpec(arch=args.arch, width=args.width, num_classes=prep.num_classes,
                     in_channels=prep.in_channels, input_size=x.shape[-1])
    torch.manual_seed(0)
    start = models.build(spec).state_dict()
    torch.manual_seed(1)
    model = models.build(spec)
    _fake_training(model, x, y)
    end = {k: v.clone() for k, v in model.state_dict().items()}
    alphas = alpha_grid(f"0:1:{args.alphas}")

    evaluator = PathEvaluator(model, [EvalSplit("train", x, y)], "ce", device=device, batch_size=args.batch_size)
    paths = [FULL, *models.groups(model)]
    t0 = _sync_time(device)
    ours = {g: evaluator.sweep(start, end, alphas, group=g)["loss"].to_numpy() for g in paths}
    t_ours = _sync_time(device) - t0

    reference_model = models.build(spec)
    t0 = _sync_time(device)
    ref = {g: np.array(reference_sweep(reference_model, start, end, evaluator.moving_keys(g), alphas, x, y, "ce", device))
           for g in paths}
    t_ref = _sync_time(device) - t0

    worst = max(float(np.max(np.abs(ours[g] - ref[g]))) for g in paths)
    result = {"device": str(device), "paths": len(paths), "alphas": len(alphas), "samples": len(y),
              "reference_s": t_ref, "linpath_s": t_ours, "speedup": t_ref / t_ours, "max_abs_diff": worst}
    print(f"model {args.arch} width {args.width}, {len(y)} samples of {tuple(x.shape[1:])}, "
          f"{len(paths)} paths × {len(alphas)} α on {device} (threads: {torch.get_num_threads()})")
    print(f"reference loop : {t_ref:8.2f} s")
    print(f"linpath        : {t_ours:8.2f} s")
    print(f"speed-up       : {t_ref / t_ours:8.2f} ×")
    print(f"agreement      : max |Δloss| = {worst:.2e} ({'OK' if worst <= 1e-4 else 'FAIL'} at 1e-4)")
    return result


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
            with strict_fp32():
                model, opt = self.fresh()
                ref = torch.stack(plain_epoch(model, _take(self.plain_loader("none", order), steps), opt, self.device))
                model, opt = self.fresh()
                how = StepSettings(self.device, False, False, False)
                ours = torch.stack([train_step(model, opt, xb, yb, "ce", how) for xb, yb in _take(fast.epoch(1), steps)])
        finally:
            torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved
        worst = float((ref.double() - ours.double()).abs().max())
        return {"steps": len(ref), "max_abs_diff": worst, "ok": len(ref) == len(ours) and worst <= 1e-5}

    def time_once(self, run_epoch, compiled: bool) -> tuple[float, float, dict]:
        """Warm-up steps (untimed; compilation happens here), then `epochs` timed epochs."""
        model, opt = self.fresh()
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
    # Seed packing (K = 2, 4, 8 seeds in one model) belongs here once it exists: time
    # fast(...) on the packed model per K and report images/s per seed.
    packing = "not available"

    torch.backends.cudnn.benchmark = cuda
    timed = [(name, run, compiled) for name, run, compiled, why in plan if why is None]
    runs = {name: [] for name, _, _ in timed}
    for _ in range(args.repeats):  # interleaved, so a change in load hits every variant alike
        for name, run, compiled in timed:
            runs[name].append(bench.time_once(run, compiled))
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
    agreement = bench.agreement()

    result = {"device": str(device), "threads": torch.get_num_threads(), "arch": args.arch, "width": args.width,
              "images": args.images, "size": args.size, "batch_size": args.batch_size, "epochs": args.epochs,
              "repeats": args.repeats, "augment": level, "variants": variants, "packing": packing,
              "agreement": agreement}
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
    print(f"  packing: {packing}")
    print(f"agreement: max |Δ step loss| over {agreement['steps']} steps (no augmentation, fp32) = "
          f"{agreement['max_abs_diff']:.2e} ({'OK' if agreement['ok'] else 'FAIL'} at 1e-5)")
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
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default=None, help="also write the figures as JSON here")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m linpath.bench")
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("paths", help="path evaluator vs a plain reference loop")
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--dataset", default="digits")
    p.add_argument("--root", default="data")
    p.add_argument("--samples", type=int, default=1437)
    p.add_argument("--input-size", type=int, default=None, help="resize inputs (e.g. 32 for CIFAR-sized maps)")
    p.add_argument("--alphas", type=int, default=51)
    p.add_argument("--batch-size", type=int, default=2048)
    p.add_argument("--device", default="auto")
    _add_train_parser(sub)
    args = parser.parse_args(argv)
    if args.what == "train":
        return 0 if bench_train(args)["agreement"]["ok"] else 1
    result = bench_paths(args)
    return 0 if result["max_abs_diff"] <= 1e-4 else 1


if __name__ == "__main__":
    raise SystemExit(main())
