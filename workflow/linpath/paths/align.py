"""Connectivity modulo permutations: weight matching (Git Re-Basin) and REPAIR.

Hidden units can be reordered without changing the function a network computes: permute the output
channels of a layer, and the input channels of every layer that reads them, in the same way. Two
networks trained from different seeds may sit in one basin up to such a reordering, so the straight
line between them is measured again after the second network's units are put in the order that best
matches the first's.

Permutation spec (`permutation_spec`): derived from the model's traced graph, not written per
architecture. Every conv / linear layer opens a *unit space* (its output channels); BatchNorm, ReLU,
pooling, and flattening a 1×1 map carry it on; a residual sum joins the spaces of its two inputs into
one (a ResNet's residual stream shares one permutation per stage width block). The input's and the
output's spaces are fixed. A BN layer's affine parameters and running statistics move with their
channels; `num_batches_tracked` is untouched. Anything else in the graph is an error naming it.

Weight matching (Ainsworth, Hayase & Srinivasa, ICLR 2023, "Git Re-Basin", their weight-matching
algorithm): choose one permutation per unit space to maximise Σ ⟨θ_A, π(θ_B)⟩ over every parameter
(the inner product of the two networks' weights after B's units are reordered). With all other
permutations held fixed, the best permutation of one space is a linear assignment problem on the
matrix C[i, j] = Σ over the tensors with an axis in that space of ⟨unit i of A, unit j of B⟩, solved
by scipy.optimize.linear_sum_assignment. Coordinate descent visits the spaces in a random order
(fixed seed) and repeats until a whole pass changes nothing (a fixed point) or `max_iter` passes.

REPAIR (Jordan, Sedghi, Saukh, Entezari & Neyshabur, ICLR 2023, "REPAIR: REnormalizing Permuted
Activations for Interpolation Repair"): averaging two networks' weights shrinks the variance of
hidden activations (variance collapse). REPAIR gives each hidden channel of the interpolated network
θ(α) the mean and standard deviation that interpolate the ends', (1−α)·μ_A + α·μ_B and
(1−α)·σ_A + α·σ_B, measured on a fixed training subset. In a network without BN this is an affine
correction of each layer's pre-activations, computed in forward order (a layer's statistics are
measured with every earlier layer already corrected) and folded into its weight and bias
(`repair_state`). In a network with BN, resetting the BN statistics on θ(α) does the same (the
project's `recompute` BN mode; affine parameters stay as interpolated).
"""

from __future__ import annotations

import copy
import operator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.fx
from torch import nn

from ..foundations.errors import SettingsError

_BN = nn.modules.batchnorm._BatchNorm
# Modules that pass their input's unit space on unchanged (elementwise, or pooling within a channel).
_PASS_MODULES = (nn.ReLU, nn.Identity, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Dropout)
_PASS_FUNCTIONS = {torch.relu, torch.nn.functional.relu}
_PASS_METHODS = {"relu", "relu_"}
_ADD_FUNCTIONS = {operator.add, operator.iadd, torch.add}
_ADD_METHODS = {"add", "add_"}
_FLATTEN = {torch.flatten}
_BN_KEYS = ("weight", "bias", "running_mean", "running_var")
# A permutation is kept only when the matching gains more than this share of its objective: rounding
# noise between two equally good assignments must not count as a change (the loop would not stop).
_GAIN_TOL = 1e-12
# A channel whose pre-activation does not vary on the subset keeps its scale (only its mean moves).
_STD_FLOOR = 1e-8


class AlignmentError(SettingsError):
    """The model holds a layer or operation that weight matching does not know how to permute."""


@dataclass
class PermutationSpec:
    """Which unit space each axis of each state_dict tensor lies in.

    sizes: unit space -> number of units (named after the first layer that opens it).
    axes: state_dict key -> one entry per axis: a unit space, or None (fixed: input, output, kernel).
    parameters: the keys weight matching compares (the parameters; BN running statistics only move).
    repair_layers: conv / linear modules whose outputs are hidden units, in forward order (the
        pre-activations REPAIR rescales in a network without BN).
    batchnorm: whether the network has BN (REPAIR is then the recompute BN mode)."""

    sizes: dict[str, int]
    axes: dict[str, tuple[str | None, ...]]
    parameters: list[str]
    repair_layers: list[str] = field(default_factory=list)
    batchnorm: bool = False

    def keys_in(self, space: str) -> list[tuple[str, int]]:
        """(key, axis) of every parameter with an axis in this unit space."""
        return [(k, d) for k in self.parameters for d, s in enumerate(self.axes[k]) if s == space]


