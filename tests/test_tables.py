"""Labels over seeds, layer-barrier tags, the accuracy test, agreement with the paper and the
rank correlation of Figure A11, on hand-made runs and shape rows (no training: the rules alone)."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from linpath.study.plan import Plan
from linpath.report.figures import rank_correlations, shape_vs_accuracy
from linpath.paths.shapes import ShapeThresholds, curve_metrics
from linpath.report.tables import (SummaryRules, _ordered, accuracy_change, accuracy_word, agreement_counts,
                                   combined_word, experiment_table, full_delta, group_barrier, label_counts,
                                   label_fractions, label_set, layer_barrier_tag, mean_interval, paper_parts,
                                   setting_summary, table1, table1_markdown)

from conftest import SEEDS, config, run_row, shape_row

RULES = SummaryRules()


# --- labels over seeds -------------------------------------------------------------------


def test_fractions_show_every_label_with_its_count():
    counts = Counter({"NB": 3, "B": 7})
    assert label_fractions(counts) == "NB 3/10, B 7/10"
    assert label_fractions(Counter()) == "n/a"


@pytest.mark.parametrize("counts,share,expected", [
    ({"B": 7, "NB": 3}, 0.25, ["NB", "B"]),   # a 3-of-10 split is kept visible
    ({"B": 8, "NB": 2}, 0.25, ["B"]),         # 2 of 10 is below a quarter
    ({"B": 1, "NB": 1}, 0.25, ["NB", "B"]),   # 2 seeds: each seed counts
    ({"B": 7, "NB": 3}, 0.5, ["B"]),          # a majority rule hides the split
    ({"B": 5, "NB": 5}, 0.5, ["NB", "B"]),    # exactly the share holds
])
def test_label_set_keeps_labels_with_at_least_the_share(counts, share, expected):
    assert label_set(Counter(counts), share) == expected


def test_a_nan_label_does_not_crash_table1_and_is_shown():
    settings = {"base": {"experiment": "E2"}, "less_data": {"experiment": "E8", "baseline": "base"}}
    plan = Plan(config(settings, [{"intervention": "less data", "settings": ["less_data"], "paper_shape": "NB"}]))
    shapes = pd.DataFrame([shape_row("base", s, "NB", 0.0) for s in SEEDS]
                          + [shape_row("less_data", s, "NaN" if s == 0 else "NB", np.nan if s == 0 else 0.0)
                             for s in SEEDS])
    runs = pd.DataFrame([run_row(n, s, 0.9) for n in settings for s in SEEDS])
    t1 = table1(plan, runs, shapes)
    assert t1.loc[0, "shape_fractions"] == "NB 3/4, NaN 1/4"
    assert t1.loc[0, "shape"] == "NB/NaN"
    assert t1.loc[0, "agrees_shape"] is np.False_ or t1.loc[0, "agrees_shape"] == False  # noqa: E712
    table1_markdown(t1)


# --- layer-barrier tags ---------------------------------------------------------------------


@pytest.mark.parametrize("mine,baseline,expected", [
    (0.30, 0.0, "H-LB"),      # barriers against a barrier-free baseline: higher, not undefined
    (0.30, 0.001, "H-LB"),    # a ratio against a near-zero baseline does not explode into noise either
    (0.005, 0.0, "none"),     # both below the floor: no barrier on either side
    (0.0, 0.30, "L-LB"),
    (0.20, 0.18, "none"),     # within the factor
    (0.25, 0.20, "none"),     # exactly the factor is not above it
    (0.2501, 0.20, "H-LB"),
    (None, 0.2, None),        # no group paths: no tag
])
def test_layer_barrier_tag(mine, baseline, expected):
    assert layer_barrier_tag(mine, baseline, RULES) == expected


def test_h_lb_against_a_barrier_free_baseline_in_table1():
    settings = {"base_nowd": {"experiment": "E9"},
                "random_label_init": {"experiment": "E4", "baseline": "base_nowd"}}
    plan = Plan(config(settings, [{"intervention": "pre-train on random labels", "settings": ["random_label_init"],
                                   "paper_shape": "H-LB", "paper_acc": "worse"}]))
    shapes = []
    for s in SEEDS:
        shapes.append(shape_row("base_nowd", s, "NB", 0.0))
        shapes.append(shape_row("random_label_init", s, "NB", 0.0))
        for g in ("block1", "block2"):
            shapes.append(shape_row("base_nowd", s, "NB", 0.0, path="group", group=g))
            shapes.append(shape_row("random_label_init", s, "B", 0.4, path="group", group=g))
    runs = pd.DataFrame([run_row("base_nowd", s, 0.90) for s in SEEDS]
                        + [run_row("random_label_init", s, 0.90 - 0.01 * (1 + s % 2)) for s in SEEDS])
    t1 = table1(plan, runs, pd.DataFrame(shapes))
    row = t1.iloc[0]
    assert row["layer_barrier"] == "H-LB" and row["agrees_layer"] == True  # noqa: E712
    assert pd.isna(row["agrees_shape"]), "the paper states no full-path label for this row: nothing to compare"
    assert row["acc_word"] == "worse" and row["agrees_acc"] == True  # noqa: E712
    assert row["agrees"] == True  # noqa: E712


# --- the accuracy test ----------------------------------------------------------------------


def test_interval_is_a_student_t_interval_of_the_mean():
    diffs = np.array([-1.0, -2.0, -1.5, -0.5])
    low, high = mean_interval(diffs, 0.95)
    half = 3.182446305284263 * diffs.std(ddof=1) / 2  # t(0.975, 3) · s / √4
    assert (low, high) == pytest.approx((diffs.mean() - half, diffs.mean() + half))
    assert accuracy_word(low, high) == "worse"


@pytest.mark.parametrize("diffs,word", [
    ([-1.0, -0.2], "same"),          # two seeds: the interval is wide and contains 0
    ([-1.0, 0.5, -0.7, 0.2], "same"),
    ([1.0, 1.2, 0.9, 1.1], "better"),
    ([-3.0], "same"),                # one seed: no interval, nothing can be claimed
    ([0.5, 0.5, 0.5], "better"),     # no spread: the interval is the point
])
def test_accuracy_word_says_same_when_the_interval_contains_zero(diffs, word):
    low, high = mean_interval(np.array(diffs), 0.95)
    assert (low <= 0 <= high) == (word == "same")
    assert accuracy_word(low, high) == word


def test_combined_word():
    assert combined_word(["worse", "worse"]) == "worse"
    assert combined_word(["worse", "worse", "same"]) == "often worse"
    assert combined_word(["worse", "same"]) == "mixed"
    assert combined_word([]) == "n/a"


# --- agreement with the paper --------------------------------------------------------------


@pytest.mark.parametrize("paper,full,layer", [
    ("NB", {"NB"}, None),
    ("NB/L-LB", {"NB"}, {"L-LB"}),
    ("H-LB", None, {"H-LB"}),
    ("B/NB/P", {"B", "NB", "P"}, None),
    ("NB / B", {"NB", "B"}, None),
])
def test_paper_labels_split_into_full_path_and_layer_parts(paper, full, layer):
    assert paper_parts(paper) == (full, layer)


def two_setting_plan(paper_shape: str, paper_acc: str = "worse") -> Plan:
    settings = {"base": {"experiment": "E2"}, "a": {"experiment": "E6", "baseline": "base"},
                "b": {"experiment": "E6", "baseline": "base"}}
    return Plan(config(settings, [{"intervention": "partial", "settings": ["a", "b"], "paper_shape": paper_shape,
                                   "paper_acc": paper_acc}]))


def labelled(labels: dict[str, list[str]]) -> pd.DataFrame:
    return pd.DataFrame([shape_row(name, s, label, 0.5 if label == "B" else 0.0)
                         for name, per_seed in labels.items() for s, label in zip(SEEDS, per_seed)])


def runs_for(names, accs=None) -> pd.DataFrame:
    return pd.DataFrame([run_row(n, s, (accs or {}).get(n, 0.9)) for n in names for s in SEEDS])


def test_a_row_with_extra_labels_does_not_agree():
    shapes = labelled({"base": ["P"] * 4, "a": ["B", "B", "NB", "NB"], "b": ["P"] * 4})
    runs = runs_for(["base", "a", "b"])
    ours = table1(two_setting_plan("B/NB/P"), runs, shapes).iloc[0]
    assert ours["shape"] == "NB/B/P" and ours["agrees_shape"] == True  # noqa: E712
    # Sharing one token used to count as agreement; equal sets are needed now.
    assert table1(two_setting_plan("B/NB"), runs, shapes).iloc[0]["agrees_shape"] == False  # noqa: E712
    assert table1(two_setting_plan("NB"), runs, shapes).iloc[0]["agrees_shape"] == False  # noqa: E712


def test_accuracy_agreement_is_exact_and_same_is_not_worse():
    shapes = labelled({"base": ["NB"] * 4, "a": ["NB"] * 4, "b": ["NB"] * 4})
    runs = pd.DataFrame([run_row("base", s, 0.90) for s in SEEDS]
                        + [run_row("a", s, 0.90 + 0.002 * (-1) ** s) for s in SEEDS]
                        + [run_row("b", s, 0.90 + 0.002 * (-1) ** s) for s in SEEDS])
    row = table1(two_setting_plan("NB", "worse"), runs, shapes).iloc[0]
    assert row["acc_word"] == "same" and row["agrees_acc"] == False  # noqa: E712
    assert row["acc_ci_low"] < 0 < row["acc_ci_high"]
    low, high = mean_interval(np.array([0.2, -0.2, 0.2, -0.2]), 0.95)
    assert row["acc_words"].startswith(f"a: +0.00 [{low:+.2f}, {high:+.2f}] same; b: ")


def test_agreement_counts_and_the_summary_line():
    shapes = labelled({"base": ["P"] * 4, "a": ["NB"] * 4, "b": ["NB"] * 4})
    t1 = table1(two_setting_plan("NB", "same"), runs_for(["base", "a", "b"]), shapes)
    assert agreement_counts(t1) == {"shape": (1, 1), "layer": (0, 0), "acc": (1, 1)}
    text = table1_markdown(t1)
    assert "shape 1/1 rows; layer 0/0 rows; acc 1/1 rows" in text
    assert "NB 8/8" in text


# --- experiment tables -----------------------------------------------------------------------


def test_experiment_table_metrics_and_labels_per_row():
    spec = {"rows": [{"label": "LR 0.1", "setting": "high", "paper_distance": "1.03"},
                     {"label": "LR 0.001", "setting": "low", "paper_distance": "0.22"}],
            "columns": ["relative_distance_mean", "nonmonotonic_pct", "delta"]}
    runs = pd.DataFrame([run_row("high", s, 0.9) for s in SEEDS])
    runs["relative_distance_mean"] = [1.0, 1.2, 1.1, 0.9]
    shapes = labelled({"high": ["B", "NB", "NB", "NB"]})
    table = experiment_table("table_distance", spec, runs, shapes)
    high = table.set_index("setting").loc["high"]
    assert high["relative_distance_mean_mean"] == pytest.approx(1.05)
    assert high["nonmonotonic_pct_mean"] == pytest.approx(25.0)
    assert high["delta_mean"] == pytest.approx(0.125)
    assert high["shape_fractions"] == "NB 3/4, B 1/4" and high["paper_distance"] == "1.03"
    low = table.set_index("setting").loc["low"]
    assert low["n_seeds"] == 0 and math.isnan(low["relative_distance_mean_mean"]) and low["shape"] == "n/a"
    with pytest.raises(KeyError, match="unknown column 'bogus'"):
        experiment_table("t", {"rows": [], "columns": ["bogus"]}, runs, shapes)


# --- Figure A11's rank correlation -----------------------------------------------------------


def test_rank_correlation_includes_settings_without_group_paths_and_splits_families():
    settings = {"base": {"experiment": "E2"},
                "fixed_lr_mid": {"experiment": "E10", "baseline": "base"},
                "fixed_lr_high": {"experiment": "E10", "baseline": "base"},
                "more_wd": {"experiment": "E9", "baseline": "base"},
                "mlp_deep": {"experiment": "E13", "run": {"model": {"arch": "mlp"}}},
                "mlp_wide": {"experiment": "E13", "baseline": "mlp_deep", "run": {"model": {"arch": "mlp"}}}}
    plan = Plan(config(settings, [{"intervention": n, "settings": [n]} for n in settings if n not in ("base", "mlp_deep")]))
    full_delta = {"base": 0.0, "fixed_lr_mid": 0.3, "fixed_lr_high": 0.1, "more_wd": 0.2, "mlp_deep": 0.5, "mlp_wide": 0.0}
    acc = {"base": 0.90, "fixed_lr_mid": 0.93, "fixed_lr_high": 0.91, "more_wd": 0.92, "mlp_deep": 0.8, "mlp_wide": 0.85}
    shapes = [shape_row(n, s, "B" if d else "NB", d) for n, d in full_delta.items() for s in SEEDS]
    # Group paths only for base and more_wd: E10 has none, and must still be in the full-path ρ.
    shapes += [shape_row(n, s, "NB", 0.1, path="group", group="block1") for n in ("base", "more_wd") for s in SEEDS]
    runs = pd.DataFrame([run_row(n, s, a, "mlp" if n.startswith("mlp") else "resnet18")
                         for n, a in acc.items() for s in SEEDS])
    points = shape_vs_accuracy(plan, pd.DataFrame(shapes), runs)
    assert set(points["setting"]) == {"fixed_lr_mid", "fixed_lr_high", "more_wd", "mlp_wide"}
    assert set(points.loc[points["experiment"] == "E10", "setting"]) == {"fixed_lr_mid", "fixed_lr_high"}
    assert points.set_index("setting").loc["fixed_lr_mid", "family"] == "resnet"
    assert math.isnan(points.set_index("setting").loc["fixed_lr_mid", "group_delta_change"])
    rho = rank_correlations(points, "full_delta_change").set_index("family")
    assert rho.loc["resnet", "n"] == 3 and rho.loc["resnet", "rho"] == pytest.approx(1.0)
    assert rho.loc["mlp", "n"] == 1 and math.isnan(rho.loc["mlp", "rho"]), "one point: no correlation"
    group = rank_correlations(points, "group_delta_change")
    assert list(group["family"]) == ["resnet"] and group.iloc[0]["n"] == 1


# --- shapes: the rules the tables rest on ---------------------------------------------------


def test_a_plateau_with_a_small_wiggle_stays_a_plateau():
    alphas = np.linspace(0, 1, 51)
    plateau = np.where(alphas < 0.8, 2.30, 2.30 - (alphas - 0.8) / 0.2 * 2.29)
    wiggly = plateau + np.where((alphas > 0.3) & (alphas < 0.4), 0.03, 0.0)
    for curve in (plateau, wiggly):
        m = curve_metrics(alphas, curve)
        assert m["label"] == "P", m
    assert curve_metrics(alphas, wiggly)["delta"] == pytest.approx(0.03)
    # The same wiggle on a nearly flat path (range 0.1) is a barrier: the rule is scale-aware.
    flat = 2.3 - 0.1 * alphas + np.where((alphas > 0.3) & (alphas < 0.4), 0.03, 0.0)
    assert curve_metrics(alphas, flat)["label"] == "B"


@pytest.mark.parametrize("points", [5, 9, 21, 41, 101])
def test_a_real_barrier_is_b_at_any_grid_that_contains_it(points):
    """Chance level, down to a valley at α = 0.25, over a barrier peaking at α = 0.5, down to 0.05:
    every grid holding the valley and the peak labels it B and puts α* on the peak."""
    knots_a, knots_l = [0.0, 0.25, 0.5, 0.75, 1.0], [2.3, 1.0, 1.8, 0.6, 0.05]
    alphas = np.linspace(0, 1, points)
    m = curve_metrics(alphas, np.interp(alphas, knots_a, knots_l))
    assert m["label"] == "B" and m["delta"] == pytest.approx(0.8)
    assert m["rise_alpha"] == pytest.approx(0.5) and m["rise_start_alpha"] == pytest.approx(0.25)
    assert m["above_start"] is False and m["barrier_alpha"] == 0.0, "the global maximum is L(0), not the barrier"


# --- per-seed labels and group barriers, the summary rules, the accuracy test, one row at a time ------


def shape(setting, label, delta, seed=0, **where):
    row = {"setting": setting, "seed": seed, "path": "full", "start": "init", "group": "all", "bn_mode": "interpolate",
           "split": "train", "label": label, "delta": delta, "label_rule": "rule"}
    row.update(where)
    return row


DISTRACTORS = [dict(split="test"), dict(start="other_init"), dict(bn_mode="recompute")]


def test_label_counts_and_deltas_read_the_main_path_only():
    rows = [shape("s", "NB", 0.0, seed=0), shape("s", None, np.nan, seed=1)]
    rows += [shape("s", "B", 9.0, **where) for where in DISTRACTORS + [dict(path="group", group="block1")]]
    shapes = pd.DataFrame(rows)
    assert label_counts(shapes, ["s"]) == Counter({"NB": 1, "NaN": 1}), "a missing label counts as NaN"
    assert full_delta(shapes, "s") == 0.0
    assert full_delta(shapes, "other") is None


def test_group_barrier_reads_group_paths_from_init_on_the_train_split_only():
    rows = [shape("s", "B", 0.5, path="group", group="block1"), shape("s", "NB", 0.25, path="group", group="block2")]
    rows += [shape("s", "B", 9.0, path="group", group="block1", **where) for where in DISTRACTORS]
    rows += [shape("s", "B", 9.0)]
    shapes = pd.DataFrame(rows)
    assert group_barrier(shapes, "s") == pytest.approx(0.375)
    assert group_barrier(shapes[shapes["path"] == "full"], "s") is None


def test_ordered_puts_unknown_labels_last_in_name_order():
    assert _ordered(["zz", "B", "aa", "none", "NB", "H-LB", "NaN", "P", "L-LB"]) == \
           ["NB", "B", "P", "NaN", "H-LB", "L-LB", "none", "aa", "zz"]


@pytest.mark.parametrize("mine,baseline", [(float("nan"), 0.2), (0.2, float("nan")), (float("inf"), 0.2),
                                           (0.2, None), (None, None)])
def test_layer_barrier_tag_needs_two_finite_means(mine, baseline):
    assert layer_barrier_tag(mine, baseline, SummaryRules()) is None


def test_layer_barrier_tag_lower_at_exactly_the_ratio_is_none():
    assert layer_barrier_tag(0.2, 0.25, SummaryRules()) == "none"
    assert layer_barrier_tag(0.2, 0.2501, SummaryRules()) == "L-LB"


def test_summary_rules_from_config():
    rules = SummaryRules.from_config({"label_min_share": "0.5", "acc_confidence": 0.9, "barrier_tol": 0.3,
                                      "layer_barrier_ratio": 2})
    assert rules == SummaryRules(label_min_share=0.5, acc_confidence=0.9, layer_barrier_ratio=2.0)
    assert isinstance(rules.layer_barrier_ratio, float)
    assert SummaryRules.from_config(None) == SummaryRules() == SummaryRules.from_config({})
    assert rules.acc_rule().startswith("better / worse: the 90% Student-t interval of the mean paired change lies "
                                       "above / below 0; else same. ")
    assert SummaryRules(layer_barrier_ratio=1.5, layer_barrier_floor=0.02).layer_rule() == \
           "H-LB / L-LB: mean group delta above / below the baseline's by a factor 1.5, both raised to at least 0.02"
    assert SummaryRules(label_min_share=0.3).label_rule() == \
           "a label holds for a setting when at least 0.3 of its seeds show it"


# --- the accuracy test -------------------------------------------------------------------------------


def test_accuracy_change_is_in_points_and_paired_by_seed():
    runs = pd.DataFrame([{"setting": "a", "seed": 0, "test_acc": 0.90}, {"setting": "a", "seed": 1, "test_acc": 0.80},
                         {"setting": "a", "seed": 5, "test_acc": 0.10},
                         {"setting": "b", "seed": 1, "test_acc": 0.75}, {"setting": "b", "seed": 0, "test_acc": 0.95}])
    assert accuracy_change(runs, "a", "b") == pytest.approx([-5.0, 5.0])


def test_mean_interval_with_two_seeds_and_without_spread():
    low, high = mean_interval([1.0, 3.0], 0.95)
    half = 12.706204736174704 * 1.0  # t(0.975, 1) · s / √2 with s = √2
    assert (low, high) == (pytest.approx(2.0 - half), pytest.approx(2.0 + half))
    assert mean_interval([1.0, 1.0, 1.0], 0.95) == (1.0, 1.0)
    assert mean_interval([2, 2], 0.95) == (2.0, 2.0)
    low, high = mean_interval([0.0, 1.0, 2.0], 0.5)
    assert high - low == pytest.approx(2 * 0.8164965809277261 / math.sqrt(3)), "t(0.75, 2) · s / √3 with s = 1"


def test_combined_word_takes_the_most_frequent_word():
    assert combined_word(["better", "better", "same"]) == "often better"
    assert combined_word(["same", "better", "better"]) == "often better"
    assert combined_word(["better", "same", "worse"]) == "mixed"


def test_paper_labels_with_commas():
    assert paper_parts("NB, B") == ({"NB", "B"}, None)
    assert paper_parts("B,H-LB") == ({"B"}, {"H-LB"})
    assert paper_parts("") == (None, None) and paper_parts(None) == (None, None)


def test_setting_summary_without_a_baseline():
    runs = pd.DataFrame([{"setting": "s", "seed": 0, "test_acc": 0.5}])
    shapes = pd.DataFrame([shape("s", "NB", 0.0), shape("s", "B", 0.5, path="group", group="block1")])
    plan = Plan({"seeds": [0], "base": {}, "settings": {"s": {"experiment": "E2"}}, "table1": []})
    out = setting_summary(plan, runs, shapes, "s", None, SummaryRules())
    assert out["baseline"] is None and out["baseline_group_delta"] is None and out["layer_tag"] is None
    assert out["group_delta"] == 0.5 and out["labels"] == ["NB"]
    assert len(out["diffs"]) == 0 and out["word"] is None and out["ci"] == (-math.inf, math.inf)


def test_agreement_counts_count_only_stated_parts():
    t1 = pd.DataFrame({"agrees_shape": [True, False, None], "agrees_layer": [None, None, None],
                       "agrees_acc": [True, True, False]})
    for col in t1.columns:
        t1[col] = t1[col].astype("boolean")
    assert agreement_counts(t1) == {"shape": (1, 2), "layer": (0, 0), "acc": (2, 3)}


def test_table1_single_setting_rows_and_the_ci_of_pooled_rows():
    settings = {"base": {"experiment": "E2"}, "a": {"experiment": "E9", "baseline": "base"},
                "b": {"experiment": "E9", "baseline": "base"}, "other": {"experiment": "E9"}}
    rows = [{"intervention": "a", "settings": ["a"], "paper_shape": "NB", "paper_acc": "worse"},
            {"intervention": "a and b", "settings": ["a", "b"]},
            {"intervention": "against other", "settings": ["a"], "baseline": "other"},
            {"intervention": "untrained", "settings": ["nothing_here"]}]
    plan = Plan({"seeds": [0, 1, 2], "base": {}, "settings": settings, "table1": rows, "shapes": {"acc_confidence": 0.5}})
    acc = {"base": [0.90, 0.90, 0.90], "a": [0.80, 0.82, 0.81], "b": [0.95, 0.96, 0.93], "other": [0.5, 0.5, 0.5]}
    runs = pd.DataFrame([{"setting": s, "seed": i, "test_acc": v, "status": "trained"}
                         for s, vs in acc.items() for i, v in enumerate(vs)])
    shapes = pd.DataFrame([shape(s, "NB", 0.0, seed=i) for s in acc for i in range(3)])
    t1 = table1(plan, runs, shapes)
    a_diffs = np.array([-10.0, -8.0, -9.0])
    assert (t1.iloc[0]["acc_ci_low"], t1.iloc[0]["acc_ci_high"]) == tuple(pytest.approx(v) for v in mean_interval(a_diffs, 0.5))
    pooled = np.array([-10.0, -8.0, -9.0, 5.0, 6.0, 3.0])
    assert (t1.iloc[1]["acc_ci_low"], t1.iloc[1]["acc_ci_high"]) == tuple(pytest.approx(v) for v in mean_interval(pooled, 0.5))
    assert t1.iloc[1]["acc_word"] == "mixed" and t1.iloc[0]["acc_word"] == "worse"
    assert t1.iloc[2]["acc_change_pp_mean"] == pytest.approx(100 * (0.81 - 0.5)), "the row's baseline wins"
    assert t1.iloc[0]["layer_barrier"] == "not swept" and t1.iloc[0]["group_delta"] == "", "no group paths planned"
    assert t1.iloc[0]["layer_missing"] == "a vs base: not swept"
    assert not t1.iloc[0]["acc_pooled"] and t1.iloc[1]["acc_pooled"]
    assert list(t1["comparison"]) == ["a vs base", "a vs base; b vs base", "a vs other", "nothing_here (no baseline)"]
    assert t1.iloc[3]["layer_barrier"] == "no baseline" and t1.iloc[3]["acc_interval"] == "n/a"
    assert t1.iloc[0]["agrees_shape"] == True and t1.iloc[0]["agrees_acc"] == True  # noqa: E712
    assert t1.iloc[0]["shape_rule"] == f"rule; {SummaryRules().label_rule()}", "the label rule of the shapes read"
    empty = t1.iloc[3]
    assert (empty["settings"], empty["shape"], empty["shape_fractions"], empty["acc_word"]) == ("", "n/a", "n/a", "n/a")
    assert math.isnan(empty["acc_change_pp_mean"]) and math.isnan(empty["acc_ci_low"]) and math.isnan(empty["acc_ci_high"])
    assert math.isnan(empty["acc_change_pp_std"]) and empty["n_seeds"] == 0 and empty["figure"] == ""
    assert pd.isna(empty["agrees"])
    no_shapes = table1(plan, runs, shapes.iloc[:0])
    assert no_shapes.iloc[0]["shape_rule"].startswith(ShapeThresholds().rule())
