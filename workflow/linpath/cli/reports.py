"""`linpath report | plan`: the workflow's tables and figures from its config record, and what a config
will cost before it is submitted."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..foundations.hparams import SettingsError
from ..study.config import read_config_record


def _cmd_plan(args: argparse.Namespace) -> None:
    from ..study.config import load_config
    from ..study.cost import estimate, format_estimate

    files = ([args.workflow_config] if args.workflow_config != "none" else []) + (args.configfile or [])
    print(format_estimate(estimate(load_config(files), files)))


# What each `linpath report` kind reads (argument names) and how many --out files it writes (the last one of
# table1 and table1-sensitivity, the markdown as an HTML page, is optional).
REPORT_NEEDS = {
    "core-tables": (("runs_json", "skipped_json"), (0,)),
    "table1": (("runs", "shapes"), (2, 3)),
    "table1-sensitivity": (("runs", "shapes"), (3, 4)),
    "table": (("name", "runs_json", "skipped_json"), (1,)),
    "figure": (("name", "runs_json"), (1,)),
    "figure-a11": (("paths", "shapes", "table1", "runs"), (1,)),
    "so-far": ((), (0,)),
}


def _cmd_report(args: argparse.Namespace) -> None:
    """Tables and figures of the workflow, from the config record it wrote (Layout.config_record)."""
    from ..foundations.convert import json_argument
    from ..study.plan import Plan

    needs, outputs = REPORT_NEEDS[args.what]
    missing = [f"--{n.replace('_', '-')}" if n != "name" else "NAME" for n in needs if getattr(args, n) is None]
    if missing:
        raise SettingsError(f"report {args.what} needs {', '.join(missing)}")
    if args.what == "so-far":
        if len(args.out) > 1:
            raise SettingsError(f"report so-far writes into one folder: --out got {len(args.out)}")
    elif len(args.out) not in outputs:
        raise SettingsError(f"report {args.what} writes {' or '.join(map(str, outputs))} file(s): --out got {len(args.out)}")
    if not Path(args.config).is_file():
        raise SettingsError(f"--configfile: file not found: {args.config}")
    plan = Plan(read_config_record(Path(args.config)))
    runs = json_argument(args.runs_json, "--runs-json", list, "a JSON list of run ids")
    skipped = json_argument(args.skipped_json, "--skipped-json", dict, "a JSON object of run id -> reason")
    for flag, path in (("--runs", args.runs), ("--shapes", args.shapes), ("--paths", args.paths),
                       ("--table1", args.table1), ("--sensitivity", args.sensitivity)):
        if args.what in ("table1", "table1-sensitivity", "figure-a11") and path is not None and not Path(path).is_file():
            raise SettingsError(f"{flag}: file not found: {path}")
    REPORTS[args.what](plan, args, runs, skipped)


def _report_so_far(plan, args, runs, skipped) -> None:
    from ..report.so_far import progress_markdown, write_so_far

    out = Path(args.out[0]) if args.out else plan.layout.results / "so_far"
    print(progress_markdown(write_so_far(plan, out), plan), end="")
    print(f"tables so far -> {out}")


def _report_core_tables(plan, args, runs, skipped) -> None:
    from ..report.tables import write_core_tables

    write_core_tables(plan, runs, skipped)


def _report_table1(plan, args, runs, skipped) -> None:
    from ..report.tables import write_table1

    robustness = None
    if args.sensitivity is not None:
        import pandas as pd

        from ..report.sensitivity import robustness_line

        robustness = robustness_line(pd.read_parquet(args.sensitivity))
    write_table1(plan, args.runs, args.shapes, args.out[0], args.out[1], robustness=robustness,
                 html=args.out[2] if len(args.out) > 2 else None)


def _report_sensitivity(plan, args, runs, skipped) -> None:
    from ..foundations.convert import json_argument
    from ..report.sensitivity import write_sensitivity

    groups = json_argument(args.groups_json, "--groups-json", dict, "a JSON object of setting -> barrier-groups file") or {}
    for setting, path in groups.items():
        if not Path(path).is_file():
            raise SettingsError(f"--groups-json: the barrier-groups file of {setting} not found: {path}")
    write_sensitivity(plan, args.runs, args.shapes, args.out[0], args.out[1], args.out[2], groups)
    if len(args.out) > 3:
        from ..report.html import write_markdown_html

        write_markdown_html(args.out[1], args.out[3], "Table 1 under other thresholds")


def _report_table(plan, args, runs, skipped) -> None:
    from ..report.tables import write_experiment_table

    write_experiment_table(plan, args.name, runs, skipped, args.out[0])


def _report_figure(plan, args, runs, skipped) -> None:
    from ..report.figures import write_experiment_figure

    write_experiment_figure(plan, args.name, runs, args.out[0])


def _report_figure_a11(plan, args, runs, skipped) -> None:
    from ..report.figures import figure_a11

    figure_a11(plan, args.paths, args.shapes, args.table1, args.runs, args.out[0])


# `linpath report <what>`: what each kind writes (REPORT_NEEDS says what it reads).
REPORTS = {"core-tables": _report_core_tables, "table1": _report_table1, "table1-sensitivity": _report_sensitivity,
           "table": _report_table, "figure": _report_figure, "figure-a11": _report_figure_a11,
           "so-far": _report_so_far}


def add_parsers(verbs, debug: argparse.ArgumentParser) -> None:
    p = verbs.add_parser("report", parents=[debug], help="the workflow's tables and figures (what its table and figure rules run)")
    p.add_argument("what", choices=list(REPORT_NEEDS),
                   help="core-tables: runs/paths/shapes over --runs-json; table1; table1-sensitivity; table NAME; figure EXPERIMENT; "
                        "figure-a11; so-far: runs/paths/shapes and Table 1 of the runs finished so far, with the "
                        "pending and failed runs listed (into --out FOLDER, default <results>/so_far)")
    p.add_argument("name", nargs="?", help="the per-experiment table (table) or the experiment (figure)")
    # --configfile as for `linpath plan` and Snakemake; --config, its older name, is kept as an alias.
    p.add_argument("--configfile", "--config", dest="config", required=True,
                   help="the workflow config as JSON or YAML (results/derived/config.json); alias: --config")
    p.add_argument("--runs-json", help="the run ids to read, as a JSON list (core-tables, table, figure)")
    p.add_argument("--skipped-json", help="run id -> why it was not trained, as a JSON object")
    p.add_argument("--runs", help="runs.parquet (table1, figure-a11)")
    p.add_argument("--shapes", help="shapes.parquet (table1, figure-a11)")
    p.add_argument("--paths", help="paths.parquet (figure-a11)")
    p.add_argument("--table1", help="table1.parquet (figure-a11)")
    p.add_argument("--groups-json", help="table1-sensitivity: setting -> its barrier-groups file (results/derived/"
                   "barrier_groups/<setting>.yaml), as a JSON object, for every setting whose groups others read")
    p.add_argument("--sensitivity", help="table1_sensitivity.parquet (table1: its robustness count goes into table1.md)")
    p.add_argument("--out", nargs="+", default=[], help="output file(s); table1: the parquet, the markdown and "
                   "(optional) the markdown as HTML; table1-sensitivity: the parquet, the markdown, the barrier-group "
                   "parquet and (optional) the markdown as HTML")
    p.set_defaults(func=_cmd_report)

    p = verbs.add_parser("plan", parents=[debug], help="runs, epochs, path sweeps and estimated hours of a config, before submitting")
    p.add_argument("--configfile", action="append", help="merged over the workflow config in order, as Snakemake does; repeatable")
    p.add_argument("--workflow-config", default="config/config.yaml",
                   help="the config the Snakefile loads first (default: %(default)s; `none`: only the --configfile ones)")
    p.set_defaults(func=_cmd_plan)
