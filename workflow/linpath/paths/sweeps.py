"""Which paths a run asks for, and a finished run's sweep: the requests, their start states, one table.

A run's sweep (config `paths`, SweepSpec) asks for the full-model path from each start point (θ₀, another
init, an earlier epoch, any state file) to θ_T, and from the first start also every group-wise and
parameter-group path. `plan_requests` lists them on the real model, so `linpath plan` counts the same
paths the jobs evaluate; `interpolate_run` builds one PathEvaluator for the run and walks them all.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from ..engine import models
from ..foundations.convert import check_alphas
from ..foundations.device import pick_device
from ..foundations.hparams import SweepSpec, alpha_values
from ..foundations.ids import digest
from ..foundations.layout import RunDir
from .evaluator import FULL, EvalSplit, PathEvaluator, tensor_kinds

OTHER_INIT_SEED = 10_000  # start "other": seed OTHER_INIT_SEED + the run's init seed


def alpha_grid(spec: str | list[float] | None = None) -> np.ndarray:
    """α values: a list, "start:stop:count" (inclusive), or SweepSpec's default grid."""
    if spec is None:
        spec = SweepSpec.alphas
    if isinstance(spec, str):
        check_alphas(spec, "alphas")
        return np.asarray(alpha_values(spec), dtype=float)
    return np.asarray(spec, dtype=float)


# --- plans: which paths a run asks for --------------------------------------


@dataclass
class PathRequest:
    """One path: `group` moves from `start_state` to `end_state` (the rest stays at the end)."""

    start: str  # label of the start point: init, other_init, epoch_<t>, ...
    start_state: str
    end_state: str
    group: str = FULL
    param_group: str = "all"

    @property
    def kind(self) -> str:
        if self.group == FULL:
            return "full"
        return "group" if self.param_group == "all" else "param_group"


def plan_requests(model: nn.Module, start: str, start_state: str, end_state: str, *, full: bool = True,
                  groups: bool = False, param_groups: bool = False) -> list[PathRequest]:
    """The full path and/or every group-wise / parameter-group path of one start→end pair."""
    out = [PathRequest(start, start_state, end_state)] if full else []
    kinds = tensor_kinds(model)
    for group, keys in models.groups(model).items():
        if groups:
            out.append(PathRequest(start, start_state, end_state, group))
        if param_groups:
            present = {kinds[k] for k in keys}
            for pg in ("weights", "bn_affine", "bn_stats"):
                if pg in present and len(present - {"counter"}) > 1:
                    out.append(PathRequest(start, start_state, end_state, group, pg))
    return out


def run_requests(evaluator: PathEvaluator, requests: list[PathRequest], alphas, bn_modes=("interpolate",),
                 run_id: str = "", load=None) -> pd.DataFrame:
    """Evaluate every request in every BN mode into one long-format table."""
    from ..foundations.io import load_state

    load = load or load_state
    cache: dict[str, dict] = {}

    def state(path: str) -> dict:
        if path not in cache:
            cache[path] = load(path)
        return cache[path]

    frames = []
    jobs = [(r, m) for r in requests for m in bn_modes]
    for request, mode in tqdm(jobs, desc=f"paths {run_id}".strip(), unit="path", disable=not evaluator.progress):
        frame = evaluator.sweep(state(request.start_state), state(request.end_state), alphas,
                                group=request.group, param_group=request.param_group, bn_mode=mode)
        frame.insert(0, "start", request.start)
        frame.insert(0, "path", request.kind)
        frame.insert(0, "run_id", run_id)
        frame["start_state"] = str(request.start_state)
        frame["end_state"] = str(request.end_state)
        frame["eval_data"] = frame["split"].map({s.name: s.source for s in evaluator.splits})
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def run_eval_splits(run_dir: str | Path, cache_dir: str | Path, splits=("train", "test")) -> list[EvalSplit]:
    """The cached evaluation tensors of a run's data (written on first use)."""
    from ..engine import data as data_mod
    from ..foundations.hparams import RunSpec

    spec = RunSpec.from_yaml(RunDir(run_dir).settings)
    out = []
    for split in splits:
        path = data_mod.write_eval_split(spec.data, split, cache_dir)
        x, y = data_mod.load_eval_split(path)
        out.append(EvalSplit(split, x, y, str(path)))
    return out


