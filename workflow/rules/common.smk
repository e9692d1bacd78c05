# Shared helpers: config validation, the run plan, and the input functions of every rule.
import json
import os
import sys
from pathlib import Path

import yaml
from snakemake.utils import validate

sys.path.insert(0, str(Path(workflow.basedir) / "workflow"))

from linpath.study.plan import Plan, as_json  # noqa: E402
from linpath.foundations.hparams import SettingsError  # noqa: E402
from linpath.foundations.layout import JOB_VARIABLES, job_environment  # noqa: E402
from linpath.study.lmc_plan import LmcPlan  # noqa: E402
from linpath.study.curvature_plan import CurvaturePlan  # noqa: E402
from linpath.study.config import job_reads  # noqa: E402
from linpath.foundations.ids import digest  # noqa: E402

# A bad config stops here, before any job runs, with the offending key named.
validate(config, "../linpath/schemas/config.schema.yaml")
PLAN = Plan(config)
PLAN.check()
LAYOUT = PLAN.layout
LMC = LmcPlan(PLAN)  # spawned pairs and loss planes (lmc.smk)
CURV = CurvaturePlan(PLAN)  # curvature along paths (curvature.smk)


# Every job runs `python -m linpath <verb>`. What makes that command find this checkout's linpath and the
# right interpreter lives in the environment, not in the command: Snakemake compares a rule's command and
# params to decide a rerun, so a path of this machine there would rerun a finished study that was moved,
# cloned elsewhere or given a new virtualenv. The python running Snakemake comes first on PATH; with
# `--sdm conda` the job's shell activates its environment (envs/linpath.yaml holds the dependencies), which
# puts that environment's python before it. Cluster jobs inherit the environment of the submitting process.
LINPATH = "python -m linpath"
# `checkpoint_minutes` travels the same way: a training job writes its checkpoint at least this often
# (minutes of wall time), so a job killed at its time limit loses at most that much; it changes no result.
os.environ.update(job_environment(Path(workflow.basedir) / "workflow", sys.executable, config["checkpoint_minutes"]))


def code_input(module):
    """A file of the linpath package as a rule's input, e.g. the drawing code of the figure rules: a change
    to it reruns their jobs. Relative to the working directory, as the results are, so that a study moved
    with its checkout (`cp -a`) names the same input; a newer file with the content recorded in .snakemake/
    (a fresh clone over copied results) reruns nothing."""
    return os.path.relpath(Path(workflow.basedir) / "workflow" / "linpath" / module)


envvars:
    *JOB_VARIABLES,


CONDA_ENV = "../../envs/linpath.yaml"


# Warm start (config `warm_start`, linpath.cli.warm): the jobs' linpath commands are run by children of one
# server that imported torch once. Which commands it runs is decided by each command, from facts of its own
# process (linpath.cli.warm.servable): one in the server's interpreter that descends from this Snakemake (a
# job of the local executor, or a local rule under a cluster executor). A job under `--sdm conda` (another
# interpreter) or a cluster job (another parent, wherever it lands) runs by itself.
WARM = {}


onstart:
    if config["warm_start"]:
        from linpath.cli.warm_server import Server

        WARM["server"] = Server(log=LAYOUT.log("warm_start", "server"), python_path=str(Path(workflow.basedir) / "workflow"))
        os.environ.update(WARM["server"].job_variables())


def _stop_warm_start(log):
    if "server" in WARM:
        WARM.pop("server").stop()


def _finish(log):
    _stop_warm_start(log)


onsuccess: _finish(log)


onerror: _finish(log)
# The validated config (defaults filled in), as the tables and figures read it: results/derived/config.json.
CONFIG_RECORD = str(LAYOUT.config_record())
REFERENCE = PLAN.reference()
RES = config["resources"]  # job sizes per rule (config `resources`)
SHAPES = config.get("shapes", {})
EXPERIMENT_FIGURES = PLAN.figure_experiments()
EXPERIMENT_TABLES = {t: e for e, entry in PLAN.experiments.items() for t in entry.get("tables", [])}
for _table, _experiment in EXPERIMENT_TABLES.items():
    if _table not in REFERENCE.get("tables", {}):
        raise SettingsError(f"experiments.{_experiment}.tables: {_table!r} is not a table of {config.get('reference')}")


def one_of(names):
    """A wildcard constraint matching exactly these names."""
    return "|".join(names) if names else "(?!)"


def run_pattern(role):
    """Regex of the run ids a training rule of this role produces."""
    return one_of([r for r in PLAN.runs if PLAN.role(r) == role])


# --- measurements that decide which runs exist (checkpoints) ------------------------------------


# A measurement that decides a run is a checkpoint output, rewritten whenever the paths are relabelled (a
# changed threshold). A run must follow the decision, not the file: the files are ancient inputs, and the
# decision itself is among the run's params (its resolved settings; E5's barrier point), so the run is
# trained again only when the decision changed.


def read_yaml(path):
    return yaml.safe_load(Path(path).read_text())


