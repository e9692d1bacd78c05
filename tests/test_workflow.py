"""The Snakemake workflow itself: the DAG of the default and the paper-scale config (dry runs),
`snakemake --lint`, a reduced DAG run end to end on the CPU, and configs that must be refused.

Every workflow runs as a subprocess (`python -m snakemake` of this environment) with
`--directory` in a temporary folder, never in the repository: `configfile:`, `results`,
`data_root`, `reference`, `logs/` and `benchmarks/` are relative to that folder.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import (CONFIGS, REPO, TRAINING_RULES, default_config, job_stats, output_of, paper_config,
                      snakemake, tail, with_default_config)
from linpath.study.plan import SWEEP_RULES, TRAINING_ROLES, Plan

MINI = CONFIGS / "mini.yaml"
MINI_REFERENCE = CONFIGS / "mini_reference.yaml"
DAG_RULES = (*TRAINING_RULES, "interpolate", "barrier_init", "barrier_groups", "core_tables", "table1",
             "table1_sensitivity", "experiment_table", "experiment_figure", "figure_a11")
RUN_ID = re.compile(r"^(?P<setting>[A-Za-z0-9_]+)-s(?P<seed>\d+)-[0-9a-f]{8}$")
RUN_IN_OUTPUT = re.compile(r"results/runs/([A-Za-z0-9_]+-s\d+-[0-9a-f]{8})/outcome\.yaml")


# --- helpers ------------------------------------------------------------------------------


def mini_config() -> dict:
    return yaml.safe_load(MINI.read_text())


def with_mini_config(workdir: Path, config: dict | None = None) -> Path:
    """A folder with config/mini.yaml (or `config`) and its reference file, and no config/config.yaml:
    the Snakefile's own configfile is absent, so the mini config is the whole config."""
    (workdir / "config").mkdir(parents=True)
    shutil.copy(MINI_REFERENCE, workdir / "config" / MINI_REFERENCE.name)
    path = workdir / "config" / "mini.yaml"
    if config is None:
        shutil.copy(MINI, path)
    else:
        path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def expected_dry_run_counts(plan: Plan) -> Counter:
    """Jobs of a fresh dry run: every run but those decided by measurements (their checkpoints have not run)."""
    static = [r for r in plan.runs if not plan.measured(r)]
    counts = Counter({rule: 0 for rule in TRAINING_RULES}) + Counter(plan.role(r) for r in static)
    counts.update({rule: 0 for rule in TRAINING_RULES})  # + drops zero counts: keep every training rule
    counts["interpolate"] = sum(plan.swept(r) for r in static)  # spawned children are measured in pairs (lmc.smk)
    counts["barrier_groups"] = len({s for run in plan.runs.values() for s in run.groups_from})
    counts["experiment_figure"] = len(plan.figure_experiments())
    counts["experiment_table"] = sum(len(e.get("tables", [])) for e in plan.experiments.values())
    return counts


# --- dry runs of the default and the paper-scale DAG ------------------------------------------


@pytest.fixture(scope="module")
def default_dry_run(tmp_path_factory):
    workdir = with_default_config(tmp_path_factory.mktemp("dry_default"))
    return workdir, snakemake(workdir, "-n", "--cores", "2")


@pytest.fixture(scope="module")
def paper_dry_run(tmp_path_factory):
    workdir = with_default_config(tmp_path_factory.mktemp("dry_paper"))
    return workdir, snakemake(workdir, "-n", "--cores", "2", "--configfile", str(workdir / "config" / "paper.yaml"))


def check_dry_run(proc: subprocess.CompletedProcess, plan: Plan) -> dict[str, int]:
    assert proc.returncode == 0, tail(proc)
    text = output_of(proc)
    stats = job_stats(text)
    expected = expected_dry_run_counts(plan)
    missing = [r for r in DAG_RULES if stats.get(r, 0) < 1 and expected.get(r, 1) > 0]
    assert not missing, f"rules without jobs: {missing}; job stats {stats}"
    for rule in (*TRAINING_RULES, "interpolate", "barrier_groups", "experiment_figure", "experiment_table"):
        assert stats.get(rule, 0) == expected[rule], (rule, stats.get(rule, 0), expected[rule])
    for rule in ("core_tables", "table1", "table1_sensitivity", "figure_a11", "all"):
        assert stats[rule] == 1, (rule, stats)
    # The runs in the DAG are the planner's runs of that config, ids and all.
    assert set(RUN_IN_OUTPUT.findall(text)) == {r for r in plan.runs if not plan.measured(r)}
    return stats


def test_dry_run_resolves_the_default_dag(default_dry_run):
    workdir, proc = default_dry_run
    check_dry_run(proc, Plan(default_config()))
    assert not (workdir / "results").exists()


