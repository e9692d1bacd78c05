"""Table 1 as the paper defines it, through the resolved default and paper plans: each row holds the
settings of the figure it cites, the fixed LRs are compared with each other, rows that are not the
paper's carry no paper label, the paper's MLP row widens only, the weight-decay sweep has a "little"
point, the paper plan trains in fp32, and the Lucas et al. rows change only the optimiser. The
comparison rule itself is checked on hand-made runs."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
import torch

from linpath.study.plan import Plan
from linpath.foundations.hparams import RunSpec
from linpath.report.tables import (LAYER_MISSING, agreement_counts, interval_caveat, interval_text, mean_interval,
                                   row_comparisons, table1, table1_markdown, unreachable_paper_labels)
from linpath.engine.train import StepSettings
from conftest import SEEDS, config, fixed_lr_plan, fixed_lr_runs, merged, resolved, run_row, shape_row


@pytest.fixture(scope="module")
def paper() -> Plan:
    plan = Plan(merged("paper.yaml"))
    plan.check()
    return plan


@pytest.fixture(scope="module")
def default() -> Plan:
    plan = Plan(merged())
    plan.check()
    return plan


def rows_of(plan: Plan) -> dict[str, dict]:
    return {r["intervention"]: r for r in plan.config["table1"]}


# --- 1. the paper's MLP row widens; narrowing is its own row -----------------------------------


def test_the_mlp_row_widens_the_barrier_layers_and_narrowing_is_its_own_row(paper):
    rows = rows_of(paper)
    widen = rows["MLPs overparameterised"]["settings"]
    assert widen == ["mlp_widen_barrier_2x", "mlp_widen_barrier", "mlp_widen_barrier_8x"]
    groups = {"mlp_deep": {"with_barrier": ["layer1"], "without_barrier": ["layer2", "output"],
                           "ranked": ["layer1"], "widenable": ["layer1", "layer2"]}}
    factors = [resolved(paper, s, groups=groups)["model"]["group_width"] for s in widen]
    assert factors == [{"layer1": 2.0}, {"layer1": 4.0}, {"layer1": 8.0}], "three widenings of the barrier layers"
    narrow = [r for r in rows.values() if "mlp_narrow_no_barrier" in r["settings"]]
    assert len(narrow) == 1 and narrow[0]["settings"] == ["mlp_narrow_no_barrier"]
    assert narrow[0]["paper_shape"] == "NB" and "paper_acc" not in narrow[0], "App. F states no accuracy"
    assert "App. F" in narrow[0]["paper_source"]


# --- 2. fixed learning rates against each other ---------------------------------------------------


@pytest.mark.parametrize("plan_name", ["default", "paper"])
def test_fixed_lrs_are_compared_with_each_other_not_with_the_scheduled_base(plan_name, request):
    plan = request.getfixturevalue(plan_name)
    fixed = [s for s, v in plan.settings.items() if v.experiment == "E10"]
    others = [s for s in fixed if s != "fixed_lr_mid"]
    assert {resolved(plan, s)["train"]["milestones"] == [] for s in fixed} == {True}
    for s in others:
        assert plan.settings[s].baseline == "fixed_lr_mid", s
    rows = rows_of(plan)
    mid = rows["fixed LR = 0.01"]
    assert row_comparisons(plan, mid) == [("fixed_lr_mid", s) for s in others]
    assert rows["fixed LR != 0.01"]["settings"] == others
    assert {b for _, b in row_comparisons(plan, rows["fixed LR != 0.01"])} == {"fixed_lr_mid"}


def test_the_middle_lr_is_better_only_when_it_beats_each_other_lr():
    plan = fixed_lr_plan()
    shapes = pd.DataFrame([shape_row(n, s, "P" if n == "mid" else "NB", 0.0) for n in ("mid", "high", "low")
                           for s in SEEDS])
    t1 = table1(plan, fixed_lr_runs(0.88), shapes)
    mid, others = t1.iloc[0], t1.iloc[1]
    assert mid["acc_word"] == "better" and mid["agrees_acc"] == True  # noqa: E712
    assert re.fullmatch(r"mid vs high: \+2\.\d\d \[.*\] better; mid vs low: \+4\.\d\d \[.*\] better", mid["acc_words"])
    assert mid["comparison"] == "mid vs high; mid vs low", "the row names what it compares"
    assert mid["acc_interval"] == mid["acc_words"], "two comparisons: each one's interval, not the pooled one"
    assert mid["shape_fractions"] == "P 4/4", "a setting compared twice counts its runs once"
    assert others["acc_word"] == "worse" and others["agrees"] == True  # noqa: E712
    # Equal to the low LR: no longer better than both.
    tied = table1(plan, fixed_lr_runs(0.92), shapes).iloc[0]
    assert tied["acc_word"] == "mixed" and tied["agrees_acc"] == False  # noqa: E712


def test_a_compare_entry_must_name_the_rows_settings():
    plan = fixed_lr_plan()
    plan.config["table1"][0]["compare"] = {"high": ["low"]}
    with pytest.raises(Exception, match="compare: 'high' is not one of the row's settings"):
        plan.check()
    plan.config["table1"][0]["compare"] = {"mid": ["lowest"]}
    with pytest.raises(Exception, match="unknown setting 'lowest'"):
        plan.check()


# --- 3. a row that is not the paper's is not compared ---------------------------------------------


def test_the_no_bn_row_at_another_lr_carries_no_paper_label_and_is_not_counted(paper):
    row = rows_of(paper)["no BatchNorm, LR 0.01 (not the paper's LR)"]
    assert "paper_shape" not in row and "paper_acc" not in row
    settings = {"base": {"experiment": "E2"}, "nobn": {"experiment": "E15", "baseline": "base"}}
    plan = Plan(config(settings, [{"intervention": "no BN", "settings": ["nobn"], "paper_shape": "NB",
                                   "paper_acc": "worse"},
                                  {"intervention": "no BN, other LR", "settings": ["nobn"]}]))
    shapes = pd.DataFrame([shape_row(n, s, "NB", 0.0) for n in settings for s in SEEDS])
    runs = pd.DataFrame([run_row(n, s, 0.9 - 0.01 * (n == "nobn") + 0.001 * s) for n in settings for s in SEEDS])
    t1 = table1(plan, runs, shapes)
    assert t1.loc[1, "paper_source"] == "" and t1.loc[1, ["agrees_shape", "agrees_acc", "agrees"]].isna().all()
    assert agreement_counts(t1) == {"shape": (1, 1), "layer": (0, 0), "acc": (1, 1)}


# --- 4. each row holds the settings of the figure it cites ---------------------------------------


@pytest.mark.parametrize("plan_name", ["default", "paper"])
def test_each_row_holds_the_settings_of_one_figure(plan_name, request):
    plan = request.getfixturevalue(plan_name)
    for row in plan.config["table1"]:
        figures = {plan.paper_figure(s) for s in row["settings"]}
        assert len(figures) == 1, (row["intervention"], figures)


def test_appendix_settings_have_their_own_rows(paper):
    rows = rows_of(paper)
    assert rows["less data"]["settings"] == ["less_data_10", "less_data", "less_data_50"]
    assert rows["less data and no augmentation"]["settings"] == ["less_data_no_aug"]
    assert paper.paper_figure("less_data_no_aug") == "Fig. A14"
    assert rows["partial random-label pre-training"]["settings"] == [f"rl_block{k}" for k in (1, 2, 3, 4)]
    assert rows["partial random-label pre-training (no WD)"]["settings"] == [f"rl_block{k}_nowd" for k in (1, 2, 3, 4)]
    assert rows["barrier-height init"]["settings"] == ["barrier_at"]
    assert rows["init before / after the barrier"]["settings"] == ["barrier_before", "barrier_after"]
    sources = {r["intervention"]: r.get("paper_source") for r in rows.values() if r.get("paper_source")}
    appendix = {i for i, s in sources.items() if not s.startswith("Table 1")}
    assert appendix == {"init before / after the barrier", "partial random-label pre-training (no WD)",
                        "less data and no augmentation", "MLP no-barrier layers narrowed"}
    # The other sourced rows are Table 1's, with a second reading quoted from the text
    assert {i for i in sources if i not in appendix} == {i for i, r in rows.items() if r.get("paper_shape_alt")}


# --- 6. the weight-decay sweep has a "little" point -------------------------------------------------


def test_the_weight_decay_sweep_has_a_point_between_zero_and_1e4(paper):
    wd = {s: resolved(paper, s)["train"]["weight_decay"] for s, v in paper.settings.items()
          if v.experiment == "E9" or s == "base"}
    assert sorted(wd.values()) == [0, 1e-5, 1e-4, 5e-4, 5e-3]
    little = [s for s, v in wd.items() if 0 < v < 1e-4]
    assert little == ["wd_1e5"] and "wd_1e5" in rows_of(paper)["less weight decay"]["settings"]


# --- 7. the paper plan trains in fp32 ----------------------------------------------------------------


def test_every_paper_run_trains_in_fp32_even_on_cuda(paper, default):
    placeholder = {s: {"with_barrier": [], "without_barrier": [], "ranked": [], "widenable": []} for s in paper.settings}
    for run_id in paper.runs:
        spec = RunSpec.from_dict(paper.resolve(run_id, placeholder))
        assert spec.train.precision == "fp32", run_id
        assert not StepSettings.of(spec.train, torch.device("cuda"), spec.model.arch).bf16
    assert "precision" not in default.base["train"], "the CPU default does not set it (CPU trains in fp32)"


# --- 8. the Lucas et al. rows change only the optimiser ---------------------------------------------


def differences(a: dict, b: dict, where: str = "") -> set[str]:
    keys = set(a) | set(b)
    out = set()
    for k in keys:
        if isinstance(a.get(k), dict) and isinstance(b.get(k), dict):
            out |= differences(a[k], b[k], f"{where}{k}.")
        elif a.get(k) != b.get(k):
            out.add(f"{where}{k}")
    return out


@pytest.mark.parametrize("plan_name", ["default", "paper"])
def test_adam_rows_change_only_the_optimiser(plan_name, request):
    plan = request.getfixturevalue(plan_name)
    for adam, sgd in (("adam_bn", "base"), ("adam_nobn", "resnet_nobn")):
        assert plan.settings[adam].baseline == sgd
        a, b = resolved(plan, adam), resolved(plan, sgd)
        # save_epochs / spawn_epochs keep extra states of base (for its paths and spawned children); they
        # change no step of training
        assert differences(a, b) - {"train.save_epochs", "train.spawn_epochs"} == {
            "name", "train.optimizer", "train.lr"}, adam
        assert a["train"]["optimizer"] == "adam" and a["train"]["milestones"] == b["train"]["milestones"] != []
        assert a["train"]["weight_decay"] == b["train"]["weight_decay"] == 5e-4


def test_the_config_record_keeps_a_weight_decay_of_1e5_a_number(paper, tmp_path):
    """The report jobs read the JSON config record; 1e-05 (wd_1e5) is a number there, and the runs they
    name are the workflow's (YAML 1.1 would read it as text and give the run another id)."""
    import json

    import yaml

    from linpath.study.config import read_config_record

    record = tmp_path / "config.json"
    record.write_text(json.dumps(paper.config, sort_keys=True))
    assert "1e-05" in record.read_text()
    again = read_config_record(record)
    assert again["settings"]["wd_1e5"]["run"]["train"]["weight_decay"] == 1e-5
    assert Plan(again).runs.keys() == paper.runs.keys()
    assert yaml.safe_load(record.read_text())["settings"]["wd_1e5"]["run"]["train"]["weight_decay"] == "1e-05"
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"seeds": [0]}))
    assert read_config_record(tmp_path / "config.yaml") == {"seeds": [0]}


