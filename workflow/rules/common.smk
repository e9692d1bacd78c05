# Shared helpers: config validation, the run plan, and input functions.
import json
import shlex
import sys
from pathlib import Path

import yaml
from snakemake.utils import validate

sys.path.insert(0, str(Path(workflow.basedir) / "workflow"))

from linpath.experiments import Plan, threshold_args  # noqa: E402

# A bad config stops here, before any job runs, with the offending key named.
validate(config, "../schemas/config.schema.yaml")
PLAN = Plan(config)
PLAN.check()

RESULTS = PLAN.results

def _uses_conda():
    try:
        return any(m.name == "CONDA" for m in workflow.deployment_settings.deployment_method)
    except AttributeError:
        return False


# linpath's CLI, importable from this checkout: with `--sdm conda` the environment's python
# (envs/linpath.yaml holds the dependencies), otherwise the python running Snakemake.
LINPATH = "PYTHONPATH={}${{PYTHONPATH:+:$PYTHONPATH}} {} -m linpath.cli".format(  # used through params: braces stay single
    shlex.quote(str(Path(workflow.basedir) / "workflow")), "python" if _uses_conda() else shlex.quote(sys.executable)
)
CONDA_ENV = "../../envs/linpath.yaml"
REFERENCE = yaml.safe_load(Path(config["reference"]).read_text()) if config.get("reference") else {"tables": {}}
RES = config.get("resources", {})
SHAPES = config.get("shapes", {})
TESTING = config.get("testing", {})  # test-only settings (schema: `testing`); no shipped config has them
EXPERIMENT_TABLES = sorted(REFERENCE.get("tables", {}))
EXPERIMENT_FIGURES = PLAN.figure_experiments()


def run_pattern(role):
    """Regex of the run ids a training rule of this role produces."""
    ids = [r for r in PLAN.runs if PLAN.role(r) == role]
    return "|".join(ids) if ids else "(?!)"


def barrier_group_files(wildcards):
    return [checkpoints.barrier_groups.get(setting=s).output[0] for s in PLAN.runs[wildcards.run_id].groups_from]


def measurement_files():
    """Every barrier.yaml (E5) and barrier-groups file (E11/E13/E16) that decides which runs exist: plain
    inputs of the tables, so that all these checkpoints are scheduled at once."""
    parents = {r.barrier_from for r in PLAN.runs.values() if r.barrier_from}
    settings = {s for r in PLAN.runs.values() for s in r.groups_from}
    return sorted([str(PLAN.barrier_dir(p) / "barrier.yaml") for p in parents]
                  + [str(PLAN.groups_file(s)) for s in settings])


def skipped_runs(wildcards=None):
    """Run id -> why it is not trained, read from the measurements (the checkpoints' outputs)."""
    barriers = {
        p: yaml.safe_load(Path(checkpoints.barrier_init.get(run_id=p).output.yaml).read_text())
        for p in sorted({r.barrier_from for r in PLAN.runs.values() if r.barrier_from})
    }
    groups = {
        s: yaml.safe_load(Path(checkpoints.barrier_groups.get(setting=s).output[0]).read_text())
        for s in sorted({s for r in PLAN.runs.values() for s in r.groups_from})
    }
    out = {}
    for run_id in PLAN.runs:
        if PLAN.measured(run_id):
            why = PLAN.skip_reason(run_id, groups, barriers)
            if why:
                out[run_id] = why
    return out


def run_settings_json(wildcards):
    """A run's concrete settings; measured group lists come from the barrier_groups checkpoint."""
    run = PLAN.runs[wildcards.run_id]
    groups = {
        s: yaml.safe_load(Path(checkpoints.barrier_groups.get(setting=s).output[0]).read_text())
        for s in run.groups_from
    }
    return json.dumps(PLAN.resolve(wildcards.run_id, groups), sort_keys=True)


def measured_runs(wildcards=None):
    """Runs that exist only once their measurements say so, less those the measurements skip."""
    skipped = skipped_runs()
    return [r for r in PLAN.runs if PLAN.measured(r) and r not in skipped]


def included_runs(wildcards=None):
    """Every planned run that is trained."""
    skipped = skipped_runs()
    return [r for r in PLAN.runs if r not in skipped]


def run_outputs(run_ids):
    return [f for r in run_ids for f in (str(PLAN.run_dir(r) / "summary.yaml"), str(PLAN.paths_file(r)),
                                         str(PLAN.shapes_file(r)))]


def final_targets():
    tables = RESULTS / "tables"
    figures = RESULTS / "figures"
    return [
        *(str(tables / f) for f in ("runs.parquet", "paths.parquet", "shapes.parquet", "table1.parquet", "table1.md")),
        *(str(tables / f"{t}.parquet") for t in EXPERIMENT_TABLES),
        str(figures / "figure_A11.png"),
        str(figures / "figure_A11.pdf"),
        *(str(figures / f"{e}.png") for e in EXPERIMENT_FIGURES),
    ]
