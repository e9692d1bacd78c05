"""Command line: `linpath <verb> ...`. Each verb is a thin wrapper over a library function.

Errors caused by input (settings, flags, files, a diverging run) end in one line on stderr,
"linpath <verb>: error: ...", and an exit status that tells them apart (EXIT_STATUS); anything
else is a bug and keeps its traceback. `--debug` shows the traceback of every error.
"""

from __future__ import annotations

import argparse
import math
import sys
import traceback
from pathlib import Path

from .hparams import SettingsError, check_alphas, check_device
from .io import CheckpointError, write_yaml

EXIT_STATUS = """exit status:
  0    success
  1    unexpected error (a bug in linpath): the Python traceback is shown
  2    bad input: settings, flags, or a missing, unreadable or damaged file
  3    training diverged (loss NaN or infinite); the run directory holds failed.yaml and outcome.yaml
       (with --failure-as-outcome: status 0, and the same files)
  130  interrupted (Ctrl-C); a training run resumes from its last epoch
"""
EXIT_INPUT, EXIT_DIVERGED, EXIT_INTERRUPTED = 2, 3, 130
FAILED = "failed.yaml"  # written into a run directory whose training diverged; removed by a later success


class CommandFailed(Exception):
    """An expected failure of a verb, with its one-line message and exit status."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


def _cmd_train(args: argparse.Namespace) -> None:

    spec = _run_spec(args.config, args.settings_json)
    if args.name:
        spec.name = args.name
    elif spec.name == "run":
        spec.name = Path(args.out).name
    out = Path(args.out)
    if _skipped_for_upstream(spec, out, args.upstream):
        return
    from .train import TargetNotReached, TrainingDiverged, train  # torch: only once the settings are known to be good

    try:
        result = train(spec, out, threads=args.threads, progress=not args.no_progress, eval_cache=args.eval_cache,
                       checkpoint_minutes=args.checkpoint_minutes)
    except (TrainingDiverged, TargetNotReached) as err:
        kept = "kept its last checkpoint" if isinstance(err, TargetNotReached) else "removed its checkpoints"
        message = f"{err}; wrote {out / FAILED} and {kept}"
        if isinstance(err, TrainingDiverged):
            message = f"run {err.run} diverged: training loss {err.loss} in epoch {err.epoch}; wrote {out / FAILED} and {kept}"
        if args.failure_as_outcome:  # the workflow: the run ends here, and its job completes
            print(f"linpath train: {message}", file=sys.stderr)
            return
        raise CommandFailed(message, EXIT_DIVERGED if isinstance(err, TrainingDiverged) else EXIT_INPUT) from err
    print(result.summary())


def _run_spec(config: str | None, settings_json: str | None):
    """A run's settings from --config (a YAML file) or --settings-json: the one reader of both."""
    from .hparams import RunSpec

    if settings_json is None:
        return RunSpec.from_yaml(config)
    import json

    try:
        return RunSpec.from_dict(json.loads(settings_json))
    except json.JSONDecodeError as err:
        raise SettingsError(f"--settings-json: not valid JSON: {err}") from None
    except SettingsError as err:
        raise SettingsError(f"--settings-json: {err}") from None


def _skipped_for_upstream(spec, out: Path, upstream: list[str]) -> bool:
    """A run that starts from the state of a run that did not train is skipped, with that run's reason:
    outcome.yaml (status skipped) and run.yaml, so that its job completes and the tables say why."""
    from .layout import RUN_FILES
    from .outcome import upstream_failure, write_outcome

    runs = [Path(f).parent for f in upstream if Path(f).name == RUN_FILES["outcome"]]
    try:
        skipped = upstream_failure(runs)
    except (FileNotFoundError, ValueError) as err:
        raise SettingsError(f"--upstream: {err}") from None
    if skipped is None:
        return False
    skipped.run, skipped.settings_digest = spec.name, spec.digest()
    if not (out / RUN_FILES["settings"]).is_file():
        write_yaml(spec.to_dict(), out / RUN_FILES["settings"])
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
        return _number(above=0)(text)
    except argparse.ArgumentTypeError as err:
        raise SettingsError(f"$LINPATH_CHECKPOINT_MINUTES: {err}") from None


def _json_settings(text: str | None, flag: str) -> dict:
    """A settings mapping given as JSON on the command line ({} when absent)."""
    from .hparams import json_mapping

    return json_mapping(text, flag, "a JSON object of settings")


