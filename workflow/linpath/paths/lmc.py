"""Linear mode connectivity: the straight line between two trained states, its barriers, and the
instability table (Frankle, Dziugaite, Roy & Carbin, ICML 2020).

θ(α) = (1−α)·θ₁ + α·θ₂ between two final states of one architecture, measured with the path evaluator
(linpath.paths.evaluator.PathEvaluator: every tensor moves but `num_batches_tracked`) on the training set without
augmentation and the test set, in both BN modes: running statistics interpolated like parameters, or
recomputed at every α on a fixed training subset. Barriers as Frankle et al. define them: the maximum
along the path minus the mean of its two ends, of the loss and of the error ε = 1 − accuracy. A spawn
is stable when its error barrier is at most the config's threshold (theirs: 2% error).
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..foundations.hparams import InstabilitySpec, alpha_values
from ..foundations.io import note, write_parquet
from ..foundations.layout import RunDir
from ..foundations.outcome import read_outcome

CURVE_KEYS = ["setting", "experiment", "seed", "pair_kind", "pair", "spawn_epoch", "run_id", "end_a", "end_b",
              "bn_mode", "split"]
PATH_COLUMNS = [*CURVE_KEYS, "alpha", "loss", "accuracy", "error", "distance_l2", "distance_rel", "eval_data",
                "status", "status_reason"]
LINE_COLUMNS = [*CURVE_KEYS, "loss_barrier", "error_barrier", "error_barrier_alpha", "accuracy_a", "accuracy_b",
                "loss_a", "loss_b", "distance_l2", "distance_rel"]
ROW_KEYS = ["setting", "experiment", "seed", "pair_kind", "pair", "spawn_epoch", "bn_mode", "split"]
# Which BN statistics the ends of a line (α = 0, 1) are scored with, per BN mode: the instability table's
# `end_statistics`. The two modes measure the same two states, but recompute replaces their running
# statistics as at every other α, so its end accuracies (accuracy_a, accuracy_b) differ from the
# interpolate rows', which are the trained networks' own.
END_STATISTICS = {
    "interpolate": "the ends' own running statistics (the trained networks)",
    "recompute": "statistics recomputed on the training subset, as at every alpha (not the trained networks' "
                 "own, so the end accuracies differ from the interpolate rows')",
}


# --- definitions -------------------------------------------------------------------------------


def barrier(values) -> float:
    """Frankle et al.'s barrier of a curve ordered by α from 0 to 1: its maximum minus the mean of its
    two ends (0 for a straight or convex-down line, > 0 for a rise above both ends; NaN if any is NaN)."""
    v = np.asarray(values, dtype=float)
    if len(v) < 2 or np.isnan(v).any():
        return float("nan")
    return float(v.max() - 0.5 * (v[0] + v[-1]))


def peak_alpha(alphas, values) -> float:
    """The α where the curve is highest (where the barrier peaks)."""
    v = np.asarray(values, dtype=float)
    return float("nan") if np.isnan(v).any() else float(np.asarray(alphas, dtype=float)[int(np.argmax(v))])


def parameter_distance(a: dict, b: dict, keys: list[str]) -> tuple[float, float]:
    """‖θ₁ − θ₂‖₂ over these tensors (the parameters: BN buffers excluded), and the same divided by
    the mean of ‖θ₁‖₂ and ‖θ₂‖₂ (symmetric in the two ends)."""
    import torch

    diff = norm_a = norm_b = 0.0
    for key in keys:
        x, y = a[key].double(), b[key].double()
        diff += torch.linalg.vector_norm(x - y).item() ** 2
        norm_a += torch.linalg.vector_norm(x).item() ** 2
        norm_b += torch.linalg.vector_norm(y).item() ** 2
    l2, scale = math.sqrt(diff), 0.5 * (math.sqrt(norm_a) + math.sqrt(norm_b))
    return l2, (l2 / scale if scale > 0 else float("nan"))


# --- one pair sweep -----------------------------------------------------------------------------


def not_trained(end_dirs: list[str | Path]) -> str | None:
    """Why the pair cannot be measured (an end that did not train, with its reason), or None."""
    for run_dir in end_dirs:
        found = read_outcome(run_dir)
        if found is None:
            raise FileNotFoundError(f"{RunDir(run_dir).outcome}: the run has not finished")
        if not found.trained:
            return f"{Path(run_dir).name} {found.short()}"
    return None


def skipped_frame(meta: dict, spec: InstabilitySpec, reason: str) -> pd.DataFrame:
    """What a pair sweep writes when an end did not train: one row per (BN mode, split), no curve."""
    rows = [{**meta, "bn_mode": mode, "split": split, "status": "skipped", "status_reason": reason}
            for mode in spec.bn_modes for split in spec.splits]
    return pd.DataFrame(rows).reindex(columns=PATH_COLUMNS)


def sweep_pairs(end_dirs: list[str | Path], cache_dir: str | Path, spec: InstabilitySpec, *,
                progress: bool = False) -> pd.DataFrame:
    """Loss, accuracy and error along the straight line between every two of these runs' final states,
    in every BN mode, on the first run's evaluation data. One model and the data stay on the device."""
    from ..engine import models
    from ..foundations.device import pick_device
    from ..foundations.hparams import RunSpec
    from ..foundations.io import load_state
    from .evaluator import PathEvaluator
    from .sweeps import bn_recompute_inputs, run_eval_splits

    end_dirs = [Path(d) for d in end_dirs]
    run_spec = RunSpec.from_yaml(RunDir(end_dirs[0]).settings)
    model = models.build(run_spec.model)
    splits = run_eval_splits(end_dirs[0], cache_dir, spec.splits)
    bn = bn_recompute_inputs(end_dirs[0], cache_dir, splits, run_spec, spec.bn_subset, "recompute" in spec.bn_modes)
    evaluator = PathEvaluator(model, splits, run_spec.train.loss, device=pick_device(spec.device, "instability.device"),
                              batch_size=spec.batch_size, progress=progress, **bn)
    sources = {s.name: s.source for s in splits}
    del splits
    states = [load_state(RunDir(d).final) for d in end_dirs]
    parameters = [name for name, _ in model.named_parameters()]
    alphas = np.asarray(alpha_values(spec.alphas))
    frames = []
    for i, j in itertools.combinations(range(len(end_dirs)), 2):
        l2, rel = parameter_distance(states[i], states[j], parameters)
        for mode in spec.bn_modes:
            frame = evaluator.sweep(states[i], states[j], alphas, bn_mode=mode)
            frames.append(frame.drop(columns=["group", "param_group"]).assign(
                end_a=end_dirs[i].name, end_b=end_dirs[j].name, distance_l2=l2, distance_rel=rel,
                eval_data=frame["split"].map(sources)))
    out = pd.concat(frames, ignore_index=True)
    out["error"] = 1.0 - out["accuracy"]
    return out