class _Spaces:
    """Union-find over unit spaces; a fixed space (input, output) swallows any space joined to it."""

    def __init__(self):
        self.parent: list[int] = []
        self.size: list[int] = []
        self.fixed: list[bool] = []
        self.name: list[str] = []

    def new(self, size: int, name: str, fixed: bool = False) -> int:
        self.parent.append(len(self.parent))
        self.size.append(size)
        self.fixed.append(fixed)
        self.name.append(name)
        return len(self.parent) - 1

    def root(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def join(self, a: int, b: int, where: str) -> int:
        ra, rb = self.root(a), self.root(b)
        if ra == rb:
            return ra
        if self.size[ra] != self.size[rb] and not (self.fixed[ra] or self.fixed[rb]):
            raise AlignmentError(f"{where}: adds tensors of {self.size[ra]} and {self.size[rb]} channels")
        first, second = sorted((ra, rb))  # the space opened earlier names the joined one
        self.parent[second] = first
        self.fixed[first] = self.fixed[first] or self.fixed[second]
        return first


def permutation_spec(model: nn.Module) -> PermutationSpec:
    """The permutation spec of a model, derived from its traced forward graph (module docstring)."""
    kind = type(model).__name__
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception as err:  # noqa: BLE001 - any tracing failure means: not supported
        raise AlignmentError(f"weight matching: {kind} cannot be traced by torch.fx ({err})") from None
    modules = dict(model.named_modules())
    spaces = _Spaces()
    at: dict[torch.fx.Node, int] = {}  # node -> unit space of its channel axis
    unit_pool: set[torch.fx.Node] = set()  # outputs of a global average pool (1×1 maps: flatten keeps channels)
    layers: list[tuple[str, int, int]] = []  # (conv / linear name, input space, output space)
    norms: list[tuple[str, int]] = []
    called: set[str] = set()

    def unsupported(node, what: str):
        return AlignmentError(f"weight matching does not support {kind}: {what} at graph node {node.name!r} "
                              "(supported: Conv2d, Linear, BatchNorm, ReLU, pooling, residual sums, flatten of 1×1 maps)")

    for node in graph.nodes:
        args = [a for a in node.args if isinstance(a, torch.fx.Node)]
        if node.op == "placeholder":
            at[node] = spaces.new(0, "input", fixed=True)
        elif node.op == "output":
            if not (len(args) == 1 and args[0] in at):
                raise unsupported(node, "an output that is not one tensor")
            out = spaces.root(at[args[0]])
            spaces.fixed[out] = True
        elif node.op == "call_module":
            module = modules[node.target]
            has_params = any(True for _ in module.parameters(recurse=False))
            if has_params and node.target in called:
                raise unsupported(node, f"module {node.target} called twice (shared weights)")
            called.add(node.target)
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                if isinstance(module, nn.Conv2d) and module.groups != 1:
                    raise unsupported(node, f"grouped convolution {node.target}")
                size = module.out_channels if isinstance(module, nn.Conv2d) else module.out_features
                at[node] = spaces.new(size, node.target)
                layers.append((node.target, at[args[0]], at[node]))
            elif isinstance(module, _BN):
                at[node] = at[args[0]]
                norms.append((node.target, at[node]))
            elif isinstance(module, _PASS_MODULES):
                at[node] = at[args[0]]
                if isinstance(module, nn.AdaptiveAvgPool2d) and module.output_size in (1, (1, 1)):
                    unit_pool.add(node)
            elif isinstance(module, nn.Flatten):
                at[node] = _flattened(node, args, at, spaces, unit_pool, unsupported)
            else:
                raise unsupported(node, f"module {node.target} ({type(module).__name__})")
        elif node.op in ("call_function", "call_method"):
            target = node.target
            if target in _PASS_FUNCTIONS or (node.op == "call_method" and target in _PASS_METHODS):
                at[node] = at[args[0]]
            elif target in _ADD_FUNCTIONS or (node.op == "call_method" and target in _ADD_METHODS):
                at[node] = at[args[0]]
                for other in args[1:]:
                    at[node] = spaces.join(at[node], at[other], f"{kind} node {node.name}")
            elif target in _FLATTEN or (node.op == "call_method" and target == "flatten"):
                at[node] = _flattened(node, args, at, spaces, unit_pool, unsupported)
            else:
                raise unsupported(node, f"operation {getattr(target, '__name__', target)}")
        else:
            raise unsupported(node, f"graph operation {node.op}")

    def space(i: int) -> str | None:
        r = spaces.root(i)
        return None if spaces.fixed[r] else spaces.name[r]

    axes: dict[str, tuple[str | None, ...]] = {}
    for name, s_in, s_out in layers:
        module = modules[name]
        axes[f"{name}.weight"] = (space(s_out), space(s_in), *([None] * (module.weight.dim() - 2)))
        if module.bias is not None:
            axes[f"{name}.bias"] = (space(s_out),)
    for name, s in norms:
        module = modules[name]
        for key in _BN_KEYS:
            if getattr(module, key, None) is not None:
                axes[f"{name}.{key}"] = (space(s),)
    state = model.state_dict()
    for key, value in state.items():
        if key not in axes:
            if key.endswith("num_batches_tracked"):
                axes[key] = ()
            else:
                raise AlignmentError(f"weight matching does not support {kind}: tensor {key!r} belongs to no "
                                     "layer it knows how to permute")
    sizes = {}
    for i in range(len(spaces.parent)):
        if (name := space(i)) is not None:
            sizes[name] = spaces.size[spaces.root(i)]
    return PermutationSpec(
        sizes=sizes, axes={k: axes[k] for k in state}, parameters=[n for n, _ in model.named_parameters()],
        repair_layers=[name for name, _, s_out in layers if space(s_out) is not None],
        batchnorm=bool(norms))


def _flattened(node, args, at, spaces, unit_pool, unsupported) -> int:
    """A flatten keeps the channel axis only where the map is 1×1 (after a global average pool) or the
    tensor's units are fixed anyway (the network's input)."""
    source = at[args[0]]
    if args[0] in unit_pool or spaces.fixed[spaces.root(source)]:
        return source
    raise unsupported(node, "flatten of a feature map that is not 1×1 (its units would mix with positions)")


# --- permutations ---------------------------------------------------------------------------------


def permute_state(state: dict[str, torch.Tensor], spec: PermutationSpec,
                  perms: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state with each unit space reordered: position i of space s holds unit perms[s][i]."""
    out = {}
    for key, value in state.items():
        for axis, space in enumerate(spec.axes.get(key, ())):
            if space is not None:
                value = value.index_select(axis, perms[space].to(value.device))
        out[key] = value
    return out


def random_permutations(spec: PermutationSpec, generator: torch.Generator) -> dict[str, torch.Tensor]:
    return {s: torch.randperm(n, generator=generator) for s, n in spec.sizes.items()}


def identity_permutations(spec: PermutationSpec) -> dict[str, torch.Tensor]:
    return {s: torch.arange(n) for s, n in spec.sizes.items()}


def invert(perms: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {s: torch.argsort(p) for s, p in perms.items()}


@dataclass
class Matching:
    """What weight matching found: the permutations to apply to B, the passes run, whether the last pass
    changed nothing (a fixed point) and the objective Σ ⟨θ_A, π(θ_B)⟩ before and after."""

    perms: dict[str, torch.Tensor]
    iterations: int
    converged: bool
    objective_before: float
    objective_after: float


def _objective(a, b, spec: PermutationSpec) -> float:
    return float(sum((a[k].double() * b[k].double()).sum() for k in spec.parameters))


def _cost(a, b, spec: PermutationSpec, space: str, perms) -> torch.Tensor:
    """C[i, j] = Σ ⟨unit i of A, unit j of B⟩ over every parameter with an axis in `space`, B's other
    axes already in their current order."""
    n = spec.sizes[space]
    cost = torch.zeros(n, n, dtype=torch.float64)
    for key, axis in spec.keys_in(space):
        wa, wb = a[key].double(), b[key].double()
        for other, s in enumerate(spec.axes[key]):
            if other != axis and s is not None:
                wb = wb.index_select(other, perms[s])
        cost += wa.movedim(axis, 0).reshape(n, -1) @ wb.movedim(axis, 0).reshape(n, -1).T
    return cost


def weight_matching(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], spec: PermutationSpec, *,
                    max_iter: int = 100, seed: int = 0) -> Matching:
    """Permutations of B's unit spaces that maximise Σ ⟨θ_A, π(θ_B)⟩, by coordinate descent (module
    docstring). Starts from the identity; a pass visits every space once in a random order (fixed
    `seed`); stops after a pass that changed nothing, or after `max_iter` passes."""
    from scipy.optimize import linear_sum_assignment

    if max_iter < 1:
        raise SettingsError(f"instability.align_max_iter must be >= 1, got {max_iter}")
    a = {k: a[k].detach().cpu() for k in spec.parameters}
    b = {k: b[k].detach().cpu() for k in spec.parameters}
    perms = identity_permutations(spec)
    names = list(spec.sizes)
    generator = torch.Generator().manual_seed(seed)
    before = _objective(a, b, spec)
    iterations, converged = 0, not names
    while iterations < max_iter and not converged:
        iterations += 1
        changed = False
        for index in torch.randperm(len(names), generator=generator).tolist():
            space = names[index]
            cost = _cost(a, b, spec, space, perms)
            _, cols = linear_sum_assignment(cost.numpy(), maximize=True)
            rows = torch.arange(len(cols))
            new = torch.from_numpy(np.asarray(cols, dtype=np.int64))
            old_value, new_value = cost[rows, perms[space]].sum().item(), cost[rows, new].sum().item()
            if new_value - old_value > _GAIN_TOL * max(1.0, abs(old_value)):
                perms[space], changed = new, True
        converged = not changed
    after = _objective(a, permute_state(b, spec, perms), spec)
    return Matching(perms, iterations, converged, before, after)


# --- REPAIR (networks without BN) -----------------------------------------------------------------


def add_zero_biases(model: nn.Module, spec: PermutationSpec) -> list[str]:
    """Give each REPAIR layer without a bias a zero one (the same function), so that the shift REPAIR
    computes has a tensor to go into; returns the state_dict keys added."""
    added = []
    for name in spec.repair_layers:
        module = model.get_submodule(name)
        if module.bias is None:
            size = module.weight.shape[0]
            module.bias = nn.Parameter(torch.zeros(size, dtype=module.weight.dtype, device=module.weight.device))
            added.append(f"{name}.bias")
    return added


def _channel_moments(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation (population) of each channel (axis 1) over every other axis."""
    flat = y.detach().movedim(1, 0).reshape(y.shape[1], -1).double()
    return flat.mean(1), flat.std(1, unbiased=False)


@torch.no_grad()
def channel_statistics(model: nn.Module, state: dict[str, torch.Tensor], layers: list[str],
                       x: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per REPAIR layer: each output channel's mean and standard deviation on `x` (one batch), the network
    in eval mode with `state` loaded."""
    model.load_state_dict(state)
    model.eval()
    found: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    handles = [model.get_submodule(name).register_forward_hook(
        lambda _m, _i, y, name=name: found.__setitem__(name, _channel_moments(y))) for name in layers]
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    return found


def interpolated_statistics(stats_a: dict, stats_b: dict, alpha: float) -> dict:
    """REPAIR's targets: (1−α)·μ_A + α·μ_B and (1−α)·σ_A + α·σ_B per channel."""
    return {name: ((1 - alpha) * stats_a[name][0] + alpha * stats_b[name][0],
                   (1 - alpha) * stats_a[name][1] + alpha * stats_b[name][1]) for name in stats_a}


@torch.no_grad()
def repair_state(model: nn.Module, state: dict[str, torch.Tensor], targets: dict, x: torch.Tensor) -> dict:
    """REPAIR of `state` (a network without BN): each REPAIR layer's output channels get the target mean
    and standard deviation on `x`, layer after layer in forward order, and the affine correction is
    folded into the layer's weight and bias. Every layer in `targets` needs a bias (add_zero_biases)."""
    model.load_state_dict(state)
    model.eval()
    out = dict(state)
    folds: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def correct(name):
        def hook(_module, _inputs, y):
            mean, std = _channel_moments(y)
            t_mean, t_std = targets[name]
            scale = torch.where(std > _STD_FLOOR, t_std / std.clamp_min(_STD_FLOOR), torch.ones_like(std))
            shift = t_mean - mean * scale
            folds[name] = (scale, shift)
            shape = (1, -1, *([1] * (y.dim() - 2)))
            return y * scale.to(y.dtype).reshape(shape) + shift.to(y.dtype).reshape(shape)
        return hook

    handles = [model.get_submodule(name).register_forward_hook(correct(name)) for name in targets]
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    for name, (scale, shift) in folds.items():
        weight, bias = out[f"{name}.weight"], out.get(f"{name}.bias")
        if bias is None:
            raise AlignmentError(f"REPAIR: layer {name} has no bias to take the shift (add_zero_biases first)")
        w_scale = scale.reshape(-1, *([1] * (weight.dim() - 1))).to(weight)
        out[f"{name}.weight"] = weight * w_scale
        out[f"{name}.bias"] = bias * scale.to(bias) + shift.to(bias)
    return out


def lerp_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
    """θ(α) = (1−α)·a + α·b of every floating tensor; counters (num_batches_tracked) are b's."""
    return {k: torch.lerp(a[k], b[k], alpha) if a[k].is_floating_point() else b[k] for k in b}


def copy_model(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model)
