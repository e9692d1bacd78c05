"""Barrier groups (E11, E13, E16): which layers of a setting's runs have barriers, decided from their
measured group-wise paths. The decision sets which runs exist (the per-block LR / WD of Table A3, the
widened and narrowed layers), so it is written, with the other rule's verdict beside it, to
results/derived/barrier_groups/<setting>.yaml before any dependent run is planned.

The two sides of a scheme split the whole network: `with_barrier` holds the measured layer groups that
have a barrier, `without_barrier` every other group of the model, including those that are not layer
groups (a ResNet's stem and head, a VGG's classifier, an MLP's output layer). They were not found to
have a barrier, so they train with "the layers that do not". `without_barrier_layers` holds only the
measured layer groups without a barrier: the narrowing experiments change the width of those alone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..foundations.hparams import GroupRule
from ..foundations.io import note, write_yaml

GROUP_PATH = {"path": "group", "start": "init", "split": "train", "bn_mode": "interpolate"}


def group_paths(shapes: pd.DataFrame, candidates: list[str] | None = None) -> pd.DataFrame:
    """The group-wise paths θ₀ → θ_T (train split, interpolated BN statistics) of the candidate groups."""
    mask = np.ones(len(shapes), dtype=bool)
    for key, value in GROUP_PATH.items():
        mask &= shapes[key].to_numpy() == value
    sel = shapes[mask]
    if sel.empty:
        raise ValueError("no group-wise paths in these shapes: set paths.groups for the referenced setting")
    if candidates is not None:
        sel = sel[sel["group"].isin(list(candidates))]
        if sel.empty:
            raise ValueError(f"none of the layer groups {list(candidates)} has a group-wise path in these shapes")
    return sel


def group_decisions(shapes: pd.DataFrame, rule: GroupRule = GroupRule(),
                    candidates: list[str] | None = None) -> pd.DataFrame:
    """One row per measured group, in measured order: the share of seeds whose path has a barrier under
    each rule, the decision of each rule, and `barrier`, the decision of the rule in force."""
    sel = group_paths(shapes, candidates)
    monotonic = GroupRule("monotonic", rule.tol, rule.min_share)
    label = GroupRule("label", rule.tol, rule.min_share)
    per_path = sel.assign(
        b_monotonic=[monotonic.has_barrier(d, lab) for d, lab in zip(sel["delta"], sel["label"])],
        b_label=[label.has_barrier(d, lab) for d, lab in zip(sel["delta"], sel["label"])])
    by_group = per_path.groupby("group", sort=False)
    out = pd.DataFrame({
        "seeds": by_group.size(),
        "mean_delta": by_group["delta"].mean(),
        "max_delta": by_group["delta"].max(),
        "share_monotonic": by_group["b_monotonic"].mean(),
        "share_label": by_group["b_label"].mean(),
    })
    out["barrier_monotonic"] = out["share_monotonic"] >= rule.min_share
    out["barrier_label"] = out["share_label"] >= rule.min_share
    out["barrier"] = out[f"barrier_{rule.rule}"]
    return out.rename_axis("group").reset_index()


def barrier_groups(shapes: pd.DataFrame, widenable: list[str], rule: GroupRule = GroupRule(),
                   candidates: list[str] | None = None,
                   model_groups: list[str] | None = None) -> dict:
    """The barrier groups under `rule`, the groups of each side, and each group's decision under both
    rules. `ranked` orders the barrier groups whose width can change by mean Δ, highest first (for "narrow
    the k barrier layers": a head that cannot be narrowed must not take one of the k places).
    `model_groups`: every group of the model, in forward order (None: the measured groups only)."""
    table = group_decisions(shapes, rule, candidates)
    measured = list(table["group"])
    with_barrier = [g for g, b in zip(table["group"], table["barrier"]) if b]
    every = list(model_groups) if model_groups is not None else measured
    unknown = sorted(set(measured) - set(every))
    if unknown:
        raise ValueError(f"measured groups {unknown} are not groups of this model ({', '.join(every)})")
    delta = dict(zip(table["group"], table["mean_delta"]))
    decisions = {
        row.group: {"mean_delta": float(row.mean_delta), "max_delta": float(row.max_delta), "seeds": int(row.seeds),
                    "monotonic": {"share": float(row.share_monotonic), "barrier": bool(row.barrier_monotonic)},
                    "label": {"share": float(row.share_label), "barrier": bool(row.barrier_label)}}
        for row in table.itertuples()}
    other = "label" if rule.rule == "monotonic" else "monotonic"
    return {
        "rule": rule.rule,
        "rule_text": rule.describe(),
        "tol": rule.tol,
        "min_share": rule.min_share,
        "with_barrier": with_barrier,
        "without_barrier": [g for g in every if g not in with_barrier],
        "without_barrier_layers": [g for g in measured if g not in with_barrier],
        "not_measured": [g for g in every if g not in measured],
        "ranked": sorted([g for g in with_barrier if g in widenable], key=lambda g: -delta[g]),
        "with_barrier_other_rule": {"rule": other,
                                    "groups": [g for g in measured if decisions[g][other]["barrier"]]},
        "decisions": decisions,
        "widenable": list(widenable),
        "candidates": measured,
        "label_rule": str(group_paths(shapes, candidates)["label_rule"].iloc[0]),
    }


def write_barrier_groups(shape_files: list[str], run_yaml: str, out: str | Path, log: str | None = None,
                         rule: GroupRule = GroupRule(), layer_rule: dict | None = None) -> None:
    """`layer_rule`: config `shapes.layer_groups`, which groups of the model are candidates."""
    from ..engine.models import widenable_groups
    from ..foundations.hparams import RunSpec
    from .layer_groups import describe, group_roles, layer_groups

    frames = [frame for frame in map(pd.read_parquet, shape_files) if not frame.empty]  # empty: did not train
    if not frames:
        found = {"with_barrier": [], "without_barrier": [], "without_barrier_layers": [], "upstream_failed": True,
                 "reason": f"none of the {len(shape_files)} runs trained"}
        write_yaml(found, out)
        note(log, f"{found['reason']} -> {out}")
        return
    shapes = pd.concat(frames, ignore_index=True)
    model = RunSpec.from_yaml(run_yaml).model
    found = barrier_groups(shapes, widenable_groups(model), rule, layer_groups(model, layer_rule),
                           list(group_roles(model)))
    found["candidate_rule"] = describe(layer_rule)
    found["runs_measured"] = f"{len(frames)}/{len(shape_files)}"
    write_yaml(found, out)
    note(log, f"groups with a barrier ({rule.rule}): {found['with_barrier']}; "
              f"under {found['with_barrier_other_rule']['rule']}: {found['with_barrier_other_rule']['groups']} -> {out}")
