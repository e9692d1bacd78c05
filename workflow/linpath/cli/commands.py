"""Command line: `linpath <verb> ...`. Each verb is a thin wrapper over a library function.

Errors caused by input (settings, flags, files, a diverging run) end in one line on stderr,
"linpath <verb>: error: ...", and an exit status that tells them apart (EXIT_STATUS); anything
else is a bug and keeps its traceback. `--debug` shows the traceback of every error.
"""

from __future__ import annotations

import argparse
import sys
import traceback

from ..foundations.hparams import SettingsError
from ..foundations.io import CheckpointError
from . import curvature, lmc, reports, sweeps, training
from .args import EXIT_INPUT, EXIT_INTERRUPTED, EXIT_STATUS, CommandFailed

# The table of verbs: each module adds its own (add_parsers), in this order in `linpath --help`.
VERBS = (training, sweeps, reports, lmc, curvature)


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line, like every other error: "linpath <verb>: error: ..."."""

    def error(self, message: str):
        self.exit(EXIT_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="linpath", description=__doc__, epilog=EXIT_STATUS,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show the Python traceback of every error")
    verbs = parser.add_subparsers(dest="verb", required=True)
    # `--debug` is accepted after the verb too; SUPPRESS keeps a verb from resetting it to False.
    debug = _Parser(add_help=False)
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    for module in VERBS:
        module.add_parsers(verbs, debug)
    return parser


def main(argv: list[str] | None = None) -> int:
    """The verb, run in this process (`linpath` and `python -m linpath` first offer it to a warm-start
    server: linpath.__main__)."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    return run_verb(args)


def run_verb(args: argparse.Namespace) -> int:
    """Run the chosen verb; input errors become one line on stderr and an exit status (EXIT_STATUS)."""
    try:
        args.func(args)
    except CommandFailed as err:
        return _fail(args, err, err.status)
    except (SettingsError, CheckpointError) as err:
        return _fail(args, err, EXIT_INPUT)
    except OSError as err:  # an unwritable --out, a directory where a file belongs, a full disk
        return _fail(args, f"{err.filename}: {err.strerror}" if err.filename and err.strerror else err, EXIT_INPUT)
    except KeyboardInterrupt:
        return _fail(args, "interrupted", EXIT_INTERRUPTED)
    return 0


def _fail(args: argparse.Namespace, err: object, status: int) -> int:
    if getattr(args, "debug", False):
        traceback.print_exc()
    text = "; ".join(line.strip() for line in str(err).splitlines() if line.strip())
    print(f"linpath {args.verb}: error: {text}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
