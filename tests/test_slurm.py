"""The workflow on a real one-node SLURM cluster (tests/slurm/cluster.sh), run as a user types it in a
clean copy of the repository: `snakemake --profile slurm` with only the test cluster's partition on
top. Every cluster job goes through sbatch, a run's training and path sweep are one SLURM job asking
for one GPU, the tables equal a local run's, a cancelled job is resubmitted, and after a SIGKILL of
Snakemake itself `--unlock` and the same command resume training from its checkpoint; the weights
and the sweep end bit-identical to an uninterrupted run.

Needs root and apt (Debian): elsewhere the cluster script exits 3 and these tests skip.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "tests" / "slurm" / "cluster.sh"

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


# Session scope: the cluster stops when the whole test session ends, not after this module. Snakemake loads
# every installed executor plugin at start, and the SLURM plugin asks `scontrol show config` for MinJobAge
# then; once this fixture has installed SLURM, a stopped controller makes that call wait for its 10 s
# timeout in every later `snakemake` run of the suite (measured: a dry run of the default 12 s with the
# controller stopped, 4.5 s with it running).
@pytest.fixture(scope="session")
def cluster():
    start = subprocess.run(["bash", str(CLUSTER), "start"], capture_output=True, text=True, timeout=900)
    if start.returncode == 3:
        reason = start.stderr.strip().splitlines()[-1] if start.stderr.strip() else "cluster.sh exited 3"
        if os.environ.get("CI", "").lower() == "true":  # CI runs as root on Debian: a skip there hides a breakage
            pytest.fail(f"SLURM cluster did not start under CI=true: {reason}", pytrace=False)
        pytest.skip(f"SLURM cluster did not start: {reason}")  # shown by `pytest -rs`
    assert start.returncode == 0, f"cluster did not start:\n{start.stdout}\n{start.stderr}"
    try:
        yield
    finally:
        subprocess.run(["bash", str(CLUSTER), "stop"], capture_output=True, text=True, timeout=120)



ON_TOP = ["--default-resources", "slurm_partition=debug"]  # the test cluster's partition; nothing else


def clone(dest: Path, config: str) -> Path:
    """A clean copy of the repository (tracked and new files, nothing ignored) whose workflow config is
    one of tests/slurm/: the folder a user runs `snakemake` in, with no results, locks or logs."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split("\n")
    for name in filter(None, files):
        if (REPO / name).is_file() and not name.startswith("tests/"):
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    shutil.copy(REPO / "tests" / "slurm" / config, dest / "config" / "config.yaml")
    return dest


def snakemake(*args: str) -> list[str]:
    """`snakemake ...` as typed: the console script of this environment."""
    return [str(Path(sys.executable).with_name("snakemake")), *args]


def run(cmd: list[str], cwd: Path, timeout: int) -> subprocess.CompletedProcess:
    """Run with a hard timeout: a confused executor can ignore SIGTERM."""
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        subprocess.run(["pkill", "-KILL", "-s", str(proc.pid)])
        out, _ = proc.communicate()
        pytest.fail(f"{' '.join(cmd[1:])} did not finish in {timeout} s:\n{out[-5000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, None)


def slurm_job(job_id: str) -> dict[str, str]:
    """`scontrol show job` as a dict (finished jobs stay listed for the cluster's MinJobAge, 600 s)."""
    out = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True).stdout
    return dict(field.split("=", 1) for field in out.split() if "=" in field)


def submitted(log: str) -> list[str]:
    return re.findall(r"submitted with SLURM jobid (\d+)", log)


@pytest.fixture(scope="module")
def slurm_and_local(cluster, tmp_path_factory):
    local = clone(tmp_path_factory.mktemp("local"), "config.yaml")
    on_slurm = clone(tmp_path_factory.mktemp("slurm"), "config.yaml")
    done = run(snakemake("--cores", "2"), local, timeout=900)
    assert done.returncode == 0, done.stdout[-5000:]
    done = run(snakemake("--profile", "slurm", *ON_TOP), on_slurm, timeout=1200)
    assert done.returncode == 0, done.stdout[-8000:]
    jobs = {job_id: slurm_job(job_id) for job_id in submitted(done.stdout)}  # read while SLURM still lists them
    return local, on_slurm, done.stdout, jobs


