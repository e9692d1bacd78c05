"""Curvature along linear paths: the top Hessian eigenvalue and the Hessian trace of the training loss at
points θ(α) of a run's paths (config `curvature`, CurvatureSpec).

The loss is the mean data loss (the run's own cross-entropy or BCE, without the weight-decay term that the
optimiser adds: that term would add wd to every eigenvalue) on a fixed training subset: the first `subset`
images of the training split without augmentation. BatchNorm runs in eval mode with the statistics of the
path in the BN mode of the run's sweep (PathEvaluator.states_along: interpolated like parameters, or
recomputed at each α). The Hessian is taken with respect to the parameters that move along the path: every
parameter on the full path θ₀ → θ_T, only the group's parameters on a group-wise path (the other tensors
stay at θ_T and are constants here). BN running statistics are buffers, never variables of the Hessian.

- Hessian-vector products Hv by double backward (torch.autograd.grad of g·v, g the gradient built with
  create_graph); the subset is walked in chunks of `batch_size` (memory), and where it fits in one chunk
  the gradient's graph is kept for all products at that α.
- λ_max: the largest (most positive) eigenvalue, by Lanczos with full reorthogonalisation from a seeded
  Gaussian start, until the Ritz residual estimate β_k·|s_k| is at most `tol`·|θ| or `iterations` steps.
  `residual` is then measured, not estimated: ‖Hv − λv‖ / |λ| with one more product, v the Ritz vector and
  λ its Rayleigh quotient vᵀHv (the value reported).
- trace: Hutchinson's estimator (1989), the mean of zᵀHz over `probes` Rademacher vectors z (entries ±1,
  E[zzᵀ] = I), with its standard error (sample standard deviation / √probes).

Every α uses the same random start vector and the same probes (the generator is seeded with `seed` at each
point): the differences along a path are then not differences of random draws.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from ..engine.objective import strict_fp32, summed_loss

# One row per (path, group, BN mode, α) of one run; `path` is full or group (linpath.paths.sweeps.PathRequest).
COLUMNS = ["run", "setting", "seed", "experiment", "path", "group", "bn_mode", "alpha", "lambda_max", "trace",
           "trace_se", "iterations", "residual", "loss", "parameters", "subset", "probes", "status", "status_reason"]


# --- the two estimators, on any symmetric operator given by its products -----------------------------


@dataclass
class TopEigen:
    value: float  # the Rayleigh quotient of the Ritz vector: λ_max
    iterations: int  # Lanczos steps (Hessian-vector products, the residual check not counted)
    residual: float  # ‖Hv − λv‖ / |λ|, measured with one more product


def lanczos_top(hvp, n: int, *, iterations: int, tol: float, generator: torch.Generator,
                device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> TopEigen:
    """The largest eigenvalue of the symmetric n×n operator `hvp` (a function of a 1-D tensor), by Lanczos
    with full reorthogonalisation (twice, against the loss of orthogonality of floating point)."""
    if n < 1:
        raise ValueError("the operator has no dimensions (no parameters move)")
    q = torch.randn(n, generator=generator, dtype=torch.float64).to(device, dtype)
    basis = [q / torch.linalg.vector_norm(q)]
    diag: list[float] = []
    off: list[float] = []
    ritz = np.ones(1)
    steps = min(iterations, n)
    for k in range(steps):
        w = hvp(basis[k])
        diag.append(float(torch.dot(w, basis[k])))
        w = w - diag[k] * basis[k] - (off[k - 1] * basis[k - 1] if k else 0.0)
        stack = torch.stack(basis)
        for _ in range(2):
            w = w - stack.T @ (stack @ w)
        beta = float(torch.linalg.vector_norm(w))
        tri = np.diag(diag) + np.diag(off, 1) + np.diag(off, -1)
        values, vectors = np.linalg.eigh(tri)
        top, ritz = values[-1], vectors[:, -1]
        done = beta * abs(ritz[-1]) <= tol * abs(top) or beta <= 1e-12 * max(abs(top), 1e-30)
        if done or k == steps - 1:
            break
        off.append(beta)
        basis.append(w / beta)
    v = torch.from_numpy(ritz).to(device, dtype) @ torch.stack(basis[: len(ritz)])
    v = v / torch.linalg.vector_norm(v)
    hv = hvp(v)
    value = float(torch.dot(v, hv))
    residual = float(torch.linalg.vector_norm(hv - value * v)) / abs(value) if value else math.inf
    return TopEigen(value, len(diag), residual)


def hutchinson_trace(hvp, n: int, *, probes: int, generator: torch.Generator, device: torch.device | str = "cpu",
                     dtype: torch.dtype = torch.float32) -> tuple[float, float, list[float]]:
    """(trace estimate, its standard error, the per-probe values zᵀHz) from `probes` Rademacher vectors."""
    samples = []
    for _ in range(probes):
        z = (torch.randint(0, 2, (n,), generator=generator) * 2 - 1).to(device, dtype)
        samples.append(float(torch.dot(z, hvp(z))))
    values = np.asarray(samples, dtype=float)
    se = float(values.std(ddof=1) / math.sqrt(probes)) if probes > 1 else math.nan
    return float(values.mean()), se, samples


# --- Hessian-vector products of a model's loss -----------------------------------------------------------


class LossHessian:
    """Products with the Hessian of the mean loss of `model` on (x, y) with respect to the parameters
    `names` (state_dict keys of parameters; the rest of the model is constant), at the model's current state.

    Build it after the state is written: it reads the parameters as they are. Chunks of `batch_size`
    samples; a subset of one chunk keeps its gradient graph for every product."""

    def __init__(self, model: nn.Module, names: list[str], x: torch.Tensor, y: torch.Tensor, loss: str,
                 batch_size: int):
        own = dict(model.named_parameters())
        missing = [k for k in names if k not in own]
        if missing:
            raise ValueError(f"not parameters of the model: {missing[:3]}")
        self.model, self.loss, self.n_samples = model, loss, len(y)
        self.params = [own[k].requires_grad_(True) for k in names]
        self.shapes = [p.shape for p in self.params]
        self.n = sum(p.numel() for p in self.params)
        self.chunks = [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(y), batch_size)]
        self._saved = None
        self.value = self._value()

    def _gradient(self, x, y) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        loss = summed_loss(self.model(x), y, self.loss) / self.n_samples
        grads = torch.autograd.grad(loss, self.params, create_graph=True, allow_unused=True, materialize_grads=True)
        return loss, grads

    def _value(self) -> float:
        """The mean loss at this state (and, for one chunk, the kept gradient graph)."""
        with torch.enable_grad():
            if len(self.chunks) == 1:
                loss, grads = self._gradient(*self.chunks[0])
                self._saved = grads
                return float(loss.detach())
            with torch.no_grad():
                return float(sum(summed_loss(self.model(x), y, self.loss) for x, y in self.chunks) / self.n_samples)

    def hvp(self, v: torch.Tensor) -> torch.Tensor:
        parts = [t.view(s) for t, s in zip(v.split([math.prod(s) for s in self.shapes]), self.shapes)]
        with torch.enable_grad():
            if self._saved is not None:
                out = self._product(self._saved, parts, retain=True)
            else:
                out = torch.zeros_like(v)
                for x, y in self.chunks:
                    out += self._product(self._gradient(x, y)[1], parts, retain=False)
        return out

    def _product(self, grads, parts, retain: bool) -> torch.Tensor:
        hv = torch.autograd.grad(grads, self.params, grad_outputs=parts, retain_graph=retain, allow_unused=True,
                                 materialize_grads=True)
        return torch.cat([h.reshape(-1) for h in hv]).detach()

    def release(self) -> None:
        self._saved = None


def curvature_at(model: nn.Module, names: list[str], x: torch.Tensor, y: torch.Tensor, loss: str, spec) -> dict:
    """λ_max, trace and its standard error at the model's current state (spec: CurvatureSpec)."""
    device = next(model.parameters()).device
    hessian = LossHessian(model, names, x, y, loss, spec.batch_size)
    try:
        generator = torch.Generator().manual_seed(spec.seed)
        top = lanczos_top(hessian.hvp, hessian.n, iterations=spec.iterations, tol=spec.tol, generator=generator,
                          device=device)
        trace, se, _ = hutchinson_trace(hessian.hvp, hessian.n, probes=spec.probes, generator=generator, device=device)
    finally:
        hessian.release()
    return {"lambda_max": top.value, "iterations": top.iterations, "residual": top.residual, "trace": trace,
            "trace_se": se, "loss": hessian.value, "parameters": hessian.n}