@pytest.mark.slow
def test_dry_run_resolves_the_paper_scale_dag_with_more_runs(default_dry_run, paper_dry_run):
    default = job_stats(output_of(default_dry_run[1]))
    plan = Plan(paper_config())
    stats = check_dry_run(paper_dry_run[1], plan)
    assert stats["train"] > default["train"]
    assert stats["train"] == sum(plan.role(r) == "train" and not plan.measured(r) for r in plan.runs)
    assert len(plan.seeds) == 10
    assert "results/runs/base-s9-" in output_of(paper_dry_run[1])
    # The README states the paper-scale counts of a dry run (before any barrier checkpoint): they must be the plan's.
    stated = re.search(r"(\d+) training runs and as many path sweeps \((\d+) of them",
                       " ".join((REPO / "README.md").read_text().split()))
    assert stated, "README states no paper-scale run count"
    assert int(stated[1]) == sum(plan.swept(r) for r in plan.runs)  # spawned children: no sweep of their own
    assert sum(stats.get(r, 0) for r in TRAINING_RULES) == stats["interpolate"] == int(stated[2])


def test_dry_run_schedules_the_barrier_checkpoint_of_every_seed(default_dry_run):
    plan = Plan(default_config())
    parents = {run.barrier_from for run in plan.runs.values() if run.barrier_from}
    assert len(parents) == len(plan.seeds) == 2
    assert job_stats(output_of(default_dry_run[1]))["barrier_init"] == len(parents)


def test_job_stats_parser_reads_the_table():
    text = ("Building DAG of jobs...\nJob stats:\njob          count\n---------  -------\ntrain            3\n"
            "all              1\ntotal            4\n\nReasons:\n    train\n")
    assert job_stats(text) == {"train": 3, "all": 1}


# --- lint ------------------------------------------------------------------------------------

def lint_findings(text: str) -> set[tuple[str, str]]:
    findings, scope = set(), None
    for line in text.splitlines():
        m = re.match(r"^Lints for (rule \w+|snakefile \S+?)(?: \(line \d+, .*\))?:$", line)
        if m:
            scope = m[1].replace(f"{REPO}/", "")
            continue
        m = re.match(r"^    \* (.+):$", line)
        if m and scope:
            findings.add((scope, re.sub(r"in line \d+", "in line N", m[1])))
    return findings


@pytest.fixture(scope="module")
def lint(tmp_path_factory):
    workdir = with_default_config(tmp_path_factory.mktemp("lint"))
    proc = snakemake(workdir, "--lint")
    return proc, lint_findings(output_of(proc))


def test_lint_is_clean(lint):
    proc, findings = lint
    assert proc.returncode == 0 and not findings, sorted(findings)
    assert "Congratulations, your workflow is in a good condition!" in output_of(proc)


def test_rules_that_run_linpath_declare_the_conda_environment(lint):
    _, findings = lint
    assert not [f for f in findings if f[1].startswith("Specify a conda environment")]


def test_lint_parser_reads_snakemake_lint_text():
    text = (f"Lints for snakefile {REPO}/workflow/rules/train.smk:\n    * Path composition with '+' in line 45:\n"
            "      This becomes quickly unreadable.\n\n"
            f"Lints for rule core_tables (line 4, {REPO}/workflow/rules/tables.smk):\n"
            "    * No log directive defined:\n      Without a log directive, all output ...\n")
    assert lint_findings(text) == {("snakefile workflow/rules/train.smk", "Path composition with '+' in line N"),
                                   ("rule core_tables", "No log directive defined")}


# --- bad configs ---------------------------------------------------------------------------


def _unknown_top_level_key(c):
    c["bogus_key"] = 1


def _setting_without_experiment(c):
    del c["settings"]["mlp"]["experiment"]


def _seed_not_an_integer(c):
    c["seeds"] = ["a"]


def _alphas_not_a_grid(c):
    c["paths"]["alphas"] = "zero"


def _reference_to_an_unknown_setting(c):
    c["settings"]["pretrained"]["run"]["init"]["source"] = "@nonexistent/final.pt"


def _run_setting_of_the_wrong_type(c):
    c["settings"]["mlp"]["run"]["train"]["lr"] = "abc"


BAD_CONFIGS = [
    (_unknown_top_level_key, ["bogus_key", "Additional properties are not allowed"]),
    (_setting_without_experiment, ["'experiment' is a required property", "['settings']['mlp']"]),
    (_seed_not_an_integer, ["'a' is not of type 'integer'", "['seeds']"]),
    (_alphas_not_a_grid, ["'zero' does not match", "['paths']['alphas']"]),
    (_reference_to_an_unknown_setting, ["settings.pretrained", "unknown setting 'nonexistent'"]),
    (_run_setting_of_the_wrong_type, ["settings.mlp", "train.lr must be a number, got 'abc'"]),
]


# One schema error and one planner error in the quick suite; the same path through Snakemake for the others
# is slow (a Snakemake process each; test_fuzz_settings checks every kind in process).
QUICK_BAD_CONFIGS = {"unknown_top_level_key", "reference_to_an_unknown_setting"}


@pytest.mark.parametrize("mutate, expected", [
    pytest.param(m, e, id=m.__name__.strip("_"), marks=() if m.__name__.strip("_") in QUICK_BAD_CONFIGS else pytest.mark.slow)
    for m, e in BAD_CONFIGS])
def test_a_bad_config_is_refused_naming_the_key_and_nothing_is_written(tmp_path, mutate, expected):
    config = mini_config()
    mutate(config)
    path = with_mini_config(tmp_path, config)
    # A real run (not a dry run): a config that got through would start writing results.
    proc = snakemake(tmp_path, "--cores", "1", "--configfile", str(path), timeout=240)
    assert proc.returncode != 0, tail(proc)
    text = output_of(proc)
    for piece in expected:
        assert piece in text, f"{piece!r} not in the output:\n{tail(proc)}"
    for written in ("results", "logs", "benchmarks", "data"):
        assert not (tmp_path / written).exists(), written


