"""Command line: `linpath <verb> ...`. Each verb is a thin wrapper over a library function."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .hparams import SettingsError
from .io import CheckpointError


def _cmd_train(args: argparse.Namespace) -> None:
    from .hparams import RunSpec
    from .train import train

    if args.settings_json:
        import json

        try:
            spec = RunSpec.from_dict(json.loads(args.settings_json))
        except json.JSONDecodeError as err:
            raise SettingsError(f"--settings-json: not valid JSON: {err}") from None
    else:
        spec = RunSpec.from_yaml(args.config)
    if args.name:
        spec.name = args.name
    elif spec.name == "run":
        spec.name = Path(args.out).name
    result = train(spec, args.out, threads=args.threads, progress=not args.no_progress, eval_cache=args.eval_cache)
    print(result.summary())


def _thresholds(args: argparse.Namespace):
    from .shapes import ShapeThresholds

    given = {"barrier_tol": args.barrier_tol, "barrier_rel": args.barrier_rel, "plateau_alpha": args.plateau_alpha}
    return ShapeThresholds(**{k: v for k, v in given.items() if v is not None})


def _add_threshold_args(p: argparse.ArgumentParser) -> None:
    # Defaults live in linpath.shapes.ShapeThresholds only.
    p.add_argument("--barrier-tol", type=float, default=None, help="absolute floor of a barrier's Δ (loss units)")
    p.add_argument("--barrier-rel", type=float, default=None,
                   help="a barrier's Δ must also exceed this fraction of |L(0) - L(1)|")
    p.add_argument("--plateau-alpha", type=float, default=None, help="α_half at or above this is a plateau")


def _cmd_interpolate(args: argparse.Namespace) -> None:
    import torch

    from .io import write_parquet
    from .paths import InterpolationSettings, interpolate_run
    from .shapes import shape_table

    if args.threads:
        torch.set_num_threads(args.threads)
    settings = InterpolationSettings(
        starts=tuple(args.start or ["init"]), full=not args.no_full, groups=args.groups,
        param_groups=args.param_groups, bn_modes=tuple(args.bn_mode or ["interpolate"]), alphas=args.alphas,
        splits=tuple(args.splits.split(",")), bn_subset=args.bn_subset, batch_size=args.batch_size, device=args.device)
    out = Path(args.out)
    try:
        table = interpolate_run(args.run, args.eval_cache, settings, run_id=args.run_id, scratch=out.parent,
                                progress=not args.no_progress)
    except (FileNotFoundError, ValueError) as err:
        raise SettingsError(str(err)) from None
    write_parquet(table, out)
    shapes = shape_table(table, _thresholds(args))
    if args.shapes:
        write_parquet(shapes, args.shapes)
    summary = shapes[shapes["split"] == "train"][["path", "start", "group", "param_group", "bn_mode", "label", "delta"]]
    print(f"{len(table)} rows -> {out}")
    print(summary.to_string(index=False))


def _cmd_barrier_init(args: argparse.Namespace) -> None:
    import pandas as pd

    from .barrier import write_barrier_inits

    paths_file = Path(args.paths)
    if not paths_file.is_file():
        raise SettingsError(f"--paths: file not found: {paths_file}")
    try:
        info = write_barrier_inits(pd.read_parquet(paths_file), args.out, offset=args.offset,
                                   thresholds=_thresholds(args), split=args.split, assume_alpha=args.assume_barrier_at)
    except ValueError as err:
        raise SettingsError(f"{paths_file}: {err}") from None
    if info["has_barrier"]:
        print(f"barrier at alpha={info['alpha_star']:g} (height {info['barrier_height']:.4g}); "
              f"wrote {', '.join(f'{k}.pt' for k in info['alphas'])} to {args.out}")
    else:
        print(f"{info['reason']}; wrote {args.out}/barrier.yaml only")


def _cmd_barrier_groups(args: argparse.Namespace) -> None:
    from .tables import write_barrier_groups

    for f in [*args.shapes, args.run_yaml]:
        if not Path(f).is_file():
            raise SettingsError(f"file not found: {f}")
    write_barrier_groups(args.shapes, args.run_yaml, args.out, min_share=args.min_share, assume=args.assume or [])
    print(f"wrote {args.out}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="linpath", description=__doc__)
    verbs = parser.add_subparsers(dest="verb", required=True)

    p = verbs.add_parser("train", help="train one run from a RUN.yaml into a run directory")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", help="run settings file (model, data, train, init)")
    source.add_argument("--settings-json", help="the same settings inline, as JSON (used by the workflow)")
    p.add_argument("--out", required=True, help="run directory, e.g. results/runs/<run_id>")
    p.add_argument("--name", help="run name recorded in metrics (default: the directory name)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.add_argument("--eval-cache", default=None, help="also write the cached evaluation splits under this folder")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=_cmd_train)

    p = verbs.add_parser("interpolate", help="loss and accuracy along linear paths of a finished run -> parquet")
    p.add_argument("--run", required=True, help="run directory written by `linpath train`")
    p.add_argument("--eval-cache", default="results/cache/eval", help="folder of cached evaluation splits")
    p.add_argument("--out", required=True, help="long-format parquet, one row per path, split and α")
    p.add_argument("--shapes", help="also write the per-path shape metrics here (parquet)")
    p.add_argument("--run-id", help="run_id column (default: the run directory name)")
    p.add_argument("--start", action="append",
                   help="path start: init (default), epoch:<t>, other:<seed>, or <label>=<state file>; repeatable. "
                        "Group and parameter-group paths use the first start; later ones get the full path")
    p.add_argument("--no-full", action="store_true", help="skip the full-model path")
    p.add_argument("--groups", action="store_true", help="add the group-wise path of every group")
    p.add_argument("--param-groups", action="store_true", help="add weights / BN affine / BN stats paths per group")
    p.add_argument("--bn-mode", action="append", choices=["interpolate", "recompute"], help="repeatable")
    p.add_argument("--alphas", default=None, help='"start:stop:count" or a comma list (default 0:1:51)')
    p.add_argument("--splits", default="train,test")
    p.add_argument("--bn-subset", type=int, default=1024, help="training samples for BN recomputation")
    p.add_argument("--batch-size", type=int, default=2048)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--no-progress", action="store_true")
    _add_threshold_args(p)
    p.set_defaults(func=_cmd_interpolate)

    p = verbs.add_parser("barrier-init", help="states at the barrier peak of a run's full path, and before/after it")
    p.add_argument("--paths", required=True, help="parquet from `linpath interpolate` holding the full path")
    p.add_argument("--out", required=True, help="folder for barrier.yaml and at.pt / before.pt / after.pt")
    p.add_argument("--offset", type=float, default=0.1, help="δ: before = α*−δ, after = α*+δ (α* = top of the largest rise)")
    p.add_argument("--split", default="train")
    p.add_argument("--assume-barrier-at", type=float, default=None,
                   help="TESTS ONLY: where the path has no interior barrier, pretend it peaks at this alpha")
    _add_threshold_args(p)
    p.set_defaults(func=_cmd_barrier_init)

    p = verbs.add_parser("barrier-groups", help="which groups of a setting's runs have barriers (E11, E13, E16)")
    p.add_argument("--shapes", nargs="+", required=True, help="shape tables of every seed's run of the setting")
    p.add_argument("--run-yaml", required=True, help="run.yaml of one of those runs (for the widenable groups)")
    p.add_argument("--out", required=True, help="YAML with the groups with / without a barrier")
    p.add_argument("--min-share", type=float, default=None, help="share of seeds with a barrier that makes a group")
    p.add_argument("--assume", action="append", help="TESTS ONLY: treat this group as a barrier group; repeatable")
    p.set_defaults(func=_cmd_barrier_groups)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (SettingsError, CheckpointError) as err:
        print(f"linpath {args.verb}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
