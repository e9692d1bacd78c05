"""Loss planes: loss and accuracy over the plane through three states A, B, C of one network, and the
run's saved states projected onto it (Lucas et al. 2021 draw the plane through θ₀, θ_T and another
init θ₀′).

Coordinates are affine, not orthonormal: θ(α, β) = A + α(B−A) + β(C−A), so A, B and C sit at (0, 0),
(1, 0) and (0, 1), and the line β = 0 is the straight path from A to B. Every floating-point tensor of
the state moves (parameters and BN running statistics; `num_batches_tracked` stays B's). The two
directions are in general neither orthogonal nor of equal length: the table records ‖B−A‖, ‖C−A‖ and
the cosine between them, so the plot's shear is known.

One row of fixed β is the line from A + β(C−A) to B + β(C−A), measured by linpath.paths.evaluator.PathEvaluator
(model, twin and data stay on the device); only those two states and the three anchors are held, never
one state per grid point. Projection: the least-squares (α, β) of a state in the same coordinates,
with the relative distance of the state from the plane (0 on it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..foundations.hparams import PlaneSpec
from ..foundations.io import load_checkpoint, load_state, note, write_parquet
from ..foundations.layout import RunDir
from ..foundations.outcome import read_outcome

COLUMNS = ["plane", "setting", "experiment", "seed", "run_id", "kind", "label", "epoch", "alpha", "beta", "split",
           "bn_mode", "loss", "accuracy", "error", "residual_rel", "state_a", "state_b", "state_c", "norm_ba",
           "norm_ca", "cos_ba_ca", "eval_data", "status", "status_reason"]


def load_any_state(path: str | Path) -> dict[str, torch.Tensor]:
    """A plain state file, or the weights of a spawn state (spawn_<k>.pt, checkpoint format)."""
    saved = load_checkpoint(path)
    if isinstance(saved, dict) and {"epoch", "model", "optimizer"} <= saved.keys():
        return saved["model"]
    return load_state(path)


def moving_keys(state: dict[str, torch.Tensor]) -> list[str]:
    """The tensors that take part in the plane (floating point; counters stay B's)."""
    return [k for k, v in state.items() if v.is_floating_point()]


def _flat(state: dict, keys: list[str]) -> torch.Tensor:
    return torch.cat([state[k].double().reshape(-1) for k in keys])


def plane_geometry(a: dict, b: dict, c: dict, keys: list[str]) -> dict:
    """‖B−A‖, ‖C−A‖ and the cosine between the two directions."""
    u, v = _flat(b, keys) - _flat(a, keys), _flat(c, keys) - _flat(a, keys)
    nu, nv = torch.linalg.vector_norm(u).item(), torch.linalg.vector_norm(v).item()
    return {"norm_ba": nu, "norm_ca": nv, "cos_ba_ca": (u @ v).item() / (nu * nv) if nu > 0 and nv > 0 else float("nan")}


def project(state: dict, a: dict, b: dict, c: dict, keys: list[str]) -> tuple[float, float, float]:
    """(α, β, relative residual): the least-squares affine coordinates of `state` on the plane through
    A, B, C, and ‖θ − θ(α, β)‖ / ‖θ − A‖ (0 on the plane; 0 for A itself)."""
    origin = _flat(a, keys)
    basis = torch.stack([_flat(b, keys) - origin, _flat(c, keys) - origin], dim=1)
    offset = _flat(state, keys) - origin
    coords = torch.linalg.lstsq(basis, offset.unsqueeze(1)).solution.squeeze(1)
    residual = torch.linalg.vector_norm(offset - basis @ coords).item()
    length = torch.linalg.vector_norm(offset).item()
    return float(coords[0]), float(coords[1]), (residual / length if length > 0 else 0.0)


def shifted(state: dict, a: dict, c: dict, beta: float, keys: set[str]) -> dict[str, torch.Tensor]:
    """state + β(C−A) in the moving tensors; the others as in `state`."""
    return {k: (v + beta * (c[k] - a[k]) if k in keys else v) for k, v in state.items()}


def plane_grid(evaluator, a: dict, b: dict, c: dict, alphas, betas, bn_mode: str = "interpolate") -> pd.DataFrame:
    """Loss and accuracy at θ(α, β) = A + α(B−A) + β(C−A) for every α and β: one evaluator sweep per β
    along the line from A + β(C−A) to B + β(C−A)."""
    keys = set(moving_keys(b))
    frames = []
    for beta in betas:
        frame = evaluator.sweep(shifted(a, a, c, float(beta), keys), shifted(b, a, c, float(beta), keys), alphas,
                                bn_mode=bn_mode)
        frames.append(frame.drop(columns=["group", "param_group"]).assign(beta=float(beta)))
    return pd.concat(frames, ignore_index=True)


def trajectory_states(run_dir: Path) -> list[tuple[str, int, Path]]:
    """(label, epoch, file) of a run's saved states in order: init, epoch_<t> (train.save_epochs), final."""
    from ..foundations.hparams import RunSpec

    run = RunDir(run_dir)
    spec = RunSpec.from_yaml(run.settings)
    metrics = pd.read_parquet(run.metrics)
    first, last = int(metrics["epoch"].min()), int(metrics["epoch"].max())
    out = [("init", first, run.init)]
    out += [(f"epoch_{t}", t, run.epoch(t)) for t in sorted(spec.train.save_epochs)
            if first < t < last and run.epoch(t).is_file()]
    return out + [("final", last, run.final)]


def plane_run(run_dir: str | Path, starts: list[str], cache_dir: str | Path, spec: PlaneSpec, scratch: str | Path,
              meta: dict, *, progress: bool = False) -> pd.DataFrame:
    """The grid (kind `grid`), the anchors A, B, C (kind `anchor`) and the run's projected trajectory
    (kind `trajectory`) of one plane, in one long table."""
    from ..engine import models
    from ..foundations.device import pick_device
    from ..foundations.hparams import RunSpec
    from .evaluator import PathEvaluator
    from .sweeps import bn_recompute_inputs, resolve_start, run_eval_splits

    run_dir = Path(run_dir)
    run_spec = RunSpec.from_yaml(RunDir(run_dir).settings)
    labelled = [resolve_start(run_dir, s, run_spec, Path(scratch)) for s in starts]
    a, b, c = (load_any_state(path) for _, path in labelled)
    model = models.build(run_spec.model)
    splits = run_eval_splits(run_dir, cache_dir, spec.splits)
    bn = bn_recompute_inputs(run_dir, cache_dir, splits, run_spec, spec.bn_subset, spec.bn_mode == "recompute")
    evaluator = PathEvaluator(model, splits, run_spec.train.loss, device=pick_device(spec.device, "plane.device"),
                              batch_size=spec.batch_size, progress=progress, **bn)
    sources = {s.name: s.source for s in splits}
    del splits
    keys = moving_keys(b)
    grid_values = np.asarray(spec.grid())
    grid = plane_grid(evaluator, a, b, c, grid_values, grid_values, spec.bn_mode).assign(kind="grid")
    grid["eval_data"] = grid["split"].map(sources)
    anchors = [{"kind": "anchor", "label": name, "alpha": x, "beta": y, "residual_rel": 0.0}
               for (name, _), (x, y) in zip(labelled, [(0.0, 0.0), (1.0, 0.0), (0.0, 1.0)])]
    path = []
    for label, epoch, file in trajectory_states(run_dir):
        x, y, residual = project(load_any_state(file), a, b, c, keys)
        path.append({"kind": "trajectory", "label": label, "epoch": epoch, "alpha": x, "beta": y, "residual_rel": residual})
    frame = pd.concat([grid, pd.DataFrame(anchors + path)], ignore_index=True)
    frame["error"] = 1.0 - frame["accuracy"]
    geometry = plane_geometry(a, b, c, keys)
    names = {"state_a": labelled[0][0], "state_b": labelled[1][0], "state_c": labelled[2][0]}
    for key, value in {**meta, **geometry, **names, "status": "measured", "status_reason": ""}.items():
        frame[key] = value
    return frame.reindex(columns=COLUMNS)


def plane_job(run_dir: str | Path, reads: list[str | Path], starts: list[str], cache_dir: str | Path,
              spec: PlaneSpec, scratch: str | Path, meta: dict, *, progress: bool = False) -> tuple[pd.DataFrame, str]:
    """A plane, or (a run it reads did not train) one skipped row that says why."""
    for read in reads:
        found = read_outcome(read)
        if found is None:
            raise FileNotFoundError(f"{RunDir(read).outcome}: the run has not finished")
        if not found.trained:
            reason = f"not measured: {Path(read).name} {found.short()}"
            row = {**meta, "kind": "grid", "bn_mode": spec.bn_mode, "status": "skipped", "status_reason": reason}
            return pd.DataFrame([row]).reindex(columns=COLUMNS), reason
    frame = plane_run(run_dir, starts, cache_dir, spec, scratch, meta, progress=progress)
    grid = frame[frame["kind"] == "grid"]
    lows = "; ".join(f"{s}: loss {g['loss'].min():.4g}..{g['loss'].max():.4g}" for s, g in grid.groupby("split"))
    return frame, f"{spec.points}x{spec.points} grid, {lows}"


def write_planes(files: list[str], out: str | Path, log: str | None = None) -> pd.DataFrame:
    table = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    write_parquet(table, out)
    note(log, f"{len(files)} planes, {len(table)} rows -> {out}")
    return table


def log_range(values) -> bool:
    """Whether a colour scale for these positive values should be logarithmic (they span > 20×)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return bool(len(v) and v.min() > 0 and v.max() / v.min() > 20)


def affine_note() -> str:
    return "affine coordinates θ(α, β) = A + α(B−A) + β(C−A): A, B, C at (0,0), (1,0), (0,1)"

