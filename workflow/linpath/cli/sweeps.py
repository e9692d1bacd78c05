"""`linpath interpolate | barrier-init | barrier-groups`: a finished run's path sweep, its barrier
points, and which groups of a setting's runs have barriers."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..foundations.convert import check_alphas, check_device
from ..foundations.hparams import BARRIER_OFFSET, BN_MODES, SettingsError
from ..foundations.io import write_yaml
from ..foundations.layout import Layout, RunDir
from .args import checked, count, flags_given, number


def json_settings(text: str | None, flag: str) -> dict:
    """A settings mapping given as JSON on the command line ({} when absent)."""
    from ..foundations.convert import json_argument

    return json_argument(text, flag, what="a JSON object of settings")


def _thresholds(args: argparse.Namespace):
    """The shape thresholds: --thresholds-json, then single flags over it; the rest ShapeThresholds' defaults."""
    from ..foundations.convert import from_dict
    from ..foundations.hparams import ShapeThresholds

    given = {**json_settings(args.thresholds_json, "--thresholds-json"),
             **flags_given(args, {"barrier_tol": "barrier_tol", "barrier_rel": "barrier_rel", "plateau_alpha": "plateau_alpha"})}
    return from_dict(ShapeThresholds, given, "thresholds")


def _sweep(args: argparse.Namespace):
    """What to measure: --sweep-json, then single flags over it; the rest SweepSpec's defaults."""
    from ..foundations.hparams import SweepSpec

    flags = flags_given(args, {"starts": "start", "full": "full", "groups": "groups", "param_groups": "param_groups",
                          "bn_modes": "bn_mode", "alphas": "alphas", "bn_subset": "bn_subset",
                          "batch_size": "batch_size", "device": "device"})
    if args.splits is not None:
        flags["splits"] = args.splits.split(",")
    return SweepSpec.from_dict({**json_settings(args.sweep_json, "--sweep-json"), **flags}, "sweep")


def _add_threshold_args(p: argparse.ArgumentParser) -> None:
    # Defaults live in linpath.foundations.hparams.ShapeThresholds only.
    p.add_argument("--thresholds-json", default=None, help="shape thresholds as JSON (what the workflow passes)")
    p.add_argument("--barrier-tol", type=number(0), default=None,
                   help="absolute floor of a barrier's Δ (loss units)")
    p.add_argument("--barrier-rel", type=number(0), default=None,
                   help="a barrier's Δ must also exceed this fraction of |L(0) - L(1)|")
    p.add_argument("--plateau-alpha", type=number(0, 1), default=None, help="α_half at or above this is a plateau")


def _cmd_interpolate(args: argparse.Namespace) -> None:
    import torch

    from ..foundations.io import write_parquet
    from ..paths.shapes import shape_table
    from ..paths.sweeps import interpolate_run

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
    print(f"{len(table)} rows -> {out}")
    if args.shapes:  # the workflow labels in a step of its own (`linpath label`), so thresholds rerun no sweep
        shapes = shape_table(table, thresholds)
        write_parquet(shapes, args.shapes)
        summary = shapes[shapes["split"] == "train"][["path", "start", "group", "param_group", "bn_mode", "label", "delta"]]
        print(summary.to_string(index=False))


def _cmd_label(args: argparse.Namespace) -> None:
    """Shapes from a stored sweep: the labelling step, apart from the measurement, so that a changed
    threshold relabels every path in seconds without measuring one again."""
    import pandas as pd

    from ..foundations.io import write_parquet
    from ..paths.shapes import shape_table

    thresholds = _thresholds(args)
    sweep = _read_table(Path(args.sweep), "--sweep", PATH_COLUMNS, "a sweep of `linpath interpolate`", empty_ok=True)
    shapes = shape_table(sweep, thresholds) if len(sweep) else pd.DataFrame({"run_id": pd.Series(dtype="str")})
    write_parquet(shapes, args.out)
    print(f"{len(shapes)} shapes ({thresholds.rule()}) -> {args.out}")


def _sweep_of_untrained_run(run: Path, out: Path, shapes: str | None) -> bool:
    """A run that did not train (outcome.yaml) has no paths: its sweep and shapes are written empty, so that
    the job completes and the tables list the run with its reason."""
    import pandas as pd

    from ..foundations.io import write_parquet
    from ..foundations.outcome import read_outcome

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
    from ..engine import models
    from ..foundations.hparams import RunSpec
    from ..foundations.io import load_state

    settings, final = RunDir(run).settings, RunDir(run).final
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
    from ..paths.barrier import write_barrier_inits

    if args.outcome and _no_barrier_of_untrained_run(Path(args.outcome), Path(args.out)):
        return
    paths_file = Path(args.sweep)
    table = _read_table(paths_file, "--sweep", PATH_COLUMNS, "a sweep of `linpath interpolate`")
    try:
        info = write_barrier_inits(table, args.out, offset=args.offset, thresholds=_thresholds(args), split=args.split)
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
    from ..foundations.outcome import read_outcome

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
    from ..foundations.convert import json_argument
    from ..study.layer_groups import check_rule

    return check_rule(json_argument(text, "--layer-groups-json", what="a mapping of family -> roles"), "--layer-groups-json")


def _group_rule(text: str | None):
    """--rule-json: config `shapes.barrier_groups`, checked."""
    from ..foundations.convert import json_argument
    from ..foundations.hparams import GroupRule

    if text is None:
        return GroupRule()
    raw = json_argument(text, "--rule-json", what="a mapping (config shapes.barrier_groups)")
    return GroupRule.from_config({"barrier_groups": raw}, "--rule-json")


