"""Barrier-height inits (E5): states at the barrier peak of a measured path and δ before / after it."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from ..foundations.hparams import BARRIER_OFFSET
from ..foundations.io import load_state, save_torch, write_yaml
from .shapes import ShapeThresholds, curve_metrics


def find_barrier(paths: pd.DataFrame, thresholds: ShapeThresholds, *, split: str = "train",
                 start: str = "init", bn_mode: str = "interpolate") -> dict:
    """Where the full path's largest rise peaks, if the path has a barrier.

    α* is the top of the largest rise (the argmax after the running minimum), not the global
    maximum: a barrier whose peak stays below L(0) (2.3 → 1.0 → 1.5 → 0.01) is a barrier too."""
    curve = paths[(paths["path"] == "full") & (paths["split"] == split) & (paths["start"] == start)
                  & (paths["bn_mode"] == bn_mode)]
    if curve.empty:
        raise ValueError(f"no full path from {start!r} on split {split!r} in bn_mode {bn_mode!r}")
    curve = curve[(curve["alpha"] >= 0) & (curve["alpha"] <= 1)].sort_values("alpha")
    m = curve_metrics(curve["alpha"].to_numpy(), curve["loss"].to_numpy(), thresholds)
    interior = 0 < m["rise_alpha"] < 1
    found = m["label"] == "B" and interior
    if found:
        reason = "barrier"
    elif m["label"] != "B":
        reason = f"no barrier: delta={m['delta']:.4g} <= threshold={m['barrier_threshold']:.4g} ({m['label_rule']})"
    else:
        reason = f"no interior peak: the largest rise ends at alpha={m['rise_alpha']:g}"
    return {"has_barrier": bool(found), "reason": reason, "alpha_star": m["rise_alpha"],
            "rise_start_alpha": m["rise_start_alpha"], "barrier_height": m["barrier_height"], "delta": m["delta"],
            "barrier_threshold": m["barrier_threshold"], "label": m["label"], "label_rule": m["label_rule"],
            "start_state": str(curve["start_state"].iloc[0]), "end_state": str(curve["end_state"].iloc[0])}


def write_barrier_inits(paths: pd.DataFrame, out_dir: str | Path, *, offset: float = BARRIER_OFFSET,
                        thresholds: ShapeThresholds = ShapeThresholds(), split: str = "train") -> dict:
    """Write barrier.yaml and, when there is a barrier, at.pt / before.pt / after.pt (θ at α*, α*∓offset)."""
    out_dir = Path(out_dir)
    info = find_barrier(paths, thresholds, split=split)
    if info["has_barrier"]:
        start, end = load_state(info["start_state"]), load_state(info["end_state"])
        a = info["alpha_star"]
        points = {"before": max(0.0, a - offset), "at": a, "after": min(1.0, a + offset)}
        for name, alpha in points.items():
            save_torch(interpolate_state(start, end, alpha), out_dir / f"{name}.pt")
        info["alphas"] = points
    info["offset"] = offset
    write_yaml(info, out_dir / "barrier.yaml")
    return info


def interpolate_state(start: dict, end: dict, alpha: float) -> dict[str, torch.Tensor]:
    """θ(α) as a state_dict; integer buffers (num_batches_tracked) are taken from the end state."""
    return {k: torch.lerp(start[k].float(), v.float(), alpha).to(v.dtype) if v.is_floating_point() else v.clone()
            for k, v in end.items()}
