"""config/paper.yaml's DAG run for real, end to end on the CPU, at toy scale.

The test overrides only the scale (one seed, one or two epochs, narrow widths, five α), the data (a tiny
CIFAR-10 and MNIST written here in their official on-disk formats) and the ImageNet weights (a local file in
torchvision's format). Every rule and checkpoint of the paper's plan runs: the CIFAR-10 and MNIST loaders,
ImageNet weights from a file, ResNet-34/50, the VGG-11 variants, and the measured branches (E5 barrier inits,
E11/E13/E16 group lists). No barrier of the usual size can be relied on at this scale, so the overlay sets
every threshold that decides a barrier to zero (any rise is a barrier, as tests/test_e5_barrier_branch.py
does): the measured branches then follow whatever the toy paths show, and the tests check that they
followed it, whichever way it went.
"""

from __future__ import annotations

import copy

import pandas as pd
import pytest
import torch
import torchvision
import yaml

from linpath.study.plan import Plan
from conftest import TRAINING_RULES, paper_config, snakemake, tail, with_default_config, write_cifar10, write_mnist

# Any rise is a barrier: a full path's (label B) and a group path's (the monotonic rule).
ZERO_THRESHOLDS = {"barrier_tol": 0.0, "barrier_rel": 0.0, "barrier_groups": {"rule": "monotonic", "tol": 0.0}}


def toy_overlay(data_root: str, imagenet: str) -> dict:
    """What the test changes of the paper's config: scale, data, ImageNet weights, and the barrier thresholds."""
    paper = paper_config()
    settings: dict[str, dict] = {}
    for name, setting in paper["settings"].items():
        if setting.get("enabled", True) is False:
            continue
        run = setting.get("run") or {}
        over: dict = {}
        if "epochs" in run.get("train", {}):  # settings with their own length: short, but long enough to fit
            over["train"] = {"epochs": 150 if run["train"].get("until_train_acc") else 2}
        if run.get("model", {}).get("hidden"):
            over["model"] = {"hidden": [8] * len(run["model"]["hidden"])}
        if run.get("init", {}).get("source") == "imagenet":  # ImageNet weights need the torchvision shape
            over["model"] = {"width": 64}
            over["init"] = {"imagenet_weights": imagenet}
        if run.get("data", {}).get("dataset") == "spiral" or name == "mlp_spiral":
            over["data"] = {"spiral": {"n_train": 200, "n_test": 100}}
            over["train"] = {"epochs": 2, "eval_every": 1, "checkpoint_every": 1}
        if over:
            settings[name] = {"run": over}
    # Instability analysis inside the one epoch: children from θ₀ and from the last epoch (seed 0).
    settings.setdefault("base", {})["spawn"] = {"epochs": [0, 1], "seeds": [0]}
    return {
        "seeds": [0],
        "data_root": data_root,
        "base": {"model": {"width": 4},
                 "data": {"verify_checksums": False},
                 "train": {"epochs": 1, "batch_size": 16}},
        "paths": {"alphas": "0:1:5", "bn_subset": 16, "batch_size": 64},
        "instability": {"alphas": "0:1:3", "bn_subset": 16, "batch_size": 64},
        "plane": {"points": 3, "line_points": 3, "bn_subset": 16, "batch_size": 64},
        "curvature": {"seeds": [0], "alphas": "0:1:3", "subset": 16, "batch_size": 64, "iterations": 3, "probes": 2},
        "planes": {"base_children_k2": {"states": ["spawn:1", "child:1/0", "child:1/1"]}},
        "settings": settings,
        "shapes": ZERO_THRESHOLDS,
    }


@pytest.fixture(scope="module")
def paper_dag(tmp_path_factory):
    workdir = with_default_config(tmp_path_factory.mktemp("paper_dag"))
    data = workdir / "toy_data"
    write_cifar10(data, per_batch=4, n_test=8)
    write_mnist(data, n_train=20, n_test=8)
    torch.manual_seed(0)
    imagenet = workdir / "resnet18-imagenet.pth"
    torch.save(torchvision.models.resnet18().state_dict(), imagenet)
    overlay = toy_overlay(str(data), str(imagenet))
    (workdir / "config" / "toy.yaml").write_text(yaml.safe_dump(overlay, sort_keys=False))
    proc = snakemake(workdir, "--cores", "2", "--configfile", "config/paper.yaml", "config/toy.yaml",
                     timeout=2400)
    if proc.returncode != 0:
        logs = sorted((workdir / "logs").rglob("*.log"), key=lambda p: p.stat().st_mtime)[-3:]
        pytest.fail(tail(proc, 6000) + "".join(f"\n--- {p}\n{p.read_text()[-2000:]}" for p in logs))
    config = copy.deepcopy(paper_config())
    from snakemake.utils import update_config

    update_config(config, overlay)
    return workdir, Plan(config), proc