@pytest.mark.slow
def test_the_unchanged_mini_config_is_accepted(tmp_path):
    """The bad configs above differ from this one by one key each."""
    path = with_mini_config(tmp_path, mini_config())
    proc = snakemake(tmp_path, "-n", "--cores", "1", "--configfile", str(path))
    assert proc.returncode == 0, tail(proc)
    assert job_stats(output_of(proc))["train"] >= 1


def _table1_names_an_unknown_setting(c):
    c["table1"][0]["settings"] = ["pretrained", "pretrianed"]


def _barrier_point_that_is_never_written(c):
    c["settings"]["barrier_at"]["run"]["init"]["source"] = "@barrier:base_nowd/middle"


@pytest.mark.parametrize("mutate, expected", [
    pytest.param(_table1_names_an_unknown_setting, "pretrianed", marks=pytest.mark.slow),
    pytest.param(_barrier_point_that_is_never_written, "middle", marks=pytest.mark.slow),
], ids=["table1_unknown_setting", "barrier_point_typo"])
def test_a_bad_name_is_refused_before_anything_runs(tmp_path, mutate, expected):
    config = mini_config()
    mutate(config)
    path = with_mini_config(tmp_path, config)
    proc = snakemake(tmp_path, "-n", "--cores", "1", "--configfile", str(path))
    assert proc.returncode != 0, tail(proc)
    assert expected in output_of(proc)


@pytest.mark.slow
def test_param_groups_as_the_paths_default_gives_the_e14_figure(tmp_path):
    config = mini_config()
    config["paths"]["param_groups"] = True
    del config["settings"]["base"]["paths"]["param_groups"]
    path = with_mini_config(tmp_path, config)
    proc = snakemake(tmp_path, "-n", "--cores", "1", "--configfile", str(path))
    assert proc.returncode == 0, tail(proc)
    assert Plan(config).sweep_spec("mlp").param_groups
    assert "results/figures/E14.png" in output_of(proc)


# --- the reduced DAG, end to end -------------------------------------------------------------


@pytest.fixture(scope="session")
def mini_run(tmp_path_factory):
    """tests/configs/mini.yaml run once to the end with `--cores 2`: (folder, plan, config)."""
    workdir = tmp_path_factory.mktemp("mini_workflow")
    path = with_mini_config(workdir)
    proc = snakemake(workdir, "--cores", "2", "--configfile", str(path), timeout=1500)
    if proc.returncode != 0:
        logs = sorted((workdir / "logs").rglob("*.log")) if (workdir / "logs").exists() else []
        failed = "\n".join(f"--- {p}\n{p.read_text()[-1500:]}" for p in logs[-3:])
        pytest.fail(f"the mini workflow failed:\n{tail(proc, 6000)}\n{failed}")
    config = yaml.safe_load(path.read_text())
    return workdir, Plan(config), config


def results_of(mini_run) -> Path:
    workdir, plan, _ = mini_run
    return workdir / plan.layout.results


def tables(mini_run, name: str, skipped: bool = False) -> pd.DataFrame:
    """A table of the mini run; runs.parquet's trained rows only unless `skipped` (the others hold no metrics)."""
    table = pd.read_parquet(results_of(mini_run) / "tables" / f"{name}.parquet")
    return table if name != "runs" or skipped else table[table["status"] == "trained"]


def barrier_info(mini_run) -> dict[str, dict]:
    """Parent run id -> its barrier.yaml, for every parent of a barrier-init setting."""
    workdir, plan, _ = mini_run
    parents = {run.barrier_from for run in plan.runs.values() if run.barrier_from}
    return {p: yaml.safe_load((workdir / plan.layout.barrier_yaml(p)).read_text()) for p in parents}


def expected_runs(mini_run) -> set[str]:
    """Every planned run, less those the measurements skip (no barrier on the parent's path, no groups)."""
    workdir, plan, _ = mini_run
    groups = {s: groups_file(mini_run, s) for s in {s for r in plan.runs.values() for s in r.groups_from}}
    return {r for r in plan.runs if not plan.measured(r) or not plan.skip_reason(r, groups, barrier_info(mini_run))}


def groups_file(mini_run, setting: str) -> dict:
    workdir, plan, _ = mini_run
    return yaml.safe_load((workdir / plan.layout.groups_file(setting)).read_text())


def own_paths(config: dict, setting: str) -> dict:
    return {**config.get("paths", {}), **config["settings"][setting].get("paths", {})}


RUNS_COLUMNS = {"run_id", "status", "status_reason", "failure", "experiment", "setting", "intervention", "seed", "model", "dataset", "settings", "epochs",
                "train_loss", "train_acc", "test_loss", "test_acc", "relative_distance_mean",
                "relative_distance_global"}
PATHS_COLUMNS = {"run_id", "experiment", "setting", "seed", "path", "start", "group", "param_group", "bn_mode",
                 "split", "alpha", "loss", "accuracy", "start_state", "end_state", "eval_data"}
