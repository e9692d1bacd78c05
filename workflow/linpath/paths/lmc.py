"""Linear mode connectivity: the straight line between two trained states, its barriers, and the
instability table (Frankle, Dziugaite, Roy & Carbin, ICML 2020).

θ(α) = (1−α)·θ₁ + α·θ₂ between two final states of one architecture, measured with the path evaluator
(linpath.paths.evaluator.PathEvaluator: every tensor moves but `num_batches_tracked`) on the training set without
augmentation and the test set, in both BN modes: running statistics interpolated like parameters, or
recomputed at every α on a fixed training subset. Barriers as Frankle et al. define them: the maximum
along the path minus the mean of its two ends, of the loss and of the error ε = 1 − accuracy. A spawn
is stable when its error barrier is at most the config's threshold (theirs: 2% error).

An aligned pair (`sweep_aligned`) measures the line between two independent runs again after the second
run's hidden units are reordered to match the first's (weight matching), and once more with REPAIR
(linpath.paths.align): pair kinds `independent_aligned` and `independent_aligned_repair`, with the
distance before alignment and the matching's passes beside the curves.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..foundations.hparams import ALIGNED, ALIGNED_REPAIR, InstabilitySpec, alpha_values
from ..foundations.io import note, write_parquet
from ..foundations.layout import RunDir
from ..foundations.outcome import read_outcome

CURVE_KEYS = ["setting", "experiment", "seed", "pair_kind", "pair", "spawn_epoch", "run_id", "end_a", "end_b",
              "bn_mode", "split"]
# Aligned pairs only (NaN / empty elsewhere): the distance between the ends before alignment (distance_l2
# and distance_rel are after it), the passes of weight matching and whether its last pass changed nothing,
# and how REPAIR set the statistics of the interpolated network (REPAIR_METHOD).
ALIGN_COLUMNS = ["distance_l2_unaligned", "distance_rel_unaligned", "align_iterations", "align_converged", "repair"]
PATH_COLUMNS = [*CURVE_KEYS, "alpha", "loss", "accuracy", "error", "distance_l2", "distance_rel", *ALIGN_COLUMNS,
                "eval_data", "status", "status_reason"]
LINE_COLUMNS = [*CURVE_KEYS, "loss_barrier", "error_barrier", "error_barrier_alpha", "accuracy_a", "accuracy_b",
                "loss_a", "loss_b", "distance_l2", "distance_rel", *ALIGN_COLUMNS]
REPAIR_METHOD = {
    "batchnorm": "BN statistics recomputed on the training subset at every alpha (bn_mode recompute), "
                 "BN affine parameters as interpolated",
    "none": "each hidden channel's pre-activation mean and sd rescaled, layer by layer, to (1-alpha) * end a's + "
            "alpha * end b's, measured on the training subset; folded into the layer's weight and bias",
}
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


def skipped_frame(meta: dict, spec: InstabilitySpec, reason: str, *, align: bool = False) -> pd.DataFrame:
    """What a pair sweep writes when an end did not train: one row per (pair kind, BN mode, split), no
    curve."""
    kinds = [meta] if not align else [{**meta, "pair_kind": k, "pair": k} for k in (ALIGNED, ALIGNED_REPAIR)]
    rows = [{**own, "bn_mode": mode, "split": split, "status": "skipped", "status_reason": reason}
            for own in kinds for mode in spec.bn_modes for split in spec.splits]
    return pd.DataFrame(rows).reindex(columns=PATH_COLUMNS)


def _pair_setup(end_dirs: list[Path], cache_dir, spec: InstabilitySpec, progress: bool, *, bn_needed: bool,
                prepare=None):
    """(model, evaluator, split sources, training subset, final states) of a pair sweep; `prepare(model)`
    may change the model before the evaluator takes it."""
    from ..engine import models
    from ..foundations.device import pick_device
    from ..foundations.hparams import RunSpec
    from ..foundations.io import load_state
    from .evaluator import PathEvaluator
    from .sweeps import bn_recompute_inputs, run_eval_splits

    run_spec = RunSpec.from_yaml(RunDir(end_dirs[0]).settings)
    model = models.build(run_spec.model)
    extra = prepare(model) if prepare else None
    splits = run_eval_splits(end_dirs[0], cache_dir, spec.splits)
    bn = bn_recompute_inputs(end_dirs[0], cache_dir, splits, run_spec, spec.bn_subset, bn_needed)
    evaluator = PathEvaluator(model, splits, run_spec.train.loss, device=pick_device(spec.device, "instability.device"),
                              batch_size=spec.batch_size, progress=progress, **bn)
    sources = {s.name: s.source for s in splits}
    del splits
    states = [load_state(RunDir(d).final) for d in end_dirs]
    return model, evaluator, sources, extra, states


def sweep_pairs(end_dirs: list[str | Path], cache_dir: str | Path, spec: InstabilitySpec, *,
                progress: bool = False) -> pd.DataFrame:
    """Loss, accuracy and error along the straight line between every two of these runs' final states,
    in every BN mode, on the first run's evaluation data. One model and the data stay on the device."""
    end_dirs = [Path(d) for d in end_dirs]
    model, evaluator, sources, _, states = _pair_setup(end_dirs, cache_dir, spec, progress,
                                                       bn_needed="recompute" in spec.bn_modes)
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