def pair_sweep(end_dirs: list[str | Path], cache_dir: str | Path, spec: InstabilitySpec, meta: dict,
               *, progress: bool = False) -> tuple[pd.DataFrame, str]:
    """The pair sweep table and a one-line summary; ends that did not train give the skipped rows."""
    reason = not_trained(end_dirs)
    if reason:
        return skipped_frame(meta, spec, f"not measured: {reason}"), f"skipped: {reason}"
    frame = sweep_pairs(end_dirs, cache_dir, spec, progress=progress)
    for key, value in meta.items():
        frame[key] = value
    frame["status"], frame["status_reason"] = "measured", ""
    frame = frame.reindex(columns=PATH_COLUMNS)
    rows = curve_rows(frame)
    summary = "; ".join(f"{r['bn_mode']}/{r['split']}: error barrier {r['error_barrier']:.4f}" for r in rows)
    return frame, summary


# --- the instability table ----------------------------------------------------------------------


def curve_rows(paths: pd.DataFrame) -> list[dict]:
    """One row per measured line (a pair of ends, BN mode, split): its barriers and end points."""
    rows = []
    measured = paths[paths["status"] == "measured"]
    for key, curve in measured.groupby(CURVE_KEYS, sort=False, dropna=False):
        curve = curve.sort_values("alpha")
        a, loss, err, acc = (curve[c].to_numpy(float) for c in ("alpha", "loss", "error", "accuracy"))
        rows.append({**dict(zip(CURVE_KEYS, key)), "loss_barrier": barrier(loss), "error_barrier": barrier(err),
                     "error_barrier_alpha": peak_alpha(a, err), "accuracy_a": acc[0], "accuracy_b": acc[-1],
                     "loss_a": loss[0], "loss_b": loss[-1],
                     "distance_l2": float(curve["distance_l2"].iloc[0]),
                     "distance_rel": float(curve["distance_rel"].iloc[0])})
    return rows