SHAPES_COLUMNS = {"run_id", "experiment", "setting", "seed", "path", "start", "group", "param_group", "bn_mode",
                  "split", "delta", "monotonic", "barrier_height", "barrier_alpha", "above_start", "alpha_half",
                  "label", "label_rule", "threshold_barrier_tol", "threshold_barrier_rel", "threshold_plateau_alpha",
                  "barrier_threshold", "rise_alpha", "rise_start_alpha", "loss_start", "loss_end",
                  "accuracy_start", "accuracy_end"}
TABLE1_COLUMNS = {"category", "intervention", "figure", "settings", "shape", "shape_fractions", "layer_barrier",
                  "acc_change_pp_mean", "acc_change_pp_std", "acc_ci_low", "acc_ci_high", "acc_word", "acc_words",
                  "n_seeds", "n", "paper_shape", "paper_acc", "agrees_shape", "agrees_layer", "agrees_acc", "agrees"}
PATH_KEY = ["run_id", "path", "start", "group", "param_group", "bn_mode", "split"]


@pytest.mark.slow
def test_mini_workflow_writes_every_final_output(mini_run):
    results = results_of(mini_run)
    names = ["runs.parquet", "paths.parquet", "shapes.parquet", "table1.parquet", "table1.md", "table_A2.parquet",
             "table1_sensitivity.parquet", "table1_sensitivity.md", "table1_sensitivity_groups.parquet"]
    for name in names:
        f = results / "tables" / name
        assert f.is_file() and f.stat().st_size > 0, f
    figures = results / "figures"
    # Experiments of the mini config's (non-aux) settings, and E14 for base's parameter-group paths.
    assert {p.stem for p in figures.glob("E*.png")} == {"E2", "E3", "E4", "E5", "E9", "E11", "E13", "E14"}
    for png in [*figures.glob("E*.png"), figures / "figure_A11.png"]:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
        assert png.stat().st_size > 5000, png
    assert (figures / "figure_A11.pdf").read_bytes()[:5] == b"%PDF-"


@pytest.mark.slow
def test_runs_table_has_one_row_per_included_run(mini_run):
    _, plan, config = mini_run
    runs = tables(mini_run, "runs", skipped=True)
    assert RUNS_COLUMNS <= set(runs.columns), RUNS_COLUMNS - set(runs.columns)
    assert runs["run_id"].is_unique
    # Every planned run has a row; those the measurements skipped say so instead of holding metrics.
    assert set(runs["run_id"]) == set(plan.runs)
    trained = runs[runs["status"] == "trained"]
    assert set(trained["run_id"]) == expected_runs(mini_run)
    skipped = runs[runs["status"] == "skipped"]
    assert skipped["status_reason"].str.len().gt(0).all() and skipped["test_acc"].isna().all()
    runs = trained
    for row in runs.itertuples():
        m = RUN_ID.match(row.run_id)
        assert m and m["setting"] == row.setting and int(m["seed"]) == row.seed, row.run_id
        assert row.experiment == config["settings"][row.setting]["experiment"]
        settings = yaml.safe_load(row.settings)
        assert settings["name"] == row.run_id
        assert row.model == settings["model"]["arch"] and row.dataset == settings["data"]["dataset"]
        assert 0 <= row.test_acc <= 1 and 0 <= row.train_acc <= 1 and np.isfinite(row.test_loss)
        assert row.relative_distance_global > 0
    assert set(runs["seed"]) == set(config["seeds"])
    by_setting = runs.set_index("run_id")
    base_epochs = config["settings"]["base"]["run"]["train"]["epochs"]
    assert (by_setting.loc[plan.runs_of("base"), "epochs"] == base_epochs).all()
    assert (by_setting.loc[plan.runs_of("pretrained"), "epochs"] == config["base"]["train"]["epochs"]).all()
    assert (by_setting.loc[plan.runs_of("pretrain_source"), "dataset"] == "digits_rot4").all()
    assert (by_setting.loc[plan.runs_of("mlp"), "model"] == "mlp").all()


@pytest.mark.slow
def test_paths_and_shapes_cover_exactly_the_runs(mini_run):
    runs, paths, shapes = tables(mini_run, "runs"), tables(mini_run, "paths"), tables(mini_run, "shapes")
    assert PATHS_COLUMNS <= set(paths.columns), PATHS_COLUMNS - set(paths.columns)
    assert SHAPES_COLUMNS <= set(shapes.columns), SHAPES_COLUMNS - set(shapes.columns)
    assert set(paths["run_id"]) == set(runs["run_id"]) == set(shapes["run_id"])
    # The labels beside each run id are the run's own.
    meta = runs.set_index("run_id")[["experiment", "setting", "seed"]]
    for frame in (paths, shapes):
        joined = frame[["run_id", "experiment", "setting", "seed"]].drop_duplicates().set_index("run_id")
        assert len(joined) == len(meta)
        pd.testing.assert_frame_equal(joined.sort_index(), meta.sort_index(), check_dtype=False)
    # One shape row per measured path and split; Δ ≥ 0.
    assert not shapes.duplicated(PATH_KEY).any()
    assert set(map(tuple, shapes[PATH_KEY].to_numpy())) == set(map(tuple, paths[PATH_KEY].drop_duplicates().to_numpy()))
    assert (shapes["delta"] >= 0).all() and shapes["label"].isin(["NB", "B", "P"]).all()


