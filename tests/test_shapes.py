"""Shape metrics of loss curves (docs/study.md §2: Δ, barrier, plateau, labels) on crafted curves,
the per-path shape table, and the distance travelled on hand-made states."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from linpath.paths.shapes import ShapeThresholds, alpha_half, curve_metrics, max_rise, shape_table
from linpath.engine.train import distances

A5 = [0.0, 0.25, 0.5, 0.75, 1.0]


# --- Δ -------------------------------------------------------------------------------


@pytest.mark.parametrize("losses,delta", [
    ([3.0, 2.0, 1.0, 0.5], 0.0),            # monotone decreasing
    ([1.0, 1.0, 1.0], 0.0),                 # flat
    ([3.0, 2.0, 1.0, 1.5], 0.5),            # rise on the very last step
    ([1.0, 2.0, 0.5], 1.0),                 # rise right after the start
    ([2.0, 0.5, 1.0, 0.2, 1.9, 0.1], 1.7),  # the largest rise is from the lowest point before it
    ([0.5, 1.0, 0.1, 0.4], 0.5),            # two rises of the same size
    ([2.0], 0.0),
])
def test_max_rise(losses, delta):
    assert max_rise(np.array(losses)) == pytest.approx(delta, abs=1e-12)
    brute = max([0.0] + [losses[j] - losses[i] for i in range(len(losses)) for j in range(i + 1, len(losses))])
    assert max_rise(losses) == pytest.approx(brute, abs=1e-12), "Δ = max over i<j of L_j - L_i"


def test_a_nan_loss_is_not_reported_as_monotonic():
    losses = [2.0, float("nan"), 3.0, 0.5]
    assert not max_rise(losses) == 0.0
    metrics = curve_metrics([0.0, 0.3, 0.6, 1.0], losses)
    assert not (metrics["monotonic"] and metrics["label"] == "NB")


# --- labels on crafted curves ----------------------------------------------------------


def test_monotone_decreasing_curve_is_nb():
    m = curve_metrics(A5, [2.0, 1.5, 1.0, 0.6, 0.3])
    assert m["delta"] == 0.0 and m["monotonic"] is True and m["label"] == "NB"
    assert (m["loss_start"], m["loss_end"], m["loss_max"]) == (2.0, 0.3, 2.0)
    assert m["barrier_height"] == 0.0 and m["barrier_alpha"] == 0.0 and m["above_start"] is False
    assert m["alpha_half"] == 0.5  # first α with L <= 2.0 - 0.85 = 1.15


def test_a_rise_on_the_last_step_is_a_barrier():
    m = curve_metrics(A5, [2.0, 1.5, 1.0, 0.6, 0.7])
    assert m["delta"] == pytest.approx(0.1)
    assert m["barrier_threshold"] == pytest.approx(0.05 * 1.3)  # 5% of |L(0) - L(1)| beats the 0.01 floor
    assert m["label"] == "B" and m["monotonic"] is False
    assert m["rise_alpha"] == 1.0 and m["rise_start_alpha"] == 0.75
    assert m["above_start"] is False and m["barrier_height"] == 0.0  # the peak is L(0)
    assert curve_metrics(A5, [2.0, 1.5, 1.0, 0.6, 0.605])["label"] == "NB", "a rise within the threshold is no barrier"


def test_plateau():
    alphas = np.linspace(0, 1, 11)
    losses = np.array([2.30, 2.30, 2.299, 2.30, 2.298, 2.297, 2.295, 2.29, 1.9, 1.0, 0.1])
    m = curve_metrics(alphas, losses)
    assert m["delta"] <= 0.01 and m["monotonic"] is True
    assert m["alpha_half"] == pytest.approx(0.9)  # half-way level 1.2 first reached at α = 0.9
    assert m["alpha_half"] >= ShapeThresholds().plateau_alpha
    assert m["label"] == "P"
    assert curve_metrics(alphas, losses, ShapeThresholds(plateau_alpha=0.9))["label"] == "P", "α_half >= threshold"
    assert curve_metrics(alphas, losses, ShapeThresholds(plateau_alpha=0.95))["label"] == "NB"


def test_barrier_above_the_start():
    m = curve_metrics(A5, [1.0, 1.4, 2.0, 1.2, 0.3])
    assert m["label"] == "B" and m["above_start"] is True
    assert m["delta"] == pytest.approx(1.0)
    assert m["loss_max"] == 2.0
    assert m["barrier_height"] == pytest.approx(2.0 - max(1.0, 0.3))
    assert m["barrier_alpha"] == 0.5


def test_barrier_height_compares_with_the_higher_endpoint():
    m = curve_metrics(A5, [0.5, 1.5, 2.5, 2.0, 1.0])  # L(1) > L(0)
    assert m["barrier_height"] == pytest.approx(2.5 - 1.0) and m["barrier_alpha"] == 0.5
    assert math.isnan(m["alpha_half"])


def test_thresholds_and_rule_are_written_beside_the_label():
    thresholds = ShapeThresholds(barrier_tol=0.2, barrier_rel=0.03, plateau_alpha=0.6)
    m = curve_metrics(A5, [2.0, 1.5, 1.0, 0.6, 0.75], thresholds)
    assert m["label"] == "NB" and m["delta"] == pytest.approx(0.15)  # below the raised tolerance
    assert m["threshold_barrier_tol"] == 0.2 and m["threshold_plateau_alpha"] == 0.6
    assert m["threshold_barrier_rel"] == 0.03 and m["barrier_threshold"] == 0.2
    assert m["label_rule"] == thresholds.rule()
    assert "0.2" in m["label_rule"] and "0.6" in m["label_rule"] and "0.03" in m["label_rule"]
    default = curve_metrics(A5, [2.0, 1.5, 1.0, 0.6, 0.75])
    assert default["threshold_barrier_tol"] == 0.01 and default["threshold_barrier_rel"] == 0.05


@pytest.mark.parametrize("losses", [[1.0, 0.8, 1.2], [1.0, 1.0, 1.0], [0.5, 0.2, 0.5]])
def test_alpha_half_is_nan_when_the_loss_does_not_fall(losses):
    assert math.isnan(alpha_half([0.0, 0.5, 1.0], losses))
    assert math.isnan(curve_metrics([0.0, 0.5, 1.0], losses)["alpha_half"])


def test_alpha_half_ignores_extrapolated_alphas():
    assert alpha_half([-0.5, 0.0, 0.5, 1.0, 1.5], [9.0, 2.0, 1.0, 0.0, -5.0]) == 0.5


def test_curve_metrics_sorts_and_ignores_alphas_outside_the_path():
    alphas = np.array([1.0, 0.25, -0.5, 0.0, 0.75, 1.5, 0.5])
    losses = np.array([0.3, 1.4, 50.0, 1.0, 1.2, 99.0, 2.0])
    m = curve_metrics(alphas, losses)
    ref = curve_metrics(A5, [1.0, 1.4, 2.0, 1.2, 0.3])
    assert m == ref


# --- the table of one row per path ---------------------------------------------------


def test_shape_table_one_row_per_path_and_split():
    curves = {
        ("full", "all", "train"): ([1.0, 1.4, 2.0, 1.2, 0.3], [0.1, 0.1, 0.2, 0.5, 0.9]),
        ("full", "all", "test"): ([1.1, 1.3, 1.9, 1.3, 0.4], [0.1, 0.1, 0.2, 0.4, 0.8]),
        ("group", "block1", "train"): ([2.0, 1.5, 1.0, 0.6, 0.3], [0.2, 0.3, 0.5, 0.7, 0.9]),
        ("group", "block1", "test"): ([2.0, 1.6, 1.1, 0.7, 0.4], [0.2, 0.3, 0.4, 0.6, 0.8]),
    }
    rows = []
    for (path, group, split), (losses, accs) in curves.items():
        for alpha, loss, acc in zip(A5, losses, accs):
            rows.append({"run_id": "r1", "path": path, "start": "init", "group": group, "param_group": "all",
                         "bn_mode": "interpolate", "split": split, "alpha": alpha, "loss": loss, "accuracy": acc})
    frame = pd.DataFrame(rows).sample(frac=1.0, random_state=0)  # any row order
    table = shape_table(frame)
    assert len(table) == 4
    assert not table.duplicated(["path", "group", "split"]).any()
    for (path, group, split), (losses, accs) in curves.items():
        row = table[(table["path"] == path) & (table["group"] == group) & (table["split"] == split)]
        assert len(row) == 1
        row = row.iloc[0]
        assert (row["run_id"], row["start"], row["param_group"], row["bn_mode"]) == ("r1", "init", "all", "interpolate")
        expected = curve_metrics(A5, losses)
        for key in ("delta", "label", "barrier_height", "barrier_alpha", "alpha_half", "loss_start", "loss_end"):
            if isinstance(expected[key], float):
                assert row[key] == pytest.approx(expected[key], nan_ok=True), key
            else:
                assert row[key] == expected[key], key
        assert (row["accuracy_start"], row["accuracy_end"]) == (accs[0], accs[-1])
    assert table.set_index(["path", "split"]).loc[("full", "train"), "label"] == "B"
    assert table.set_index(["path", "split"]).loc[("group", "train"), "label"] == "NB"


# --- distance travelled --------------------------------------------------------------


def test_distances_on_hand_made_states():
    start = {
        "conv.weight": torch.ones(2, 1, 2, 2),           # ‖·‖ = √8
        "fc.weight": torch.tensor([[3.0, 4.0]]),          # ‖·‖ = 5
        "fc.bias": torch.tensor([1.0, 0.0]),              # dim 1: only in the global distance
        "bn.running_mean": torch.tensor([100.0]),         # a buffer not passed as a parameter key
    }
    end = {
        "conv.weight": torch.ones(2, 1, 2, 2) * 2,       # ‖Δ‖ = √8
        "fc.weight": torch.tensor([[3.0, 4.0]]) + torch.tensor([[0.0, 2.5]]),  # ‖Δ‖ = 2.5
        "fc.bias": torch.tensor([1.0, 3.0]),              # ‖Δ‖ = 3
        "bn.running_mean": torch.tensor([0.0]),
    }
    keys = ["conv.weight", "fc.weight", "fc.bias"]
    d = distances(start, end, keys)
    assert d["relative_distance_mean"] == pytest.approx((1.0 + 0.5) / 2)
    assert d["relative_distance_global"] == pytest.approx(math.sqrt(8 + 2.5**2 + 9) / math.sqrt(8 + 25 + 1))
    same = distances(start, start, keys)
    assert same == {"relative_distance_mean": 0.0, "relative_distance_global": 0.0}
    with_buffer = distances(start, end, keys + ["bn.running_mean"])
    assert with_buffer["relative_distance_global"] == pytest.approx(
        math.sqrt(8 + 2.5**2 + 9 + 100**2) / math.sqrt(8 + 25 + 1 + 100**2)), "exactly the given keys count"
    assert with_buffer["relative_distance_mean"] == d["relative_distance_mean"]