def sweep_aligned(end_dirs: list[str | Path], cache_dir: str | Path, spec: InstabilitySpec, *,
                  progress: bool = False) -> pd.DataFrame:
    """The line between two runs' final states after weight matching (pair kind independent_aligned), and
    with REPAIR (independent_aligned_repair), in every BN mode, on the first run's evaluation data.

    The second end's units are reordered to match the first's (linpath.paths.align.weight_matching;
    `spec.align_max_iter` passes at most). REPAIR of a network with BN is the recompute mode: its rows are
    the aligned pair's recompute rows (measured even where `bn_modes` lacks recompute). Without BN the BN
    modes coincide: each REPAIRed point θ(α) is measured once and listed under every configured mode; the
    ends (α = 0, 1) are the two networks, whose statistics already are the targets. The statistics are
    measured on the first `spec.bn_subset` training images (no augmentation), as one batch."""
    import torch

    from . import align
    from .evaluator import has_batchnorm

    end_dirs = [Path(d) for d in end_dirs]
    if len(end_dirs) != 2:
        raise ValueError(f"an aligned pair has two ends, got {len(end_dirs)}")
    found = {}

    def prepare(model):
        found["spec"] = align.permutation_spec(model)
        found["parameters"] = [name for name, _ in model.named_parameters()]
        found["batchnorm"] = has_batchnorm(model)
        # REPAIR folds a shift into each hidden layer: a layer without bias gets a zero one (same function)
        return [] if found["batchnorm"] else align.add_zero_biases(model, found["spec"])

    model, evaluator, sources, added, (a, b) = _pair_setup(
        end_dirs, cache_dir, spec, progress, bn_needed=True, prepare=prepare)
    pspec, parameters, batchnorm = found["spec"], found["parameters"], found["batchnorm"]
    for state in (a, b):
        for key in added:
            state[key] = torch.zeros_like(model.state_dict()[key], device="cpu")
    matching = align.weight_matching(a, b, pspec, max_iter=spec.align_max_iter)
    before = parameter_distance(a, b, parameters)
    b = align.permute_state(b, pspec, matching.perms)
    after = parameter_distance(a, b, parameters)
    alphas = np.asarray(alpha_values(spec.alphas))
    modes = list(spec.bn_modes) + (["recompute"] if batchnorm and "recompute" not in spec.bn_modes else [])
    sweeps = {mode: evaluator.sweep(a, b, alphas, bn_mode=mode) for mode in modes}
    frames = [sweeps[mode].assign(pair_kind=ALIGNED, pair=ALIGNED) for mode in spec.bn_modes]
    if batchnorm:
        frames.append(sweeps["recompute"].assign(pair_kind=ALIGNED_REPAIR, pair=ALIGNED_REPAIR,
                                                 repair=REPAIR_METHOD["batchnorm"]))
    else:
        repaired = repair_sweep(model, evaluator, a, b, pspec, alphas, spec)
        frames += [repaired.assign(bn_mode=mode, pair_kind=ALIGNED_REPAIR, pair=ALIGNED_REPAIR,
                                   repair=REPAIR_METHOD["none"]) for mode in spec.bn_modes]
    out = pd.concat(frames, ignore_index=True).drop(columns=["group", "param_group"])
    out = out.assign(end_a=end_dirs[0].name, end_b=end_dirs[1].name, distance_l2=after[0], distance_rel=after[1],
                     distance_l2_unaligned=before[0], distance_rel_unaligned=before[1],
                     align_iterations=matching.iterations, align_converged=matching.converged,
                     eval_data=out["split"].map(sources))
    out["repair"] = out["repair"].fillna("") if "repair" in out else ""
    out["error"] = 1.0 - out["accuracy"]
    return out


def repair_sweep(model, evaluator, a: dict, b: dict, pspec, alphas: np.ndarray, spec: InstabilitySpec) -> pd.DataFrame:
    """Loss and accuracy of the REPAIRed θ(α) of a network without BN at every α (`sweep_aligned`)."""
    import torch

    from . import align

    x = torch.cat(evaluator.bn_batches)  # the first bn_subset training images, no augmentation
    twin = align.copy_model(model).to(x.device)
    to = {k: v.to(x.device) for k, v in a.items()}, {k: v.to(x.device) for k, v in b.items()}
    stats_a = align.channel_statistics(twin, to[0], pspec.repair_layers, x)
    stats_b = align.channel_statistics(twin, to[1], pspec.repair_layers, x)
    frames = []
    for alpha in alphas:
        state = align.lerp_state(*to, float(alpha))
        if 0.0 < alpha < 1.0:
            state = align.repair_state(twin, state, align.interpolated_statistics(stats_a, stats_b, float(alpha)), x)
        frames.append(evaluator.sweep(state, state, [0.0]).assign(alpha=float(alpha)))
    return pd.concat(frames, ignore_index=True)