def _cmd_barrier_groups(args: argparse.Namespace) -> None:
    from ..study.barrier_groups import write_barrier_groups

    for f in args.shapes:  # an empty table is the shapes of a run that did not train
        _read_table(Path(f), "--shapes", SHAPE_COLUMNS, "a shape table of `linpath interpolate --shapes`", empty_ok=True)
    if not Path(args.run_yaml).is_file():
        raise SettingsError(f"--run-yaml: file not found: {args.run_yaml}")
    try:
        write_barrier_groups(args.shapes, args.run_yaml, args.out, rule=_group_rule(args.rule_json),
                             layer_rule=_layer_rule(args.layer_groups_json))
    except SettingsError:
        raise
    except ValueError as err:  # no group-wise paths in the tables
        raise SettingsError(f"--shapes {' '.join(args.shapes)}: {err}") from None
    print(f"wrote {args.out}")


def add_parsers(verbs, debug: argparse.ArgumentParser) -> None:
    p = verbs.add_parser("interpolate", parents=[debug], help="loss and accuracy along linear paths of a finished run -> parquet")
    p.add_argument("--run", required=True, help="run directory written by `linpath train`")
    p.add_argument("--eval-cache", default=str(Layout().eval_cache()), help="folder of cached evaluation splits")
    p.add_argument("--out", required=True, help="long-format parquet, one row per path, split and α")
    p.add_argument("--shapes", help="also write the per-path shape metrics here (parquet)")
    p.add_argument("--run-id", help="run_id column (default: the run directory name)")
    p.add_argument("--sweep-json", default=None,
                   help="what to measure, as JSON of linpath.foundations.hparams.SweepSpec (what the workflow passes); "
                        "the flags below override it, and SweepSpec's defaults fill the rest")
    p.add_argument("--start", action="append",
                   help="path start: init, other (another init), epoch:<t>, other:<seed>, or <label>=<state file>; "
                        "repeatable. Group and parameter-group paths use the first start; later ones get the full path")
    p.add_argument("--full", action=argparse.BooleanOptionalAction, default=None, help="the full-model path")
    p.add_argument("--groups", action=argparse.BooleanOptionalAction, default=None,
                   help="the group-wise path of every group")
    p.add_argument("--param-groups", action=argparse.BooleanOptionalAction, default=None,
                   help="weights / BN affine / BN stats paths per group")
    p.add_argument("--bn-mode", action="append", choices=list(BN_MODES), help="repeatable")
    p.add_argument("--alphas", type=checked(check_alphas), default=None,
                   help='"start:stop:count" or a comma list of finite numbers')
    p.add_argument("--splits", default=None, help="comma list of train, test")
    p.add_argument("--bn-subset", type=count, default=None, help="training samples for BN recomputation")
    p.add_argument("--batch-size", type=count, default=None, help="the chunk: memory is bounded by it")
    p.add_argument("--device", type=checked(check_device), default=None, help="auto, cpu, cuda[:<index>] or mps")
    p.add_argument("--threads", type=count, default=None)
    p.add_argument("--no-progress", action="store_true")
    _add_threshold_args(p)
    p.set_defaults(func=_cmd_interpolate)

    p = verbs.add_parser("label", parents=[debug], help="shape labels of a stored sweep (no measuring) -> parquet")
    p.add_argument("--sweep", required=True, help="parquet from `linpath interpolate`")
    p.add_argument("--out", required=True, help="one shape row (delta, label, thresholds) per path and split")
    _add_threshold_args(p)
    p.set_defaults(func=_cmd_label)

    p = verbs.add_parser("barrier-init", parents=[debug], help="states at the barrier peak of a run's full path, and before/after it")
    p.add_argument("--sweep", required=True, help="parquet from `linpath interpolate` holding the full path")
    p.add_argument("--out", required=True, help="folder for barrier.yaml and at.pt / before.pt / after.pt")
    p.add_argument("--outcome", default=None,
                   help="the run's outcome.yaml: a run that did not train gets a barrier.yaml that says so")
    p.add_argument("--offset", type=number(maximum=1, above=0), default=BARRIER_OFFSET, help="δ: before = α*−δ, after = α*+δ (α* = top of the largest rise)")
    p.add_argument("--split", default="train")
    _add_threshold_args(p)
    p.set_defaults(func=_cmd_barrier_init)

    p = verbs.add_parser("barrier-groups", parents=[debug], help="which groups of a setting's runs have barriers (E11, E13, E16)")
    p.add_argument("--shapes", nargs="+", required=True, help="shape tables of every seed's run of the setting")
    p.add_argument("--run-yaml", required=True, help="run.yaml of one of those runs (for the widenable groups)")
    p.add_argument("--out", required=True, help="YAML with the groups with / without a barrier")
    p.add_argument("--rule-json", default=None,
                   help='config shapes.barrier_groups as JSON: {"rule": "monotonic" | "label", "tol": ..., "min_share": ...} '
                        "(linpath.foundations.hparams.GroupRule; missing keys: its defaults)")
    p.add_argument("--layer-groups-json", default=None,
                   help="which groups are candidates, per architecture family (config shapes.layer_groups, as JSON); "
                        "default: linpath.study.layer_groups.DEFAULT_LAYER_GROUPS")
    p.set_defaults(func=_cmd_barrier_groups)