@pytest.mark.slow
def test_paths_follow_each_settings_paths_section(mini_run):
    _, plan, config = mini_run
    paths = tables(mini_run, "paths")
    grid = np.linspace(0, 1, 5)  # alphas "0:1:5"
    for key, curve in paths.groupby(PATH_KEY):
        assert np.allclose(np.sort(curve["alpha"].to_numpy()), grid), key
    resnet_groups = {"stem", "block1", "block2", "block3", "block4", "head"}
    for run_id, frame in paths.groupby("run_id"):
        setting = plan.runs[run_id].setting
        p = own_paths(config, setting)
        assert set(frame["split"]) == {"train", "test"}, run_id
        starts = {"other": "other_init", "epoch:1": "epoch_1"}
        assert set(frame["start"]) == {starts.get(s, s) for s in p["starts"]}, run_id
        kinds = {"full"} | ({"group"} if p["groups"] else set()) | ({"param_group"} if p["param_groups"] else set())
        assert set(frame["path"]) == kinds, run_id
        groups = set(frame.loc[frame["path"] == "group", "group"])
        if p["groups"]:
            hidden = config["settings"][setting]["run"].get("model", {}).get("hidden")
            assert groups == ({f"layer{i + 1}" for i in range(len(hidden) + 1)} if hidden else resnet_groups), run_id
        if p["param_groups"]:
            pg = frame[frame["path"] == "param_group"]
            assert set(pg["param_group"]) == {"weights", "bn_affine", "bn_stats"}
            # Groups with more than one kind of tensor: the head (a linear layer) has weights only.
            assert set(pg["group"]) == resnet_groups - {"head"}
        # Group-wise and parameter-group paths start from the first start only.
        assert set(frame.loc[frame["path"] != "full", "start"]) <= {starts.get(p["starts"][0], p["starts"][0])}
        assert (frame.loc[frame["path"] == "full", "group"] == "all").all()
        # The end state of every path is the run's final state.
        assert set(frame["end_state"]) == {str(plan.layout.run_file(run_id, "final"))}, run_id


@pytest.mark.slow
def test_barrier_runs_exist_exactly_where_the_parent_path_has_a_barrier(mini_run):
    workdir, plan, config = mini_run
    runs = set(tables(mini_run, "runs")["run_id"])
    info = barrier_info(mini_run)
    # base_nowd (parent of barrier_at) and base (parent of barrier_after_base), both seeds.
    assert {plan.runs[p].setting for p in info} == {"base_nowd", "base"} and len(info) == 4
    for parent, found in info.items():
        assert isinstance(found["has_barrier"], bool) and found["reason"]
        points = {p.name for p in (workdir / plan.layout.barrier_dir(parent)).glob("*.pt")}
        children = plan.barrier_children(parent)
        assert len(children) == 1
        for child in children:
            source = config["settings"][plan.runs[child].setting]["run"]["init"]["source"]
            ref = re.fullmatch(r"@barrier:(\w+)/(\w+)", source)
            assert ref and ref[1] == plan.runs[parent].setting
            if found["has_barrier"]:
                assert points == {"before.pt", "at.pt", "after.pt"}
                assert 0 < found["alpha_star"] < 1
                assert child in runs
                run_yaml = yaml.safe_load((workdir / plan.layout.run_file(child, "settings")).read_text())
                assert run_yaml["init"]["source"] == str(plan.layout.barrier_state(parent, ref[2]))
                assert (workdir / plan.layout.sweep(child)).is_file()
            else:
                assert points == set()
                assert child not in runs
                assert not (workdir / plan.layout.run_dir(child)).exists()
                assert not (workdir / plan.layout.sweep(child)).exists()


@pytest.mark.slow
def test_references_and_measured_groups_reach_the_run_settings(mini_run):
    workdir, plan, config = mini_run

    def run_yaml(run_id):
        return yaml.safe_load((workdir / plan.layout.run_file(run_id, "settings")).read_text())

    base_groups, mlp_groups = groups_file(mini_run, "base"), groups_file(mini_run, "mlp")
    # The candidates are the layer groups (shapes.layer_groups): a ResNet's four blocks, not its stem or head;
    # the two sides split the whole model, so the stem and head are on the no-barrier side.
    blocks = {"block1", "block2", "block3", "block4"}
    assert set(base_groups["candidates"]) == blocks and set(base_groups["not_measured"]) == {"stem", "head"}
    assert set(base_groups["with_barrier"]) | set(base_groups["without_barrier"]) == blocks | {"stem", "head"}
    assert not set(base_groups["with_barrier"]) & set(base_groups["without_barrier"])
    assert mlp_groups["widenable"] == ["layer1", "layer2"]
    for seed in config["seeds"]:
        pretrained = run_yaml(plan.by_setting[("pretrained", seed)])
        source = plan.by_setting[("pretrain_source", seed)]
        assert pretrained["init"]["source"] == f"results/runs/{source}/final.pt"
        assert pretrained["init"]["exclude"] == ["head"]
        # A measured list that came out empty skips its runs (no copies of the baseline); else it is applied.
        small_lr = plan.by_setting[("small_lr_barrier_blocks", seed)]
        if base_groups["with_barrier"]:
            overrides = run_yaml(small_lr)["train"]["group_overrides"]
            assert set(overrides) == set(base_groups["with_barrier"])
            assert all(o["lr"] == 0.005 for o in overrides.values())
        else:
            assert not (workdir / plan.layout.run_dir(small_lr)).exists()
        widen = plan.by_setting[("mlp_widen_barrier", seed)]
        widened = {g: 2.0 for g in mlp_groups["with_barrier"] if g in mlp_groups["widenable"]}
        if widened:
            assert run_yaml(widen)["model"]["group_width"] == widened
        else:
            assert not (workdir / plan.layout.run_dir(widen)).exists()
        rl = run_yaml(plan.by_setting[("random_label_source", seed)])
        assert rl["data"]["random_labels"] == 1.0


