"""Which groups count as a model's layers (config `shapes.layer_groups`): the candidates of a barrier list
(E11, E13, E16) and the groups averaged for the layer tag (H-LB / L-LB). The stem and head of a ResNet,
the classifier of a VGG and the output layer of an MLP are not layers by default."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

from conftest import REPO
from linpath.engine import models
from linpath.study.plan import Plan
from linpath.foundations.hparams import ModelSpec, SettingsError
from linpath.study.layer_groups import (DEFAULT_LAYER_GROUPS, check_rule, group_roles, layer_groups,
                                        setting_layer_groups)
from linpath.paths.shapes import ShapeThresholds
from linpath.report.tables import group_barrier, table1
from linpath.study.barrier_groups import barrier_groups
from linpath.foundations.hparams import GroupRule
from conftest import merged

SEEDS = [0, 1, 2, 3]


@pytest.mark.parametrize("spec", [
    ModelSpec(arch="resnet18", width=4), ModelSpec(arch="resnet50", width=4),
    ModelSpec(arch="vgg11", width=8, input_size=8), ModelSpec(arch="vgg11", width=8, input_size=32),
    ModelSpec(arch="mlp", hidden=[16, 16, 16], in_channels=1, input_size=8),
])
def test_roles_name_exactly_the_models_groups_in_order(spec):
    assert list(group_roles(spec)) == list(models.groups(models.build(spec)))


def test_default_layer_groups_are_blocks_conv_layers_and_hidden_layers():
    assert layer_groups(ModelSpec(arch="resnet34")) == ["block1", "block2", "block3", "block4"]
    assert layer_groups({"arch": "vgg11"}) == [f"conv{k}" for k in range(1, 9)]
    assert layer_groups({"arch": "mlp", "hidden": [50, 50, 50, 50]}) == ["layer1", "layer2", "layer3", "layer4"]
    assert layer_groups({"arch": "resnet18"}, {"resnet": ["stem", "block", "head"]})[::5] == ["stem", "head"]


def test_the_shipped_config_states_the_defaults_and_a_bad_rule_is_refused():
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    assert config["shapes"]["layer_groups"] == DEFAULT_LAYER_GROUPS
    with pytest.raises(SettingsError, match="unknown role 'stem'"):
        check_rule({"vgg": ["stem"]})
    with pytest.raises(SettingsError, match="unknown architecture family"):
        check_rule({"transformer": ["block"]})
    config["shapes"]["layer_groups"] = {"mlp": ["input"]}
    with pytest.raises(SettingsError, match="shapes.layer_groups.mlp: unknown role 'input'"):
        Plan(config).check()


def group_rows(setting: str, deltas: dict[str, float], barrier: set[str]) -> list[dict]:
    return [{"setting": setting, "seed": s, "path": "group", "start": "init", "group": g, "param_group": "all",
             "bn_mode": "interpolate", "split": "train", "label": "B" if g in barrier else "NB", "delta": d,
             "label_rule": ShapeThresholds().rule()} for s in SEEDS for g, d in deltas.items()]


def test_a_barrier_in_the_stem_or_head_makes_no_barrier_group_and_they_train_on_the_no_barrier_side():
    deltas = {"stem": 0.9, "block1": 0.3, "block2": 0.0, "block3": 0.0, "block4": 0.0, "head": 0.8}
    shapes = pd.DataFrame(group_rows("base", deltas, {"stem", "block1", "head"}))
    rule = GroupRule("label")
    found = barrier_groups(shapes, [], rule, candidates=layer_groups({"arch": "resnet18"}),
                           model_groups=list(group_roles({"arch": "resnet18"})))
    assert found["with_barrier"] == ["block1"]
    assert found["without_barrier"] == ["stem", "block2", "block3", "block4", "head"], \
        "stem and head were not found to have barriers: they train with the layers that have none"
    assert found["without_barrier_layers"] == ["block2", "block3", "block4"]
    assert found["candidates"] == ["block1", "block2", "block3", "block4"]
    every = barrier_groups(shapes, [], rule)
    assert every["with_barrier"] == ["stem", "block1", "head"], "without candidates every group counts"


def test_the_layer_tag_averages_the_layer_groups_only():
    """A head barrier alone must not make a setting H-LB: the mean Δ is over the four blocks."""
    config = merged()
    plan = Plan(config)
    blocks = {"block1": 0.1, "block2": 0.1, "block3": 0.1, "block4": 0.1}
    base = group_rows("base", {"stem": 0.0, **blocks, "head": 0.0}, set())
    high_head = group_rows("less_data", {"stem": 0.0, **blocks, "head": 3.0}, {"head"})
    shapes = pd.DataFrame(base + high_head)
    assert group_barrier(shapes, "less_data", setting_layer_groups(plan, "less_data")) == pytest.approx(0.1)
    assert group_barrier(shapes, "less_data") == pytest.approx(3.4 / 6), "over every group the head dominates"
    full = [{**r, "path": "full", "group": "all", "label": "NB", "delta": 0.0} for r in base[:4] + high_head[:4]]
    runs = pd.DataFrame([{"run_id": f"{n}-s{s}", "setting": n, "seed": s, "test_acc": 0.9, "model": "resnet18"}
                         for n in ("base", "less_data") for s in SEEDS])
    plan.config["table1"] = [{"intervention": "less data", "settings": ["less_data"], "paper_shape": "L-LB"}]
    row = table1(plan, runs, pd.DataFrame(full + base + high_head)).iloc[0]
    assert row["layer_barrier"] == "none" and row["group_delta"] == "less_data: 0.1 vs 0.1"


def test_paper_plan_layer_groups_per_setting():
    paper = Plan(merged("paper.yaml"))
    assert setting_layer_groups(paper, "base") == ["block1", "block2", "block3", "block4"]
    assert setting_layer_groups(paper, "vgg_bn") == [f"conv{k}" for k in range(1, 9)]
    assert setting_layer_groups(paper, "mlp_deep") == ["layer1", "layer2"]  # App. A's 2x50 MLP (paper.yaml, E13)
    assert setting_layer_groups(paper, "mlp_narrow_no_barrier") == ["layer1", "layer2"]
