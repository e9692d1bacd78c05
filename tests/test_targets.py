"""A figure or table target builds only the runs it shows (dry runs pin the job counts per rule), each
experiment is a target by name, and a change to the drawing code or one run's changed sweep redraws only
the figures that use them."""

from __future__ import annotations

import os
import shutil
from collections import Counter

import pandas as pd
import pytest
import yaml

from linpath.study.plan import TRAINING_ROLES, Plan
from conftest import REPO, default_config, job_stats, output_of, paper_config, snakemake, tail, with_default_config


def dry_run(workdir, *targets, paper=False) -> dict[str, int]:
    extra = ["--configfile", str(workdir / "config" / "paper.yaml")] if paper else []
    proc = snakemake(workdir, "-n", "--cores", "2", *targets, *extra)  # --configfile takes every word after it
    assert proc.returncode == 0, tail(proc)
    return job_stats(output_of(proc))


def figure_jobs(plan: Plan, experiment: str) -> dict[str, int]:
    """The jobs a fresh dry run of an experiment figure schedules, from the plan: the runs the figure shows and
    the runs they start from, those not waiting for a measurement trained (by their role), swept and
    labelled, the barrier-init extraction of each parent a measured run starts from, the job config, the figure."""
    runs = plan.upstream_closure(plan.experiment_runs(experiment))
    static = [r for r in runs if not plan.measured(r)]
    jobs = Counter(plan.role(r) for r in static)
    swept = sum(plan.swept(r) for r in static)
    parents = {plan.runs[r].barrier_from for r in runs if plan.runs[r].barrier_from}
    jobs.update({"interpolate": swept, "label": swept, "barrier_init": len(parents), "experiment_figure": 1,
                 "job_config": 1})
    return {rule: n for rule, n in jobs.items() if n}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return with_default_config(tmp_path_factory.mktemp("targets"))


def test_e1_plans_only_its_four_mlp_runs():
    # Fig. 1A: 2 settings x 2 seeds, each trained, swept and labelled, and one job that draws the figure
    # (from its own copy of the config, job_config).
    # Asked of the plan: its figure jobs are the dry run's (test_e5_plans_... checks them against Snakemake).
    assert figure_jobs(Plan(default_config()), "E1") == {"train": 4, "interpolate": 4, "label": 4,
                                                         "experiment_figure": 1, "job_config": 1}


@pytest.mark.slow
def test_e1_by_name_is_the_same_as_by_file(workdir):
    assert dry_run(workdir, "E1") == {"train": 4, "interpolate": 4, "label": 4, "experiment_figure": 1, "job_config": 1,
                                      "E1": 1}


def test_e5_plans_its_parent_runs_and_their_barrier_extraction(workdir):
    # The retraining runs join once the checkpoints have measured the barriers.
    stats = dry_run(workdir, "results/figures/E5.png")
    assert stats == {"train": 2, "interpolate": 2, "label": 2, "barrier_init": 2, "experiment_figure": 1, "job_config": 1}
    assert figure_jobs(Plan(default_config()), "E5") == stats, "the plan answers what the DAG builds"


@pytest.mark.slow
def test_a_per_experiment_table_plans_only_its_rows_runs(workdir):
    # Tab. A4 at the default: vgg_bn and vgg_bn_const_lr (their runs and barrier groups); the narrowed
    # runs are measured ones, joining once the groups are known.
    stats = dry_run(workdir, "results/tables/table_A4.parquet")
    assert stats == {"train": 4, "interpolate": 4, "label": 4, "barrier_groups": 2, "experiment_table": 1, "job_config": 1}


@pytest.mark.parametrize("target,expected", [
    ("results/figures/E1.png", {"train": 20, "interpolate": 20, "label": 20, "experiment_figure": 1, "job_config": 1}),
    ("results/figures/E5.png", {"train": 10, "interpolate": 10, "label": 10, "barrier_init": 10, "experiment_figure": 1,
                                "job_config": 1}),
])
def test_the_same_holds_at_paper_scale(target, expected):
    # The plan's jobs of a figure are the dry run's (the E1 and E5 tests above): asked of the plan here.
    experiment = target.rsplit("/", 1)[1].removesuffix(".png")
    assert figure_jobs(Plan(paper_config()), experiment) == expected


@pytest.mark.slow
def test_table1_and_figure_a11_are_the_targets_that_need_every_run(workdir):
    plan = Plan(paper_config())
    stats = dry_run(workdir, "results/tables/table1.md", paper=True)
    static = [r for r in plan.runs if not plan.measured(r)]
    assert sum(stats.get(rule, 0) for rule in TRAINING_ROLES) == len(static)


# --- what reruns after a change ----------------------------------------------------------------

TWO_FIGURES = {
    "seeds": [0],
    "base": {"model": {"arch": "mlp", "hidden": [8]}, "data": {"dataset": "digits", "augment": "none", "subset": 0.2},
             "train": {"optimizer": "sgd", "lr": 0.05, "epochs": 1, "batch_size": 64}},
    "paths": {"alphas": "0:1:3", "starts": ["init", "other"], "groups": True},
    "experiments": {"A": {"title": "standard kind", "paper": "Fig. A", "figure": "standard"},
                    "B": {"title": "starts kind", "paper": "Fig. B", "figure": "starts"}},
    "settings": {"a": {"experiment": "A"}, "b": {"experiment": "B", "run": {"model": {"hidden": [6]}}}},
    "table1": [],
}