def _row_key(frame: pd.DataFrame) -> pd.Series:
    """The table row a curve belongs to, as text (an independent pair's spawn epoch is NaN)."""
    if not len(frame):
        return pd.Series(dtype=str)
    return frame[ROW_KEYS].apply(lambda col: col.map(lambda v: "nan" if pd.isna(v) else str(v))).agg("|".join, axis=1)


def stability_rule(threshold: float) -> str:
    return (f"stable: error barrier <= {threshold:g} (error = 1 - accuracy; barrier = max along the path - "
            "mean of its two ends); stable_from_k: the smallest spawn epoch k from which the mean over seeds "
            "stays stable at every larger k measured")


def instability_table(paths: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """One row per (setting, seed, pair, BN mode, split): barriers (mean over the lines of the pair),
    end accuracies, distance between the ends, whether it is stable, and the setting's stable_from_k.
    `end_statistics` says which BN statistics the end accuracies were scored with (END_STATISTICS)."""
    paths = paths.assign(spawn_epoch=pd.to_numeric(paths["spawn_epoch"]))  # NaN for independent pairs
    lines = pd.DataFrame(curve_rows(paths), columns=LINE_COLUMNS)
    by_row = dict(list(lines.groupby(_row_key(lines), sort=False)))
    rows = []
    for key, group in paths.groupby(_row_key(paths), sort=False):
        row = group[ROW_KEYS].iloc[0].to_dict()
        sel = by_row.get(key, lines.iloc[:0])
        if group["status"].iloc[0] != "measured" or sel.empty:
            rows.append({**row, "n_lines": 0, "status": "skipped",
                         "status_reason": str(group["status_reason"].iloc[0])})
            continue
        ends = pd.concat([sel[["end_a", "accuracy_a"]].set_axis(["end", "acc"], axis=1),
                          sel[["end_b", "accuracy_b"]].set_axis(["end", "acc"], axis=1)]).drop_duplicates("end")
        rows.append({**row, "n_lines": len(sel),
                     **{c: float(sel[c].mean()) for c in ("error_barrier", "loss_barrier", "distance_l2", "distance_rel")},
                     "error_barrier_max": float(sel["error_barrier"].max()),
                     "error_barrier_alpha": float(sel.loc[sel["error_barrier"].idxmax(), "error_barrier_alpha"]),
                     "accuracy_a": float(sel["accuracy_a"].iloc[0]), "accuracy_b": float(sel["accuracy_b"].iloc[0]),
                     "accuracy_ends_mean": float(ends["acc"].mean()), "ends": ", ".join(ends["end"]),
                     "status": "measured", "status_reason": ""})
    table = pd.DataFrame(rows)
    for column in ("error_barrier", "loss_barrier", "distance_l2", "distance_rel", "accuracy_ends_mean"):
        if column not in table:
            table[column] = np.nan
    table["threshold"] = threshold
    table["stable"] = table["error_barrier"].le(threshold).where(table["error_barrier"].notna())
    table["stable_from_k"] = np.nan
    spawned = table["pair_kind"] == "spawn"
    for _, group in table[spawned].groupby(["setting", "bn_mode", "split"], sort=False):
        table.loc[group.index, "stable_from_k"] = stable_from(group, threshold)
    table["stability_rule"] = stability_rule(threshold)
    table["end_statistics"] = table["bn_mode"].map(END_STATISTICS)
    return table


def stable_from(rows: pd.DataFrame, threshold: float) -> float:
    """The smallest spawn epoch k whose mean error barrier over seeds, and that of every larger k, is at
    most `threshold` (NaN when the largest k is not stable, or none was measured)."""
    means = rows.groupby("spawn_epoch")["error_barrier"].mean().sort_index()
    found = float("nan")
    for k, value in means[::-1].items():
        if not value <= threshold:  # NaN (nothing measured at k) also ends the stable run
            break
        found = float(k)
    return found


def write_instability(sweep_files: list[str], threshold: float, out_table: str | Path, out_paths: str | Path,
                      log: str | None = None) -> pd.DataFrame:
    paths = pd.concat([pd.read_parquet(f) for f in sweep_files], ignore_index=True)
    table = instability_table(paths, threshold)
    write_parquet(paths, out_paths)
    write_parquet(table, out_table)
    note(log, f"{len(table)} rows ({int((table['status'] == 'skipped').sum())} skipped) -> {out_table}; "
              f"curves -> {out_paths}")
    return table