def bn_recompute_inputs(run_dir: str | Path, cache_dir: str | Path, splits: list[EvalSplit], spec, subset: int,
                        needed: bool) -> dict:
    """The PathEvaluator's inputs for recomputed BN statistics (`bn_data`, `bn_batch_size`), or none where
    no sweep recomputes them: the first `subset` images of the run's training split without augmentation,
    in batches of the run's own `train.batch_size`. The statistics a BN layer keeps while training are
    averages over batches of that size (a variance estimated from 64 images is not the one estimated from
    256). Lucas et al. recompute them over the training data; doing so in training batches, as
    torch.optim.swa_utils.update_bn does over a training loader, gives the estimate the layer would have
    kept at that point of the path. `bn_subset: 256` with `train.batch_size: 64` means 4 batches of 64."""
    if not needed:
        return {}
    train = [s for s in splits if s.name == "train"] or run_eval_splits(run_dir, cache_dir, ("train",))
    return {"bn_data": train[0].x[:subset].clone(),  # a view would keep the whole split alive
            "bn_batch_size": spec.train.batch_size}


def resolve_start(run_dir: Path, start: str, spec, scratch: Path) -> tuple[str, str]:
    """(label, state file) of a start point; `other:<seed>` writes that random init into `scratch`."""
    from ..foundations.io import save_torch

    if start == "init":
        return "init", str(RunDir(run_dir).init)
    if start.startswith("epoch:"):
        t = start.split(":", 1)[1]
        path = RunDir(run_dir).epoch(t)
        if not path.is_file():
            raise FileNotFoundError(f"start {start!r}: {path} does not exist (is {t} in train.save_epochs?)")
        return f"epoch_{t}", str(path)
    if start == "other" or start.startswith("other:"):
        # "other": another init whose seed follows from the run's own, so every run has its own θ₀′.
        seed = OTHER_INIT_SEED + spec.init.seed if start == "other" else int(start.split(":", 1)[1])
        # The architecture is part of the name: runs of other shapes may share the scratch folder.
        arch = digest(asdict(spec.model))
        path = scratch / f"other_init_seed{seed}_{arch}.pt"
        if not path.exists():
            torch.manual_seed(seed)
            save_torch(models.build(spec.model).state_dict(), path)
        return "other_init", str(path)
    if "=" in start:
        label, path = start.split("=", 1)
        return label, path
    raise ValueError(f"start must be init, other, epoch:<t>, other:<seed> or <label>=<file>; got {start!r}")


def interpolate_run(run_dir: str | Path, cache_dir: str | Path, settings: SweepSpec, *,
                    run_id: str | None = None, scratch: str | Path | None = None, progress: bool = True) -> pd.DataFrame:
    """Every requested path of a finished run, as one long-format table."""
    from ..foundations.hparams import RunSpec

    run_dir = Path(run_dir)
    run = RunDir(run_dir)
    spec = RunSpec.from_yaml(run.settings)
    if not run.final.is_file():
        raise FileNotFoundError(f"{run.final} does not exist: the run has not finished")
    scratch = Path(scratch) if scratch else run_dir
    model = models.build(spec.model)
    splits = run_eval_splits(run_dir, cache_dir, settings.splits)
    bn = bn_recompute_inputs(run_dir, cache_dir, splits, spec, settings.bn_subset, "recompute" in settings.bn_modes)
    evaluator = PathEvaluator(model, splits, spec.train.loss, device=pick_device(settings.device, "paths.device"),
                              batch_size=settings.batch_size, progress=progress, **bn)
    del splits  # the evaluator holds its own device / memory-format copies; at CIFAR size each is 0.7 GB
    requests = []
    for i, start in enumerate(settings.starts):
        # Group and parameter-group paths start from the first start point (θ₀ by default);
        # further starts (another init, an earlier epoch) get the full-model path.
        label, state = resolve_start(run_dir, start, spec, scratch)
        requests += plan_requests(model, label, state, str(run.final), full=settings.full or i > 0,
                                  groups=settings.groups and i == 0, param_groups=settings.param_groups and i == 0)
    return run_requests(evaluator, requests, alpha_grid(settings.alphas), settings.bn_modes,
                        run_id=run_id or run_dir.name)
