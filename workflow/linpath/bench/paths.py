"""`python -m linpath.bench paths`: the path evaluator against a plain loop, and at CIFAR size.

    python -m linpath.bench paths [--arch resnet18 --width 16 --device cpu]

times the project's path evaluator against a plain reference loop (a deep
copy of the model and load_state_dict per α, DataLoader batches of 128) on
the full path plus every group-wise path of one model, checks that both agree
to 1e-4 and prints the speed-up. Options add the digits test split
(--test-samples), another version of the evaluator to compare with
(--baseline FILE, e.g. `git show <rev>:workflow/linpath/paths/evaluator.py > FILE`;
agreement checked at 1e-5), and a measurement of evaluating K α at once with
torch.func.functional_call + vmap (--alpha-batch K).

    python -m linpath.bench paths --cifar [--train-samples N --test-samples N --width W --alphas A]

sweeps the full path and every block path of a ResNet-18 (width 64) over
CIFAR-10-sized synthetic data (50 000 + 10 000 images of 3×32×32) and reports
the time, the peak memory (CUDA max_memory_allocated, or the process's peak
RSS on a CPU) and, on CUDA, the largest loss difference between strict fp32
and TF32. On a CPU shrink it with the options; the full size is for a GPU.
`--json PATH` writes every figure printed.
"""

from __future__ import annotations

import argparse
import copy
import json
import resource

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from ..engine import data as data_mod
from ..engine import models
from ..engine.objective import strict_fp32, summed_loss_and_correct
from ..foundations.device import pick_device, synced_time
from ..foundations.hparams import DataSpec, ModelSpec
from ..foundations.io import write_text
from ..paths.evaluator import FULL, EvalSplit, PathEvaluator
from ..paths.sweeps import alpha_grid


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
    device = pick_device(args.device, "--device")
    if args.threads:
        torch.set_num_threads(args.threads)
    result = bench_cifar(args, device) if args.cifar else bench_digits(args, device)
    if args.json:
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
        t0 = synced_time(device)
        ref = {g: np.array(reference_sweep(reference_model, start, end, evaluator.moving_keys(g), alphas, x, y, "ce",
                                           device)) for g in paths}
        t_ref = synced_time(device) - t0
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
    t0 = synced_time(device)
    losses = {g: evaluator.sweep(start, end, alphas, group=g, bn_mode=bn_mode)["loss"].to_numpy() for g in paths}
    return synced_time(device) - t0, losses


def _evaluator_class(path: str):
    """PathEvaluator of another version of linpath/paths/evaluator.py, loaded as a module of linpath.paths."""
    import importlib.util
    import sys

    name = "linpath.paths._baseline_evaluator"  # beside the evaluator: its relative imports resolve
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

    t0 = synced_time(device)
    ours = evaluator.sweep(start, end, alphas)["loss"].to_numpy()
    t_ours = synced_time(device) - t0
    keys = evaluator.moving_keys(FULL)
    a = {key: start[key].to(device, torch.float32) for key in keys}
    b = {key: end[key].to(device, torch.float32) for key in keys}
    runner = evaluator.runner
    t0 = synced_time(device)
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
    t_vmap = synced_time(device) - t0
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


def add_parser(sub) -> None:
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
    p.add_argument("--baseline", metavar="FILE", help="another linpath/paths/evaluator.py to time and compare with")
    p.add_argument("--alpha-batch", type=int, default=0, metavar="K", help="also time K α at once with vmap")
    p.add_argument("--cifar", action="store_true", help="CIFAR-10-sized synthetic data, ResNet-18 width 64")
    p.add_argument("--json", metavar="PATH", help="write the figures as JSON")
    p.set_defaults(run=bench_paths)