def test_literal_command_sends_every_cluster_job_through_sbatch(slurm_and_local):
    _, work, log, jobs = slurm_and_local
    assert "Using profiles slurm and workflow specific profile profiles/default" in log
    assert jobs, "no job was submitted to SLURM"
    logs = list((work / ".snakemake" / "slurm_logs").rglob("*.log"))
    assert {p.stem for p in logs} >= set(jobs)
    groups = re.findall(r"Group job (\S+) \(jobs", log)
    plain = re.findall(r"^rule (\w+):", log, flags=re.M) + re.findall(r"^checkpoint (\w+):", log, flags=re.M)
    assert len(jobs) == len(groups) + len(plain), f"{len(jobs)} SLURM jobs for {len(groups)} groups, {plain}"
    local_only = set(re.findall(r"^local(?:rule|checkpoint) (\w+):", log, flags=re.M))
    assert local_only <= {"all", "config_record", "job_config", "label", "barrier_init", "barrier_groups", "core_tables", "table1",
                          "table1_sensitivity", "experiment_table", "experiment_figure", "figure_a11",
                          "instability_table", "instability_figure", "planes_table", "plane_figure"}
    assert {"core_tables", "table1", "figure_a11"} <= local_only


def test_train_and_sweep_of_a_run_are_one_slurm_job_with_one_gpu(slurm_and_local):
    sys.path.insert(0, str(REPO / "workflow"))
    from linpath.study.plan import Plan

    _, work, _, jobs = slurm_and_local
    plan = Plan(yaml.safe_load((REPO / "tests" / "slurm" / "config.yaml").read_text()))
    comments = sorted(job["Comment"] for job in jobs.values())
    expected = sorted(f"rule_run_{run_id}_interpolate_{plan.role(run_id)}" for run_id in plan.runs)
    assert comments == expected  # one job per run, holding both rules; nothing else went to the cluster
    sizes = yaml.safe_load((REPO / "workflow" / "linpath" / "schemas" / "config.schema.yaml").read_text())
    train, sweep = (sizes["properties"]["resources"]["properties"][r]["default"] for r in ("train", "interpolate"))
    for job in jobs.values():
        assert job["JobState"] == "COMPLETED"
        assert "gres/gpu=1" in job["TRES"] or "gpu:1" in job.get("TresPerJob", "") + job.get("TresPerNode", "")
        hours, minutes, _ = map(int, job["TimeLimit"].split(":"))
        assert 60 * hours + minutes == train["runtime"] + sweep["runtime"]  # a group job adds up its rules' runtime
        assert job["MinMemoryNode"] == f"{max(train['mem_mb'], sweep['mem_mb'])}M"
    assert (work / "benchmarks" / "train").is_dir() and (work / "benchmarks" / "interpolate").is_dir()


def test_tables_equal_a_local_run(slurm_and_local):
    local, work, _, _ = slurm_and_local
    for name in ("runs", "paths", "shapes", "table1"):
        a = pd.read_parquet(local / "results" / "tables" / f"{name}.parquet")
        b = pd.read_parquet(work / "results" / "tables" / f"{name}.parquet")
        keys = [c for c in ("run_id", "path", "start", "group", "param_group", "bn_mode", "split", "alpha", "intervention")
                if c in a.columns]
        a, b = a.sort_values(keys).reset_index(drop=True), b.sort_values(keys).reset_index(drop=True)
        pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert len(pd.read_parquet(work / "results" / "tables" / "runs.parquet")) == 4


def test_dry_runs_of_the_shipped_configs(cluster, tmp_path):
    work = clone(tmp_path, "config.yaml")
    shutil.copy(REPO / "config" / "config.yaml", work / "config" / "config.yaml")
    for extra in ([], ["--configfile", "config/paper.yaml"]):
        done = run(snakemake("--profile", "slurm", "-n", *extra), work, timeout=600)
        assert done.returncode == 0, done.stdout[-5000:]
        assert re.search(r"Group job run_base-s0-\w+ \(jobs", done.stdout)


def checkpoint_epoch(path: Path) -> int | None:
    try:
        return int(torch.load(path, weights_only=True)["epoch"])
    except (OSError, RuntimeError, EOFError, KeyError):  # not there yet, or being replaced
        return None