# --- 9. every row's paper labels can come out of its rules -----------------------------------------


@pytest.mark.parametrize("plan_name", ["default", "paper"])
def test_every_rows_paper_labels_are_reachable_by_its_rules(plan_name, request):
    plan = request.getfixturevalue(plan_name)
    compared = [r for r in plan.config["table1"] if r.get("paper_shape") or r.get("paper_acc")]
    assert len(compared) >= 15
    assert [p for r in compared for p in unreachable_paper_labels(plan, r)] == []


def one_setting_plan(row: dict, seeds=SEEDS, paths: dict | None = None) -> Plan:
    settings = {"base": {"experiment": "E2"}, "a": {"experiment": "E6", "baseline": "base", "paths": paths or {}},
                "b": {"experiment": "E6", "baseline": "base"}, "c": {"experiment": "E6", "baseline": "base"}}
    return Plan(config(settings, [{"intervention": "x", **row}], seeds=seeds, shapes={"label_min_share": 0.25}))


@pytest.mark.parametrize("row,seeds,paths,problem", [
    ({"settings": ["a"], "paper_shape": "B/NB/P"}, [0, 1], None, "needs 3 labels; its settings hold at most 2"),
    ({"settings": ["a"], "paper_shape": "H-LB"}, SEEDS, {"groups": False}, "need 1 comparisons with group-wise paths"),
    ({"settings": ["a"], "paper_shape": "H-LB/L-LB"}, SEEDS, None, "need 2 comparisons"),
    ({"settings": ["a"], "paper_acc": "worse"}, [0], None, "cannot come from 1 comparison(s) of 1 seed(s)"),
    ({"settings": ["a"], "paper_acc": "mixed"}, SEEDS, None, "cannot come from 1 comparison(s)"),
    ({"settings": ["a"], "paper_shape": "NB/LB"}, SEEDS, None, "unknown labels ['LB']"),
])
def test_unreachable_paper_labels_are_named(row, seeds, paths, problem):
    plan = one_setting_plan(row, seeds, paths)
    found = unreachable_paper_labels(plan, plan.config["table1"][0])
    assert len(found) == 1 and problem in found[0], found