@pytest.mark.slow
def test_table1_has_one_row_per_entry_with_the_papers_labels(mini_run):
    _, plan, config = mini_run
    t1, runs = tables(mini_run, "table1"), tables(mini_run, "runs")
    assert TABLE1_COLUMNS <= set(t1.columns), TABLE1_COLUMNS - set(t1.columns)
    assert len(t1) == len(config["table1"])
    for row, entry in zip(t1.itertuples(), config["table1"]):
        assert row.intervention == entry["intervention"]
        figures = {config["experiments"][config["settings"][n]["experiment"]]["paper"] for n in entry["settings"]}
        assert row.category == entry["category"] and set(row.figure.split(", ")) == figures
        assert row.paper_shape == entry["paper_shape"] and row.paper_acc == entry["paper_acc"]
        measured = [s for s in entry["settings"] if (runs["setting"] == s).any()]
        assert row.settings == ", ".join(measured)
        assert row.n_seeds == runs[runs["setting"].isin(measured)]["seed"].nunique()
        stated = [v for v in (row.agrees_shape, row.agrees_layer, row.agrees_acc) if not pd.isna(v)]
        assert pd.isna(row.agrees) if not stated else row.agrees == all(stated)
    # The accuracy change of the pretrained row, recomputed from runs.parquet (paired by seed).
    acc = runs.set_index(["setting", "seed"])["test_acc"]
    diffs = [100 * (acc["pretrained", s] - acc["base", s]) for s in config["seeds"]]
    pretrained = t1.set_index("intervention").loc["pre-train full model"]
    assert pretrained["acc_change_pp_mean"] == pytest.approx(np.mean(diffs))
    assert pretrained["acc_change_pp_std"] == pytest.approx(np.std(diffs, ddof=1))
    assert pretrained["n_seeds"] == 2
    barrier_row = t1.set_index("intervention").loc["barrier-height init"]
    with_barrier = [plan.runs[p].seed for p, i in barrier_info(mini_run).items() if i["has_barrier"]]
    assert barrier_row["n_seeds"] == len(set(with_barrier))
    assert (barrier_row["shape"] == "n/a") == (not with_barrier)
    markdown = (results_of(mini_run) / "tables" / "table1.md").read_text().splitlines()
    body = [line for line in markdown if line.startswith("| ") and not line.startswith("| category")]
    assert [line.split(" | ")[1] for line in body] == [e["intervention"] for e in config["table1"]]


@pytest.mark.slow
def test_table1_sensitivity_holds_table1_at_the_configured_thresholds(mini_run):
    from linpath.report.sensitivity import robustness_line

    t1, sens = tables(mini_run, "table1"), tables(mini_run, "table1_sensitivity")
    # 5 barrier_rel x 3 barrier_tol, then plateau_alpha 3, layer_barrier_ratio 3, label_min_share 2 one at a time
    assert sens["row"].nunique() == len(t1) and len(sens) == len(t1) * 23
    conf = sens[sens["configured"]].set_index("row")
    assert (conf["barrier_rel"].unique().tolist(), conf["barrier_tol"].unique().tolist()) == ([0.05], [0.01])
    for col in ("shape", "layer_barrier", "agrees"):
        assert list(conf[col].astype(str)) == list(t1[col].astype(str)), col
    assert robustness_line(sens) in (results_of(mini_run) / "tables" / "table1.md").read_text()
    assert "Lucas et al." in (results_of(mini_run) / "tables" / "table1_sensitivity.md").read_text()
    # The barrier groups of every setting others read: the configured rule picks what the workflow used.
    groups = tables(mini_run, "table1_sensitivity_groups")
    workdir, plan, _ = mini_run
    assert set(groups["setting"]) == {s for r in plan.runs.values() for s in r.groups_from}
    conf = groups[groups["configured"].fillna(False)].set_index("setting")
    for setting, row in conf.iterrows():
        assert row["with_barrier"] == ", ".join(groups_file(mini_run, setting)["with_barrier"]), setting
        assert row["same_as_used"] and not row["runs_differ"], setting