def _given(args: argparse.Namespace, names: dict[str, str]) -> dict:
    """The flags given on the command line (argparse default None), as settings keys."""
    return {key: getattr(args, dest) for key, dest in names.items() if getattr(args, dest) is not None}


def _thresholds(args: argparse.Namespace):
    """The shape thresholds: --thresholds-json, then single flags over it; the rest ShapeThresholds' defaults."""
    from .hparams import ShapeThresholds, from_dict

    given = {**_json_settings(args.thresholds_json, "--thresholds-json"),
             **_given(args, {"barrier_tol": "barrier_tol", "barrier_rel": "barrier_rel", "plateau_alpha": "plateau_alpha"})}
    return from_dict(ShapeThresholds, given, "thresholds")


def _sweep(args: argparse.Namespace):
    """What to measure: --sweep-json, then single flags over it; the rest SweepSpec's defaults."""
    from .hparams import SweepSpec

    flags = _given(args, {"starts": "start", "full": "full", "groups": "groups", "param_groups": "param_groups",
                          "bn_modes": "bn_mode", "alphas": "alphas", "bn_subset": "bn_subset",
                          "batch_size": "batch_size", "device": "device"})
    if args.splits is not None:
        flags["splits"] = args.splits.split(",")
    return SweepSpec.from_dict({**_json_settings(args.sweep_json, "--sweep-json"), **flags}, "sweep")