def path_curvature(evaluator, start: dict, end: dict, alphas, x: torch.Tensor, y: torch.Tensor, loss: str, spec, *,
                   group: str, bn_mode: str, bar=None) -> list[dict]:
    """One row per α of the path that moves `group` from `start` to `end` (evaluator: a PathEvaluator)."""
    from .evaluator import FULL

    model = evaluator.model
    parameters = {k for k, _ in model.named_parameters()}
    names = [k for k in evaluator.moving_keys(group) if k in parameters]
    for p in model.parameters():
        p.requires_grad_(False)
    rows = []
    with strict_fp32(evaluator.device):
        for alpha in evaluator.states_along(start, end, alphas, group=group, bn_mode=bn_mode):
            rows.append({"path": "full" if group == FULL else "group", "group": group, "bn_mode": bn_mode,
                         "alpha": alpha, **curvature_at(model, names, x, y, loss, spec)})
            if bar is not None:
                bar.update()
    return rows


# --- one run --------------------------------------------------------------------------------------------


def resolve_groups(words: list[str], model: nn.Module, barrier_file: str | Path | None) -> list[str]:
    """The groups whose group-wise paths are measured: `all` (every group of the model), `barrier` (the
    `with_barrier` list of a barrier-groups file, linpath.study.barrier_groups) or group names."""
    import yaml

    from ..engine import models
    from ..foundations.hparams import SettingsError

    known = list(models.groups(model))
    out: list[str] = []
    for word in words:
        if word == "all":
            out += known
        elif word == "barrier":
            if not barrier_file:
                raise SettingsError("curvature groups: `barrier` needs the setting's barrier-groups file")
            out += list((yaml.safe_load(Path(barrier_file).read_text()) or {}).get("with_barrier") or [])
        elif word in known:
            out.append(word)
        else:
            raise SettingsError(f"curvature groups: {word!r} is not a group of the model ({', '.join(known)}), "
                                "`all` or `barrier`")
    return list(dict.fromkeys(out))