@pytest.mark.slow
def test_experiment_table_sets_our_accuracy_beside_the_papers(mini_run):
    reference = yaml.safe_load(MINI_REFERENCE.read_text())["tables"]["table_A2"]
    table, runs = tables(mini_run, "table_A2"), tables(mini_run, "runs")
    assert list(table["row"]) == [r["label"] for r in reference["rows"]]
    for row, ref in zip(table.itertuples(), reference["rows"]):
        assert row.setting == ref["setting"]
        assert row.paper_train == ref["paper_train"] and row.paper_test == ref["paper_test"]
        ours = runs[runs["setting"] == ref["setting"]]
        assert row.n_seeds == len(ours)
        if len(ours):
            assert row.test_acc_mean == pytest.approx(100 * ours["test_acc"].mean())
        else:
            assert np.isnan(row.test_acc_mean)
    assert table.set_index("setting").loc["base_nowd", "n_seeds"] == 2


@pytest.mark.slow
def test_the_config_record_is_the_validated_config(mini_run):
    """results/derived/config.json and each table's or figure's own copy (job_config), what `linpath report`
    builds them from: the mini config as the workflow validated it (schema defaults filled in), nothing else."""
    import json

    from linpath.study.config import load_config

    workdir, plan, config = mini_run
    record_file = workdir / plan.layout.config_record()
    assert record_file == workdir / "results" / "derived" / "config.json"
    record = json.loads(record_file.read_text())
    assert record == load_config([str(MINI)])
    for key, value in config.items():  # every key of mini.yaml, unchanged by the defaults
        if key == "table1":  # rows gain the default of `shape_from`
            assert [{k: r[k] for k in row} for r, row in zip(record[key], value)] == value
        else:
            assert record[key] == value, key
    assert record["seeds"] == [0, 1] and record["base"] == config["base"]
    assert Plan(record).runs.keys() == plan.runs.keys(), "the tables' plan is the workflow's"
    copies = sorted((workdir / "results" / "derived" / "job_config").glob("*.json"))
    assert {p.stem for p in copies} >= {"core_tables", "table1", "table1_sensitivity", "figure_a11", "experiment_figure-E2"}
    for path in copies:
        assert json.loads(path.read_text()) == record, path.name


@pytest.mark.slow
def test_every_job_wrote_its_log_and_benchmark(mini_run):
    workdir, plan, _ = mini_run
    runs = tables(mini_run, "runs")
    roles = Counter()
    for run_id in runs["run_id"]:
        role = plan.role(run_id)
        roles[role] += 1
        for f in (workdir / "logs" / role / f"{run_id}.log", workdir / "logs" / "interpolate" / f"{run_id}.log"):
            assert f.is_file() and f.stat().st_size > 0, f
        for rule in (role, "interpolate"):
            assert (workdir / "benchmarks" / rule / f"{run_id}.tsv").is_file()
        assert run_id in (workdir / "logs" / role / f"{run_id}.log").read_text()
        assert run_id in (workdir / "logs" / "interpolate" / f"{run_id}.log").read_text()
    assert set(roles) == set(TRAINING_RULES)
    for parent in barrier_info(mini_run):
        assert (workdir / "logs" / "barrier_init" / f"{parent}.log").stat().st_size > 0
    # Nothing trained under a rule other than its role's.
    for rule in TRAINING_RULES:
        logged = {p.stem for p in (workdir / "logs" / rule).glob("*.log")} if (workdir / "logs" / rule).exists() \
            else set()
        assert logged == {r for r in runs["run_id"] if plan.role(r) == rule}, rule
    assert not (workdir / ".snakemake" / "slurm_logs").exists()
    # A local run forwards every linpath command to the warm-start server (config warm_start, on by default).
    for run_id in runs["run_id"]:
        for log in (workdir / "logs" / plan.role(run_id) / f"{run_id}.log", workdir / "logs" / "interpolate" / f"{run_id}.log"):
            assert "warm-started job" in log.read_text().splitlines()[-1], log


@pytest.mark.slow
def test_without_warm_start_the_tables_are_the_same(mini_run, tmp_path):
    """Warm start changes how a job's process starts, never what it computes."""
    workdir = tmp_path / "cold"
    path = with_mini_config(workdir)
    proc = snakemake(workdir, "--cores", "2", "--configfile", str(path), "--config", "warm_start=False", timeout=1500)
    assert proc.returncode == 0, tail(proc, 4000)
    train_log = next((workdir / "logs" / "train").glob("*.log")).read_text()
    assert "warm-started job" not in train_log
    for name in ("runs", "paths", "shapes", "table1"):
        cold = pd.read_parquet(workdir / "results" / "tables" / f"{name}.parquet")
        pd.testing.assert_frame_equal(cold, tables(mini_run, name, skipped=True), check_exact=True)


@pytest.mark.slow
def test_a_second_dry_run_has_nothing_to_do(mini_run):
    workdir, _, _ = mini_run
    proc = snakemake(workdir, "-n", "--cores", "2", "--configfile", str(workdir / "config" / "mini.yaml"))
    assert proc.returncode == 0, tail(proc)
    assert "Nothing to be done" in output_of(proc), tail(proc)


# --- reading again without measuring again ---------------------------------------------------------------

MEASURING_RULES = (*TRAINING_ROLES, *SWEEP_RULES)