@pytest.mark.slow
def test_the_paper_dag_runs_end_to_end_at_toy_scale(paper_dag):
    workdir, plan, proc = paper_dag
    tables = workdir / "results" / "tables"
    runs = pd.read_parquet(tables / "runs.parquet")
    assert set(runs["run_id"]) == set(plan.runs), "every planned run is in the table (trained or skipped)"
    trained = runs[runs["status"] == "trained"]
    # The code paths the paper scale uses and the default does not.
    assert {"cifar10", "mnist", "spiral"} <= set(trained["dataset"])
    assert {"resnet18", "resnet34", "resnet50", "vgg11", "mlp"} <= set(trained["model"])
    # (the runs the measurements decide are checked in test_the_measured_branches_follow_the_measurements)
    assert set(trained["setting"]) >= {"pretrained", "p_all_but_ri1", "vgg_nobn", "resnet50"}
    rules = {p.parent.name for p in (workdir / "logs").rglob("*.log")}
    assert {*TRAINING_RULES, "interpolate", "barrier_init", "barrier_groups"} - {"pretrain"} <= rules
    assert "pretrain" not in rules, "the ImageNet weights replace the source-task pretraining: nothing reads it"
    for table in ("table1", "table_A2", "table_A3", "table_A4", "table_partial", "table_distance", "table_lucas"):
        assert (tables / f"{table}.parquet").is_file(), table
    assert (workdir / "results" / "figures" / "figure_A11.pdf").is_file()


@pytest.mark.slow
def test_the_measured_branches_follow_the_measurements(paper_dag):
    """E5's parent and the barrier-group lists decide by the zero thresholds, and the runs they decide are
    trained or skipped accordingly, with the reason in the runs table."""
    workdir, plan, _ = paper_dag
    parent = plan.by_setting[("base_nowd", 0)]
    found = yaml.safe_load((workdir / plan.layout.barrier_yaml(parent)).read_text())
    assert found["has_barrier"] is (found["delta"] > 0 and found["reason"] == "barrier")
    assert found["barrier_threshold"] == 0
    runs = pd.read_parquet(workdir / "results" / "tables" / "runs.parquet").set_index("run_id")
    child = plan.by_setting[("barrier_at", 0)]
    assert (runs.loc[child, "status"] == "trained") is found["has_barrier"], runs.loc[child, "status_reason"]
    if found["has_barrier"]:
        assert (workdir / plan.layout.barrier_dir(parent) / "at.pt").is_file()
    for setting in sorted({s for run in plan.runs.values() for s in run.groups_from}):
        groups = yaml.safe_load((workdir / plan.layout.groups_file(setting)).read_text())
        assert groups["rule"] == "monotonic" and groups["tol"] == 0
        decided = {g for g, d in groups["decisions"].items() if d["monotonic"]["barrier"]}
        assert set(groups["with_barrier"]) == decided, setting
        assert all((d["max_delta"] > 0) == d["monotonic"]["barrier"] for d in groups["decisions"].values()), setting
    skipped = runs[runs["status"] == "skipped"]
    assert skipped["status_reason"].str.len().gt(0).all()
    assert set(skipped.index) <= {r for r in plan.runs if plan.measured(r)}, "only measured runs can be skipped"


@pytest.mark.slow
def test_imagenet_weights_came_from_the_local_file(paper_dag):
    workdir, plan, _ = paper_dag
    run = plan.by_setting[("pretrained", 0)]
    spec = yaml.safe_load((workdir / plan.layout.run_file(run, "settings")).read_text())
    assert spec["init"]["source"] == "imagenet" and spec["init"]["imagenet_weights"].endswith("resnet18-imagenet.pth")
    init = torch.load(workdir / plan.layout.run_file(run, "init"), weights_only=True)
    torch.manual_seed(0)
    source = torchvision.models.resnet18().state_dict()
    assert torch.equal(init["layer3.0.conv1.weight"], source["layer3.0.conv1.weight"])
