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

Random planes (Li, Xu, Taylor, Studer & Goldstein, NeurIPS 2018, "Visualizing the Loss Landscape of
Neural Nets"): θ(a, b) = θ_c + a·d1 + b·d2 around one centre state θ_c, with two Gaussian directions
that are *filter-normalised*: each filter of a direction (an output channel of a conv weight, a row of
a linear weight) is rescaled to the norm of the same filter in θ_c, so that a step of a = 1 changes every
filter by as much as it weighs, whatever the scale the network gives it. Directions are zero in every
tensor of one dimension or less (biases, BN weights, biases and running statistics), as Li et al. set
them: BN statistics stay the centre's in interpolate mode. The same machinery measures them, with
A = θ_c, B = θ_c + d1 and C = θ_c + d2, so that α and β are a and b; the line θ_c + a·d1 (kind `line`)
is the path evaluator's line from A to B at `line_points` values of a. A run's trajectory is not
projected onto a random plane: two random directions in millions of dimensions miss it almost wholly.
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
           "norm_ca", "cos_ba_ca", "eval_data", "status", "status_reason", "directions", "direction_seed_1",
           "direction_seed_2"]


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


def filter_directions(kinds: dict[str, str], centre: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """A filter-normalised Gaussian direction around `centre` (Li et al. 2018).

    Every weight tensor of two or more dimensions (kind `weights` of linpath.paths.evaluator.tensor_kinds)
    is drawn from N(0, 1) with a generator seeded by `seed`, in state order, and each of its filters (the
    slice of one output channel / row: index 0) is rescaled to that filter's norm in `centre` (a zero filter
    stays zero). Every other tensor (biases, BN affine parameters and statistics, counters) is zero."""
    generator = torch.Generator().manual_seed(int(seed))
    out = {}
    for key, value in centre.items():
        if kinds.get(key) == "weights" and value.dim() > 1:
            noise = torch.randn(value.shape, generator=generator, dtype=torch.float64)
            rows, target = noise.reshape(len(noise), -1), value.detach().cpu().double().reshape(len(value), -1)
            scale = torch.linalg.vector_norm(target, dim=1) / torch.linalg.vector_norm(rows, dim=1).clamp_min(1e-300)
            out[key] = (rows * scale.unsqueeze(1)).reshape(value.shape).to(value.dtype)
        else:
            out[key] = torch.zeros_like(value)
    return out


def filter_norms(tensor: torch.Tensor) -> torch.Tensor:
    """The norm of each filter (index 0) of a tensor of two or more dimensions."""
    return torch.linalg.vector_norm(tensor.detach().double().reshape(len(tensor), -1), dim=1)


def random_states(model, centre: dict[str, torch.Tensor], seeds) -> tuple[dict, dict, dict[str, torch.Tensor]]:
    """(B, C, geometry) of a random plane: centre + d1, centre + d2 in the floating-point tensors (the counters
    stay the centre's), and ‖d1‖, ‖d2‖ and their cosine (columns norm_ba, norm_ca, cos_ba_ca)."""
    from .evaluator import tensor_kinds

    kinds = tensor_kinds(model)
    d1, d2 = (filter_directions(kinds, centre, s) for s in seeds)
    b, c = ({k: (v + d[k] if v.is_floating_point() else v) for k, v in centre.items()} for d in (d1, d2))
    keys = moving_keys(centre)
    zero = {k: torch.zeros_like(centre[k]) for k in keys}
    return b, c, plane_geometry(zero, d1, d2, keys)


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
    (kind `trajectory`) of one plane, in one long table. A random plane has the line centre + a·d1 (kind
    `line`), its centre as the one anchor, and no trajectory."""
    from ..engine import models
    from ..foundations.device import pick_device
    from ..foundations.hparams import RunSpec
    from .evaluator import PathEvaluator
    from .sweeps import bn_recompute_inputs, resolve_start, run_eval_splits

    run_dir = Path(run_dir)
    run_spec = RunSpec.from_yaml(RunDir(run_dir).settings)
    labelled = [resolve_start(run_dir, s, run_spec, Path(scratch)) for s in starts]
    model = models.build(run_spec.model)
    if spec.random:
        a = load_any_state(labelled[0][1])
        b, c, geometry = random_states(model, a, spec.direction_seeds)
        labelled += [(f"d{i + 1} (seed {seed})", "") for i, seed in enumerate(spec.direction_seeds)]
    else:
        a, b, c = (load_any_state(path) for _, path in labelled)
        geometry = plane_geometry(a, b, c, moving_keys(b))
    splits = run_eval_splits(run_dir, cache_dir, spec.splits)
    bn = bn_recompute_inputs(run_dir, cache_dir, splits, run_spec, spec.bn_subset, spec.bn_mode == "recompute")
    evaluator = PathEvaluator(model, splits, run_spec.train.loss, device=pick_device(spec.device, "plane.device"),
                              batch_size=spec.batch_size, progress=progress, **bn)
    sources = {s.name: s.source for s in splits}
    del splits
    keys = moving_keys(b)
    grid_values = np.asarray(spec.grid())
    grid = plane_grid(evaluator, a, b, c, grid_values, grid_values, spec.bn_mode).assign(kind="grid")
    parts = [grid]
    if spec.random:  # the line centre + a·d1: the line β = 0 at the line's own, finer values
        line = evaluator.sweep(a, b, np.asarray(spec.line()), bn_mode=spec.bn_mode)
        parts.append(line.drop(columns=["group", "param_group"]).assign(beta=0.0, kind="line"))
    measured = pd.concat(parts, ignore_index=True)
    measured["eval_data"] = measured["split"].map(sources)
    corners = [(0.0, 0.0)] if spec.random else [(0.0, 0.0), (1.0, 0.0), (0.0, 1.0)]
    anchors = [{"kind": "anchor", "label": name, "alpha": x, "beta": y, "residual_rel": 0.0}
               for (name, _), (x, y) in zip(labelled, corners)]
    path = []
    for label, epoch, file in ([] if spec.random else trajectory_states(run_dir)):
        x, y, residual = project(load_any_state(file), a, b, c, keys)
        path.append({"kind": "trajectory", "label": label, "epoch": epoch, "alpha": x, "beta": y, "residual_rel": residual})
    frame = pd.concat([measured, pd.DataFrame(anchors + path)], ignore_index=True)
    frame["error"] = 1.0 - frame["accuracy"]
    names = {"state_a": labelled[0][0], "state_b": labelled[1][0], "state_c": labelled[2][0]}
    for key, value in {**meta, **geometry, **names, **plane_kind(spec), "status": "measured", "status_reason": ""}.items():
        frame[key] = value
    return frame.reindex(columns=COLUMNS)


def plane_kind(spec: PlaneSpec) -> dict:
    """The columns that tell a random plane from a plane through states: `directions`, and the seeds of d1, d2."""
    seeds = spec.direction_seeds if spec.random else [None, None]
    return {"directions": spec.directions, "direction_seed_1": seeds[0], "direction_seed_2": seeds[1]}


def plane_job(run_dir: str | Path, reads: list[str | Path], starts: list[str], cache_dir: str | Path,
              spec: PlaneSpec, scratch: str | Path, meta: dict, *, progress: bool = False) -> tuple[pd.DataFrame, str]:
    """A plane, or (a run it reads did not train) one skipped row that says why. `starts`: A, B, C, or a
    random plane's centre."""
    for read in reads:
        found = read_outcome(read)
        if found is None:
            raise FileNotFoundError(f"{RunDir(read).outcome}: the run has not finished")
        if not found.trained:
            reason = f"not measured: {Path(read).name} {found.short()}"
            row = {**meta, "kind": "grid", "bn_mode": spec.bn_mode, **plane_kind(spec), "status": "skipped",
                   "status_reason": reason}
            return pd.DataFrame([row]).reindex(columns=COLUMNS), reason
    frame = plane_run(run_dir, starts, cache_dir, spec, scratch, meta, progress=progress)
    grid = frame[frame["kind"] == "grid"]
    lows = "; ".join(f"{s}: loss {g['loss'].min():.4g}..{g['loss'].max():.4g}" for s, g in grid.groupby("split"))
    line = f" and a line of {spec.line_points} points" if spec.random else ""
    return frame, f"{spec.points}x{spec.points} grid{line}, {lows}"


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


def random_note() -> str:
    return ("θ(a, b) = centre + a·d1 + b·d2, d1 and d2 filter-normalised Gaussian directions (Li et al. 2018); "
            "biases and BN zero")

