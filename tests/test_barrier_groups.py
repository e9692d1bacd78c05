"""Barrier groups (E11, E13, E16) by the paper's rule, and the two sides of a Table A3 scheme.

The paper's App. E: a layer or block has a barrier when the loss along its own path is not monotonically
decreasing. The decision sets which runs exist, so it is checked at its boundary (Δ at the tolerance),
against the label rule it replaced (kept selectable), and through the plan down to the optimiser: every
parameter tensor of ResNet-18 and VGG-11 trains on exactly one side of a scheme."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import yaml

from conftest import run_dict
from linpath.engine import models
from linpath.engine.train import make_optimizer, optimizer_groups
from linpath.foundations.hparams import GroupRule, RunSpec, SettingsError
from linpath.study.barrier_groups import barrier_groups, group_decisions, write_barrier_groups
from linpath.study.layer_groups import group_roles, layer_groups
from linpath.study.references import Reference
from conftest import merged
from linpath.study.plan import Plan

TOL = GroupRule().tol


def shape(group, delta, label, seed=0, **where):
    row = {"run_id": f"r{seed}", "setting": "s", "seed": seed, "path": "group", "start": "init", "group": group,
           "param_group": "all", "bn_mode": "interpolate", "split": "train", "label": label, "delta": delta,
           "label_rule": "rule", "loss_end": 0.1}
    row.update(where)
    return row


DISTRACTORS = [dict(split="test"), dict(start="other_init"), dict(bn_mode="recompute"), dict(path="full")]


# --- the rule ---------------------------------------------------------------------------------------


def test_the_default_rule_is_the_papers_monotonic_one_with_a_small_tolerance():
    rule = GroupRule()
    assert rule.rule == "monotonic" and 0 < rule.tol <= 1e-3 and rule.min_share == 0.5
    assert GroupRule.from_config(merged()["shapes"]) == rule, "config.yaml states the defaults"


@pytest.mark.parametrize("delta, label, monotonic, by_label", [
    (0.0, "NB", False, False),
    (TOL, "NB", False, False),           # at the tolerance: rounding
    (TOL * 1.0001, "NB", True, False),   # just above: a rise the paper would call a barrier
    (0.2, "NB", True, False),            # a rise small beside a large fall: the two rules differ
    (0.5, "B", True, True),
    (math.nan, "NaN", True, False),      # a loss that is not finite somewhere is not monotonically decreasing
])
def test_one_path_under_each_rule(delta, label, monotonic, by_label):
    assert GroupRule("monotonic").has_barrier(delta, label) is monotonic
    assert GroupRule("label").has_barrier(delta, label) is by_label


def test_bad_rules_are_refused_naming_the_setting():
    with pytest.raises(SettingsError, match=r"shapes.barrier_groups.rule must be one of \['monotonic', 'label'\]"):
        GroupRule.from_config({"barrier_groups": {"rule": "steep"}})
    with pytest.raises(SettingsError, match="shapes.barrier_groups.tol must be >= 0"):
        GroupRule.from_config({"barrier_groups": {"tol": -1}})
    with pytest.raises(SettingsError, match=r"shapes.barrier_groups.min_share must be in \(0, 1\]"):
        GroupRule.from_config({"barrier_groups": {"min_share": 0}})
    with pytest.raises(SettingsError, match="unknown setting 'shapes.barrier_groups.share'"):
        GroupRule.from_config({"barrier_groups": {"share": 0.5}})


def test_decisions_read_only_group_paths_from_init_on_the_train_split_with_interpolated_bn():
    rows = []
    for seed in (0, 1):
        rows += [shape("conv1", 0.2, "NB", seed), shape("conv2", 0.0, "NB", seed), shape("conv3", 0.8, "B", seed)]
        rows += [shape("conv2", 9.0, "B", seed, **where) for where in DISTRACTORS]
    table = group_decisions(pd.DataFrame(rows)).set_index("group")
    assert list(table.index) == ["conv1", "conv2", "conv3"], "groups in the order they were measured"
    assert table["barrier_monotonic"].to_dict() == {"conv1": True, "conv2": False, "conv3": True}
    assert table["barrier_label"].to_dict() == {"conv1": False, "conv2": False, "conv3": True}
    assert table["barrier"].equals(table["barrier_monotonic"]), "the rule in force is the monotonic one"
    assert table.loc["conv1", "mean_delta"] == pytest.approx(0.2) and table.loc["conv2", "seeds"] == 2
    by_label = group_decisions(pd.DataFrame(rows), GroupRule("label")).set_index("group")
    assert by_label["barrier"].equals(by_label["barrier_label"])


def test_a_barrier_group_needs_a_share_of_the_seeds():
    rows = [shape("layer1", 0.1, "NB", 0), shape("layer1", 0.0, "NB", 1), shape("layer1", 0.0, "NB", 2)]
    rows += [shape("layer2", 0.1, "NB", s) for s in (0, 1)] + [shape("layer2", 0.0, "NB", 2)]
    found = barrier_groups(pd.DataFrame(rows), [])
    assert found["with_barrier"] == ["layer2"], "2 of 3 seeds is a majority; 1 of 3 is not"
    found = barrier_groups(pd.DataFrame(rows), [], GroupRule(min_share=1 / 3))
    assert found["with_barrier"] == ["layer1", "layer2"]
    assert found["ranked"] == [], "only groups whose width can change are ranked"


def test_no_group_paths_is_an_error():
    with pytest.raises(ValueError, match="no group-wise paths in these shapes"):
        barrier_groups(pd.DataFrame([shape("all", 1.0, "B", path="full")]), [])


# --- the two sides split the whole model -----------------------------------------------------------


@pytest.mark.parametrize("arch, barrier", [("resnet18", {"block2", "block3"}), ("vgg11", {"conv2", "conv3", "conv4"}),
                                           ("mlp", {"layer1"})])
def test_the_sides_partition_every_group_of_the_model(arch, barrier):
    model = {"arch": arch, "hidden": [50, 50]}
    candidates, every = layer_groups(model), list(group_roles(model))
    rows = [shape(g, 0.3 if g in barrier else 0.0, "B" if g in barrier else "NB", s) for g in candidates for s in (0, 1)]
    found = barrier_groups(pd.DataFrame(rows), [], GroupRule(), candidates=candidates, model_groups=every)
    assert set(found["with_barrier"]) == barrier
    assert set(found["with_barrier"]) | set(found["without_barrier"]) == set(every)
    assert not set(found["with_barrier"]) & set(found["without_barrier"])
    assert found["not_measured"] == [g for g in every if g not in candidates]
    assert set(found["not_measured"]) <= set(found["without_barrier"]), "unmeasured groups go with the no-barrier side"
    assert found["without_barrier_layers"] == [g for g in candidates if g not in barrier]


def test_the_yaml_records_both_rules_and_the_tolerance(tmp_path, write_config):
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    pd.DataFrame([shape("layer1", 0.05, "NB", 0), shape("layer2", 0.0, "NB", 0), shape("layer3", 0.0, "NB", 0)]).to_parquet(a)
    pd.DataFrame([shape("layer1", 0.02, "NB", 1), shape("layer2", 0.4, "B", 1), shape("layer3", 0.0, "NB", 1)]).to_parquet(b)
    raw = run_dict("mlp")
    raw["model"]["hidden"] = [16, 16, 16]
    out, log = tmp_path / "groups" / "m.yaml", tmp_path / "log.txt"
    write_barrier_groups([str(a), str(b)], str(write_config(raw)), out, str(log))
    found = yaml.safe_load(out.read_text())
    assert found["rule"] == "monotonic" and found["tol"] == TOL and found["min_share"] == 0.5
    assert found["with_barrier"] == ["layer1", "layer2"]
    assert found["without_barrier"] == ["layer3", "layer4"] and found["without_barrier_layers"] == ["layer3"]
    assert found["with_barrier_other_rule"] == {"rule": "label", "groups": ["layer2"]}
    assert found["decisions"]["layer1"]["monotonic"] == {"share": 1.0, "barrier": True}
    assert found["decisions"]["layer1"]["label"] == {"share": 0.0, "barrier": False}
    assert found["ranked"] == ["layer2", "layer1"], "widenable barrier groups by mean delta"
    assert "not monotonically decreasing (delta > 0.0001)" in found["rule_text"]
    assert "under label: ['layer2']" in log.read_text()
    write_barrier_groups([str(a), str(b)], str(write_config(raw)), out, None, rule=GroupRule("label"))
    found = yaml.safe_load(out.read_text())
    assert found["with_barrier"] == ["layer2"] and found["with_barrier_other_rule"]["groups"] == ["layer1", "layer2"]


def test_references_to_the_sides():
    measured = {"s": {"with_barrier": ["block2"], "without_barrier": ["stem", "block1", "block3", "block4", "head"],
                      "without_barrier_layers": ["block1", "block3", "block4"], "ranked": ["block2"]}}
    value = lambda text: Reference.parse(text, "t").value(None, lambda s, seed: f"{s}-{seed}", 0, measured)
    assert value("@barrier_groups:s") == ["block2"]
    assert value("@no_barrier_groups:s") == ["stem", "block1", "block3", "block4", "head"]
    assert value("@no_barrier_groups:s/layers") == ["block1", "block3", "block4"]
    with pytest.raises(SettingsError, match="/layers after @no_barrier_groups"):
        Reference.parse("@barrier_groups:s/layers", "t")


# --- Table A3 through the paper plan, down to the optimiser -----------------------------------------


def scheme_optimizer(plan: Plan, setting: str, measured: dict, width: int = 4) -> dict[str, tuple[float, float]]:
    """tensor name -> (lr, weight decay) of the optimiser a run of this setting builds."""
    spec = plan.resolve(plan.by_setting[(setting, 0)], measured)
    spec["model"]["width"] = width  # the widths do not change which tensors exist
    run = RunSpec.from_dict(spec)
    model = models.build(run.model)
    groups = optimizer_groups(run, model)
    names = [n for g in groups for n in g["names"]]
    assert sorted(names) == sorted(n for n, _ in model.named_parameters()), "every tensor in exactly one group"
    optimizer = make_optimizer(run, model)
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))
    return {n: (g["lr"], g["weight_decay"]) for g in groups for n in g["names"]}


@pytest.fixture(scope="module")
def paper() -> Plan:
    plan = Plan(merged("paper.yaml"))
    plan.check()
    return plan


@pytest.mark.parametrize("prefix, reference, arch, barrier", [
    ("", "base", "resnet18", ["block2", "block3"]),
    ("vgg_", "vgg_bn", "vgg11", ["conv2", "conv3", "conv4"]),
])
def test_table_a3_schemes_put_every_tensor_on_one_side(paper, prefix, reference, arch, barrier):
    every = list(group_roles({"arch": arch}))
    others = [g for g in every if g not in barrier]
    measured = {s: {"with_barrier": barrier, "without_barrier": others, "without_barrier_layers": [],
                    "ranked": barrier, "widenable": []} for s in paper.settings}
    owner = {key: g for g, keys in models.groups(models.build({"arch": arch, "width": 4})).items() for key in keys}
    expected = {  # setting -> (lr, wd) of the barrier side, (lr, wd) of the other side
        "small_lr_no_barrier_blocks": ((0.1, 5e-4), (0.01, 5e-4)),
        "small_lr_barrier_blocks": ((0.01, 5e-4), (0.1, 5e-4)),
        "wd_barrier_blocks": ((0.1, 5e-4), (0.1, 0.0)),
        "wd_no_barrier_blocks": ((0.1, 0.0), (0.1, 5e-4)),
    }
    for setting, (on_barrier, on_other) in expected.items():
        hparams = scheme_optimizer(paper, prefix + setting, measured)
        for name, got in hparams.items():
            side = on_barrier if owner[name] in barrier else on_other
            assert got == pytest.approx(side), f"{prefix + setting}: {name} ({owner[name]}) trains at {got}"
        sides = {owner[n] for n in hparams}
        assert sides == set(every), "stem/head (or the classifier) are on a side too"


def test_the_summary_names_where_each_tensor_trained(tmp_path):
    from linpath.engine.train import describe_optimizer_groups

    run = RunSpec.from_dict(run_dict("resnet18_w4", train={"group_overrides": {"block2": {"lr": 0.01}}}))
    text = describe_optimizer_groups(optimizer_groups(run, models.build(run.model)))
    assert text.startswith("lr 0.05, weight decay 0.0005: stem, block1, block3, block4, head (")
    assert "; lr 0.01, weight decay 0.0005: block2 (" in text


@pytest.mark.parametrize("rule, message", [
    ('{"rule": "steep"}', "--rule-json.rule must be one of ['monotonic', 'label']"),
    ('{"tol": NaN}', "--rule-json.tol must be a finite number, got nan"),
    ('[0.5]', "--rule-json: expected a mapping (config shapes.barrier_groups), got list"),
])
def test_a_bad_rule_on_the_command_line_is_a_settings_error_naming_the_flag(tmp_path, write_config, capsys, rule, message):
    from linpath.cli import commands

    shapes = tmp_path / "s.parquet"
    pd.DataFrame([shape("layer1", 0.3, "B")]).to_parquet(shapes)
    out = tmp_path / "groups.yaml"
    argv = ["barrier-groups", "--shapes", str(shapes), "--run-yaml", str(write_config(run_dict("mlp"))),
            "--out", str(out), "--rule-json", rule]
    assert commands.main(argv) == 2
    assert message in capsys.readouterr().err
    assert not out.exists(), "nothing written"
