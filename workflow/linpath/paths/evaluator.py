"""Loss and accuracy along linear paths between two states of one network.

`PathEvaluator` keeps one model and the evaluation tensors on the device and
writes each interpolated state into that model in place. The data are walked
in chunks of `batch_size` samples, with the α grid inside the chunk loop: the
largest tensors alive are one chunk's activations, never the whole split's.

For a group-wise path (only one group moves, eq. 2) the stages before the
moving group (the *prefix*) keep θ_T at every α, so each chunk's prefix output
is computed once per sweep and reused for every α. Only the stages from the
moving group on (the *suffix*) run once per (chunk, α): the same FLOPs as a
cache of the whole split's prefix activations, without its memory.

BatchNorm modes: "interpolate" treats running_mean/var like parameters;
"recompute" replaces them at every α by statistics recomputed on a fixed,
non-augmented training subset (`bn_data`, in batches of `bn_batch_size`: the
sweeps pass the run's own train.batch_size, linpath.paths.sweeps.bn_recompute_inputs)
with the semantics of
torch.optim.swa_utils.update_bn: every BN is reset, momentum is None (a
cumulative average with equal weight per batch: the mean of the per-batch means
and unbiased variances), and the whole network runs in training mode, so each
BN sees the batch-normalised output of the layers before it. The prefix keeps
θ_T, so its training-mode output and its recomputed statistics are the same at
every α: they are computed once per sweep, and only the suffix's statistics are
accumulated per α (they are small: two vectors per BN). `num_batches_tracked`
is never interpolated.

One α at a time: evaluating several α at once (vmap over stacked states,
whose convolutions become grouped ones) measured slower on CPU, where a chunk's
forward passes are already bound by the convolutions (docs/performance.md;
`python -m linpath.bench paths --alpha-batch K` measures it again, e.g. on a GPU).

Precision: sweeps run in strict fp32 (TF32 off for cuBLAS and cuDNN, no
autocast, oneDNN at IEEE fp32); the previous settings are restored after.

Memory: a sweep's peak is a few times one chunk's largest activation, whatever
the size of the split, so a paper-scale ResNet-50 sweep fits a GPU where a
cache of the prefix over the whole split would not (figures: docs/performance.md).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.fx
from torch import nn
from tqdm.auto import tqdm

from ..engine import models
from ..engine.objective import strict_fp32, summed_loss_and_correct
from ..foundations.hparams import BN_MODES
PARAM_GROUPS = ("all", "weights", "bn_affine", "bn_stats")
FULL = "all"  # group name of the full-model path
_BN = nn.modules.batchnorm._BatchNorm
_BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def tensor_kinds(model: nn.Module) -> dict[str, str]:
    """state_dict key -> weights | bn_affine | bn_stats | counter (never interpolated)."""
    kinds: dict[str, str] = {}
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(module, _BN):
            kinds.update({prefix + "weight": "bn_affine", prefix + "bias": "bn_affine",
                          prefix + "running_mean": "bn_stats", prefix + "running_var": "bn_stats",
                          prefix + "num_batches_tracked": "counter"})
        else:
            for pname, _ in module.named_parameters(recurse=False):
                kinds[prefix + pname] = "weights"
    state = model.state_dict()
    for key, value in state.items():
        kinds.setdefault(key, "weights" if value.is_floating_point() else "counter")
    return {k: kinds[k] for k in state}


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, _BN) for m in model.modules())


def conv_bn_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """(conv, batchnorm) module names where the BN reads only that conv's output."""
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception:  # a model fx cannot trace is evaluated unfolded
        return []
    mods = dict(model.named_modules())
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(mods[node.target], _BN):
            continue
        src = node.args[0]
        if (isinstance(src, torch.fx.Node) and src.op == "call_module" and isinstance(mods[src.target], nn.Conv2d)
                and len(src.users) == 1):
            pairs.append((src.target, node.target))
    return pairs