def test_often_is_read_as_the_word_where_a_row_cannot_say_often():
    """One or two comparisons cannot say "often X": the paper's "often better" is compared as "better"
    there; with three, "often better" itself is needed (all three better is not "often")."""
    runs = pd.DataFrame([run_row(n, s, 0.90 + (0.01 + 0.001 * s) * (n != "base")) for n in ("base", "a", "b", "c")
                         for s in SEEDS])
    shapes = pd.DataFrame([shape_row(n, s, "NB", 0.0) for n in ("base", "a", "b", "c") for s in SEEDS])
    one = table1(one_setting_plan({"settings": ["a"], "paper_acc": "often better"}), runs, shapes).iloc[0]
    assert one["acc_word"] == "better" and one["paper_acc_compared"] == "better" and one["agrees_acc"] == True  # noqa: E712
    assert "often better → better" in table1_markdown(pd.DataFrame([one]))
    three = table1(one_setting_plan({"settings": ["a", "b", "c"], "paper_acc": "often better"}), runs, shapes).iloc[0]
    assert three["acc_word"] == "better" and three["paper_acc_compared"] == "often better"
    assert three["agrees_acc"] == False  # noqa: E712
    unreachable = one_setting_plan({"settings": ["a"], "paper_acc": "often better"}, seeds=[0])
    assert "compared as 'better'" in unreachable_paper_labels(unreachable, unreachable.config["table1"][0])[0]