def test_cancel_then_kill_then_unlock_resumes_bit_identical(cluster, tmp_path):
    """One grouped job (train + sweep of a 16-epoch run): scancel it mid-training (Snakemake resubmits
    it), then SIGKILL Snakemake itself mid-training, cancel the job it left behind by its run name,
    `snakemake --unlock`, and the same command again: training resumes from checkpoint.pt."""
    sys.path.insert(0, str(REPO / "workflow"))
    from linpath.study.plan import Plan

    run_id = Plan(yaml.safe_load((REPO / "tests" / "slurm" / "long_run.yaml").read_text())).runs_of("base")[0]
    target = f"results/sweeps/{run_id}.parquet"
    reference = clone(tmp_path / "reference", "long_run.yaml")
    done = run(snakemake("--cores", "1", target), reference, timeout=600)
    assert done.returncode == 0, done.stdout[-5000:]

    work = clone(tmp_path / "work", "long_run.yaml")
    command = snakemake("--profile", "slurm", target, *ON_TOP)  # a list option last: it would swallow the target
    log = work / "snakemake.out"
    with log.open("w") as sink:
        proc = subprocess.Popen(command, cwd=work, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    checkpoint = work / "results" / "runs" / run_id / "checkpoint.pt"

    def running_job():
        jobs = subprocess.run(["squeue", "-h", "-t", "RUNNING", "-o", "%i"], capture_output=True, text=True)
        return (jobs.stdout.split() or [None])[0]

    cancelled, killed_at, deadline = None, None, time.time() + 600
    try:
        while time.time() < deadline and proc.poll() is None:
            epoch = checkpoint_epoch(checkpoint)
            job = running_job()
            if cancelled is None and epoch and job:
                cancelled, cancelled_epoch = job, epoch
                subprocess.run(["scancel", job], check=True)
            elif cancelled and job and job != cancelled and epoch and epoch > cancelled_epoch:
                proc.send_signal(signal.SIGKILL)  # Snakemake itself, not the job
                proc.wait()
                killed_at = epoch
                break
            time.sleep(0.3)
    finally:
        if proc.poll() is None and killed_at is None:
            subprocess.run(["pkill", "-KILL", "-s", str(proc.pid)])
    out = log.read_text()
    assert cancelled, "the training job was never seen running with a checkpoint"
    assert killed_at, f"the resubmitted job was never seen past epoch {cancelled_epoch}:\n{out[-3000:]}"
    assert len(submitted(out)) == 2 and cancelled in submitted(out)

    # What the README says to do: cancel the job the killed Snakemake left running, unlock, run again.
    name = re.search(r"SLURM run ID: (\S+)", out).group(1)
    subprocess.run(["scancel", "--name", name], check=True)
    for _ in range(100):
        if not subprocess.run(["squeue", "-h", "-n", name], capture_output=True, text=True).stdout.strip():
            break
        time.sleep(0.3)
    locked = run(command, work, timeout=300)
    assert locked.returncode != 0 and "LockException" in locked.stdout, locked.stdout[-3000:]
    unlocked = run(snakemake("--unlock"), work, timeout=300)
    assert unlocked.returncode == 0, unlocked.stdout[-3000:]
    resumed_from = checkpoint_epoch(checkpoint)
    assert resumed_from and resumed_from >= killed_at

    proc = subprocess.Popen(command, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    seen = set()
    while proc.poll() is None:  # a fresh start would write epoch 1 again; a resumed run only later epochs
        epoch = checkpoint_epoch(checkpoint)
        if epoch:
            seen.add(epoch)
        if time.time() > deadline + 300:
            subprocess.run(["pkill", "-KILL", "-s", str(proc.pid)])
            pytest.fail("the rerun did not finish")
        time.sleep(0.2)
    out = proc.stdout.read()
    assert proc.returncode == 0, out[-8000:]
    print(f"cancelled at epoch {cancelled_epoch}, Snakemake killed at {killed_at}, resumed from {resumed_from}; "
          f"checkpoints seen during the rerun: {sorted(seen)}")
    assert min(seen, default=resumed_from) >= resumed_from, f"training restarted: saw epochs {sorted(seen)}"

    final = f"results/runs/{run_id}/final.pt"
    a, b = torch.load(reference / final, weights_only=True), torch.load(work / final, weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    pd.testing.assert_frame_equal(pd.read_parquet(reference / target), pd.read_parquet(work / target), check_exact=True)