class HalvingMaxPool(nn.Module):
    """nn.MaxPool2d(2) for inference as two elementwise maxima of strided views: the same values (a maximum
    is exact, NaN propagates as in the pooling kernel), without the argmax indices that ATen's CPU kernel
    computes even under inference_mode: several times faster on CPU (docs/performance.md)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[..., : x.shape[-2] // 2 * 2, : x.shape[-1] // 2 * 2]  # floor mode drops an odd last row / column
        x = torch.maximum(x[..., 0::2, :], x[..., 1::2, :])
        return torch.maximum(x[..., 0::2], x[..., 1::2])


def _is_halving_pool(module: nn.Module) -> bool:
    def pair(v):
        return tuple(v) if isinstance(v, (tuple, list)) else (v, v)

    return (isinstance(module, nn.MaxPool2d) and pair(module.kernel_size) == (2, 2) and pair(module.stride) == (2, 2)
            and pair(module.padding) == (0, 0) and pair(module.dilation) == (1, 1) and not module.ceil_mode
            and not module.return_indices)


class FoldedTwin:
    """An inference copy of the model with each eval-mode BatchNorm folded into
    the conv before it (if any), 2×2 max-pools as HalvingMaxPool, laid out channels_last:
    the same function, fewer and faster kernels. `refresh(keys)` re-derives the twin's tensors
    touched by the given keys of the original model. The fold is exact up to rounding
    (~2e-7 relative) because it is computed in the model's dtype, which
    PathEvaluator makes fp32; the pools are exact."""

    def __init__(self, model: nn.Module, pairs: list[tuple[str, str]]):
        self.source = model.state_dict()
        self.model = copy.deepcopy(model).eval()
        self.eps = {bn: model.get_submodule(bn).eps for _, bn in pairs}
        for conv_name, bn_name in pairs:
            conv = self.model.get_submodule(conv_name)
            if conv.bias is None:
                conv.bias = nn.Parameter(torch.zeros(conv.out_channels, device=conv.weight.device))
            parent, _, leaf = bn_name.rpartition(".")
            setattr(self.model.get_submodule(parent) if parent else self.model, leaf, nn.Identity())
        for name, module in list(self.model.named_modules()):
            if name and _is_halving_pool(module):
                parent, _, leaf = name.rpartition(".")
                setattr(self.model.get_submodule(parent) if parent else self.model, leaf, HalvingMaxPool())
        self.model.to(memory_format=torch.channels_last)
        self.target = self.model.state_dict()
        self.owner: dict[str, tuple[str, str]] = {}
        for conv_name, bn_name in pairs:
            for key in self.source:
                if key.startswith((conv_name + ".", bn_name + ".")):
                    self.owner[key] = (conv_name, bn_name)
        self.refresh(list(self.source))

    def refresh(self, keys) -> None:
        touched = set()
        for key in keys:
            if key in self.owner:
                touched.add(self.owner[key])
            elif key in self.target:
                self.target[key].copy_(self.source[key])
        for conv_name, bn_name in touched:
            src = self.source
            scale = src[f"{bn_name}.weight"] / torch.sqrt(src[f"{bn_name}.running_var"] + self.eps[bn_name])
            bias = src.get(f"{conv_name}.bias")
            bias = torch.zeros_like(scale) if bias is None else bias
            self.target[f"{conv_name}.weight"].copy_(src[f"{conv_name}.weight"] * scale.reshape(-1, 1, 1, 1))
            self.target[f"{conv_name}.bias"].copy_((bias - src[f"{bn_name}.running_mean"]) * scale + src[f"{bn_name}.bias"])


@dataclass
class EvalSplit:
    name: str
    x: torch.Tensor
    y: torch.Tensor
    source: str = ""  # file the tensors came from (recorded as eval_data)


class PathEvaluator:
    """Sweeps linear paths of one architecture over fixed evaluation splits.

    `batch_size` is the chunk: the samples of one forward pass, and the unit
    whose prefix activations are kept while the α grid runs over it.
    Invariant: with the same `batch_size`, a sweep sums the per-chunk losses
    in the same order as a plain loop over batches, so θ(0) and θ(1) of an
    unfolded model score bit for bit as the model loaded directly."""

    def __init__(self, model: nn.Module, splits: list[EvalSplit], loss: str, *, device: str | torch.device = "cpu",
                 batch_size: int = 2048, bn_data: torch.Tensor | None = None, bn_batch_size: int = 256,
                 reuse_prefix: bool = True, fold_bn: bool = True, progress: bool = False, allow_tf32: bool = False):
        self.device = torch.device(device)
        self.model = model.to(self.device, torch.float32).eval()  # strict fp32, whatever the model held
        self.live = self.model.state_dict()  # tensors sharing storage with the model
        # The twin also serves convolutional models without BatchNorm (no pairs to fold): their convs
        # run channels_last there, about 1.5-2x faster on CPU than the model's own NCHW layout.
        convolutional = any(isinstance(m, nn.Conv2d) for m in self.model.modules())
        self.twin = FoldedTwin(self.model, conv_bn_pairs(self.model)) if fold_bn and convolutional else None
        self.runner = self.twin.model if self.twin else self.model
        layout = torch.channels_last if self.twin else torch.contiguous_format
        self.splits = [EvalSplit(s.name, _to(s.x, self.device, layout), s.y.to(self.device), s.source) for s in splits]
        self.loss = loss
        self.batch_size = batch_size
        self.bn_batches = None if bn_data is None else list(bn_data.to(self.device).split(bn_batch_size))
        self.reuse_prefix = reuse_prefix
        self.progress = progress
        self.allow_tf32 = allow_tf32  # only for measuring what TF32 would change (linpath.bench)
        self.stages = models.stages(self.runner)
        self.model_stages = models.stages(self.model)  # unfolded: BN statistics are recomputed on these
        self.stage_index = {name: i for i, (name, _) in enumerate(self.stages)}
        self.groups = models.groups(self.model)
        self.kinds = tensor_kinds(self.model)
        # (end state, its summed loss and correct count per split): at α = 1 every path of a sweep ends at
        # exactly its end state (lerp returns `end` at weight 1, the other tensors are `end` already), so
        # the paths that share an end state score it once (interpolate mode; recompute mode recomputes).
        self._end_scores: tuple[dict, torch.Tensor, torch.Tensor] | None = None

    def moving_keys(self, group: str, param_group: str = "all") -> list[str]:
        if param_group not in PARAM_GROUPS:
            raise ValueError(f"param_group must be one of {PARAM_GROUPS}, got {param_group!r}")
        if group == FULL:
            keys = list(self.live)
        elif group in self.groups:
            keys = self.groups[group]
        else:
            raise ValueError(f"unknown group {group!r} (groups: {', '.join(self.groups)})")
        keys = [k for k in keys if self.kinds[k] != "counter"]
        if param_group != "all":
            keys = [k for k in keys if self.kinds[k] == param_group]
        return keys

    @torch.inference_mode()
    def sweep(self, start: dict[str, torch.Tensor], end: dict[str, torch.Tensor], alphas, *,
              group: str = FULL, param_group: str = "all", bn_mode: str = "interpolate") -> pd.DataFrame:
        """Loss and accuracy at every α of θ(α) = θ_T with `group` moved from start to end."""
        alphas = np.asarray(alphas, dtype=float)
        with strict_fp32(self.device, allow_tf32=self.allow_tf32):
            path, first, recompute = self._path_from(start, end, alphas, group, param_group, bn_mode)
            self._sync_twin(self.live)
            at_end = alphas == 1.0
            known = not recompute and self._end_scores is not None and self._end_scores[0] is end and at_end.any()
            totals, correct = self._chunk_loop(first, path, alphas[~at_end] if known else alphas,
                                               desc=f"{group}/{param_group}")
            if known:
                totals, correct = self._with_end_scores(totals, correct, at_end)
            elif not recompute and at_end.any():
                j = int(np.flatnonzero(at_end)[0])
                self._end_scores = (end, totals[j].clone(), correct[j].clone())
        sizes = torch.tensor([len(s.y) for s in self.splits], dtype=torch.float64)
        losses, accuracies = (totals / sizes).tolist(), (correct.double() / sizes).tolist()
        rows = [{"alpha": float(alpha), "split": split.name, "loss": losses[j][s], "accuracy": accuracies[j][s]}
                for j, alpha in enumerate(alphas) for s, split in enumerate(self.splits)]
        frame = pd.DataFrame(rows, columns=["alpha", "split", "loss", "accuracy"])
        frame.insert(0, "bn_mode", bn_mode)
        frame.insert(0, "param_group", param_group)
        frame.insert(0, "group", group)
        return frame

    def states_along(self, start: dict[str, torch.Tensor], end: dict[str, torch.Tensor], alphas, *,
                     group: str = FULL, param_group: str = "all", bn_mode: str = "interpolate"):
        """Yield each α after writing θ(α) into `self.model` (unfolded, eval mode) as `sweep` scores it: `end`
        everywhere, the moving tensors of `group` interpolated, and in recompute mode the BN statistics
        recomputed at that α (prefix once, as in `sweep`). For measurements that need the model itself
        at a point of the path, such as gradients (linpath.paths.curvature)."""
        alphas = np.asarray(alphas, dtype=float)
        with torch.no_grad(), strict_fp32(self.device, allow_tf32=self.allow_tf32):
            path, _, _ = self._path_from(start, end, alphas, group, param_group, bn_mode)
        self.model.eval()
        for j, alpha in enumerate(alphas):
            with torch.no_grad():
                path.write(self.live, float(alpha))
                path.write_bn(self.live, j)
            yield float(alpha)

    def _path_from(self, start: dict[str, torch.Tensor], end: dict[str, torch.Tensor], alphas: np.ndarray,
                   group: str, param_group: str, bn_mode: str) -> tuple["_Path", int, bool]:
        """`end` written into the live model and the path of `group`'s moving tensors (in recompute mode with
        the BN statistics at every α): what `sweep` scores and `states_along` hands out. Returns the path,
        the first stage that changes along it, and whether BN statistics are recomputed."""
        if bn_mode not in BN_MODES:
            raise ValueError(f"bn_mode must be one of {BN_MODES}, got {bn_mode!r}")
        recompute = bn_mode == "recompute" and has_batchnorm(self.model)
        if recompute and self.bn_batches is None:
            raise ValueError("bn_mode='recompute' needs bn_data (a non-augmented training subset)")
        keys = self.moving_keys(group, param_group)
        first = self.stage_index[group] if (group != FULL and self.reuse_prefix) else 0
        for key, value in end.items():
            self.live[key].copy_(value)
        path = _Path({k: start[k].to(self.device, torch.float32) for k in keys},
                     {k: end[k].to(self.device, torch.float32) for k in keys})
        if recompute:
            path.bn_keys, path.bn_states = self._recompute_bn(first, path, alphas)
        return path, first, recompute

    def _with_end_scores(self, totals: torch.Tensor, correct: torch.Tensor, at_end: np.ndarray):
        """The rows of the α ≠ 1 points with the stored scores of the end state put in at α = 1."""
        _, end_totals, end_correct = self._end_scores
        full_totals = torch.empty(len(at_end), *end_totals.shape, dtype=totals.dtype)
        full_correct = torch.empty(len(at_end), *end_correct.shape, dtype=correct.dtype)
        mask = torch.from_numpy(at_end)
        full_totals[~mask], full_correct[~mask] = totals, correct
        full_totals[mask], full_correct[mask] = end_totals, end_correct
        return full_totals, full_correct

    def _chunk_loop(self, first: int, path: "_Path", alphas: np.ndarray, desc: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed loss and correct count per (α, split): chunks outside, α inside."""
        totals = torch.zeros(len(alphas), len(self.splits), dtype=torch.float64, device=self.device)
        correct = torch.zeros(len(alphas), len(self.splits), dtype=torch.int64, device=self.device)
        chunks = [(s, i) for s, split in enumerate(self.splits) for i in range(0, len(split.y), self.batch_size)]
        with tqdm(total=len(chunks) * len(alphas), desc=desc, leave=False, disable=not self.progress,
                  unit="α·chunk") as bar:
            for s, i in chunks:
                split = self.splits[s]
                losses, hits = self._score_chunk(split.x[i : i + self.batch_size], split.y[i : i + self.batch_size],
                                                 first, path, alphas, bar)
                totals[:, s] += losses
                correct[:, s] += hits
        return totals.cpu(), correct.cpu()

    def _score_chunk(self, x: torch.Tensor, y: torch.Tensor, first: int, path: "_Path", alphas: np.ndarray,
                     bar) -> tuple[torch.Tensor, torch.Tensor]:
        """One chunk at every α; its prefix output lives only while this runs."""
        h = _forward(self.stages[:first], x)
        losses = torch.zeros(len(alphas), dtype=torch.float64, device=self.device)
        hits = torch.zeros(len(alphas), dtype=torch.int64, device=self.device)
        for j, alpha in enumerate(alphas):
            path.write(self.live, float(alpha))
            path.write_bn(self.live, j)
            self._sync_twin(path.keys + path.bn_keys)
            losses[j], hits[j] = summed_loss_and_correct(_forward(self.stages[first:], h), y, self.loss)
            bar.update()
        return losses, hits

    def _recompute_bn(self, first: int, path: "_Path", alphas: np.ndarray) -> tuple[list[str], list[list[torch.Tensor]]]:
        """update_bn at every α, with the prefix run once per BN batch.

        Leaves the prefix BNs holding their recomputed statistics (the same at
        every α) and returns the suffix BN buffer keys with their recomputed
        values per α."""
        names = {module: name for name, module in self.model.named_modules()}
        suffix_bns = {id(m) for _, stage in self.model_stages[first:] for m in stage.modules() if isinstance(m, _BN)}
        bns = [m for m in self.model.modules() if isinstance(m, _BN)]
        bn_keys = [f"{names[m]}.{b}" for m in bns if id(m) in suffix_bns for b in _BN_BUFFERS]
        momenta = {m: m.momentum for m in bns}
        with torch.inference_mode(False), torch.no_grad():
            for m in bns:
                m.reset_running_stats()
                m.momentum = None  # cumulative average, as update_bn
            states = [[self.live[k].clone() for k in bn_keys] for _ in alphas]
            self.model.train()
            try:
                for batch in self.bn_batches:
                    self._accumulate_bn(batch, first, path, alphas, bn_keys, states)
            finally:
                for m, momentum in momenta.items():
                    m.momentum = momentum
                self.model.eval()
        return bn_keys, states

    def _accumulate_bn(self, batch: torch.Tensor, first: int, path: "_Path", alphas: np.ndarray, bn_keys: list[str],
                       states: list[list[torch.Tensor]]) -> None:
        """One BN batch into the running statistics of every α (training mode; prefix once)."""
        h = _forward(self.model_stages[:first], batch)
        for j, alpha in enumerate(alphas):
            path.write(self.live, float(alpha))
            for key, value in zip(bn_keys, states[j]):
                self.live[key].copy_(value)
            _forward(self.model_stages[first:], h)
            for key, value in zip(bn_keys, states[j]):
                value.copy_(self.live[key])

    def _sync_twin(self, keys) -> None:
        if self.twin is not None:
            self.twin.refresh(keys)


class _Path:
    """The moving tensors of one sweep and, in recompute mode, the suffix BN statistics per α."""

    def __init__(self, start: dict[str, torch.Tensor], end: dict[str, torch.Tensor]):
        self.start, self.end = start, end
        self.keys = list(start)
        self.bn_keys: list[str] = []
        self.bn_states: list[list[torch.Tensor]] = []

    def write(self, live: dict[str, torch.Tensor], alpha: float) -> None:
        """θ(α) of the moving tensors into `live`, in place."""
        for k in self.keys:
            torch.lerp(self.start[k], self.end[k], alpha, out=live[k])

    def write_bn(self, live: dict[str, torch.Tensor], j: int) -> None:
        """The BN statistics recomputed at the j-th α into `live` (nothing in interpolate mode)."""
        if self.bn_states:
            for key, value in zip(self.bn_keys, self.bn_states[j]):
                live[key].copy_(value)


def _to(x: torch.Tensor, device: torch.device, layout) -> torch.Tensor:
    x = x.to(device)
    return x.contiguous(memory_format=layout) if x.dim() == 4 else x


def _forward(stages, x: torch.Tensor) -> torch.Tensor:
    for _, stage in stages:
        x = stage(x)
    return x