# --- 10. where the paper contradicts itself, both readings count -----------------------------------


@pytest.mark.parametrize("plan_name", ["default", "paper"])
def test_rows_the_paper_reads_two_ways_carry_both_readings_and_the_quote(plan_name, request):
    rows = rows_of(request.getfixturevalue(plan_name))
    fixed, rl = rows["fixed LR = 0.01"], rows["partial random-label pre-training"]
    assert (fixed["paper_shape"], fixed["paper_shape_alt"]) == ("P", "B")
    assert "induces a barrier" in fixed["paper_source"] and "App. E" in fixed["paper_source"]
    assert (rl["paper_shape"], rl["paper_shape_alt"]) == ("B/NB", "B/P")
    assert "App. C" in rl["paper_source"] and "plateau" in rl["paper_source"]


def test_a_part_agrees_with_either_reading_and_the_markdown_marks_the_row():
    plan = fixed_lr_plan()
    plan.config["table1"][0].update(paper_shape_alt="B", paper_source="Table 1; Sec. 6: 'induces a barrier'")
    plan.check()
    runs = fixed_lr_runs(0.88)
    for mid, agrees, which in (("B", True, "shape: alt"), ("P", True, "shape: main"), ("NB", False, "shape: neither")):
        shapes = pd.DataFrame([shape_row(n, s, mid if n == "mid" else "NB", 0.3 * (mid == "B") * (n == "mid"))
                               for n in ("mid", "high", "low") for s in SEEDS])
        t1 = table1(plan, runs, shapes)
        row = t1.iloc[0]
        assert row["shape"] == mid and row["agrees_shape"] == agrees, mid
        assert row["agrees_by_reading"] == f"{which}; acc: main, alt", "the alt states no word: the main one stands"
        assert t1.iloc[1]["agrees_by_reading"] == "", "one reading: nothing to say"
    text = table1_markdown(t1)
    assert "| fixed LR = 0.01 † |" in text and "| P (alt: B) |" in text and "† The paper's own text" in text
    assert agreement_counts(t1)["shape"] == (1, 2)


