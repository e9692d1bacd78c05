"""Command-line verbs of the instability analysis and the loss planes (added to `linpath` by linpath.cli):

    linpath lmc-path     the straight lines between the final states of two or more runs -> parquet;
                         --align: two runs, the second's units matched to the first's, without and with REPAIR
    linpath plane        a loss plane through three states of a run, with its projected trajectory, or a
                         random plane and line around one state (filter-normalised directions)
    linpath lmc-report   instability table | instability figure | planes table | plane figure

Each job prints the CPU seconds it used (the cost of these sweeps is measured per job).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..foundations.convert import json_argument
from ..foundations.hparams import SettingsError
from ..foundations.layout import Layout, RunDir
from .args import count, number, require_files


def _json(text: str | None, flag: str) -> dict:
    return json_argument(text, flag)


def _run_dirs(dirs: list[str], flag: str) -> list[Path]:
    for d in dirs:
        if not (settings := RunDir(d).settings).is_file():
            raise SettingsError(f"{flag}: {d} is not a run directory (no {settings.name})")
    return [Path(d) for d in dirs]


def _threads(n: int | None) -> None:
    if n:
        import torch

        torch.set_num_threads(n)


def _cpu(started: float) -> str:
    return f"cpu seconds: {time.process_time() - started:.2f}"


def _cmd_lmc_path(args: argparse.Namespace) -> None:
    from ..foundations.hparams import InstabilitySpec
    from ..foundations.io import write_parquet
    from ..paths.lmc import pair_sweep

    started = time.process_time()
    if len(args.end) < 2:
        raise SettingsError(f"--end: give at least two run directories, got {len(args.end)}")
    spec = InstabilitySpec.from_config(_json(args.sweep_json, "--sweep-json"), "--sweep-json")
    _threads(args.threads)
    if args.align and len(args.end) != 2:
        raise SettingsError(f"--align: an aligned pair has two ends (--end), got {len(args.end)}")
    frame, summary = pair_sweep(_run_dirs(args.end, "--end"), args.eval_cache, spec, _json(args.meta_json, "--meta-json"),
                                align=args.align, progress=not args.no_progress)
    write_parquet(frame, args.out)
    print(f"{len(frame)} rows -> {args.out}; {summary}")
    print(_cpu(started))


def _cmd_plane(args: argparse.Namespace) -> None:
    from ..foundations.hparams import PlaneSpec
    from ..foundations.io import write_parquet
    from ..paths.planes import plane_job

    started = time.process_time()
    raw = {"setting": "?", **_json(args.spec_json, "--spec-json")}
    random = raw.get("directions") == "random"
    wanted = "one state (the centre of a random plane)" if random else "three states (A, B, C)"
    if len(args.state) != (1 if random else 3):
        raise SettingsError(f"--state: give {wanted}, got {len(args.state)}")
    spec = PlaneSpec.from_config({}, {**raw, "states": args.state}, "--spec-json")  # the states are --state's
    _threads(args.threads)
    run = _run_dirs([args.run], "--run")[0]
    frame, summary = plane_job(run, _run_dirs(args.reads or [args.run], "--reads"), args.state, args.eval_cache, spec,
                               args.scratch or Path(args.out).parent, _json(args.meta_json, "--meta-json"),
                               progress=not args.no_progress)
    write_parquet(frame, args.out)
    print(f"{len(frame)} rows -> {args.out}; {summary}")
    print(_cpu(started))


def _report_instability(args: argparse.Namespace) -> None:
    from ..paths.lmc import write_instability

    require_files(*args.inputs)
    write_instability(args.inputs, args.threshold, args.out[0], args.out[1])


def _report_instability_figure(args: argparse.Namespace) -> None:
    from ..report.lmc_figures import write_instability_figure

    require_files(args.table, args.paths)
    write_instability_figure(args.table, args.paths, args.out)


def _report_planes(args: argparse.Namespace) -> None:
    from ..paths.planes import write_planes

    require_files(*args.inputs)
    write_planes(args.inputs, args.out)


def _report_plane_figure(args: argparse.Namespace) -> None:
    from ..report.lmc_figures import write_plane_figure

    require_files(*args.inputs)
    write_plane_figure(args.inputs, args.out)


def add_parsers(verbs, debug: argparse.ArgumentParser) -> None:
    p = verbs.add_parser("lmc-path", parents=[debug],
                         help="loss and error on the straight lines between the final states of two or more runs")
    p.add_argument("--end", action="append", required=True, help="run directory of an end state; repeatable")
    p.add_argument("--eval-cache", default=str(Layout().eval_cache()), help="folder of cached evaluation splits")
    p.add_argument("--sweep-json", help="linpath.foundations.hparams.InstabilitySpec as JSON (config `instability`)")
    p.add_argument("--meta-json", help="columns written beside the curves (setting, seed, pair, spawn_epoch, ...)")
    p.add_argument("--align", action="store_true",
                   help="align the second end's hidden units to the first's (weight matching) and measure the line "
                        "without and with REPAIR (pair kinds independent_aligned, independent_aligned_repair)")
    p.add_argument("--out", required=True, help="parquet, one row per line, BN mode, split and α")
    p.add_argument("--threads", type=count, default=None)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_lmc_path)

    p = verbs.add_parser("plane", parents=[debug],
                         help="a loss plane through three states of a run, or a random plane around one -> parquet")
    p.add_argument("--run", required=True, help="the run directory (model, data, trajectory)")
    p.add_argument("--state", action="append", default=[],
                   help="A, B, C in order (a random plane: its centre): init, other, other:<seed>, epoch:<t> or "
                        "<label>=<state file>")
    p.add_argument("--reads", action="append", help="run directories whose outcome must be `trained` (default --run)")
    p.add_argument("--eval-cache", default=str(Layout().eval_cache()), help="folder of cached evaluation splits")
    p.add_argument("--spec-json", help="linpath.foundations.hparams.PlaneSpec as JSON (config `plane` and `planes.<name>`)")
    p.add_argument("--meta-json", help="columns written beside the grid (plane, setting, seed, run_id, ...)")
    p.add_argument("--scratch", help="folder for another random init (default: beside --out)")
    p.add_argument("--out", required=True)
    p.add_argument("--threads", type=count, default=None)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_plane)

    report = verbs.add_parser("lmc-report", parents=[debug], help="instability table / figure, planes table / figure")
    kinds = report.add_subparsers(dest="what", required=True, metavar="KIND")

    def kind(name: str, func, help: str) -> argparse.ArgumentParser:
        p = kinds.add_parser(name, parents=[debug], help=help, description=help)
        p.set_defaults(func=func)
        return p

    p = kind("instability", _report_instability, "instability.parquet and lmc_paths.parquet from the pair sweeps")
    p.add_argument("--inputs", nargs="+", required=True, help="the pair sweeps (`linpath lmc-path` outputs)")
    p.add_argument("--threshold", type=number(minimum=0), required=True,
                   help="the error barrier at or below which a spawn is stable (config instability.threshold)")
    p.add_argument("--out", nargs=2, required=True, metavar=("TABLE", "PATHS"), help="the table and the curves")
    p = kind("instability-figure", _report_instability_figure, "the instability figure")
    p.add_argument("--table", required=True, help="instability.parquet")
    p.add_argument("--paths", required=True, help="lmc_paths.parquet")
    p.add_argument("--out", required=True, help="the figure (PNG)")
    p = kind("planes", _report_planes, "planes.parquet from the plane sweeps")
    p.add_argument("--inputs", nargs="+", required=True, help="the plane sweeps (`linpath plane` outputs)")
    p.add_argument("--out", required=True, help="the table (parquet)")
    p = kind("plane-figure", _report_plane_figure, "one plane's figure from its sweeps")
    p.add_argument("--inputs", nargs="+", required=True, help="the plane's sweeps (one per seed)")
    p.add_argument("--out", required=True, help="the figure (PNG)")
