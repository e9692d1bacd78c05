"""Benchmarks that print figures (speed goals live here, not in timed tests).

    python -m linpath.bench paths [--arch resnet18 --width 16 --device cpu]

times the project's path evaluator against a plain reference loop (a deep
copy of the model and load_state_dict per α, DataLoader batches of 128) on
the full path plus every group-wise path of one model, checks that both agree
to 1e-4 and prints the speed-up.
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from . import data as data_mod
from . import models
from .hparams import DataSpec, ModelSpec
from .objective import summed_loss_and_correct
from .paths import FULL, EvalSplit, PathEvaluator, alpha_grid


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


def _sync_time(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


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
    args = parser.parse_args(argv)
    result = bench_paths(args)
    return 0 if result["max_abs_diff"] <= 1e-4 else 1


if __name__ == "__main__":
    raise SystemExit(main())
