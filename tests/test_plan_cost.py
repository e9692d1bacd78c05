"""`linpath plan`: the counts it prints are the plan's, on the real configs; hours follow the recorded
throughput; the path count is what a real sweep measures; bad configs end in one line naming the key."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest
import yaml

from conftest import run_cli, run_spec
from linpath.cli import commands as cli
from linpath.study.cost import TRAINING_RULES, count_paths, estimate
from linpath.study.config import load_config
from linpath.study.plan import SWEEP_RULES, Plan
from linpath.foundations.hparams import RunSpec, SweepSpec

REPO = Path(__file__).resolve().parents[1]
DEFAULT, PAPER = str(REPO / "config" / "config.yaml"), str(REPO / "config" / "paper.yaml")


def table_rows(out: str) -> dict[str, list[str]]:
    """rule -> its columns, from the printed table."""
    rows = {}
    for line in out.splitlines():
        cells = line.split()
        if cells and cells[0] in (*TRAINING_RULES, "interpolate", "total"):
            rows[cells[0]] = cells[1:]
    return rows


@pytest.fixture(scope="module")
def paper():
    config = load_config([DEFAULT, PAPER])
    return config, Plan(config), estimate(config, [DEFAULT, PAPER])


def test_paper_counts_are_the_plans(paper):
    config, plan, est = paper
    roles = Counter(plan.role(r) for r in plan.runs)
    assert {rule: r.jobs for rule, r in est.rules.items() if r.jobs and rule not in SWEEP_RULES} == dict(roles)
    assert est.rules["interpolate"].jobs == sum(plan.swept(r) for r in plan.runs)  # spawned children: in pairs
    placeholder = {s: {"with_barrier": [], "without_barrier": []} for s in plan.settings}
    epochs = Counter()
    for run_id in plan.runs:
        start = plan.runs[run_id].spawn_epoch or 0  # a spawned child trains from its epoch k on
        epochs[plan.role(run_id)] += RunSpec.from_dict(plan.resolve(run_id, placeholder)).train.epochs - start
    assert {rule: r.epochs for rule, r in est.rules.items() if r.epochs} == dict(epochs)
    # Nothing reads the ImageNet stand-in pretraining at paper scale: it is not planned.
    assert "pretrain_source" not in {r.setting for r in plan.runs.values()}
    assert est.rules["pretrain"].jobs == 0


@pytest.mark.slow
def test_cli_prints_the_paper_plan_and_says_the_figures_are_assumed(paper):
    _, plan, est = paper
    done = run_cli(["plan", "--configfile", PAPER], cwd=REPO)
    assert done.returncode == 0, done.stderr
    rows = table_rows(done.stdout)
    assert "pretrain" not in rows
    assert int(rows["train"][0]) == est.rules["train"].jobs
    assert int(rows["interpolate"][0]) == sum(plan.swept(r) for r in plan.runs)
    assert float(rows["total"][0]) == pytest.approx(est.hours, abs=0.05)
    device = yaml.safe_load(Path(PAPER).read_text())["resources"]["throughput"]["device"]
    assert device in done.stdout and "ASSUMED, not measured" in done.stdout
    # Snakemake's order: the workflow config first, then each --configfile; given twice it is the same.
    again = run_cli(["plan", "--workflow-config", "none", "--configfile", DEFAULT, "--configfile", PAPER], cwd=REPO)
    assert table_rows(again.stdout) == rows


def test_default_config_names_its_measured_cpu():
    done = run_cli(["plan"], cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert "throughput (measured)" in done.stdout and "CPU" in done.stdout
    assert table_rows(done.stdout)["pretrain"][0] == "2"  # the default's pretrained setting reads them


def test_hours_follow_the_recorded_throughput():
    config = load_config([DEFAULT])
    before = estimate(config)
    for key in ("train_images_per_s", "eval_images_per_s"):
        config["resources"]["throughput"][key] = {k: 2 * v for k, v in config["resources"]["throughput"][key].items()}
    after = estimate(config)
    assert after.hours == pytest.approx(before.hours / 2, rel=1e-9)
    assert after.rules["train"].jobs == before.rules["train"].jobs


def test_a_job_longer_than_its_runtime_is_flagged():
    config = load_config([DEFAULT])
    config["resources"]["interpolate"]["runtime"] = 1
    from linpath.study.cost import format_estimate

    lines = [line for line in format_estimate(estimate(config)).splitlines() if "OVER" in line]
    assert [line.split()[0] for line in lines] == ["interpolate"]


def test_path_count_is_what_a_sweep_measures(tmp_path):
    from linpath.paths.sweeps import interpolate_run
    from linpath.engine.train import train

    spec = run_spec("resnet18_w4", data={"subset": 0.2}, train={"epochs": 1, "save_epochs": [1]})
    run = tmp_path / "run"
    train(spec, run, progress=False, eval_cache=tmp_path / "cache")
    sweep = SweepSpec.from_dict({"alphas": "0:1:2", "starts": ["init", "other", "epoch:1"], "groups": True,
                                 "param_groups": True, "splits": ["test"], "bn_subset": 32})
    table = interpolate_run(run, tmp_path / "cache", sweep, scratch=tmp_path, progress=False)
    measured = table.groupby(["start", "path", "group", "param_group", "bn_mode"], dropna=False).ngroups
    assert count_paths(spec.model, sweep) == measured
    assert measured > 1 + len({g for g in table["group"].dropna()})  # parameter-group paths counted too


def test_missing_throughput_is_one_line_naming_the_key(tmp_path):
    raw = yaml.safe_load(Path(DEFAULT).read_text())
    del raw["resources"]["throughput"]
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    done = run_cli(["plan", "--workflow-config", "none", "--configfile", str(tmp_path / "c.yaml")], cwd=REPO)
    assert done.returncode == cli.EXIT_INPUT
    assert re.fullmatch(r"linpath plan: error: resources\.throughput: missing;.*\n", done.stderr)


def test_unknown_arch_figure_and_schema_errors_name_the_setting(tmp_path):
    raw = yaml.safe_load(Path(DEFAULT).read_text())
    del raw["resources"]["throughput"]["train_images_per_s"]["vgg11"]
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    done = run_cli(["plan", "--workflow-config", "none", "--configfile", str(tmp_path / "c.yaml")], cwd=REPO)
    assert done.returncode == cli.EXIT_INPUT and "resources.throughput.train_images_per_s" in done.stderr
    assert "'vgg11'" in done.stderr and len(done.stderr.splitlines()) == 1
    (tmp_path / "bad.yaml").write_text("resources: {train: {mem_mb: 0, runtime: 5}}\n")
    done = run_cli(["plan", "--configfile", str(tmp_path / "bad.yaml")], cwd=REPO)
    assert done.returncode == cli.EXIT_INPUT and len(done.stderr.splitlines()) == 1
    assert "mem_mb" in done.stderr or "minimum" in done.stderr, done.stderr


@pytest.mark.slow
def test_the_cpu_overlay_costs_the_paper_plan_and_names_its_cpu(paper):
    """config/throughput_cpu.yaml (measured on a CPU) replaces only the throughput: the same jobs, more hours."""
    _, _, assumed = paper
    cpu = str(REPO / "config" / "throughput_cpu.yaml")
    done = run_cli(["plan", "--configfile", PAPER, "--configfile", cpu], cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert "throughput (measured): CPU ONLY" in done.stdout and "ASSUMED" not in done.stdout
    rows = table_rows(done.stdout)
    assert int(rows["train"][0]) == assumed.rules["train"].jobs
    assert float(rows["total"][0]) > 10 * assumed.hours
