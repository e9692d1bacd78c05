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
from linpath.report.tables import (SummaryRules, accuracy_word, agreement_counts, combined_word,
                                   experiment_table, label_fractions, label_set, layer_barrier_tag, mean_interval,
                                   paper_parts, table1, table1_markdown)

RULES = SummaryRules()
SEEDS = [0, 1, 2, 3]


def config(settings: dict, table1_rows: list[dict], seeds=SEEDS, shapes: dict | None = None) -> dict:
    return {"seeds": seeds, "base": {"model": {"arch": "resnet18", "width": 4}, "data": {"dataset": "digits"}},
            "settings": settings, "table1": table1_rows, "shapes": shapes or {}}


def shape_row(setting: str, seed: int, label: str, delta: float, *, path="full", group="all") -> dict:
    return {"run_id": f"{setting}-s{seed}", "setting": setting, "seed": seed, "path": path, "start": "init",
            "group": group, "param_group": "all", "bn_mode": "interpolate", "split": "train", "label": label,
            "delta": delta, "monotonic": label != "B", "label_rule": ShapeThresholds().rule()}


def run_row(setting: str, seed: int, test_acc: float, model: str = "resnet18") -> dict:
    return {"run_id": f"{setting}-s{seed}", "setting": setting, "seed": seed, "test_acc": test_acc,
            "train_acc": 1.0, "model": model, "relative_distance_mean": 0.5, "relative_distance_global": 0.4}


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
