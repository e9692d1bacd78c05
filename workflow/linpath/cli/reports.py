"""`linpath report | plan`: the workflow's tables and figures from its config record, and what a config
will cost before it is submitted.

Each `report` kind is a subcommand with its own arguments: it reads the files it is handed and writes
exactly the files named by --out (the workflow's rules hand it their declared inputs and outputs)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..foundations.hparams import SettingsError
from ..study.config import read_config_record
from .args import require_files


def _cmd_plan(args: argparse.Namespace) -> None:
    from ..study.config import load_config
    from ..study.cost import estimate, format_estimate

    files = ([args.workflow_config] if args.workflow_config != "none" else []) + (args.configfile or [])
    print(format_estimate(estimate(load_config(files), files)))


def _plan(args: argparse.Namespace):
    """The plan of the config record, after every named input file was found."""
    from ..study.plan import Plan

    require_files(args.config, flag="--configfile")
    for flag in ("runs", "shapes", "paths", "table1", "sensitivity", "run_files", "measurements", "groups"):
        given = getattr(args, flag, None)
        require_files(*([given] if isinstance(given, str) else given or []), flag=f"--{flag.replace('_', '-')}")
    return Plan(read_config_record(Path(args.config)))


def _handed(plan, args: argparse.Namespace, job: str, name: str | None = None):
    """The runs of a core-tables / table / figure job, from the files it was handed (Plan.handed_runs)."""
    if job == "experiment_table" and name not in plan.reference().get("tables", {}):
        raise SettingsError(f"report table: {plan.config.get('reference')} has no table {name!r}")
    if job == "experiment_figure" and name not in plan.figure_experiments():
        raise SettingsError(f"report figure: {name!r} is not an experiment with a figure in this config")
    return plan.handed_runs(plan.report_runs(job, name), args.run_files, args.measurements)


def _report_core_tables(args: argparse.Namespace) -> None:
    from ..report.tables import write_core_tables

    plan = _plan(args)
    handed = _handed(plan, args, "core_tables")
    write_core_tables(plan, handed.read, handed.skipped, out=tuple(args.out), files=handed.files)


def _report_table(args: argparse.Namespace) -> None:
    from ..report.tables import write_experiment_table

    plan = _plan(args)
    handed = _handed(plan, args, "experiment_table", args.name)
    write_experiment_table(plan, args.name, handed.read, handed.skipped, args.out, files=handed.files)


def _report_figure(args: argparse.Namespace) -> None:
    from ..report.figures import write_experiment_figure

    plan = _plan(args)
    handed = _handed(plan, args, "experiment_figure", args.name)
    write_experiment_figure(plan, args.name, handed.read, args.out, files=handed.files)


def _report_table1(args: argparse.Namespace) -> None:
    from ..report.tables import write_table1

    plan = _plan(args)
    groups = None if args.groups is None else plan.handed_group_files(plan.table1_group_references(), args.groups)
    robustness = None
    if args.sensitivity is not None:
        import pandas as pd

        from ..report.sensitivity import robustness_line

        robustness = robustness_line(pd.read_parquet(args.sensitivity))
    write_table1(plan, args.runs, args.shapes, args.out[0], args.out[1], robustness=robustness,
                 html=args.out[2] if len(args.out) > 2 else None, group_files=groups)


def _report_sensitivity(args: argparse.Namespace) -> None:
    from ..report.sensitivity import write_sensitivity

    plan = _plan(args)
    groups = plan.handed_group_files(plan.group_list_settings(), args.groups)
    write_sensitivity(plan, args.runs, args.shapes, args.out[0], args.out[1], args.out[2], groups)
    if len(args.out) > 3:
        from ..report.html import write_markdown_html

        write_markdown_html(args.out[1], args.out[3], "Table 1 under other thresholds")


def _report_figure_a11(args: argparse.Namespace) -> None:
    from ..report.figures import figure_a11

    figure_a11(_plan(args), args.paths, args.shapes, args.table1, args.runs, args.out[0],
               args.out[1] if len(args.out) > 1 else None)


def _report_so_far(args: argparse.Namespace) -> None:
    from ..report.so_far import progress_markdown, write_so_far

    plan = _plan(args)
    out = Path(args.out) if args.out else plan.layout.results / "so_far"
    print(progress_markdown(write_so_far(plan, out), plan), end="")
    print(f"tables so far -> {out}")


class _OutCount(argparse.Action):
    """--out with a count the kind allows (a tuple of counts): usage error otherwise."""

    def __call__(self, parser, namespace, values, option_string=None):
        if len(values) not in self.const:
            parser.error(f"--out takes {' or '.join(map(str, self.const))} file(s), got {len(values)}")
        setattr(namespace, self.dest, values)


def add_parsers(verbs, debug: argparse.ArgumentParser) -> None:
    report = verbs.add_parser("report", parents=[debug], help="the workflow's tables and figures (what its table and figure rules run)")
    kinds = report.add_subparsers(dest="what", required=True, metavar="KIND")
    common = argparse.ArgumentParser(add_help=False, parents=[debug])
    # --configfile as for `linpath plan` and Snakemake; --config, its older name, is kept as an alias.
    common.add_argument("--configfile", "--config", dest="config", required=True,
                        help="the workflow config as JSON or YAML (results/derived/config.json); alias: --config")
    handed = argparse.ArgumentParser(add_help=False)
    handed.add_argument("--run-files", nargs="*", default=[], help="the runs' outcome.yaml, sweep and shapes files "
                        "(exactly those the plan names for the runs read: Plan.run_files)")
    handed.add_argument("--measurements", nargs="*", default=[], help="the barrier.yaml and barrier-groups files that "
                        "decide which of the measured runs exist (Plan.measurement_files)")

    def kind(name: str, func, help: str, parents=()) -> argparse.ArgumentParser:
        p = kinds.add_parser(name, parents=[common, *parents], help=help, description=help)
        p.set_defaults(func=func)
        return p

    p = kind("core-tables", _report_core_tables, "runs, paths and shapes over every planned run", [handed])
    p.add_argument("--out", nargs=3, required=True, metavar=("RUNS", "PATHS", "SHAPES"), help="the three parquet tables")
    p = kind("table", _report_table, "one per-experiment table (Tab. A2, A3, ...) from its rows' runs", [handed])
    p.add_argument("name", metavar="NAME", help="the table, as the reference file names it")
    p.add_argument("--out", required=True, help="the table (parquet)")
    p = kind("figure", _report_figure, "one experiment's figure from its runs' sweeps", [handed])
    p.add_argument("name", metavar="EXPERIMENT", help="the experiment (E1, E2, ...)")
    p.add_argument("--out", required=True, help="the figure (PNG)")
    p = kind("table1", _report_table1, "Table 1 from the runs and shapes tables")
    p.add_argument("--runs", required=True, help="runs.parquet")
    p.add_argument("--shapes", required=True, help="shapes.parquet")
    p.add_argument("--sensitivity", help="table1_sensitivity.parquet: its robustness count goes into table1.md")
    p.add_argument("--groups", nargs="*", default=None, help="the barrier-groups files of the rows whose shape comes "
                   "from the barrier groups (default: those under the config's results folder)")
    p.add_argument("--out", nargs="+", required=True, action=_OutCount, const=(2, 3),
                   help="the parquet, the markdown and (optional) the markdown as HTML")
    p = kind("table1-sensitivity", _report_sensitivity, "Table 1 relabelled over a grid of thresholds")
    p.add_argument("--runs", required=True, help="runs.parquet")
    p.add_argument("--shapes", required=True, help="shapes.parquet")
    p.add_argument("--groups", nargs="*", default=[], help="the barrier-groups file of every setting whose groups "
                   "others read (results/derived/barrier_groups/<setting>.yaml)")
    p.add_argument("--out", nargs="+", required=True, action=_OutCount, const=(3, 4),
                   help="the parquet, the markdown, the barrier-group parquet and (optional) the markdown as HTML")
    p = kind("figure-a11", _report_figure_a11, "Figure A11: shape against accuracy change, per Table 1 comparison")
    for flag, what in (("paths", "paths.parquet"), ("shapes", "shapes.parquet"), ("table1", "table1.parquet"),
                       ("runs", "runs.parquet")):
        p.add_argument(f"--{flag}", required=True, help=what)
    p.add_argument("--out", nargs="+", required=True, action=_OutCount, const=(1, 2),
                   help="the figure as PNG and (optional) as PDF")
    p = kind("so-far", _report_so_far, "runs/paths/shapes and Table 1 of the runs finished so far, with the pending "
             "and failed runs listed")
    p.add_argument("--out", help="the folder (default: <results>/so_far)")

    p = verbs.add_parser("plan", parents=[debug], help="runs, epochs, path sweeps and estimated hours of a config, before submitting")
    p.add_argument("--configfile", action="append", help="merged over the workflow config in order, as Snakemake does; repeatable")
    p.add_argument("--workflow-config", default="config/config.yaml",
                   help="the config the Snakefile loads first (default: %(default)s; `none`: only the --configfile ones)")
    p.set_defaults(func=_cmd_plan)