def finished_copy(mini_run, tmp_path: Path, change) -> tuple[Path, Path]:
    """A copy of the finished mini study (times and Snakemake's records kept) and a config with `change`. It
    sits as deep as the original: the figure rules name their drawing code by its path relative to the
    study, as a moved checkout with its results keeps it."""
    workdir, _, _ = mini_run
    copy = tmp_path.with_name(f"{tmp_path.name}_study")
    assert len(copy.parts) == len(workdir.parts)
    shutil.copytree(workdir, copy, symlinks=True)
    config = yaml.safe_load((copy / "config" / "mini.yaml").read_text())
    change(config)
    path = copy / "config" / "changed.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return copy, path


def dry_run_jobs(workdir: Path, config: Path, *targets: str) -> dict[str, int]:
    proc = snakemake(workdir, "-n", "--cores", "2", "--configfile", str(config), *targets)
    assert proc.returncode == 0, tail(proc)
    return {} if "Nothing to be done" in output_of(proc) else job_stats(output_of(proc))


@pytest.mark.slow
def test_a_changed_threshold_relabels_without_measuring_or_training_again(mini_run, tmp_path):
    _, plan, _ = mini_run
    study, config = finished_copy(mini_run, tmp_path, lambda c: c["shapes"].update(barrier_rel=0.02, plateau_alpha=0.6))
    sweeps = {p: p.stat().st_mtime_ns for p in (study / "results" / "sweeps").glob("*.parquet")}
    planned = dry_run_jobs(study, config)
    assert not set(planned) & set(MEASURING_RULES), planned
    swept = [r for r in expected_runs(mini_run) if plan.swept(r)]
    # The runs that checkpoints decide join the plan once those checkpoints have run again.
    assert planned.get("label") == len([r for r in swept if not plan.measured(r)]), planned
    proc = snakemake(study, "--cores", "2", "--configfile", str(config), timeout=900)
    assert proc.returncode == 0, tail(proc)
    ran = Counter(re.findall(r"^(?:local)?rule (\w+):$", output_of(proc), flags=re.M))
    assert ran["label"] == len(swept), "every stored sweep is relabelled, nothing else of a run"
    # Which runs exist may depend on a label (E5's barrier, the barrier groups): those are the only runs
    # that may train, and only where the relabelled decision differs from the measured one.
    trained_again = {rule: n for rule, n in ran.items() if rule in MEASURING_RULES}
    new_plan = Plan(yaml.safe_load(config.read_text()))
    decided = {r for r in new_plan.runs if new_plan.measured(r)}
    assert sum(trained_again.values()) <= 2 * len(decided), trained_again
    assert {p: p.stat().st_mtime_ns for p in sweeps} == sweeps, "no stored sweep was written again"
    # The relabelled shapes are what labelling the same sweeps with the new thresholds gives.
    from linpath.paths.shapes import shape_table

    thresholds = new_plan.thresholds()
    for run_id in swept:
        stored = pd.read_parquet(study / "results" / "shapes" / f"{run_id}.parquet")
        fresh = shape_table(pd.read_parquet(study / "results" / "sweeps" / f"{run_id}.parquet"), thresholds)
        pd.testing.assert_frame_equal(stored, fresh, check_exact=True)
        assert set(stored["threshold_barrier_rel"]) == {0.02} and set(stored["threshold_plateau_alpha"]) == {0.6}


@pytest.mark.slow
def test_a_changed_accuracy_confidence_redraws_only_table1_and_what_reads_it(mini_run, tmp_path):
    study, config = finished_copy(mini_run, tmp_path, lambda c: c["shapes"].update(acc_confidence=0.9))
    planned = dry_run_jobs(study, config)
    assert set(planned) == {"config_record", "job_config", "table1", "table1_sensitivity", "figure_a11", "all"}
    assert planned["job_config"] == 3, "the config of Table 1, its sensitivity and Figure A11 (Table 1's rules)"


@pytest.mark.slow
def test_a_changed_figure_kind_redraws_that_figure_only(mini_run, tmp_path):
    study, config = finished_copy(mini_run, tmp_path, lambda c: c["experiments"]["E9"].update(figure="starts"))
    assert dry_run_jobs(study, config) == {"config_record": 1, "job_config": 1, "experiment_figure": 1, "all": 1}


@pytest.mark.slow
def test_an_experiment_added_in_an_overlay_leaves_the_study_as_it_was(mini_run, tmp_path):
    def add_e18(config):
        config["experiments"]["E18"] = {"title": "a wider MLP", "figure": "standard"}
        config["settings"]["mlp_wide"] = {
            "experiment": "E18", "intervention": "MLP 2x32 on digits", "baseline": "mlp",
            "run": {"model": {"arch": "mlp", "hidden": [32, 32]}, "data": {"augment": "none"},
                    "train": {"optimizer": "adam", "lr": 1.0e-3, "weight_decay": 0, "milestones": [], "epochs": 2}},
            "paths": {"groups": False}}

    study, overlay = finished_copy(mini_run, tmp_path, add_e18)
    proc = snakemake(study, "E18", "--cores", "2", "--configfile", str(overlay), timeout=900)
    assert proc.returncode == 0, tail(proc)
    assert (study / "results" / "figures" / "E18.png").is_file(), tail(proc, 8000)
    assert dry_run_jobs(study, study / "config" / "mini.yaml") == {}, "no table or figure of the study is stale"
