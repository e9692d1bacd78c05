"""How much of a measured rise is rounding: the tolerance of the monotonic barrier-group rule.

A finished run's group-wise paths are measured twice, in two numerically different ways that compute
the same mathematical losses: the workflow's evaluator (BN folded into the convolutions, prefix reuse,
chunks of `--batch-size`) and a plain one (no folding, no prefix reuse, chunks of `--plain-batch-size`).
The largest |ΔL| between the two, over every α and path, is the noise of one measurement; a rise no
larger than it cannot be told from rounding. `shapes.barrier_groups.tol` is set well above it.

    python -m linpath.bench noise --run results/runs/<run_id> [--run ...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ..engine import models
from ..foundations.hparams import RunSpec
from ..foundations.io import load_state, write_text
from ..foundations.layout import Layout, RunDir
from ..paths.evaluator import PathEvaluator
from ..paths.sweeps import alpha_grid, run_eval_splits


def run_noise(run_dir: Path, cache: Path, alphas: np.ndarray, batch_size: int, plain_batch_size: int) -> dict:
    run = RunDir(run_dir)
    spec = RunSpec.from_yaml(run.settings)
    start, end = load_state(run.init), load_state(run.final)
    splits = run_eval_splits(run_dir, cache, ("train",))
    fast = PathEvaluator(models.build(spec.model), splits, spec.train.loss, batch_size=batch_size)
    plain = PathEvaluator(models.build(spec.model), splits, spec.train.loss, batch_size=plain_batch_size,
                          reuse_prefix=False, fold_bn=False)
    worst, scale = 0.0, 0.0
    for group in fast.groups:
        a = fast.sweep(start, end, alphas, group=group)["loss"].to_numpy()
        b = plain.sweep(start, end, alphas, group=group)["loss"].to_numpy()
        worst, scale = max(worst, float(np.max(np.abs(a - b)))), max(scale, float(np.max(np.abs(a))))
    return {"run": run_dir.name, "groups": len(fast.groups), "max_abs_diff": worst, "loss_scale": scale}


def bench_noise(args: argparse.Namespace) -> dict:
    alphas = alpha_grid(args.alphas)
    rows = [run_noise(Path(r), Path(args.eval_cache), alphas, args.batch_size, args.plain_batch_size) for r in args.runs]
    for row in rows:
        print(f"{row['run']}: {row['groups']} group paths x {len(alphas)} alpha, "
              f"max |L_workflow - L_plain| = {row['max_abs_diff']:.3g} (loss up to {row['loss_scale']:.3g})")
    out = {"ok": True, "runs": rows, "max_abs_diff": max(r["max_abs_diff"] for r in rows)}
    print(f"largest over {len(rows)} runs: {out['max_abs_diff']:.3g} loss units")
    if args.json:
        write_text(json.dumps(out, indent=2), args.json)
    return out


def add_parser(sub) -> None:
    p = sub.add_parser("noise", help="rounding noise of a group-wise path: two evaluations of the same losses")
    p.add_argument("--run", dest="runs", action="append", required=True, help="a finished run directory; repeatable")
    p.add_argument("--eval-cache", default=str(Layout().eval_cache()))
    p.add_argument("--alphas", default="0:1:51")
    p.add_argument("--batch-size", type=int, default=2048, help="the workflow evaluator's chunk")
    p.add_argument("--plain-batch-size", type=int, default=100, help="the plain evaluator's chunk")
    p.add_argument("--json", metavar="PATH", help="write the figures as JSON")
    p.set_defaults(run=bench_noise)
