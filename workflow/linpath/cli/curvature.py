"""Command-line verbs of the curvature along paths (added to `linpath` by linpath.cli):

    linpath curvature          λ_max and the Hessian trace along a run's full and group-wise paths -> parquet
    linpath curvature-report   table (curvature.parquet from the runs' files) | figure

Each job prints the CPU seconds it used (the cost of these measurements is measured per job).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..foundations.convert import json_argument
from ..foundations.hparams import SettingsError
from ..foundations.layout import Layout, RunDir
from .args import count, require_files

def _cmd_curvature(args: argparse.Namespace) -> None:
    from ..foundations.hparams import CurvatureSpec, SweepSpec
    from ..foundations.io import write_parquet
    from ..paths.curvature import curvature_job

    started = time.process_time()
    if not RunDir(args.run).outcome.is_file() and not RunDir(args.run).settings.is_file():
        raise SettingsError(f"--run: {args.run} is not a run directory (no {RunDir(args.run).settings.name})")
    spec = CurvatureSpec.from_config(json_argument(args.spec_json, "--spec-json"), "--spec-json")
    sweep = SweepSpec.from_dict(json_argument(args.sweep_json, "--sweep-json"), "--sweep-json")
    groups = json_argument(args.groups_json, "--groups-json", list, "a JSON list of group names, all or barrier")
    if "barrier" in groups and not args.barrier_groups:
        raise SettingsError("--groups-json names `barrier`: give the setting's barrier-groups file (--barrier-groups)")
    if args.barrier_groups and not Path(args.barrier_groups).is_file():
        raise SettingsError(f"--barrier-groups: file not found: {args.barrier_groups}")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    frame, summary = curvature_job(args.run, args.eval_cache, spec, sweep, [str(g) for g in groups],
                                   json_argument(args.meta_json, "--meta-json"), barrier_file=args.barrier_groups,
                                   progress=not args.no_progress)
    write_parquet(frame, args.out)
    print(f"{len(frame)} rows -> {args.out}; {summary}")
    print(f"cpu seconds: {time.process_time() - started:.2f}")


def _report_table(args: argparse.Namespace) -> None:
    from ..paths.curvature import write_curvature_table

    require_files(*args.inputs)
    table = write_curvature_table(args.inputs, args.out)
    print(f"{len(table)} rows -> {args.out}")


def _report_figure(args: argparse.Namespace) -> None:
    from ..report.curvature_figures import write_curvature_figure

    require_files(args.table, *args.sweeps)
    write_curvature_figure(args.table, args.sweeps, args.out)
    print(f"-> {args.out}")


def add_parsers(verbs, debug: argparse.ArgumentParser) -> None:
    p = verbs.add_parser("curvature", parents=[debug],
                         help="top Hessian eigenvalue and Hutchinson trace along a run's paths -> parquet")
    p.add_argument("--run", required=True, help="the run directory (θ₀, θ_T, settings, outcome)")
    p.add_argument("--eval-cache", default=str(Layout().eval_cache()), help="folder of cached evaluation splits")
    p.add_argument("--spec-json", help="linpath.foundations.hparams.CurvatureSpec as JSON (config `curvature`)")
    p.add_argument("--sweep-json", help="the setting's SweepSpec as JSON: its BN modes and BN-recompute subset")
    p.add_argument("--groups-json", help="group-wise paths besides the full path: JSON list of group names, "
                                         "\"all\" or \"barrier\" (default: none)")
    p.add_argument("--barrier-groups", help="the setting's barrier-groups YAML (for \"barrier\")")
    p.add_argument("--meta-json", help="columns written beside the rows (run, setting, seed, experiment)")
    p.add_argument("--out", required=True, help="parquet, one row per path, BN mode and α")
    p.add_argument("--threads", type=count, default=None)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_curvature)

    report = verbs.add_parser("curvature-report", parents=[debug], help="curvature table or figure")
    kinds = report.add_subparsers(dest="what", required=True, metavar="KIND")
    p = kinds.add_parser("table", parents=[debug], help="curvature.parquet from the per-run curvature files")
    p.add_argument("--inputs", nargs="+", required=True, help="per-run curvature files (`linpath curvature` outputs)")
    p.add_argument("--out", required=True, help="the table (parquet)")
    p.set_defaults(func=_report_table)
    p = kinds.add_parser("figure", parents=[debug], help="λ_max and the trace against α beside the loss path")
    p.add_argument("--table", required=True, help="curvature.parquet")
    p.add_argument("--sweeps", nargs="*", default=[], help="the runs' sweeps: the loss path drawn beside the curvature")
    p.add_argument("--out", required=True, help="the figure (PNG)")
    p.set_defaults(func=_report_figure)
