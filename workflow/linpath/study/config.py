"""The workflow config, read and checked in one place before anything is planned.

Three things check a config, each once: the JSON schema (`linpath/schemas/config.schema.yaml`: the shape
of every section, and the defaults it fills in), the settings dataclasses (linpath.foundations.hparams:
every value of a run, sweep, spawn or plane, with the dotted key in the error), and this module, which
runs both over a whole config. What the schema cannot say is checked here: a schema `number` accepts
NaN (NaN fails no `minimum`) and ±inf where only one bound is given, and `run: {type: object}` accepts
anything, while the planner merges `run` sections into the base recipe, adds seeds and hashes the
result. The planner then runs every merged recipe through `RunSpec.from_dict` (`Plan.check`).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from ..foundations.convert import check_alphas, check_override, check_plain_data, deep_merge
from ..foundations.hparams import RunSpec, SettingsError

SCHEMA = Path(__file__).resolve().parent.parent / "schemas" / "config.schema.yaml"  # shipped inside the package


def load_config(paths: list[str]) -> dict:
    """The configs merged in order, as Snakemake merges `configfile:` and each `--configfile`, checked
    against the workflow's schema (which also fills its defaults)."""
    if not paths:
        raise SettingsError("--configfile: give at least one config file")
    config: dict = {}
    for path in paths:
        try:
            raw = yaml.safe_load(Path(path).read_text())
        except OSError as err:
            raise SettingsError(f"--configfile {path}: {err.strerror}") from None
        except yaml.YAMLError as err:
            raise SettingsError(f"--configfile {path}: not valid YAML ({err})") from None
        if not isinstance(raw, dict):
            raise SettingsError(f"--configfile {path}: expected a mapping of settings at top level")
        config = deep_merge(config, raw)
    import jsonschema
    from snakemake.utils import validate

    schema = yaml.safe_load(SCHEMA.read_text())
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(config))
    if error is not None:
        where = ".".join(str(part) for part in error.absolute_path) or "(top level)"
        raise SettingsError(f"{' + '.join(paths)}: {where}: {error.message}")
    validate(config, str(SCHEMA))  # as the workflow does: fills the schema's defaults
    return config


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


def check_config(config: dict) -> None:
    """Raise SettingsError naming the dotted key of the first value the planner cannot take."""
    check_plain_data(config)
    check_override(config.get("base") or {}, "base", RunSpec)
    path_settings = [("paths", config.get("paths"))]
    for name, setting in (config.get("settings") or {}).items():
        if isinstance(setting, dict):
            check_override(setting.get("run") or {}, f"settings.{name}.run", RunSpec)
            path_settings.append((f"settings.{name}.paths", setting.get("paths")))
    for where, paths in path_settings:
        if isinstance(paths, dict) and "alphas" in paths:
            check_alphas(paths["alphas"], f"{where}.alphas")


# --- what each table and figure job reads of the config -------------------------------------------------

# The presentation of a setting in tables and figures. Its recipe is not among them: a run's recipe is in
# its run id, so a changed recipe reaches a table through the table's input files (other runs).
_SHOWN = ("experiment", "intervention", "baseline", "aux", "figure")
# Table 1's summary rules (linpath.report.tables.SummaryRules) and the thresholds its text prints.
_TABLE1_SHAPES = ("label_min_share", "layer_barrier_ratio", "layer_barrier_floor", "acc_confidence", "layer_groups",
                  "barrier_groups", "sensitivity", "barrier_tol", "barrier_rel", "plateau_alpha")


def job_reads(plan, job: str, name: str | None = None) -> dict:
    """The parts of the config a table or figure job reads besides its input files (the runs, sweeps and
    shapes it is given): how its settings are shown, the rules it applies, and what makes the ids of its
    runs (seeds, base recipe, the settings its runs read from). The workflow hands each such job a copy of
    the config that is rewritten only when these parts change (rule job_config), so a job reruns for them
    and for nothing else in the config: a relabelling threshold reaches Table 1 and not the experiment
    figures, an experiment added in an overlay leaves the other figures and tables as they are."""
    config = plan.config
    shapes = config.get("shapes") or {}

    def shown(settings) -> dict:
        """How these settings are shown, and the full entries of every setting their runs depend on."""
        settings = [s for s in dict.fromkeys(settings) if s in plan.settings]
        closure = plan.upstream_closure([r for r, run in plan.runs.items() if run.setting in settings])
        return {"seeds": config.get("seeds"), "base": config.get("base"),
                "shown": {s: {k: v for k, v in config["settings"][s].items() if k in _SHOWN} for s in sorted(settings)},
                "recipes": {s: config["settings"][s] for s in sorted({plan.runs[r].setting for r in closure})}}

    def row_settings(rows) -> list[str]:
        out = []
        for row in rows:
            out += list(row.get("settings", []))
            for of, against in (row.get("compare") or {}).items():
                out += [of, *against]
        return out + [plan.settings[s].baseline for s in out if s in plan.settings and plan.settings[s].baseline]

    if job == "core_tables":
        return {"settings": shown(config["settings"])}
    if job in ("table1", "table1_sensitivity", "figure_a11"):
        rows = list(config.get("table1") or [])
        return {"table1": rows, "settings": shown(row_settings(rows)),
                "shapes": {k: v for k, v in shapes.items() if k in _TABLE1_SHAPES}}
    if job == "experiment_table":
        table = plan.reference()["tables"][name]
        rows = [plan.row_setting(row, name) for row in table["rows"]]
        return {"table": table, "settings": shown(rows), "label_min_share": shapes.get("label_min_share")}
    if job == "experiment_figure":
        return {"experiment": config["experiments"][name], "settings": shown(plan.experiment_settings(name))}
    raise ValueError(f"unknown job {job!r}")
