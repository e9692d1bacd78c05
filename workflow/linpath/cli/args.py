"""What every verb shares: exit statuses, the expected failure, and argparse types that refuse NaN,
non-positive counts and settings the hparams checks refuse, with the flag named."""

from __future__ import annotations

import argparse
import math

from ..foundations.hparams import SettingsError
from ..foundations.layout import RUN_FILES

EXIT_STATUS = f"""exit status:
  0    success
  1    unexpected error (a bug in linpath): the Python traceback is shown
  2    bad input: settings, flags, or a missing, unreadable or damaged file
  3    training diverged (loss NaN or infinite); the run directory holds {RUN_FILES["failed"]} and {RUN_FILES["outcome"]}
       (with --failure-as-outcome: status 0, and the same files)
  130  interrupted (Ctrl-C); a training run resumes from its last epoch
"""
EXIT_INPUT, EXIT_DIVERGED, EXIT_INTERRUPTED = 2, 3, 130


def require_files(*files: str, flag: str | None = None) -> None:
    """Every named input file exists, before anything is written: else a settings error naming the first
    missing one (and the flag it came from)."""
    from pathlib import Path

    missing = [f for f in files if not Path(f).is_file()]
    if missing:
        raise SettingsError(f"{flag + ': ' if flag else ''}file not found: {missing[0]}")


class CommandFailed(Exception):
    """An expected failure of a verb, with its one-line message and exit status."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


def number(minimum: float | None = None, maximum: float | None = None, *, above: float | None = None,
            below: float | None = None):
    """argparse type: a finite float within the bounds (NaN would slip through any comparison)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        bounds = [(minimum, ">=", value >= minimum if minimum is not None else True),
                  (above, ">", value > above if above is not None else True),
                  (maximum, "<=", value <= maximum if maximum is not None else True),
                  (below, "<", value < below if below is not None else True)]
        if not all(ok for _, _, ok in bounds):
            wanted = " and ".join(f"{sign} {bound:g}" for bound, sign, _ in bounds if bound is not None)
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}")
        return value

    return parse


def count(text: str) -> int:
    """argparse type: a positive integer (threads, batch sizes, sample counts)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text!r}")
    return value


def checked(check):
    """argparse type from a linpath.foundations.hparams check that raises SettingsError; the text is kept as given."""

    def parse(text: str) -> str:
        try:
            check(text, "value")
        except SettingsError as err:
            raise argparse.ArgumentTypeError(str(err).removeprefix("value").lstrip(": ")) from None
        return text

    return parse


def flags_given(args: argparse.Namespace, names: dict[str, str]) -> dict:
    """The flags given on the command line (argparse default None), as settings keys."""
    return {key: getattr(args, dest) for key, dest in names.items() if getattr(args, dest) is not None}
