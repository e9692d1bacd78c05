"""config/paper.yaml as the planner resolves it: the paper's baselines, data, stem and learning rates,
and the variants of the paper that the default leaves out. Pure planning: nothing is trained."""

from __future__ import annotations

import pytest
from snakemake.utils import validate

from linpath.study.plan import Plan

from conftest import REPO, load, merged, resolved


@pytest.fixture(scope="module")
def paper() -> Plan:
    config = merged("paper.yaml")
    validate(config, str(REPO / "workflow" / "linpath" / "schemas" / "config.schema.yaml"))
    plan = Plan(config)
    plan.check()
    return plan


@pytest.fixture(scope="module")
def default() -> Plan:
    return Plan(load("config.yaml"))


@pytest.mark.parametrize("setting", [f"{tp}_all_but_ri{k}" for tp in ("t", "p") for k in (1, 2, 3, 4)])
def test_partial_pretraining_is_compared_with_training_from_scratch(paper, setting):
    assert paper.settings[setting].baseline == "base"


def test_the_random_label_source_fits_the_full_training_set_to_100_percent(paper, default):
    spec = resolved(paper, "random_label_source")
    assert spec["data"]["subset"] == 1.0 and spec["data"]["random_labels"] == 1.0
    assert spec["train"]["until_train_acc"] == 1.0
    assert resolved(default, "random_label_source")["data"]["subset"] == 0.25


def test_the_paper_keeps_the_stems_max_pool(paper, default):
    for setting in ("base", "resnet34", "resnet50", "pretrained"):
        assert resolved(paper, setting)["model"]["maxpool"] is True, setting
    assert resolved(default, "base")["model"].get("maxpool", False) is False  # 8×8 digits


@pytest.mark.parametrize("plan_name,lr", [("paper", 0.1), ("default", 0.05)])
def test_no_batchnorm_runs_train_at_the_base_lr(plan_name, lr, request):
    plan = request.getfixturevalue(plan_name)
    assert resolved(plan, "base")["train"]["lr"] == lr
    assert resolved(plan, "resnet_nobn")["train"]["lr"] == lr
    assert resolved(plan, "resnet_nobn")["model"]["batchnorm"] is False


def test_a_reduced_lr_for_no_batchnorm_is_its_own_labelled_setting(paper):
    for setting in ("resnet_nobn_lr001", "vgg_nobn_lr001"):
        assert resolved(paper, setting)["train"]["lr"] == 0.01
        assert "LR 0.01" in paper.settings[setting].intervention
    rows = {r["intervention"]: r["settings"] for r in paper.config["table1"]}
    assert rows["no BatchNorm"] == ["resnet_nobn", "vgg_nobn"]
    assert [k for k, v in rows.items() if "resnet_nobn_lr001" in v] == ["no BatchNorm, LR 0.01 (not the paper's LR)"]


def test_the_papers_missing_variants_are_planned(paper):
    vgg_a3 = {"vgg_small_lr_no_barrier_blocks", "vgg_small_lr_barrier_blocks", "vgg_small_lr_all",
              "vgg_wd_barrier_blocks", "vgg_wd_no_barrier_blocks", "vgg_nowd"}
    e7 = {f"rl_block{k}{wd}" for k in (1, 2, 3, 4) for wd in ("", "_nowd")}
    assert vgg_a3 | e7 | {"vgg_narrow_1_barrier", "vgg_narrow_2_barrier", "less_data_10", "less_data_50",
                          "fixed_lr_low", "adam_nobn"} <= set(paper.settings)
    for s in vgg_a3:
        assert resolved(paper, s)["model"]["arch"] == "vgg11" and paper.settings[s].baseline == "vgg_bn"
    for k in (1, 2, 3, 4):
        assert resolved(paper, f"rl_block{k}_nowd")["train"]["weight_decay"] == 0
        assert resolved(paper, f"rl_block{k}")["train"]["weight_decay"] == 5e-4
    assert [resolved(paper, f"less_data{p}")["data"]["subset"] for p in ("_10", "", "_50")] == [0.1, 0.25, 0.5]


def test_every_table1_setting_measures_its_full_path_and_groups_follow_the_catalogue(paper, default):
    # Figure A11's rank correlation uses the full-path Δ, which every setting has; group-wise paths are
    # measured where the paper shows blocks or layers, not for E1, E5, E10, E15 and E17.
    for plan in (paper, default):
        for row in plan.config["table1"]:
            for s in row["settings"]:
                spec = plan.sweep_spec(s)
                assert spec.full and spec.starts[0] == "init", s
        for s in ("fixed_lr_mid", "fixed_lr_high", "barrier_at", "vgg_nobn", "adam_bn", "mlp_spiral"):
            assert not plan.sweep_spec(s).groups, s
        for s in ("base", "pretrained", "resnet34", "small_lr_barrier_blocks", "mlp_deep"):
            assert plan.sweep_spec(s).groups, s


def test_narrowing_the_top_k_barrier_layers(paper):
    groups = {"vgg_bn": {"with_barrier": ["conv1", "conv2", "conv5"], "without_barrier": ["conv3"],
                         "ranked": ["conv5", "conv1", "conv2"], "widenable": [f"conv{i}" for i in range(1, 9)]}}
    assert resolved(paper, "vgg_narrow_1_barrier", groups=groups)["model"]["group_width"] == {"conv5": 0.5}
    assert resolved(paper, "vgg_narrow_2_barrier", groups=groups)["model"]["group_width"] == {"conv5": 0.5, "conv1": 0.5}
    assert resolved(paper, "vgg_narrow_barrier", groups=groups)["model"]["group_width"] == {
        "conv1": 0.5, "conv2": 0.5, "conv5": 0.5}
    ids = {paper.by_setting[(s, 0)].rsplit("-", 1)[1] for s in ("vgg_narrow_1_barrier", "vgg_narrow_2_barrier")}
    assert len(ids) == 2, "top1 and top2 are different runs"


def test_subsets_are_drawn_per_seed_unless_configured(default):
    seeds = [resolved(default, "less_data", s)["data"]["seed"] for s in default.seeds]
    assert len(set(seeds)) == len(seeds)
    config = load("config.yaml")
    config["settings"]["less_data"]["same_data_for_all_seeds"] = True
    fixed = Plan(config)
    assert len({resolved(fixed, "less_data", s)["data"]["seed"] for s in fixed.seeds}) == 1
    assert fixed.by_setting[("less_data", 1)] != default.by_setting[("less_data", 1)]


def test_a_malformed_group_list_suffix_is_refused():
    config = load("config.yaml")
    config["settings"]["small_lr_barrier_blocks"]["run"]["train"]["group_overrides"] = {
        "@no_barrier_groups:base/top1": {"lr": 0.005}}
    with pytest.raises(Exception, match="top<k>"):
        Plan(config)