def pair_sweep(end_dirs: list[str | Path], cache_dir: str | Path, spec: InstabilitySpec, meta: dict,
               *, align: bool = False, progress: bool = False) -> tuple[pd.DataFrame, str]:
    """The pair sweep table and a one-line summary; ends that did not train give the skipped rows.
    `align`: the aligned pair (sweep_aligned), whose rows carry their own pair kinds."""
    reason = not_trained(end_dirs)
    if reason:
        return skipped_frame(meta, spec, f"not measured: {reason}", align=align), f"skipped: {reason}"
    frame = (sweep_aligned if align else sweep_pairs)(end_dirs, cache_dir, spec, progress=progress)
    for key, value in meta.items():
        if not (align and key in ("pair_kind", "pair")):
            frame[key] = value
    frame["status"], frame["status_reason"] = "measured", ""
    frame = frame.reindex(columns=PATH_COLUMNS)
    rows = curve_rows(frame)
    summary = "; ".join(f"{r['pair_kind']} {r['bn_mode']}/{r['split']}: error barrier {r['error_barrier']:.4f}"
                        for r in rows)
    if align:
        first = frame.iloc[0]
        summary += (f"; weight matching: {int(first['align_iterations'])} passes "
                    f"({'fixed point' if first['align_converged'] else 'cap reached'}), distance "
                    f"{first['distance_l2_unaligned']:.4g} -> {first['distance_l2']:.4g}")
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
                     "distance_rel": float(curve["distance_rel"].iloc[0]),
                     **{c: curve[c].iloc[0] for c in ALIGN_COLUMNS}})
    return rows


def _row_key(frame: pd.DataFrame) -> pd.Series:
    """The table row a curve belongs to, as text (an independent pair's spawn epoch is NaN)."""
    if not len(frame):
        return pd.Series(dtype=str)
    return frame[ROW_KEYS].apply(lambda col: col.map(lambda v: "nan" if pd.isna(v) else str(v))).agg("|".join, axis=1)


def with_align_columns(paths: pd.DataFrame) -> pd.DataFrame:
    """The curves with the alignment columns (empty where no pair was aligned, and in sweeps written before
    these columns existed); align_converged as a nullable boolean."""
    paths = paths.copy()
    for column in ALIGN_COLUMNS:
        if column not in paths:
            paths[column] = "" if column == "repair" else np.nan
    paths["repair"] = paths["repair"].astype(object).where(paths["repair"].notna(), "")
    paths["align_converged"] = paths["align_converged"].astype("boolean")
    return paths


def stability_rule(threshold: float) -> str:
    return (f"stable: error barrier <= {threshold:g} (error = 1 - accuracy; barrier = max along the path - "
            "mean of its two ends); stable_from_k: the smallest spawn epoch k from which the mean over seeds "
            "stays stable at every larger k measured")


def instability_table(paths: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """One row per (setting, seed, pair, BN mode, split): barriers (mean over the lines of the pair),
    end accuracies, distance between the ends, whether it is stable, and the setting's stable_from_k.
    `end_statistics` says which BN statistics the end accuracies were scored with (END_STATISTICS)."""
    paths = with_align_columns(paths).assign(spawn_epoch=pd.to_numeric(paths["spawn_epoch"]))  # NaN: independent
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
                     **{c: float(pd.to_numeric(sel[c]).mean()) for c in ALIGN_COLUMNS[:3]},
                     "align_converged": sel["align_converged"].iloc[0], "repair": sel["repair"].iloc[0],
                     "status": "measured", "status_reason": ""})
    table = pd.DataFrame(rows)
    for column in ("error_barrier", "loss_barrier", "distance_l2", "distance_rel", "accuracy_ends_mean",
                   *ALIGN_COLUMNS):
        if column not in table:
            table[column] = np.nan
    table["threshold"] = threshold
    table["stable"] = table["error_barrier"].le(threshold).where(table["error_barrier"].notna())
    table["stable_from_k"] = np.nan
    spawned = table["pair_kind"] == "spawn"
    for _, group in table[spawned].groupby(["setting", "bn_mode", "split"], sort=False):
        table.loc[group.index, "stable_from_k"] = stable_from(group, threshold)
    table["align_converged"] = table["align_converged"].astype("boolean")
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
    paths = with_align_columns(pd.concat([pd.read_parquet(f) for f in sweep_files], ignore_index=True))
    table = instability_table(paths, threshold)
    write_parquet(paths, out_paths)
    write_parquet(table, out_table)
    note(log, f"{len(table)} rows ({int((table['status'] == 'skipped').sum())} skipped) -> {out_table}; "
              f"curves -> {out_paths}")
    return table