def barrier_group_files(wildcards):
    return [ancient(checkpoints.barrier_groups.get(setting=s).output[0]) for s in PLAN.runs[wildcards.run_id].groups_from]


def state_files(wildcards):
    """What a run starts from: upstream outcome.yaml files, and the barrier.yaml of E5 (ancient, see above)."""
    run = PLAN.runs[wildcards.run_id]
    barrier = str(LAYOUT.barrier_yaml(run.barrier_from)) if run.barrier_from else None
    return [ancient(f) if f == barrier else f for f in PLAN.state_inputs(wildcards.run_id)]


def barrier_decision(wildcards):
    """E5: where the parent's barrier is (empty for other runs), as the run's params see it."""
    run = PLAN.runs[wildcards.run_id]
    if not run.barrier_from:
        return ""
    info = read_yaml(checkpoints.barrier_init.get(run_id=run.barrier_from).output.yaml)
    return json.dumps({k: info.get(k) for k in ("has_barrier", "alpha_star", "alphas")}, sort_keys=True)


def skipped_runs(run_ids):
    """Run id -> why it is not trained, for the measured ones among these runs, once their checkpoints ran."""
    parents, settings = PLAN.measurements(run_ids)
    for parent in parents:
        checkpoints.barrier_init.get(run_id=parent)
    for setting in settings:
        checkpoints.barrier_groups.get(setting=setting)
    return PLAN.skipped_runs(run_ids, read_yaml)


def run_settings_json(wildcards):
    """A run's concrete settings; measured group lists come from the barrier_groups checkpoint."""
    run = PLAN.runs[wildcards.run_id]
    groups = {s: read_yaml(checkpoints.barrier_groups.get(setting=s).output[0]) for s in run.groups_from}
    return json.dumps(PLAN.resolve(wildcards.run_id, groups), sort_keys=True)


# --- what a table or figure reads -----------------------------------------------------------------


def job_config(job, wildcard=None):
    """A table or figure job's config file (written by job_config): the whole config, written again only when the
    parts this job reads change, so the job reruns for those and not for the rest of the config. (A file and
    not a param: these jobs also read checkpoint outputs, and Snakemake compares the params of such a job
    only when a checkpoint it reads runs again.)"""
    return str(LAYOUT.job_config(job if wildcard is None else f"{job}-{{{wildcard}}}"))


def job_reads_of(name):
    """job_reads for a job_config name: '<job>' or '<job>-<experiment or table>'."""
    job, _, which = name.partition("-")
    return job_reads(PLAN, job, which or None)


def config_json(wildcards, input):
    """The config as JSON, for the two rules that write it. A params function of `input`: Snakemake leaves
    such params out of its rerun check, so only their digest param decides when the file is written again.
    Keys keep the config's order: the planner reads its settings in that order, so the run order of the
    tables (runs, paths, shapes) is the order the config lists its settings in, as in the workflow's plan."""
    return json.dumps(config)


# A shell command, not a `run:` block: a local shell job ends in well under a second, where a `run:` job
# held one of the cores for about 12 s each (measured on the default, 2026-12-06).
WRITE_CONFIG = ("printf '%s\\n' {params.config:q} > {output}.part && mv {output}.part {output} && "
                "echo 'the config (digest of what this job reads: {params.digest}) -> {output}' > {log}")


def runs_input(job, wildcard=None):
    """Input items of a table or figure job over its planned runs (Plan.report_runs), handed to its command
    as they are (--run-files, --measurements). Separate items: the runs that exist at once are scheduled at
    once; the measurement files (checkpoint outputs) are plain inputs, so all those checkpoints run in
    parallel; the measured runs follow once the checkpoints have decided them (skipped ones left out)."""

    def planned(w):
        return PLAN.report_runs(job, getattr(w, wildcard) if wildcard else None)

    def measured(w):
        runs = planned(w)
        skipped = skipped_runs(runs)
        return PLAN.run_files([r for r in runs if PLAN.measured(r) and r not in skipped])

    return {
        "static": lambda w: PLAN.run_files([r for r in planned(w) if not PLAN.measured(r)]),
        "measurements": lambda w: PLAN.measurement_files(planned(w)),
        "measured": measured,
    }


# The run files and measurement files of a table or figure job, as its `linpath report` command takes them.
HANDED_RUNS = "--run-files {input.static} {input.measured} --measurements {input.measurements}"


def final_targets():
    return [
        CONFIG_RECORD,
        *(str(LAYOUT.table(t)) for t in ("runs", "paths", "shapes", "table1")),
        str(LAYOUT.table("table1", ".md")),
        str(LAYOUT.table("table1_sensitivity")),
        str(LAYOUT.table("table1_sensitivity", ".md")),
        *(str(LAYOUT.table(t)) for t in EXPERIMENT_TABLES),
        str(LAYOUT.figure("figure_A11")),
        str(LAYOUT.figure("figure_A11", ".pdf")),
        *(str(LAYOUT.figure(e)) for e in EXPERIMENT_FIGURES),
        *LMC.targets(),
        *CURV.targets(),
    ]
