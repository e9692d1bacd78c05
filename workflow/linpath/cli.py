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

    spec = RunSpec.from_yaml(args.config)
    if args.name:
        spec.name = args.name
    elif spec.name == "run":
        spec.name = Path(args.out).name
    result = train(spec, args.out, threads=args.threads, progress=not args.no_progress, eval_cache=args.eval_cache)
    print(result.summary())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="linpath", description=__doc__)
    verbs = parser.add_subparsers(dest="verb", required=True)

    p = verbs.add_parser("train", help="train one run from a RUN.yaml into a run directory")
    p.add_argument("--config", required=True, help="run settings (model, data, train, init)")
    p.add_argument("--out", required=True, help="run directory, e.g. results/runs/<run_id>")
    p.add_argument("--name", help="run name recorded in metrics (default: the directory name)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.add_argument("--eval-cache", default=None, help="also write the cached evaluation splits under this folder")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=_cmd_train)

    for register in _EXTRA_VERBS:
        register(verbs)
    return parser


# Later modules add verbs here (paths, barrier extraction, tables) without touching train's.
_EXTRA_VERBS: list = []


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
