"""The labelling rule at its edges (README "How a path is labelled"): Δ exactly at the threshold, a zero
tolerance, rises between non-adjacent points, curves too short or not finite, and the per-path table and
the distance travelled on inputs the crafted curves of test_shapes do not reach.

Thresholds here are powers of two where a test needs Δ to *equal* a threshold, so that the float
arithmetic is exact and the test asks the rule, not the rounding."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from linpath.paths.shapes import ShapeThresholds, alpha_half, curve_metrics, largest_rise, max_rise, shape_table
from linpath.engine.train import distances

A4 = [0.0, 0.25, 0.5, 0.75]


# --- Δ against its threshold ----------------------------------------------------------------


@pytest.mark.parametrize("thresholds,losses", [
    # the absolute floor decides: Δ = 0.25 = barrier_tol, and 0.5 · |1 − 0.5| < 0.25
    (ShapeThresholds(barrier_tol=0.25, barrier_rel=0.5), [1.0, 0.5, 0.75, 0.5]),
    # the scale-aware part decides: Δ = 0.125 = 0.0625 · |3 − 1|, above the floor 0.0625
    (ShapeThresholds(barrier_tol=0.0625, barrier_rel=0.0625), [3.0, 1.0, 1.125, 1.0]),
])
def test_delta_equal_to_the_threshold_is_not_a_barrier(thresholds, losses):
    m = curve_metrics(A4, losses, thresholds)
    assert m["delta"] == m["barrier_threshold"], "the crafted rise sits exactly on the threshold"
    assert m["label"] != "B" and m["monotonic"] is True, "the rule is Δ > threshold, not Δ >= threshold"
    above = list(losses)
    above[2] += 2.0**-10  # the same rise, a hair higher
    m = curve_metrics(A4, above, thresholds)
    assert m["delta"] > m["barrier_threshold"]
    assert m["label"] == "B" and m["monotonic"] is False


def test_the_threshold_is_the_larger_of_floor_and_share_of_the_range():
    t = ShapeThresholds(barrier_tol=0.25, barrier_rel=0.5)
    assert t.barrier_threshold(1.0, 0.5) == 0.25      # 0.5 · 0.5 = 0.25: a tie
    assert t.barrier_threshold(2.0, 0.5) == 0.75      # 0.5 · 1.5 beats the floor
    assert t.barrier_threshold(0.5, 2.0) == 0.75      # the range is |L(0) − L(1)|: a rising path too
    assert t.barrier_threshold(1.0, 1.0) == 0.25      # a flat path keeps the floor
    assert ShapeThresholds().barrier_threshold(2.3, 0.1) == pytest.approx(0.05 * 2.2)


def test_zero_tolerance_flat_and_falling_curves_are_not_barriers():
    zero = ShapeThresholds(barrier_tol=0.0, barrier_rel=0.0)
    flat = curve_metrics(A4, [1.0, 1.0, 1.0, 1.0], zero)
    assert flat["delta"] == 0.0 and flat["barrier_threshold"] == 0.0
    assert flat["label"] == "NB" and flat["monotonic"] is True
    assert math.isnan(flat["alpha_half"]), "a flat loss never falls half-way"
    falling = curve_metrics(A4, [1.0, 0.75, 0.5, 0.25], zero)
    assert falling["delta"] == 0.0 and falling["label"] == "NB" and falling["monotonic"] is True
    # ... while under a zero tolerance any rise at all is one
    tiny = curve_metrics(A4, [1.0, 0.5, 0.5 + 2.0**-20, 0.25], zero)
    assert tiny["label"] == "B" and tiny["delta"] == 2.0**-20


def test_a_rise_between_non_adjacent_points():
    """[1.0, 0.2, 0.5, 0.9]: no single step rises by more than 0.4, but 0.2 → 0.9 rises by 0.7."""
    losses = [1.0, 0.2, 0.5, 0.9]
    delta, bottom, top = largest_rise(losses)
    assert delta == pytest.approx(0.7) and (bottom, top) == (1, 3)
    m = curve_metrics(A4, losses)
    assert m["delta"] == pytest.approx(0.7) and m["label"] == "B"
    assert m["rise_start_alpha"] == 0.25 and m["rise_alpha"] == 0.75
    assert m["barrier_alpha"] == 0.0 and m["above_start"] is False, "the highest point is still L(0)"
    assert m["barrier_height"] == pytest.approx(1.0 - 1.0)


@pytest.mark.parametrize("losses,expected", [
    ([1.0, 2.0], (1.0, 0, 1)),               # two points: the rise from the start to the end
    ([2.0, 1.0], (0.0, 0, 0)),
    ([2.0], (0.0, 0, 0)),                    # one point: nothing can rise
    ([], (0.0, 0, 0)),
    ([3.0, 2.0, 2.0, 1.0], (0.0, 0, 0)),     # non-increasing: no rise is located anywhere
    ([1.0, 1.0], (0.0, 0, 0)),
    ([2, 1, 3], (2.0, 1, 2)),                # integer losses are losses too
])
def test_largest_rise_and_where_it_is(losses, expected):
    assert largest_rise(losses) == expected
    assert max_rise(losses) == expected[0]


@pytest.mark.parametrize("losses", [[2.0, float("nan"), 1.0], [2.0, None, 3.0], [float("inf"), 1.0, 2.0]])
def test_a_missing_or_infinite_loss_gives_no_shape(losses):
    """NaN (or a missing value) makes Δ undefined and locates no rise; the label is the string "NaN",
    which the tables count as its own label."""
    if any(v is None or math.isnan(v) for v in losses):
        delta, bottom, top = largest_rise(losses)
        assert math.isnan(delta) and (bottom, top) == (0, 0)
    m = curve_metrics([0.0, 0.5, 1.0], losses)
    assert m["label"] == "NaN"
    assert m["monotonic"] is False
    assert math.isnan(m["barrier_threshold"]), "no threshold is claimed for a curve without a shape"
    assert m["threshold_barrier_tol"] == 0.01, "the thresholds in force are still written"


# --- α_half ------------------------------------------------------------------------------------


def test_alpha_half_is_the_smallest_alpha_whatever_the_order_of_the_points():
    # Sorted: (0, 2.0), (0.5, 1.0), (1, 0.1); half-way level 1.05 is first reached at α = 0.5.
    assert alpha_half([0.0, 0.5, 1.0], [2.0, 1.0, 0.1]) == 0.5
    assert alpha_half([1.0, 0.0, 0.5], [0.1, 2.0, 1.0]) == 0.5
    assert alpha_half([0.5, 1.0, 0.0], [1.0, 0.1, 2.0]) == 0.5


def test_alpha_half_exactly_on_the_half_way_level():
    # L(0) = 2, L(1) = 1: the level is 1.5, and L(0.5) = 1.5 is on it ("L ≤ level").
    assert alpha_half([0.0, 0.25, 0.5, 0.75, 1.0], [2.0, 1.75, 1.5, 1.25, 1.0]) == 0.5
    assert alpha_half([0.0, 0.25, 0.5, 0.75, 1.0], [2.0, 1.75, 1.5 + 2.0**-20, 1.25, 1.0]) == 0.75


def test_alpha_half_skips_a_missing_point():
    assert alpha_half([0.0, 0.5, 1.0], [2.0, None, 0.0]) == 1.0
    assert alpha_half([0.0, 0.5, 1.0], [2.0, float("nan"), 0.0]) == 1.0


@pytest.mark.parametrize("plateau_alpha,label", [(0.5, "P"), (0.5 + 2.0**-10, "NB")])
def test_plateau_at_exactly_plateau_alpha(plateau_alpha, label):
    m = curve_metrics([0.0, 0.25, 0.5, 0.75, 1.0], [2.0, 2.0, 1.0, 0.5, 0.0], ShapeThresholds(plateau_alpha=plateau_alpha))
    assert m["alpha_half"] == 0.5
    assert m["label"] == label, "P holds from α_half >= plateau_alpha on"


def test_a_barrier_wins_over_a_plateau():
    m = curve_metrics([0.0, 0.25, 0.5, 0.75, 1.0], [2.0, 2.0, 2.5, 2.0, 0.0])
    assert m["alpha_half"] == 1.0 and m["label"] == "B"


# --- the table of one row per path -----------------------------------------------------------


def path_rows(run_id, path, group, losses, alphas=(0.0, 0.5, 1.0), **keys) -> list[dict]:
    base = {"run_id": run_id, "path": path, "start": "init", "group": group, "param_group": "all",
            "bn_mode": "interpolate", "split": "train"}
    base.update(keys)
    return [{**base, "alpha": a, "loss": l, "accuracy": 0.1 + a / 2} for a, l in zip(alphas, losses)]


def test_shape_table_keeps_the_order_in_which_paths_were_measured():
    rows = []
    for group in ["stem", "layer2", "layer10", "head"]:  # not alphabetical, not natural order either
        rows += path_rows("r1", "group", group, [2.0, 1.0, 0.5])
    table = shape_table(pd.DataFrame(rows))
    assert list(table["group"]) == ["stem", "layer2", "layer10", "head"]


def test_shape_table_keeps_paths_whose_key_is_missing():
    """Tables concatenated from runs that recorded different columns carry NaN keys; such a path
    is still a path and keeps its row."""
    rows = path_rows("r1", "full", "all", [2.0, 1.0, 0.5]) + path_rows("r1", "group", None, [2.0, 2.5, 0.5])
    table = shape_table(pd.DataFrame(rows))
    assert len(table) == 2
    missing = table[table["group"].isna()]
    assert len(missing) == 1 and missing.iloc[0]["label"] == "B"


def test_shape_table_uses_the_thresholds_it_is_given():
    rows = path_rows("r1", "full", "all", [2.0, 1.0, 1.5, 0.5], alphas=(0.0, 0.25, 0.5, 1.0))
    strict = ShapeThresholds(barrier_tol=1.0, barrier_rel=0.0, plateau_alpha=0.9)
    table = shape_table(pd.DataFrame(rows), strict)
    row = table.iloc[0]
    assert row["label"] == "NB" and row["barrier_threshold"] == 1.0
    assert row["threshold_barrier_tol"] == 1.0 and row["threshold_plateau_alpha"] == 0.9
    assert row["label_rule"] == strict.rule()
    assert shape_table(pd.DataFrame(rows)).iloc[0]["label"] == "B", "with the defaults the same path is B"


def test_shape_table_with_only_some_key_columns():
    frame = pd.DataFrame(path_rows("r1", "full", "all", [2.0, 1.0, 0.5]) + path_rows("r2", "full", "all", [1.0, 2.0, 0.5]))
    frame = frame.drop(columns=["group", "param_group", "bn_mode", "start"])
    table = shape_table(frame)
    assert list(table["run_id"]) == ["r1", "r2"] and list(table["label"]) == ["NB", "B"]
    assert "group" not in table.columns
    assert list(table["accuracy_start"]) == pytest.approx([0.1, 0.1])
    assert list(table["accuracy_end"]) == pytest.approx([0.6, 0.6])


# --- distance travelled -----------------------------------------------------------------------


def test_a_zero_weight_tensor_is_left_out_of_the_mean_and_a_small_one_is_kept():
    """A tensor initialised to zero has no relative distance (division by zero); one with a norm
    below 1 has one like any other."""
    start = {"head.weight": torch.zeros(2, 2), "small.weight": torch.full((2, 2), 0.25)}  # ‖·‖ = 0.5
    end = {"head.weight": torch.ones(2, 2), "small.weight": torch.full((2, 2), 0.5)}       # ‖Δ‖ = 0.5
    d = distances(start, end, ["head.weight", "small.weight"])
    assert d["relative_distance_mean"] == pytest.approx(1.0)
    assert d["relative_distance_global"] == pytest.approx(math.sqrt(4 + 0.25) / 0.5)


def test_distances_without_weight_matrices_or_without_a_start_norm_are_nan_quietly():
    start = {"fc.bias": torch.tensor([0.0, 0.0])}
    end = {"fc.bias": torch.tensor([1.0, 0.0])}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # NaN by the rule, not by a 0/0 that numpy warns about
        d = distances(start, end, ["fc.bias"])
    assert math.isnan(d["relative_distance_mean"]) and math.isnan(d["relative_distance_global"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tiny = distances({"w": torch.full((2, 2), 0.25)}, {"w": torch.full((2, 2), 0.5)}, ["w"])
    assert tiny["relative_distance_global"] == pytest.approx(1.0), "a start norm below 1 is still a norm"
    assert tiny["relative_distance_mean"] == pytest.approx(1.0)
    assert distances(start, end, []) == {"relative_distance_mean": pytest.approx(float("nan"), nan_ok=True),
                                         "relative_distance_global": pytest.approx(float("nan"), nan_ok=True)}


def test_distances_in_double_precision():
    """Norms are taken in float64: a float32 state whose squared norm overflows float32 still gives
    the right ratio."""
    start = {"w": torch.full((4, 4), 1e20)}
    end = {"w": torch.full((4, 4), 2e20)}
    d = distances(start, end, ["w"])
    assert d["relative_distance_mean"] == pytest.approx(1.0)
    assert d["relative_distance_global"] == pytest.approx(1.0)
    assert np.isfinite(d["relative_distance_global"])