def _number(minimum: float | None = None, maximum: float | None = None, *, above: float | None = None,
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


def _count(text: str) -> int:
    """argparse type: a positive integer (threads, batch sizes, sample counts)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text!r}")
    return value


def _checked(check):
    """argparse type from a linpath.hparams check that raises SettingsError; the text is kept as given."""

    def parse(text: str) -> str:
        try:
            check(text, "value")
        except SettingsError as err:
            raise argparse.ArgumentTypeError(str(err).removeprefix("value").lstrip(": ")) from None
        return text

    return parse


def _add_threshold_args(p: argparse.ArgumentParser) -> None:
    # Defaults live in linpath.hparams.ShapeThresholds only.
    p.add_argument("--thresholds-json", default=None, help="shape thresholds as JSON (what the workflow passes)")
    p.add_argument("--barrier-tol", type=_number(0), default=None,
                   help="absolute floor of a barrier's Δ (loss units)")
    p.add_argument("--barrier-rel", type=_number(0), default=None,
                   help="a barrier's Δ must also exceed this fraction of |L(0) - L(1)|")
    p.add_argument("--plateau-alpha", type=_number(0, 1), default=None, help="α_half at or above this is a plateau")


def _cmd_interpolate(args: argparse.Namespace) -> None:
    import torch

    from .io import write_parquet
    from .paths import interpolate_run
    from .shapes import shape_table

    settings, thresholds = _sweep(args), _thresholds(args)
    out = Path(args.out)
    if _sweep_of_untrained_run(Path(args.run), out, args.shapes):
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    _check_states_fit(Path(args.run), tuple(settings.starts))
    try:
        table = interpolate_run(args.run, args.eval_cache, settings, run_id=args.run_id, scratch=out.parent,
                                progress=not args.no_progress)
    except (FileNotFoundError, ValueError) as err:
        raise SettingsError(str(err)) from None
    write_parquet(table, out)
    shapes = shape_table(table, thresholds)
    if args.shapes:
        write_parquet(shapes, args.shapes)
    summary = shapes[shapes["split"] == "train"][["path", "start", "group", "param_group", "bn_mode", "label", "delta"]]
    print(f"{len(table)} rows -> {out}")
    print(summary.to_string(index=False))


def _sweep_of_untrained_run(run: Path, out: Path, shapes: str | None) -> bool:
    """A run that did not train (outcome.yaml) has no paths: its sweep and shapes are written empty, so that
    the job completes and the tables list the run with its reason."""
    import pandas as pd

    from .io import write_parquet
    from .outcome import read_outcome

    try:
        outcome = read_outcome(run)
    except ValueError as err:
        raise SettingsError(str(err)) from None
    if outcome is None or outcome.trained:
        return False
    empty = pd.DataFrame({"run_id": pd.Series(dtype="str")})
    for path in filter(None, [out, shapes]):
        write_parquet(empty, path)
    print(f"no paths: run {run.name} is {outcome.short()}")
    return True


def _check_states_fit(run: Path, starts: tuple[str, ...]) -> None:
    """final.pt and every `<label>=<state file>` start must hold the tensors of the network that
    run.yaml describes: a state of another network would otherwise fail in the middle of a sweep."""
    from . import models
    from .hparams import RunSpec
    from .io import load_state

    settings, final = run / "run.yaml", run / "final.pt"
    if not settings.is_file() or not final.is_file():  # interpolate_run names what is missing
        return
    expected = {k: v.shape for k, v in models.build(RunSpec.from_yaml(settings).model).state_dict().items()}
    files = [s.split("=", 1)[1] for s in starts if "=" in s and not s.startswith(("init", "epoch:", "other:"))]
    for path in [final, *files]:
        state = load_state(path)
        for key, shape in expected.items():
            if key not in state:
                raise SettingsError(f"{path} does not fit the network of {settings} (no tensor {key})")
            if state[key].shape != shape:
                raise SettingsError(f"{path} does not fit the network of {settings}: {key} has shape "
                                    f"{tuple(state[key].shape)}, the network {tuple(shape)}")


PATH_COLUMNS = ("path", "split", "start", "bn_mode", "alpha", "loss", "start_state", "end_state")
SHAPE_COLUMNS = ("path", "split", "start", "bn_mode", "group", "label", "delta", "label_rule")


def _read_table(path: Path, flag: str, columns: tuple[str, ...], what: str, empty_ok: bool = False):
    """A parquet table with these columns (or, if `empty_ok`, with no rows); anything else is a one-line
    error naming the file."""
    import pandas as pd

    if not path.is_file():
        raise SettingsError(f"{flag}: file not found: {path}")
    try:
        table = pd.read_parquet(path)
    except Exception as err:  # noqa: BLE001 - the only input is this one file
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise SettingsError(f"{flag}: {path} is not a readable parquet table: {detail}") from None
    missing = [c for c in columns if c not in table.columns]
    if missing and not (empty_ok and table.empty):
        raise SettingsError(f"{flag}: {path} is not {what} (no column {missing[0]!r})")
    return table


def _cmd_barrier_init(args: argparse.Namespace) -> None:
    from .barrier import write_barrier_inits

    if args.outcome and _no_barrier_of_untrained_run(Path(args.outcome), Path(args.out)):
        return
    paths_file = Path(args.sweep)
    table = _read_table(paths_file, "--sweep", PATH_COLUMNS, "a sweep of `linpath interpolate`")
    try:
        info = write_barrier_inits(table, args.out, offset=args.offset, thresholds=_thresholds(args), split=args.split,
                                   assume_alpha=args.assume_barrier_at)
    except ValueError as err:
        raise SettingsError(f"{paths_file}: {err}") from None
    if info["has_barrier"]:
        print(f"barrier at alpha={info['alpha_star']:g} (height {info['barrier_height']:.4g}); "
              f"wrote {', '.join(f'{k}.pt' for k in info['alphas'])} to {args.out}")
    else:
        print(f"{info['reason']}; wrote {args.out}/barrier.yaml only")


def _no_barrier_of_untrained_run(outcome_file: Path, out: Path) -> bool:
    """A run that did not train has no barrier to start from: barrier.yaml says so and why, and the runs
    that would start from it are skipped with that reason (Plan.skip_reason)."""
    from .outcome import read_outcome

    try:
        outcome = read_outcome(outcome_file.parent)
    except ValueError as err:
        raise SettingsError(str(err)) from None
    if outcome is None:
        raise SettingsError(f"--outcome: {outcome_file} does not exist: the run has not finished")
    if outcome.trained:
        return False
    word = "failed" if outcome.failed else "was skipped"
    info = {"has_barrier": False, "upstream_failed": True,
            "reason": f"upstream {outcome_file.parent.name} {word}: {outcome.kind or outcome.status}"}
    write_yaml(info, out / "barrier.yaml")
    print(f"{info['reason']}; wrote {out}/barrier.yaml only")
    return True


def _layer_rule(text: str | None) -> dict | None:
    """--layer-groups-json: config `shapes.layer_groups` (family -> roles), checked."""
    if text is None:
        return None
    from .hparams import json_mapping
    from .layer_groups import check_rule

    return check_rule(json_mapping(text, "--layer-groups-json", "a mapping of family -> roles"), "--layer-groups-json")


def _cmd_barrier_groups(args: argparse.Namespace) -> None:
    from .tables import write_barrier_groups

    for f in args.shapes:  # an empty table is the shapes of a run that did not train
        _read_table(Path(f), "--shapes", SHAPE_COLUMNS, "a shape table of `linpath interpolate --shapes`", empty_ok=True)
    if not Path(args.run_yaml).is_file():
        raise SettingsError(f"--run-yaml: file not found: {args.run_yaml}")
    try:
        write_barrier_groups(args.shapes, args.run_yaml, args.out, min_share=args.min_share, assume=args.assume or [],
                             layer_rule=_layer_rule(args.layer_groups_json))
    except SettingsError:
        raise
    except ValueError as err:  # no group-wise paths in the tables
        raise SettingsError(f"--shapes {' '.join(args.shapes)}: {err}") from None
    print(f"wrote {args.out}")


def _cmd_plan(args: argparse.Namespace) -> None:
    from .cost import estimate, format_estimate, load_config

    files = ([args.workflow_config] if args.workflow_config != "none" else []) + (args.configfile or [])
    print(format_estimate(estimate(load_config(files), files)))


# What each `linpath report` kind reads (argument names) and how many --out files it writes.
REPORT_NEEDS = {
    "core-tables": (("runs_json", "skipped_json"), 0),
    "table1": (("runs", "shapes"), 2),
    "table1-sensitivity": (("runs", "shapes"), 2),
    "table": (("name", "runs_json", "skipped_json"), 1),
    "figure": (("name", "runs_json"), 1),
    "figure-a11": (("paths", "shapes", "table1", "runs"), 1),
    "so-far": ((), 0),
}


def read_config_record(path: Path) -> dict:
    """The workflow config a table or figure job reads: JSON (the config record), else YAML. JSON is read as
    JSON: YAML 1.1 takes a JSON number without a dot, such as 1e-05, for text, which changes run ids."""
    import json

    import yaml

    text = path.read_text()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return yaml.safe_load(text)


def _cmd_report(args: argparse.Namespace) -> None:
    """Tables and figures of the workflow, from the config record it wrote (Layout.config_record)."""
    import json


    from .experiments import Plan

    def loaded(flag: str, text: str):
        try:
            return json.loads(text)
        except json.JSONDecodeError as err:
            raise SettingsError(f"{flag}: not valid JSON: {err}") from None

    needs, outputs = REPORT_NEEDS[args.what]
    missing = [f"--{n.replace('_', '-')}" if n != "name" else "NAME" for n in needs if getattr(args, n) is None]
    if missing:
        raise SettingsError(f"report {args.what} needs {', '.join(missing)}")
    if args.what == "so-far":
        if len(args.out) > 1:
            raise SettingsError(f"report so-far writes into one folder: --out got {len(args.out)}")
    elif len(args.out) != outputs:
        raise SettingsError(f"report {args.what} writes {outputs} file(s): --out got {len(args.out)}")
    if not Path(args.config).is_file():
        raise SettingsError(f"--config: file not found: {args.config}")
    plan = Plan(read_config_record(Path(args.config)))
    runs = loaded("--runs-json", args.runs_json) if args.runs_json is not None else []
    skipped = loaded("--skipped-json", args.skipped_json) if args.skipped_json is not None else {}
    for flag, path in (("--runs", args.runs), ("--shapes", args.shapes), ("--paths", args.paths),
                       ("--table1", args.table1), ("--sensitivity", args.sensitivity)):
        if args.what in ("table1", "table1-sensitivity", "figure-a11") and path is not None and not Path(path).is_file():
            raise SettingsError(f"{flag}: file not found: {path}")
    REPORTS[args.what](plan, args, runs, skipped)


def _report_so_far(plan, args, runs, skipped) -> None:
    from .so_far import progress_markdown, write_so_far

    out = Path(args.out[0]) if args.out else plan.layout.results / "so_far"
    print(progress_markdown(write_so_far(plan, out), plan), end="")
    print(f"tables so far -> {out}")


def _report_core_tables(plan, args, runs, skipped) -> None:
    from .tables import write_core_tables

    write_core_tables(plan, runs, skipped)


def _report_table1(plan, args, runs, skipped) -> None:
    from .tables import write_table1

    robustness = None
    if args.sensitivity is not None:
        import pandas as pd

        from .sensitivity import robustness_line

        robustness = robustness_line(pd.read_parquet(args.sensitivity))
    write_table1(plan, args.runs, args.shapes, args.out[0], args.out[1], robustness=robustness)


def _report_sensitivity(plan, args, runs, skipped) -> None:
    from .sensitivity import write_sensitivity

    write_sensitivity(plan, args.runs, args.shapes, args.out[0], args.out[1])


def _report_table(plan, args, runs, skipped) -> None:
    from .tables import write_experiment_table

    write_experiment_table(plan, args.name, runs, skipped, args.out[0])


def _report_figure(plan, args, runs, skipped) -> None:
    from .figures import write_experiment_figure

    write_experiment_figure(plan, args.name, runs, args.out[0])


def _report_figure_a11(plan, args, runs, skipped) -> None:
    from .figures import figure_a11

    figure_a11(plan, args.paths, args.shapes, args.table1, args.runs, args.out[0])


# `linpath report <what>`: what each kind writes (REPORT_NEEDS says what it reads).
REPORTS = {"core-tables": _report_core_tables, "table1": _report_table1, "table1-sensitivity": _report_sensitivity,
           "table": _report_table, "figure": _report_figure, "figure-a11": _report_figure_a11,
           "so-far": _report_so_far}


def _add_report_parser(verbs, debug) -> None:
    p = verbs.add_parser("report", parents=[debug], help="the workflow's tables and figures (what its table and figure rules run)")
    p.add_argument("what", choices=list(REPORT_NEEDS),
                   help="core-tables: runs/paths/shapes over --runs-json; table1; table1-sensitivity; table NAME; figure EXPERIMENT; "
                        "figure-a11; so-far: runs/paths/shapes and Table 1 of the runs finished so far, with the "
                        "pending and failed runs listed (into --out FOLDER, default <results>/so_far)")
    p.add_argument("name", nargs="?", help="the per-experiment table (table) or the experiment (figure)")
    p.add_argument("--config", required=True, help="the workflow config as JSON or YAML (results/derived/config.json)")
    p.add_argument("--runs-json", help="the run ids to read, as a JSON list (core-tables, table, figure)")
    p.add_argument("--skipped-json", help="run id -> why it was not trained, as a JSON object")
    p.add_argument("--runs", help="runs.parquet (table1, figure-a11)")
    p.add_argument("--shapes", help="shapes.parquet (table1, figure-a11)")
    p.add_argument("--paths", help="paths.parquet (figure-a11)")
    p.add_argument("--table1", help="table1.parquet (figure-a11)")
    p.add_argument("--sensitivity", help="table1_sensitivity.parquet (table1: its robustness count goes into table1.md)")
    p.add_argument("--out", nargs="+", default=[], help="output file(s); table1: the parquet and the markdown")
    p.set_defaults(func=_cmd_report)


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

    p = verbs.add_parser("train", parents=[debug], epilog=EXIT_STATUS, formatter_class=argparse.RawDescriptionHelpFormatter, help="train one run from a RUN.yaml into a run directory")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", help="run settings file (model, data, train, init)")
    source.add_argument("--settings-json", help="the same settings inline, as JSON (used by the workflow)")
    p.add_argument("--out", required=True, help="run directory, e.g. results/runs/<run_id>")
    p.add_argument("--name", help="run name recorded in metrics (default: the directory name)")
    p.add_argument("--threads", type=_count, default=None, help="CPU threads for torch")
    p.add_argument("--eval-cache", default=None, help="also write the cached evaluation splits under this folder")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--upstream", nargs="*", default=[],
                   help="outcome.yaml files of the runs this run starts from: if one did not train, this run is "
                        "skipped (outcome.yaml says why) instead of trained")
    p.add_argument("--failure-as-outcome", action="store_true",
                   help="a diverged run or a missed until_train_acc ends with outcome.yaml and exit status 0 "
                        "(what the workflow runs: the failure is a result, and the job completes)")
    p.add_argument("--checkpoint-minutes", type=_number(above=0), default=_env_minutes(),
                   help="also write checkpoint.pt after the first epoch that ends this many minutes after the last "
                        "one (default: $LINPATH_CHECKPOINT_MINUTES, else only every train.checkpoint_every epochs)")
    p.set_defaults(func=_cmd_train)

    p = verbs.add_parser("interpolate", parents=[debug], help="loss and accuracy along linear paths of a finished run -> parquet")
    p.add_argument("--run", required=True, help="run directory written by `linpath train`")
    p.add_argument("--eval-cache", default="results/cache/eval", help="folder of cached evaluation splits")
    p.add_argument("--out", required=True, help="long-format parquet, one row per path, split and α")
    p.add_argument("--shapes", help="also write the per-path shape metrics here (parquet)")
    p.add_argument("--run-id", help="run_id column (default: the run directory name)")
    p.add_argument("--sweep-json", default=None,
                   help="what to measure, as JSON of linpath.hparams.SweepSpec (what the workflow passes); "
                        "the flags below override it, and SweepSpec's defaults fill the rest")
    p.add_argument("--start", action="append",
                   help="path start: init, other (another init), epoch:<t>, other:<seed>, or <label>=<state file>; "
                        "repeatable. Group and parameter-group paths use the first start; later ones get the full path")
    p.add_argument("--full", action=argparse.BooleanOptionalAction, default=None, help="the full-model path")
    p.add_argument("--groups", action=argparse.BooleanOptionalAction, default=None,
                   help="the group-wise path of every group")
    p.add_argument("--param-groups", action=argparse.BooleanOptionalAction, default=None,
                   help="weights / BN affine / BN stats paths per group")
    p.add_argument("--bn-mode", action="append", choices=["interpolate", "recompute"], help="repeatable")
    p.add_argument("--alphas", type=_checked(check_alphas), default=None,
                   help='"start:stop:count" or a comma list of finite numbers')
    p.add_argument("--splits", default=None, help="comma list of train, test")
    p.add_argument("--bn-subset", type=_count, default=None, help="training samples for BN recomputation")
    p.add_argument("--batch-size", type=_count, default=None, help="the chunk: memory is bounded by it")
    p.add_argument("--device", type=_checked(check_device), default=None, help="auto, cpu, cuda[:<index>] or mps")
    p.add_argument("--threads", type=_count, default=None)
    p.add_argument("--no-progress", action="store_true")
    _add_threshold_args(p)
    p.set_defaults(func=_cmd_interpolate)

    p = verbs.add_parser("barrier-init", parents=[debug], help="states at the barrier peak of a run's full path, and before/after it")
    p.add_argument("--sweep", required=True, help="parquet from `linpath interpolate` holding the full path")
    p.add_argument("--out", required=True, help="folder for barrier.yaml and at.pt / before.pt / after.pt")
    p.add_argument("--outcome", default=None,
                   help="the run's outcome.yaml: a run that did not train gets a barrier.yaml that says so")
    p.add_argument("--offset", type=_number(maximum=1, above=0), default=0.1, help="δ: before = α*−δ, after = α*+δ (α* = top of the largest rise)")
    p.add_argument("--split", default="train")
    p.add_argument("--assume-barrier-at", type=_number(above=0, below=1), default=None,
                   help="TESTS ONLY: where the path has no interior barrier, pretend it peaks at this alpha")
    _add_threshold_args(p)
    p.set_defaults(func=_cmd_barrier_init)

    p = verbs.add_parser("barrier-groups", parents=[debug], help="which groups of a setting's runs have barriers (E11, E13, E16)")
    p.add_argument("--shapes", nargs="+", required=True, help="shape tables of every seed's run of the setting")
    p.add_argument("--run-yaml", required=True, help="run.yaml of one of those runs (for the widenable groups)")
    p.add_argument("--out", required=True, help="YAML with the groups with / without a barrier")
    p.add_argument("--min-share", type=_number(maximum=1, above=0), default=None, help="share of seeds with a barrier that makes a group")
    p.add_argument("--assume", action="append", help="TESTS ONLY: treat this group as a barrier group; repeatable")
    p.add_argument("--layer-groups-json", default=None,
                   help="which groups are candidates, per architecture family (config shapes.layer_groups, as JSON); "
                        "default: linpath.layer_groups.DEFAULT_LAYER_GROUPS")
    p.set_defaults(func=_cmd_barrier_groups)

    _add_report_parser(verbs, debug)
    from .lmc_cli import add_parsers as add_lmc_parsers  # instability analysis and loss planes

    add_lmc_parsers(verbs, debug, _count)

    p = verbs.add_parser("plan", parents=[debug], help="runs, epochs, path sweeps and estimated hours of a config, before submitting")
    p.add_argument("--configfile", action="append", help="merged over the workflow config in order, as Snakemake does; repeatable")
    p.add_argument("--workflow-config", default="config/config.yaml",
                   help="the config the Snakefile loads first (default: %(default)s; `none`: only the --configfile ones)")
    p.set_defaults(func=_cmd_plan)
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
