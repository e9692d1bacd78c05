"""Fault injection: a study with failing runs still ends in its tables, a moved study is not rerun, and a
killed training job is retried and resumes bit for bit.

The study is tests/configs/faults.yaml: tiny MLPs on the digits, one setting whose loss diverges, a
random-label source that cannot reach its required 100 % in one epoch, and every kind of consumer of a
failed run. It runs from a copy of the checkout, so that moving that copy is a real move of a study.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import assert_states_equal, checkpoint_epoch, load_tensors
from linpath.study.plan import Plan
from linpath.foundations.hparams import RunSpec
from linpath.engine.train import train
from conftest import REPO, job_stats, output_of, snakemake, tail

FAULTS = REPO / "tests" / "configs" / "faults.yaml"
CHECKOUT_PARTS = ("Snakefile", "workflow", "envs", "profiles")


def checkout_copy(where: Path, config: dict | None = None) -> Path:
    """The workflow's files (no results) and the faults config in a folder of their own."""
    where.mkdir(parents=True)
    for part in CHECKOUT_PARTS:
        source = REPO / part
        if source.is_dir():
            shutil.copytree(source, where / part, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy(source, where / part)
    (where / "config").mkdir()
    text = FAULTS.read_text() if config is None else yaml.safe_dump(config, sort_keys=False)
    (where / "config" / "faults.yaml").write_text(text)
    return where


def run_study(where: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return snakemake(where, "--configfile", "config/faults.yaml", *args, timeout=timeout,
                     snakefile=where / "Snakefile")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """The faults study run to its end with `--keep-going`: (folder, plan, snakemake's output)."""
    where = checkout_copy(tmp_path_factory.mktemp("faults") / "checkout")
    proc = run_study(where, "--cores", "2", "--keep-going")
    assert proc.returncode == 0, f"every job completes, failed runs included:\n{tail(proc, 6000)}"
    return where, Plan(yaml.safe_load(FAULTS.read_text())), output_of(proc)


def runs_of(study) -> pd.DataFrame:
    where, _, _ = study
    return pd.read_parquet(where / "results" / "tables" / "runs.parquet").set_index("run_id")


@pytest.mark.slow
def test_deterministic_failures_are_recorded_and_their_jobs_complete(study):
    where, plan, _ = study
    runs = runs_of(study)
    assert set(runs.index) == set(plan.runs), "every planned run is a row of runs.parquet"
    for run_id in plan.runs_of("diverges"):
        assert runs.loc[run_id, "status"] == "diverged" and "training loss nan" in runs.loc[run_id, "status_reason"]
        failed = yaml.safe_load((where / plan.layout.run_file(run_id, "failed")).read_text())
        assert failed["kind"] == "diverged" and failed["epoch"] == 1 and "message" in failed
        assert not (where / plan.layout.run_file(run_id, "final")).exists()
        assert pd.read_parquet(where / plan.layout.sweep(run_id)).empty, "the sweep of a failed run is empty"
    for run_id in plan.runs_of("random_label_source"):
        assert runs.loc[run_id, "status"] == "failed" and runs.loc[run_id, "failure"] == "target_not_reached"
        assert "until_train_acc=1.0" in runs.loc[run_id, "status_reason"]
    assert (runs.loc[plan.runs_of("base"), "status"] == "trained").all()


@pytest.mark.slow
def test_every_consumer_of_a_failed_run_is_skipped_with_the_upstream_reason(study):
    _, plan, _ = study
    runs = runs_of(study)
    consumers = {"from_diverged": "diverges", "barrier_of_diverged": "diverges",
                 "small_lr_on_diverged_groups": "diverges", "random_label_init": "random_label_source"}
    for setting, upstream in consumers.items():
        for run_id in plan.runs_of(setting):
            reason = runs.loc[run_id, "status_reason"]
            assert runs.loc[run_id, "status"] == "skipped", (run_id, reason)
            assert reason.startswith(f"upstream {upstream}") and "failed" in reason, (run_id, reason)


@pytest.mark.slow
def test_table1_keeps_every_row_with_its_count_and_lists_the_failed_runs(study):
    where, plan, _ = study
    t1 = pd.read_parquet(where / "results" / "tables" / "table1.parquet")
    assert t1["intervention"].tolist() == [row["intervention"] for row in plan.config["table1"]]
    assert (t1["n"] == "0/2").all() and (t1["shape"] == "n/a").all()
    assert t1["not_trained"].str.contains("diverged|failed|skipped").all(), "each row says why it is empty"
    text = (where / "results" / "tables" / "table1.md").read_text()
    listed = text.split("Runs that did not train", 1)[1]
    for run_id, run in plan.runs.items():
        if run.setting != "base":
            assert f"`{run_id}`" in listed, run_id
    assert (where / "results" / "figures" / "figure_A11.png").stat().st_size > 0


@pytest.mark.slow
def test_a_rerun_retries_no_deterministic_failure(study):
    where, _, _ = study
    proc = run_study(where, "-n", "--cores", "2")
    assert proc.returncode == 0, tail(proc)
    assert "Nothing to be done" in output_of(proc), tail(proc)


@pytest.mark.slow
def test_a_moved_study_plans_no_training_or_sweep(study, tmp_path):
    """`cp -a` of the whole checkout with its results and .snakemake/: the Snakefile, the workflow package
    and the working directory are all at another path now."""
    where, _, _ = study
    moved = tmp_path / "elsewhere" / "study"
    shutil.copytree(where, moved, symlinks=True)
    proc = run_study(moved, "-n", "--cores", "2")
    assert proc.returncode == 0, tail(proc)
    assert "Nothing to be done" in output_of(proc), tail(proc)


@pytest.mark.slow
def test_a_changed_setting_is_a_new_run_and_trained_again(study, tmp_path):
    where, plan, _ = study
    changed = tmp_path / "changed"
    shutil.copytree(where, changed, symlinks=True)
    config = yaml.safe_load(FAULTS.read_text())
    config["settings"]["diverges"]["run"]["train"]["lr"] = 0.05
    (changed / "config" / "faults.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    proc = run_study(changed, "-n", "--cores", "2")
    assert proc.returncode == 0, tail(proc)
    stats = job_stats(output_of(proc))
    assert stats.get("train", 0) >= 2, stats  # the two seeds of the changed setting, under new run ids
    assert stats.get("pretrain_random_labels", 0) == 0, "the unchanged failure is not retried"


@pytest.mark.slow
def test_tables_so_far_list_the_pending_runs(study, tmp_path):
    where, plan, _ = study
    partial = tmp_path / "partial"
    shutil.copytree(where, partial, symlinks=True)
    unfinished = plan.runs_of("base")[1]
    (partial / plan.layout.sweep(unfinished)).unlink()
    proc = subprocess.run([str(Path(sys.executable).with_name("linpath")), "report", "so-far", "--config",
                           str(plan.layout.config_record())], cwd=partial, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert f"`{unfinished}`" in proc.stdout and "paths not measured yet" in proc.stdout
    runs = pd.read_parquet(partial / "results" / "so_far" / "runs.parquet").set_index("run_id")
    assert runs.loc[unfinished, "status"] == "pending"
    assert len(runs) == len(plan.runs)
    decided_away = int((runs["failure"] == "measured").sum())  # skipped by their (failed) upstream's measurement
    text = (partial / "results" / "so_far" / "table1.md").read_text()
    assert f"Runs finished so far: {len(plan.runs) - 1 - decided_away} of {len(plan.runs)}" in text


def _pids_training(run_id: str) -> list[int]:
    """The processes of `linpath train` for this run (the job's python, not its shell)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        text = [a.decode(errors="replace") for a in args]
        if "train" in text and any(run_id in a for a in text) and any("linpath" in a for a in text) \
                and not any(a.endswith("snakemake") or a == "-c" for a in text):
            found.append(int(entry.name))
    return found


@pytest.mark.slow
def test_a_killed_training_job_is_retried_and_resumes_bit_for_bit(tmp_path):
    """A transient failure: the job's process is SIGKILLed mid-run. Snakemake retries the job (`--retries`),
    the run resumes from the checkpoint that `checkpoint_minutes` made it write, and θ_T equals that of
    a run that was never interrupted."""
    config = yaml.safe_load(FAULTS.read_text())
    config.update(seeds=[0], checkpoint_minutes=1.0e-6)  # a wall-time checkpoint after every epoch
    config["settings"] = {"base": {"experiment": "E2", "intervention": "base MLP",
                                   "run": {"train": {"epochs": 400, "checkpoint_every": 100000}}}}
    config["table1"] = [{"category": "-", "intervention": "base", "settings": ["base"]}]
    where = checkout_copy(tmp_path / "checkout", config)
    plan = Plan(config)
    run_id = plan.runs_of("base")[0]
    run_dir = where / plan.layout.run_dir(run_id)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg")
    env.pop("PYTHONPATH", None)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    proc = subprocess.Popen([sys.executable, "-m", "snakemake", "--snakefile", str(where / "Snakefile"),
                             "--directory", str(where), "--configfile", "config/faults.yaml", "--cores", "1",
                             "--retries", "1", str(plan.layout.run_file(run_id, "outcome"))],
                            cwd=where, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    killed, deadline = [], time.monotonic() + 600
    while not killed:
        assert proc.poll() is None, f"snakemake ended before the job could be killed:\n{proc.stdout.read()[-4000:]}"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        if (checkpoint_epoch(run_dir / "checkpoint.pt") or 0) >= 2:
            killed = _pids_training(run_id)
            for pid in killed:
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.01)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-4000:]
    assert (run_dir / "final.pt").is_file() and not (run_dir / "checkpoint.pt").exists()
    assert "Trying to restart job" in out or "attempt: 2" in out or "attempt 2" in out.lower(), out[-4000:]
    metrics = pd.read_parquet(run_dir / "metrics.parquet")
    whole = tmp_path / "whole"
    train(RunSpec.from_yaml(run_dir / "run.yaml"), whole, progress=False)
    assert_states_equal(load_tensors(run_dir / "final.pt"), load_tensors(whole / "final.pt"))
    pd.testing.assert_frame_equal(metrics, pd.read_parquet(whole / "metrics.parquet"), check_exact=True)