def measure_run(run_dir: str | Path, cache_dir: str | Path, spec, sweep, groups: list[str], *,
                barrier_file: str | Path | None = None, progress: bool = False) -> pd.DataFrame:
    """Curvature along the full path θ₀ → θ_T of a finished run and along the group-wise paths of `groups`,
    in every BN mode of its sweep (sweep: the setting's SweepSpec; spec: CurvatureSpec)."""
    from ..engine import models
    from ..foundations.device import pick_device
    from ..foundations.hparams import RunSpec, alpha_values
    from ..foundations.io import load_state
    from ..foundations.layout import RunDir
    from .evaluator import FULL, EvalSplit, PathEvaluator
    from .sweeps import bn_recompute_inputs, resolve_start, run_eval_splits

    run_dir = Path(run_dir)
    run_spec = RunSpec.from_yaml(RunDir(run_dir).settings)
    model = models.build(run_spec.model)
    train = run_eval_splits(run_dir, cache_dir, ("train",))[0]
    x, y = train.x[: spec.subset].clone(), train.y[: spec.subset].clone()
    bn = bn_recompute_inputs(run_dir, cache_dir, [train], run_spec, sweep.bn_subset, "recompute" in sweep.bn_modes)
    device = pick_device(spec.device, "curvature.device")
    evaluator = PathEvaluator(model, [EvalSplit("train", x, y, train.source)], run_spec.train.loss, device=device,
                              batch_size=spec.batch_size, fold_bn=False, **bn)
    del train
    x, y = evaluator.splits[0].x, evaluator.splits[0].y
    _, init = resolve_start(run_dir, "init", run_spec, run_dir)
    start, end = load_state(init), load_state(RunDir(run_dir).final)
    paths = [FULL, *resolve_groups(groups, evaluator.model, barrier_file)]
    alphas = alpha_values(spec.alphas)
    rows = []
    with tqdm(total=len(paths) * len(sweep.bn_modes) * len(alphas), desc=f"curvature {run_dir.name}", unit="α",
              disable=not progress) as bar:
        for group in paths:
            for mode in sweep.bn_modes:
                rows += path_curvature(evaluator, start, end, alphas, x, y, run_spec.train.loss, spec,
                                       group=group, bn_mode=mode, bar=bar)
    frame = pd.DataFrame(rows)
    frame["subset"], frame["probes"], frame["status"], frame["status_reason"] = len(y), spec.probes, "ok", ""
    return frame


def curvature_job(run_dir: str | Path, cache_dir: str | Path, spec, sweep, groups: list[str], meta: dict, *,
                  barrier_file: str | Path | None = None, progress: bool = False) -> tuple[pd.DataFrame, str]:
    """The curvature table of one run and a one-line summary; a run that did not train gives one row per BN
    mode that says so."""
    from ..foundations.outcome import read_outcome

    found = read_outcome(run_dir)
    if found is None:
        from ..foundations.layout import RunDir

        raise FileNotFoundError(f"{RunDir(run_dir).outcome}: the run has not finished")
    if not found.trained:
        reason = f"not measured: {Path(run_dir).name} {found.short()}"
        rows = [{"path": "full", "group": "all", "bn_mode": mode, "status": "skipped", "status_reason": reason}
                for mode in sweep.bn_modes]
        return _with_meta(pd.DataFrame(rows), meta), f"skipped: {reason}"
    frame = measure_run(run_dir, cache_dir, spec, sweep, groups, barrier_file=barrier_file, progress=progress)
    worst = frame["residual"].max()
    summary = (f"{frame.groupby(['group', 'bn_mode']).ngroups} paths x {frame['alpha'].nunique()} alphas; "
               f"lambda_max {frame['lambda_max'].min():.4g}..{frame['lambda_max'].max():.4g}, "
               f"most Lanczos steps {frame['iterations'].max()}, largest residual {worst:.2e}")
    return _with_meta(frame, meta), summary


def _with_meta(frame: pd.DataFrame, meta: dict) -> pd.DataFrame:
    for key, value in meta.items():
        frame[key] = value
    return frame.reindex(columns=COLUMNS)


def write_curvature_table(inputs: list[str | Path], out: str | Path) -> pd.DataFrame:
    """curvature.parquet: every run's rows, in input order."""
    from ..foundations.io import write_parquet

    frames = [pd.read_parquet(p) for p in inputs]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS)
    table = table.reindex(columns=COLUMNS)
    write_parquet(table, out)
    return table
