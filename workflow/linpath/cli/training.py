"""`linpath train`: one run from its settings into a run directory; a failure is an outcome."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..foundations.hparams import SettingsError
from ..foundations.io import write_yaml
from ..foundations.layout import RunDir
from .args import EXIT_DIVERGED, EXIT_INPUT, EXIT_STATUS, CommandFailed, count, number


def _cmd_train(args: argparse.Namespace) -> None:
    spec = _run_spec(args.config, args.settings_json)
    if args.name:
        spec.name = args.name
    elif spec.name == "run":
        spec.name = Path(args.out).name
    out = Path(args.out)
    if _skipped_for_upstream(spec, out, args.upstream):
        return
    from ..engine.train import (  # torch: only once the settings are known to be good
        TargetNotReached,
        TrainingDiverged,
        train,
    )

    try:
        result = train(spec, out, threads=args.threads, progress=not args.no_progress, eval_cache=args.eval_cache,
                       checkpoint_minutes=args.checkpoint_minutes)
    except (TrainingDiverged, TargetNotReached) as err:
        kept = "kept its last checkpoint" if isinstance(err, TargetNotReached) else "removed its checkpoints"
        message = f"{err}; wrote {RunDir(out).failed} and {kept}"
        if isinstance(err, TrainingDiverged):
            message = f"run {err.run} diverged: training loss {err.loss} in epoch {err.epoch}; wrote {RunDir(out).failed} and {kept}"
        if args.failure_as_outcome:  # the workflow: the run ends here, and its job completes
            print(f"linpath train: {message}", file=sys.stderr)
            return
        raise CommandFailed(message, EXIT_DIVERGED if isinstance(err, TrainingDiverged) else EXIT_INPUT) from err
    print(result.summary())


def _run_spec(config: str | None, settings_json: str | None):
    """A run's settings from --config (a YAML file) or --settings-json: the one reader of both."""
    from ..foundations.convert import json_argument
    from ..foundations.hparams import RunSpec

    if settings_json is None:
        return RunSpec.from_yaml(config)
    raw = json_argument(settings_json, "--settings-json", what="a JSON object of run settings")
    try:
        return RunSpec.from_dict(raw)
    except SettingsError as err:
        raise SettingsError(f"--settings-json: {err}") from None


def _skipped_for_upstream(spec, out: Path, upstream: list[str]) -> bool:
    """A run that starts from the state of a run that did not train is skipped, with that run's reason:
    outcome.yaml (status skipped) and run.yaml, so that its job completes and the tables say why."""
    from ..foundations.outcome import upstream_failure, write_outcome

    runs = [Path(f).parent for f in upstream if RunDir(Path(f).parent).outcome == Path(f)]
    try:
        skipped = upstream_failure(runs)
    except (FileNotFoundError, ValueError) as err:
        raise SettingsError(f"--upstream: {err}") from None
    if skipped is None:
        return False
    skipped.run, skipped.settings_digest = spec.name, spec.digest()
    if not RunDir(out).settings.is_file():
        write_yaml(spec.to_dict(), RunDir(out).settings)
    write_outcome(skipped, out)
    print(f"linpath train: run {spec.name} skipped: {skipped.reason}", file=sys.stderr)
    return True


def _env_minutes() -> float | None:
    """The workflow's `checkpoint_minutes`, which reaches its jobs through the environment."""
    import os

    text = os.environ.get("LINPATH_CHECKPOINT_MINUTES")
    if not text:
        return None
    try:
        return number(above=0)(text)
    except argparse.ArgumentTypeError as err:
        raise SettingsError(f"$LINPATH_CHECKPOINT_MINUTES: {err}") from None


def add_parsers(verbs, debug: argparse.ArgumentParser) -> None:
    p = verbs.add_parser("train", parents=[debug], epilog=EXIT_STATUS, formatter_class=argparse.RawDescriptionHelpFormatter, help="train one run from a RUN.yaml into a run directory")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", help="run settings file (model, data, train, init)")
    source.add_argument("--settings-json", help="the same settings inline, as JSON (used by the workflow)")
    p.add_argument("--out", required=True, help="run directory, e.g. results/runs/<run_id>")
    p.add_argument("--name", help="run name recorded in metrics (default: the directory name)")
    p.add_argument("--threads", type=count, default=None, help="CPU threads for torch")
    p.add_argument("--eval-cache", default=None, help="also write the cached evaluation splits under this folder")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--upstream", nargs="*", default=[],
                   help="outcome.yaml files of the runs this run starts from: if one did not train, this run is "
                        "skipped (outcome.yaml says why) instead of trained")
    p.add_argument("--failure-as-outcome", action="store_true",
                   help="a diverged run or a missed until_train_acc ends with outcome.yaml and exit status 0 "
                        "(what the workflow runs: the failure is a result, and the job completes)")
    p.add_argument("--checkpoint-minutes", type=number(above=0), default=_env_minutes(),
                   help="also write checkpoint.pt after the first epoch that ends this many minutes after the last "
                        "one (default: $LINPATH_CHECKPOINT_MINUTES, else only every train.checkpoint_every epochs)")
    p.set_defaults(func=_cmd_train)
