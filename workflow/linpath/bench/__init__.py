"""Measurements that print figures: speed goals and what a change would pay live here, not in
timed tests, and nothing here runs in the workflow.

    python -m linpath.bench paths [--cifar]   the path evaluator (linpath.bench.paths)
    python -m linpath.bench train             training steps and seed packs (linpath.bench.train)
    python -m linpath.bench noise --run DIR   rounding noise of a measured path (linpath.bench.noise)

linpath.bench.pack steps K seeds of one architecture as one vmapped model; `train` times such packs
against the fastest single run, which on a GPU says whether training seeds in packs would pay.
Each command checks what it compares (losses agree to a stated tolerance) and exits 1 when a
check fails; `--json PATH` writes its figures.
"""

from __future__ import annotations

import argparse

from . import noise, paths, train


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m linpath.bench",
                                     description="measurements that print figures (not part of the workflow)")
    sub = parser.add_subparsers(dest="what", required=True)
    paths.add_parser(sub)
    train.add_parser(sub)
    noise.add_parser(sub)
    args = parser.parse_args(argv)
    return 0 if args.run(args)["ok"] else 1
