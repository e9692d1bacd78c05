"""Shape of a loss curve along a path.

Definitions (docs/study.md §2): Δ is the largest rise anywhere along the path
(Lucas et al.); the barrier height compares the peak with the higher endpoint;
α_half is where the loss first falls half-way from L(0) to L(1). The label
thresholds are settings and are written beside every label.
"""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pandas as pd

from ..foundations.hparams import ShapeThresholds

PATH_KEYS = ["run_id", "path", "start", "group", "param_group", "bn_mode", "split"]


def largest_rise(losses: np.ndarray) -> tuple[float, int, int]:
    """(Δ, i, j): Δ = L_j − L_i is the largest rise over i < j (Lucas et al.), with L_i the lowest
    point before j. (0, 0, 0) for a non-increasing curve; a rise on the last step counts."""
    losses = np.asarray(losses, dtype=float)
    if np.isnan(losses).any():
        return float("nan"), 0, 0
    if len(losses) < 2:
        return 0.0, 0, 0
    running_min = np.minimum.accumulate(losses)[:-1]
    rises = losses[1:] - running_min
    top = int(np.argmax(rises)) + 1
    if rises[top - 1] <= 0:
        return 0.0, 0, 0
    bottom = int(np.argmin(losses[:top]))
    return float(rises[top - 1]), bottom, top


def max_rise(losses: np.ndarray) -> float:
    """Δ = max over i<j of L_j − L_i (0 for a non-increasing curve)."""
    return largest_rise(losses)[0]


def alpha_half(alphas: np.ndarray, losses: np.ndarray) -> float:
    """First α (inside [0, 1]) where L ≤ L(0) − ½(L(0) − L(1)); NaN when the loss does not fall."""
    alphas, losses = np.asarray(alphas, float), np.asarray(losses, float)
    order = np.argsort(alphas)  # "first" is the smallest α, whatever order the points come in
    alphas, losses = alphas[order], losses[order]
    inside = (alphas >= 0) & (alphas <= 1)
    a, l = alphas[inside], losses[inside]
    l0, l1 = l[0], l[-1]
    if not (np.isfinite(l0) and l1 < l0):  # an infinite L(0) has no half-way level
        return float("nan")
    hit = np.nonzero(l <= l0 - 0.5 * (l0 - l1))[0]
    return float(a[hit[0]])


def shape_label(delta: float, loss_start: float, loss_end: float, half: float, finite: bool,
                thresholds: ShapeThresholds = ShapeThresholds()) -> str:
    """NB / B / P (NaN: a loss that is not finite somewhere on the path) from a path's Δ, end losses and
    α_half: the one rule behind every label, also applied to stored shapes (linpath.report.sensitivity)."""
    if not finite:
        return "NaN"  # the loss is not finite somewhere on the path: no shape to speak of
    if delta > thresholds.barrier_threshold(loss_start, loss_end):
        return "B"
    if np.isfinite(half) and half >= thresholds.plateau_alpha:
        return "P"
    return "NB"


def curve_metrics(alphas, losses, thresholds: ShapeThresholds = ShapeThresholds()) -> dict:
    """Every shape metric of one loss curve, with its label and the rule and threshold behind it.

    `rise_alpha` is where the largest rise peaks (the barrier of E5, which may stay below L(0));
    `barrier_alpha` is where the loss is highest on the whole path (the barrier height's peak)."""
    alphas, losses = np.asarray(alphas, float), np.asarray(losses, float)
    order = np.argsort(alphas)
    alphas, losses = alphas[order], losses[order]
    inside = (alphas >= 0) & (alphas <= 1)
    a, l = alphas[inside], losses[inside]
    l0, l1 = float(l[0]), float(l[-1])
    peak = int(np.argmax(l))
    delta, bottom, top = largest_rise(l)
    half = alpha_half(a, l)
    finite = bool(np.isfinite(l).all())
    threshold = thresholds.barrier_threshold(l0, l1) if finite else float("nan")
    label = shape_label(delta, l0, l1, half, finite, thresholds)
    return {
        "loss_start": l0,
        "loss_end": l1,
        "loss_max": float(l[peak]),
        "delta": delta,
        "monotonic": bool(finite and delta <= threshold),
        "barrier_height": float(l[peak] - max(l0, l1)),
        "barrier_alpha": float(a[peak]),
        "rise_alpha": float(a[top]),
        "rise_start_alpha": float(a[bottom]),
        "above_start": bool(l[peak] > l0),
        "alpha_half": half,
        "label": label,
        "label_rule": thresholds.rule(),
        "barrier_threshold": threshold,
        **{f"threshold_{k}": v for k, v in asdict(thresholds).items()},
    }


def shape_table(paths: pd.DataFrame, thresholds: ShapeThresholds = ShapeThresholds()) -> pd.DataFrame:
    """One row per path (and split) of a long-format paths table."""
    keys = [k for k in PATH_KEYS if k in paths.columns]
    rows = []
    for values, curve in paths.groupby(keys, sort=False, dropna=False):
        row = dict(zip(keys, values if isinstance(values, tuple) else (values,)))
        row.update(curve_metrics(curve["alpha"].to_numpy(), curve["loss"].to_numpy(), thresholds))
        acc = curve.sort_values("alpha")["accuracy"].to_numpy()
        row["accuracy_start"], row["accuracy_end"] = float(acc[0]), float(acc[-1])
        rows.append(row)
    return pd.DataFrame(rows)