def test_a_second_reading_needs_its_quote():
    plan = fixed_lr_plan()
    plan.config["table1"][0]["paper_shape_alt"] = "B"
    with pytest.raises(Exception, match=r"table1\[0\] \(fixed LR = 0.01\): a second reading .* paper_source"):
        plan.check()


# --- 11. the small-LR row: the shape of the changed blocks' own paths --------------------------------


def small_lr_plan(tmp_path=None) -> Plan:
    settings = {"base": {"experiment": "E2"},
                "small_lr": {"experiment": "E11", "baseline": "base",
                             "run": {"train": {"group_overrides": {"@barrier_groups:base": {"lr": 0.005}}}}}}
    cfg = config(settings, [{"intervention": "smaller initial LR for blocks with barriers", "settings": ["small_lr"],
                             "shape_from": "barrier_groups", "paper_shape": "NB", "paper_acc": "worse"}])
    cfg["paths"] = {"groups": True}
    if tmp_path is not None:
        cfg["results"] = str(tmp_path)
    return Plan(cfg)


def small_lr_shapes() -> pd.DataFrame:
    """base: block1 has a barrier, block2 none. small_lr: its full path is B, block1's own path now NB,
    block2's B (a block whose LR was not lowered)."""
    rows = []
    for s in SEEDS:
        rows += [shape_row("base", s, "P", 0.0), shape_row("small_lr", s, "B", 0.4),
                 shape_row("base", s, "B", 0.3, path="group", group="block1"),
                 shape_row("base", s, "NB", 0.0, path="group", group="block2"),
                 shape_row("small_lr", s, "NB", 0.0, path="group", group="block1"),
                 shape_row("small_lr", s, "B", 0.5, path="group", group="block2")]
    return pd.DataFrame(rows)


def test_the_small_lr_rows_shape_comes_from_the_barrier_groups_own_paths():
    plan = small_lr_plan()
    plan.check()
    assert plan.table1_group_references() == ["base"]
    runs = pd.DataFrame([run_row(n, s, 0.9 - 0.02 * (n == "small_lr") + 0.001 * s) for n in ("base", "small_lr")
                         for s in SEEDS])
    groups = {"base": {"with_barrier": ["block1"], "without_barrier": ["stem", "block2", "head"]}}
    row = table1(plan, runs, small_lr_shapes(), barrier_groups=groups).iloc[0]
    assert row["shape"] == "NB" and row["shape_fractions"] == "NB 4/4", "block1 only, not the full path's B"
    assert row["agrees_shape"] == True and row["agrees"] == True  # noqa: E712
    assert row["shape_from"] == "group-wise paths of the barrier groups (small_lr: block1 of base)"
    assert row["baseline_shape"] == "base: B", "the same block in the baseline had the barrier"
    assert "one label per seed and barrier group" in row["shape_rule"]
    # Both blocks changed: block2's own path keeps its barrier, and the row shows it.
    both = {"base": {"with_barrier": ["block1", "block2"], "without_barrier": []}}
    row = table1(plan, runs, small_lr_shapes(), barrier_groups=both).iloc[0]
    assert row["shape"] == "NB/B" and row["shape_fractions"] == "NB 4/8, B 4/8" and row["agrees_shape"] == False  # noqa: E712