@pytest.fixture(scope="module")
def built_copy(tmp_path_factory):
    """A copy of the workflow (so its code can be edited) with two small figures built."""
    root = tmp_path_factory.mktemp("workflow_copy")
    shutil.copy(REPO / "Snakefile", root / "Snakefile")
    shutil.copytree(REPO / "workflow", root / "workflow", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copytree(REPO / "envs", root / "envs")
    work = root / "work"
    (work / "config").mkdir(parents=True)
    (work / "config" / "two.yaml").write_text(yaml.safe_dump(TWO_FIGURES))
    args = ["--configfile", "config/two.yaml"]
    proc = snakemake(work, "--cores", "2", "results/figures/A.png", "results/figures/B.png", *args,
                     snakefile=root / "Snakefile")
    assert proc.returncode == 0, tail(proc)
    return root, work, args


def planned(built_copy, *targets) -> Counter:
    root, work, args = built_copy
    proc = snakemake(work, "-n", "--cores", "2", *targets, *args, snakefile=root / "Snakefile")
    assert proc.returncode == 0, tail(proc)
    return Counter(job_stats(output_of(proc))) if "Nothing to be done" not in output_of(proc) else Counter()


@pytest.mark.slow
def test_a_change_to_the_drawing_code_redraws_every_figure_and_nothing_else(built_copy):
    """The drawing module (linpath/report/figures.py) is an input of the figure rules: editing it redraws
    the figures, and no table or run; the same content under a newer time redraws nothing."""
    root, _, _ = built_copy
    targets = ("results/figures/A.png", "results/figures/B.png")
    assert planned(built_copy, *targets) == Counter()
    code = root / "workflow" / "linpath" / "report" / "figures.py"
    text, stat = code.read_text(), code.stat()
    os.utime(code, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9 * 3600))  # touched, as a fresh clone is
    assert planned(built_copy, *targets) == Counter(), "Snakemake compares the recorded content"
    code.write_text(text + "\n# an edit\n")
    try:
        assert planned(built_copy, *targets) == Counter({"experiment_figure": 2})
    finally:
        code.write_text(text)
        os.utime(code, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert planned(built_copy, *targets) == Counter()


@pytest.mark.slow
def test_a_changed_sweep_redraws_the_figures_that_show_its_run(built_copy):
    _, work, _ = built_copy
    sweeps = sorted((work / "results" / "sweeps").glob("b-s0-*.parquet"))
    assert len(sweeps) == 1
    sweep = pd.read_parquet(sweeps[0])
    sweep.loc[0, "loss"] += 1e-3  # as if run b had been measured again (Snakemake compares content, not mtime)
    sweep.to_parquet(sweeps[0], index=False)
    stats = planned(built_copy, "results/figures/A.png", "results/figures/B.png")
    # Run b's paths are labelled again from the new sweep, and figure B alone is redrawn.
    assert stats == Counter({"label": 1, "experiment_figure": 1}), "figure A does not show run b"


E18 = {
    "experiments": {"E18": {"title": "a narrow MLP on the digits", "figure": "standard"}},
    "settings": {"mlp_narrow": {
        "experiment": "E18",
        "intervention": "MLP 2x8 on digits",
        "run": {"model": {"arch": "mlp", "hidden": [8, 8]}, "data": {"augment": "none"},
                "train": {"optimizer": "adam", "lr": 1.0e-3, "weight_decay": 0, "milestones": [], "epochs": 2,
                          "batch_size": 128}},
        "paths": {"groups": False},
    }},
}


@pytest.mark.slow
def test_an_experiment_added_in_config_alone_gets_its_runs_and_figure(tmp_path):
    # The recipe of README "Adding an experiment": one catalogue entry and one setting, no code.
    workdir = with_default_config(tmp_path)
    (workdir / "config" / "e18.yaml").write_text(yaml.safe_dump(E18, sort_keys=False))
    seeds = len(Plan(yaml.safe_load((workdir / "config" / "config.yaml").read_text())).seeds)
    stats = dry_run_with(workdir, "E18", "config/e18.yaml")
    assert stats == {"train": seeds, "interpolate": seeds, "label": seeds, "experiment_figure": 1, "job_config": 1, "E18": 1}
    proc = snakemake(workdir, "--cores", "2", "E18", "--configfile", "config/e18.yaml")
    assert proc.returncode == 0, tail(proc)
    figure = workdir / "results" / "figures" / "E18.png"
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    runs = sorted(p.name for p in (workdir / "results" / "runs").iterdir())
    assert len(runs) == seeds and all(name.startswith("mlp_narrow-s") for name in runs)


def dry_run_with(workdir, target, overlay) -> dict[str, int]:
    proc = snakemake(workdir, "-n", "--cores", "2", target, "--configfile", overlay)
    assert proc.returncode == 0, tail(proc)
    return job_stats(output_of(proc))