def test_without_barrier_groups_the_row_says_so_and_invents_no_label(tmp_path):
    plan = small_lr_plan(tmp_path)
    skipped = [{"run_id": f"small_lr-s{s}", "setting": "small_lr", "seed": s, "status": "skipped",
                "status_reason": "no barrier groups measured in base (@barrier_groups:base)"} for s in SEEDS]
    runs = pd.DataFrame([{**run_row("base", s, 0.9), "status": "trained"} for s in SEEDS] + skipped)
    shapes = small_lr_shapes().query("setting == 'base'")
    row = table1(plan, runs, shapes, barrier_groups={"base": {"with_barrier": [], "without_barrier": ["block1"]}}).iloc[0]
    assert row["shape"] == "no barrier groups in base" and pd.isna(row["agrees_shape"]) and pd.isna(row["agrees"])
    assert "small_lr: 4 skipped (no barrier groups measured in base" in row["not_trained"]
    # Not measured (no file): said so. The measured file, read from the results folder when not passed in.
    assert table1(plan, runs, shapes).iloc[0]["shape_from"].endswith("(small_lr: barrier groups of base not measured)")
    plan.layout.groups_file("base").parent.mkdir(parents=True)
    plan.layout.groups_file("base").write_text("with_barrier: [block1]\nwithout_barrier: [block2]\n")
    trained_runs = pd.DataFrame([run_row(n, s, 0.9) for n in ("base", "small_lr") for s in SEEDS])
    assert table1(plan, trained_runs, small_lr_shapes()).iloc[0]["shape"] == "NB"


def test_shape_from_barrier_groups_needs_a_barrier_group_reference_and_group_paths():
    plan = small_lr_plan()
    plan.config["settings"]["plain"] = {"experiment": "E11", "baseline": "base"}
    plan = Plan(plan.config)
    plan.config["table1"][0]["settings"] = ["small_lr", "plain"]
    with pytest.raises(Exception, match="setting 'plain' changes no '@barrier_groups:<setting>' groups"):
        plan.check()
    plan.config["table1"][0]["settings"] = ["small_lr"]
    plan.config["settings"]["small_lr"]["paths"] = {"groups": False}
    with pytest.raises(Exception, match="setting 'small_lr' measures no group-wise paths"):
        Plan(plan.config).check()


@pytest.mark.parametrize("plan_name", ["default", "paper"])
def test_the_small_lr_row_of_each_config_reads_the_barrier_groups(plan_name, request):
    plan = request.getfixturevalue(plan_name)
    row = rows_of(plan)["smaller initial LR for blocks with barriers"]
    assert row["shape_from"] == "barrier_groups"
    assert "base" in plan.table1_group_references()
    assert all(r.get("shape_from", "full") == "full" for r in plan.config["table1"] if r is not row)


# --- 12. E13 at paper scale: App. A's MLP where the paper shows MLP barriers ---------------------------


def test_the_paper_scale_e13_baseline_is_app_a_mlp_on_the_spiral(paper):
    deep, spiral = resolved(paper, "mlp_deep"), resolved(paper, "mlp_spiral")
    assert deep["model"]["hidden"] == [50, 50] and deep["data"]["dataset"] == "spiral"
    for key in ("optimizer", "lr", "weight_decay", "milestones", "batch_size", "loss", "epochs"):
        assert deep["train"][key] == spiral["train"][key], key  # E1's recipe of Fig. 1A (App. A)
    assert (deep["train"]["optimizer"], deep["train"]["lr"], deep["train"]["batch_size"]) == ("adam", 5e-4, 500)
    assert paper.sweep_spec("mlp_deep").groups, "its layers' own paths decide the barrier groups"


def test_a_widening_row_whose_baseline_has_no_barrier_layer_says_so():
    """No barrier layer in the baseline: the widened runs are skipped (not trained as copies of the
    baseline), so the row has no label to agree with; it shows the baseline's shape and why."""
    settings = {"mlp_deep": {"experiment": "E13", "run": {"model": {"arch": "mlp", "hidden": [8, 8]}}},
                "mlp_widen_barrier": {"experiment": "E13", "baseline": "mlp_deep", "like": "mlp_deep",
                                      "run": {"model": {"group_width": {"@barrier_groups:mlp_deep": 4.0}}}}}
    plan = Plan(config(settings, [{"intervention": "MLPs overparameterised", "settings": ["mlp_widen_barrier"],
                                   "paper_shape": "NB", "paper_acc": "often better"}]))
    groups = {"mlp_deep": {"with_barrier": [], "without_barrier": ["layer1", "layer2", "output"]}}
    reason = plan.skip_reason(plan.run_of("mlp_widen_barrier", 0), groups, {})
    assert reason == "no barrier groups measured in mlp_deep (@barrier_groups:mlp_deep)"
    runs = pd.DataFrame([{**run_row("mlp_deep", s, 0.9, "mlp"), "status": "trained"} for s in SEEDS]
                        + [{"run_id": f"w-s{s}", "setting": "mlp_widen_barrier", "seed": s, "status": "skipped",
                            "status_reason": reason} for s in SEEDS])
    shapes = pd.DataFrame([shape_row("mlp_deep", s, "NB", 0.0) for s in SEEDS])
    row = table1(plan, runs, shapes).iloc[0]
    assert row["shape"] == "n/a" and row["n"] == "0/4" and pd.isna(row["agrees"])
    assert row["not_trained"] == f"mlp_widen_barrier: 4 skipped ({reason})"
    assert row["baseline_shape"] == "mlp_deep: NB"


# --- Table 1 reads true: the interval behind each word, why a layer tag is missing, the paper's parts -----------


@pytest.mark.parametrize("diffs,caveat", [
    ([-40.95, -40.95], "unreliable: 2 seeds < 3, zero width"),   # two equal paired differences
    ([-1.0, -3.0], "unreliable: 2 seeds < 3"),
    ([1.0, 1.0, 1.0], "unreliable: zero width"),
    ([1.0, 1.2, 0.9], ""),
    ([-3.0], "1 seed: no interval"),
])
def test_an_interval_of_few_seeds_or_no_width_is_marked(diffs, caveat):
    low, high = mean_interval(np.array(diffs), 0.95)
    assert interval_caveat(len(diffs), low, high) == caveat
    text = interval_text(float(np.mean(diffs)), low, high, len(diffs))
    assert text.endswith(f"({caveat})") if caveat else "(" not in text
    assert interval_text(np.nan, np.nan, np.nan, 0) == "n/a"


def two_seed_plan() -> Plan:
    """A pooled row of a ResNet and a VGG comparison (group paths swept), and a one-setting row that sweeps
    no group paths, each with 2 seeds, against the paper's labels of a shape and a layer tag."""
    vgg = {"model": {"arch": "vgg11", "width": 4}}
    settings = {"base": {"experiment": "E2"}, "vgg": {"experiment": "E15", "run": vgg},
                "resnet_nobn": {"experiment": "E15", "baseline": "base", "run": {"model": {"norm": "none"}}},
                "vgg_nobn": {"experiment": "E15", "baseline": "vgg", "run": {"model": {"norm": "none"}}},
                "less_data": {"experiment": "E8", "baseline": "base", "paths": {"groups": False}}}
    rows = [{"intervention": "no BatchNorm", "settings": ["resnet_nobn", "vgg_nobn"], "paper_shape": "NB",
             "paper_acc": "worse"},
            {"intervention": "less data", "settings": ["less_data"], "paper_shape": "NB/L-LB", "paper_acc": "worse"}]
    return Plan({**config(settings, rows, seeds=[0, 1]), "paths": {"groups": True}})


def two_seed_tables(with_vgg_groups: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    acc = {"base": [0.90, 0.92], "vgg": [0.80, 0.82], "resnet_nobn": [0.70, 0.74], "vgg_nobn": [0.79, 0.80],
           "less_data": [0.50, 0.52]}
    runs = pd.DataFrame([run_row(s, i, a) for s, values in acc.items() for i, a in enumerate(values)])
    shapes = [shape_row(s, i, "NB", 0.0) for s in acc for i in range(2)]
    for s, group in (("base", "block1"), ("resnet_nobn", "block1"), ("vgg", "conv1"), ("vgg_nobn", "conv1")):
        if with_vgg_groups or not s.startswith("vgg"):
            shapes += [shape_row(s, i, "NB", 0.0, path="group", group=group) for i in range(2)]
    return runs, pd.DataFrame(shapes)


def test_a_pooled_row_shows_each_comparisons_interval_and_names_its_baselines():
    t1 = table1(two_seed_plan(), *two_seed_tables())
    nobn, less = t1.iloc[0], t1.iloc[1]
    assert nobn["comparison"] == "resnet_nobn vs base; vgg_nobn vs vgg" and less["comparison"] == "less_data vs base"
    # resnet_nobn: -18, -20 pp (worse); vgg_nobn: -1, -2 pp (same): the row's word is mixed
    resnet = mean_interval(np.array([-20.0, -18.0]), 0.95)
    vgg = mean_interval(np.array([-1.0, -2.0]), 0.95)
    assert nobn["acc_word"] == "mixed" and nobn["acc_pooled"]
    assert nobn["acc_interval"] == (f"resnet_nobn: -19.00 [{resnet[0]:+.2f}, {resnet[1]:+.2f}] (unreliable: 2 seeds < 3) "
                                    f"worse; vgg_nobn: -1.50 [{vgg[0]:+.2f}, {vgg[1]:+.2f}] (unreliable: 2 seeds < 3) same")
    # the pooled interval stays in acc_ci_*, flagged as pooled, and is not what table1.md prints for the row
    pooled = mean_interval(np.array([-20.0, -18.0, -1.0, -2.0]), 0.95)
    assert (nobn["acc_ci_low"], nobn["acc_ci_high"]) == pytest.approx(pooled)
    text = table1_markdown(t1)
    line = next(x for x in text.splitlines() if x.startswith("|  | no BatchNorm |"))
    assert f"[{pooled[0]:+.2f}, {pooled[1]:+.2f}]" not in line and nobn["acc_interval"] in line
    assert "| resnet_nobn vs base; vgg_nobn vs vgg |" in line
    # one comparison with two equal differences: the interval of zero width is printed with its mark
    assert (less["acc_ci_low"], less["acc_ci_high"]) == (pytest.approx(-40.0), pytest.approx(-40.0))
    assert less["acc_word"] == "worse" and less["acc_ci_caveat"] == "unreliable: 2 seeds < 3, zero width"
    assert "| -40.00 [-40.00, -40.00] (unreliable: 2 seeds < 3, zero width) | worse |" in text


def test_a_missing_layer_tag_says_why_and_the_papers_tags_have_their_own_column():
    t1 = table1(two_seed_plan(), *two_seed_tables())
    nobn, less = t1.iloc[0], t1.iloc[1]
    assert nobn["layer_barrier"] == "none", "both comparisons have group paths"
    assert less["layer_barrier"] == "not swept" and less["layer_missing"] == "less_data vs base: not swept"
    # the VGG runs' group paths missing (their sweeps failed or never ran): one tag, the other comparison says why
    partial = table1(two_seed_plan(), *two_seed_tables(with_vgg_groups=False)).iloc[0]
    assert partial["layer_barrier"] == "none" and partial["layer_missing"] == "vgg_nobn vs vgg: not trained"
    runs, shapes = two_seed_tables()
    untrained = table1(two_seed_plan(), runs[~runs["setting"].isin(["resnet_nobn", "vgg_nobn"])], shapes).iloc[0]
    assert untrained["layer_barrier"] == "not trained" and untrained["shape"] == "n/a"
    assert set(LAYER_MISSING) == {"no baseline", "not swept", "no layer groups", "not trained", "not finite"}
    # "NB/L-LB": the full-path label and the layer tag, each beside the measured column it is compared with
    assert (less["paper_shape"], less["paper_layer"]) == ("NB", "L-LB")
    assert (nobn["paper_shape"], nobn["paper_layer"]) == ("NB", "")
    assert pd.isna(less["agrees_layer"]), "nothing measured to compare the paper's L-LB with"
    text = table1_markdown(t1)
    assert "| less_data vs base |  | NB | NB 2/2 | not swept |" in text
    assert "| 2/2 | NB | L-LB | worse | Table 1 |" in text
