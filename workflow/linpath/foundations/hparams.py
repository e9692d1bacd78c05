"""Settings of one training run as dataclasses.

A run is fully described by a `RunSpec`; its `run.yaml` is `RunSpec.to_dict()`
and `RunSpec.from_dict(yaml)` rebuilds it. Unknown keys, wrong types and
non-finite numbers (NaN, ±inf) are refused with a one-line error that names the
dotted setting, before any work starts; nothing else escapes from reading settings
(the conversion and the checks are linpath.foundations.convert).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

from .convert import check_alphas, check_device, from_dict, one_of, positive, read_yaml, shown
from .errors import SettingsError  # also imported from here by the modules that check settings
from .ids import digest
from .registry import ARCHITECTURES, DATASETS


@dataclass
class ModelSpec:
    """Architecture; `build(spec)` in linpath.engine.models rebuilds it from this alone."""

    arch: str = "resnet18"
    num_classes: int = 10
    in_channels: int = 3
    input_size: int = 32
    # ResNet / VGG: channels of the first stage (paper: 64); later stages scale from it.
    width: int = 64
    # ResNet / VGG: BatchNorm after each conv. An MLP has none (linpath.engine.models builds no BN layer for
    # it), so an MLP's spec always says false, and its run.yaml says what its network is.
    batchnorm: bool = True
    # ResNet: keep the max-pool after the stem (torchvision keeps it; CIFAR variants drop it).
    maxpool: bool = False
    # MLP: widths of the hidden layers.
    hidden: list[int] = field(default_factory=lambda: [50, 50])
    # Number of outputs for a binary task trained with BCE is 1.
    binary: bool = False
    # Width multipliers per group (VGG conv<k>, MLP hidden layer<k>): widen or narrow single layers.
    group_width: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Not a setting an MLP has: the default (true, for the conv networks) would record a BN it lacks.
        # The run id hashes the config's recipe, not this spec, so no run id changes with it.
        if self.arch == "mlp":
            self.batchnorm = False

    def validate(self, where: str = "model") -> None:
        one_of(self.arch, tuple(ARCHITECTURES), f"{where}.arch")
        positive(self.num_classes, f"{where}.num_classes")
        positive(self.in_channels, f"{where}.in_channels")
        positive(self.input_size, f"{where}.input_size")
        positive(self.width, f"{where}.width")
        for i, w in enumerate(self.hidden):
            positive(w, f"{where}.hidden[{i}]")
        for group, factor in self.group_width.items():
            if factor <= 0:
                raise SettingsError(f"{where}.group_width.{group} must be > 0, got {factor}")
        if self.binary and self.num_classes != 2:
            raise SettingsError(f"{where}.binary needs {where}.num_classes == 2, got {self.num_classes}")


SPIRAL_COUNTS = ("n_train", "n_test", "seed")  # data.spiral values that count something: integers


@dataclass
class DataSpec:
    dataset: str = "digits"
    root: str = "data"
    # none | crop (random crop) | standard (crop + horizontal flip) | more (standard + affine + erasing)
    augment: Literal["none", "crop", "standard", "more"] = "none"
    # Fraction of the training set kept (stratified is not promised; a seeded random subset).
    subset: float = 1.0
    # Fraction of training labels replaced by uniformly random labels.
    random_labels: float = 0.0
    # Seeds the subset and random-label draws (not the data order: see TrainSpec.seed).
    seed: int = 0
    download: bool = False
    # torchvision datasets: compare the files with the official checksums. false reads local copies that
    # were re-packed (a cluster's own copy, or the small files the tests write in the official formats).
    verify_checksums: bool = True
    # Spiral only: sizes and shape constants (docs/study.md §3, "The spiral"). The counts (SPIRAL_COUNTS)
    # are whole numbers and are kept as integers, so run.yaml writes n_train: 10000, not 10000.0.
    spiral: dict[str, float] = field(default_factory=dict)
    # Images only: side length after a bilinear resize of every image (0 keeps the dataset's own size).
    resize: int = 0

    def __post_init__(self) -> None:
        counts = {}
        for key in SPIRAL_COUNTS:
            value = self.spiral.get(key)
            if value is None or isinstance(value, int) and not isinstance(value, bool):
                continue
            if isinstance(value, bool) or not isinstance(value, float) or not value.is_integer():
                raise SettingsError(f"data.spiral.{key} must be a whole number, got {shown(value)}")
            counts[key] = int(value)
        self.spiral = {**self.spiral, **counts}

    def validate(self, where: str = "data") -> None:
        one_of(self.dataset, tuple(DATASETS), f"{where}.dataset")
        if self.resize < 0:
            raise SettingsError(f"{where}.resize must be >= 0 (0 keeps the image size), got {self.resize}")
        if self.resize and self.dataset == "spiral":
            raise SettingsError(f"{where}.resize applies to images; data.dataset=spiral holds 2-D points")
        one_of(self.augment, ("none", "crop", "standard", "more"), f"{where}.augment")
        if not 0.0 < self.subset <= 1.0:
            raise SettingsError(f"{where}.subset must be in (0, 1], got {self.subset}")
        if not 0.0 <= self.random_labels <= 1.0:
            raise SettingsError(f"{where}.random_labels must be in [0, 1], got {self.random_labels}")
        if self.dataset == "spiral" and self.augment != "none":
            raise SettingsError(f"{where}.augment must be 'none' for the spiral (2-D points), got {self.augment!r}")


@dataclass
class GroupOverride:
    """Per-group optimiser settings (E11): absolute lr and/or weight decay."""

    lr: Optional[float] = None
    weight_decay: Optional[float] = None


@dataclass
class TrainSpec:
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 5e-4
    batch_size: int = 128
    epochs: int = 10
    # LR is multiplied by `gamma` at each of these epochs; empty = fixed LR.
    milestones: list[int] = field(default_factory=list)
    gamma: float = 0.1
    # Train until this train accuracy (0-1) is reached, at most `epochs` epochs; ending
    # below it is an error (no final.pt). Setting it evaluates every epoch (see eval_every).
    # It is the tolerance itself: 1.0 allows no wrong training image (the paper fits random labels "until
    # 100% training accuracy"); 1 - k/N allows k of N. outcome.yaml records train_wrong (the images still
    # wrong at the last epoch), train_wrong_allowed and train_images, for a run that reached it and one that
    # did not. The accuracy is measured in eval mode (BN running statistics, no dropout) on the training
    # split without augmentation, like every metric: that is the network θ_T that later runs start from
    # and every path scores. Train mode would score each batch with its own batch statistics while the
    # weights still move within the epoch, a network that is never saved.
    until_train_acc: Optional[float] = None
    # Seeds the data order and the augmentation (separate streams per epoch, see
    # linpath.engine.augment); the init seed is InitSpec.seed.
    seed: int = 0
    # Epochs after which the state is kept as epoch_<k>.pt (for "epoch t -> final" paths).
    save_epochs: list[int] = field(default_factory=list)
    # Epochs after which the whole training state (weights, optimiser, LR schedule) is kept as
    # spawn_<k>.pt, where children are spawned (instability analysis, linpath.study.spawn); 0 is θ₀ with a
    # fresh optimiser. The workflow fills it from a setting's `spawn.epochs`.
    spawn_epochs: list[int] = field(default_factory=list)
    group_overrides: dict[str, GroupOverride] = field(default_factory=dict)
    loss: Literal["ce", "bce"] = "ce"
    device: str = "auto"
    # CUDA only (CPU always trains in fp32): autocast precision of the training step.
    # Per-epoch metrics are always computed in strict fp32. bf16 is a speed default for small runs on a
    # GPU; config/paper.yaml sets fp32 (the paper's GPUs had no bf16, and no comparison was measured).
    # fp32 is IEEE fp32: the steps run with TF32 off (PyTorch's cuDNN default would use TF32 on Ampere and
    # later GPUs; the paper's V100s have no TF32). summary.yaml's step_precision is read from the backend
    # flags in force during the steps (linpath.engine.train.StepSettings.precision).
    precision: Literal["fp32", "bf16"] = "bf16"
    # CUDA only: channels_last memory layout for convolutional models while training.
    channels_last: bool = True
    # CUDA only: deterministic cuDNN algorithms instead of cudnn.benchmark autotuning.
    deterministic: bool = False
    # torch.compile the model for the training step, on any device (the first step, compilation
    # included, is reported apart as compile_seconds; on CPU it takes tens of seconds).
    compile: bool = False
    # Write checkpoint.pt every this many epochs (the last epoch always ends the run cleanly).
    checkpoint_every: int = 1
    # Compute train/test metrics every this many epochs; epoch 0, milestones, save_epochs and
    # the last epoch always, and every epoch while until_train_acc is set.
    eval_every: int = 1

    def validate(self, where: str = "train") -> None:
        one_of(self.optimizer, ("sgd", "adam"), f"{where}.optimizer")
        one_of(self.loss, ("ce", "bce"), f"{where}.loss")
        if self.lr <= 0:
            raise SettingsError(f"{where}.lr must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise SettingsError(f"{where}.weight_decay must be >= 0, got {self.weight_decay}")
        positive(self.batch_size, f"{where}.batch_size")
        positive(self.epochs, f"{where}.epochs")
        one_of(self.precision, ("fp32", "bf16"), f"{where}.precision")
        positive(self.checkpoint_every, f"{where}.checkpoint_every")
        positive(self.eval_every, f"{where}.eval_every")
        if len(self.betas) != 2:
            raise SettingsError(f"{where}.betas must have two numbers, got {self.betas}")
        for m in self.milestones:
            positive(m, f"{where}.milestones")
        for group, override in self.group_overrides.items():
            for key in ("lr", "weight_decay"):
                value = getattr(override, key)
                if value is not None and value < 0:
                    raise SettingsError(f"{where}.group_overrides.{group}.{key} must be >= 0, got {value}")
        if self.until_train_acc is not None and not 0 < self.until_train_acc <= 1:
            raise SettingsError(f"{where}.until_train_acc must be in (0, 1], got {self.until_train_acc}")
        # torch.optim refuses these with a ValueError deep inside training; name the setting instead.
        if not 0 <= self.momentum < 1:
            raise SettingsError(f"{where}.momentum must be in [0, 1), got {self.momentum}")
        if self.nesterov and self.optimizer == "sgd" and self.momentum == 0:
            raise SettingsError(f"{where}.nesterov needs {where}.momentum > 0")
        for i, beta in enumerate(self.betas):
            if not 0 <= beta < 1:
                raise SettingsError(f"{where}.betas[{i}] must be in [0, 1), got {beta}")
        if self.gamma <= 0:
            raise SettingsError(f"{where}.gamma must be > 0, got {self.gamma}")
        for k in self.spawn_epochs:
            if isinstance(k, bool) or not 0 <= k <= self.epochs:
                raise SettingsError(f"{where}.spawn_epochs: {k!r} is not an epoch in 0..{where}.epochs={self.epochs}")
        if self.spawn_epochs and self.until_train_acc is not None:
            raise SettingsError(f"{where}.spawn_epochs: a run that stops at {where}.until_train_acc has no fixed last "
                                "epoch for its children to train to")
        check_device(self.device, f"{where}.device")


@dataclass
class InitSpec:
    """Where θ₀ comes from.

    The seeded random init is always drawn first; `source` then replaces the
    whole state, and `groups` replaces named groups ("all from A but group k
    from B", E6/E7). A source is "random" (this seed's init), "imagenet"
    (torchvision weights, see `imagenet_weights`) or the path of a state_dict.
    """

    seed: int = 0
    source: str = "random"
    groups: dict[str, str] = field(default_factory=dict)
    # Groups that keep the random init when `source` is loaded (a new head for another task).
    exclude: list[str] = field(default_factory=list)
    # torchvision weights enum name (e.g. IMAGENET1K_V1) or a local .pth file.
    imagenet_weights: str = "IMAGENET1K_V1"
    # A spawned child (linpath.study.spawn): its parent's spawn_<k>.pt. The child starts from that training
    # state at epoch k and trains on to train.epochs; `source`, `groups` and `exclude` are not read.
    spawn: str = ""
    # What a child takes over besides the weights. Defaults: the whole state, as Frankle et al. (2020)
    # spawn: the optimiser state (SGD momentum, Adam moments; false: a fresh optimiser), and the LR
    # schedule's position (false: the schedule restarts at epoch k, its milestones counted from there).
    spawn_optimizer: bool = True
    spawn_schedule: bool = True


# How a path treats BN running statistics: interpolated with the weights, or recomputed at each α
# (linpath.paths.evaluator). The one list the settings, the evaluator, the command line and the config schema
# (its $defs.bn_mode; tests/test_one_home.py) check against.
BN_MODES = ("interpolate", "recompute")
SPLITS = ("train", "test")


# E5's default distance of the states before / after a barrier from its top α* (config shapes.barrier_offset).
BARRIER_OFFSET = 0.1


@dataclass
class SweepSpec:
    """What `linpath interpolate` measures on one run (config `paths:`, per setting `paths:`)."""

    # α grid: "start:stop:count" (inclusive) or a comma list; the paper's is 0, 0.02, ..., 1.
    alphas: str = "0:1:51"
    # Path starts: init (θ₀), other (another random init, seed 10000 + the run's init seed), other:<seed>,
    # epoch:<t> (θ after epoch t; needs t in train.save_epochs), or <label>=<state file>.
    # Group and parameter-group paths use the first start; later ones get the full path only.
    starts: list[str] = field(default_factory=lambda: ["init"])
    full: bool = True  # the full-model path of the first start
    groups: bool = False  # the group-wise path of every group (eq. 2)
    param_groups: bool = False  # inside each group: weights, BN affine, BN running stats alone
    bn_modes: list[str] = field(default_factory=lambda: ["interpolate"])  # interpolate | recompute
    splits: list[str] = field(default_factory=lambda: ["train", "test"])
    # Recomputed BN statistics: the first bn_subset images of the training split without augmentation, in
    # batches of the run's own train.batch_size (linpath.paths.sweeps.bn_recompute_inputs).
    bn_subset: int = 1024
    batch_size: int = 2048  # the evaluator's chunk: memory is bounded by it, not by the split
    device: str = "auto"

    def validate(self, where: str = "paths") -> None:
        for i, start in enumerate(self.starts):
            if not (start in ("init", "other") or start.startswith(("epoch:", "other:")) or "=" in start):
                raise SettingsError(f"{where}.starts[{i}] must be init, other, other:<seed>, epoch:<t> or "
                                    f"<label>=<file>, got {start!r}")
        for i, mode in enumerate(self.bn_modes):
            one_of(mode, BN_MODES, f"{where}.bn_modes[{i}]")
        for i, split in enumerate(self.splits):
            one_of(split, ("train", "test"), f"{where}.splits[{i}]")
        positive(self.bn_subset, f"{where}.bn_subset")
        positive(self.batch_size, f"{where}.batch_size")
        check_alphas(self.alphas, f"{where}.alphas")

    @classmethod
    def from_dict(cls, raw: dict, where: str = "paths") -> "SweepSpec":
        spec = from_dict(cls, raw, where)
        spec.validate(where)
        return spec


@dataclass(frozen=True)
class ShapeThresholds:
    """The rule behind every NB / B / P label; each field is a config value (`shapes:`)."""

    # Absolute floor of a barrier, in loss units: a rise at most this large is numerical noise.
    barrier_tol: float = 0.01
    # Scale-aware part: a rise must also exceed this fraction of the path's own range |L(0) - L(1)|,
    # so a ripple on a curve that falls from chance level is not a barrier while the same rise on a
    # nearly flat path is.
    barrier_rel: float = 0.05
    # A barrier-free path is a plateau (label P) when α_half is at least this.
    plateau_alpha: float = 0.7

    def barrier_threshold(self, loss_start: float, loss_end: float) -> float:
        """The Δ a path must exceed to have a barrier."""
        return max(self.barrier_tol, self.barrier_rel * abs(loss_start - loss_end))

    def rule(self) -> str:
        return (f"B: delta > max({self.barrier_tol:g}, {self.barrier_rel:g}*|L(0)-L(1)|); "
                f"P: no B and alpha_half >= {self.plateau_alpha:g}; else NB")

    @classmethod
    def from_config(cls, shapes: dict | None, where: str = "shapes") -> "ShapeThresholds":
        """The thresholds among a config's `shapes:` keys (which also hold the table rules)."""
        names = {f.name for f in dataclasses.fields(cls)}
        thresholds = from_dict(cls, {k: v for k, v in (shapes or {}).items() if k in names}, where)
        for name in names:
            if getattr(thresholds, name) < 0:
                raise SettingsError(f"{where}.{name} must be >= 0, got {getattr(thresholds, name)}")
        return thresholds


@dataclass(frozen=True)
class GroupRule:
    """Which groups of a setting are its barrier groups (E11, E13, E16): config `shapes.barrier_groups`.

    `monotonic` is the paper's rule (App. E): a layer or block has a barrier when the loss along its own
    group-wise path is not monotonically decreasing, i.e. its largest rise Δ exceeds `tol`, a float-noise
    tolerance. `label` is the scale-aware B label of every path (`ShapeThresholds`), which lets a rise that
    is small beside the path's own fall count as no barrier. A group is a barrier group when its path has
    a barrier in at least `min_share` of the setting's seeds: the intervention is one choice for all seeds.
    """

    rule: Literal["monotonic", "label"] = "monotonic"
    # Loss units. A rise this small is rounding, not a barrier: two numerically different evaluations of the
    # same group paths differ by at most 2e-6 on default runs (`python -m linpath.bench noise`; figures in
    # docs/performance.md), and 1e-4 leaves a factor of 50 for paper-scale sums on other hardware.
    tol: float = 1.0e-4
    min_share: float = 0.5

    def has_barrier(self, delta: float, label: str) -> bool:
        """One path's decision; a loss that is not finite somewhere is not monotonically decreasing."""
        if self.rule == "label":
            return label == "B"
        return not (delta <= self.tol)

    def describe(self) -> str:
        word = (f"not monotonically decreasing (delta > {self.tol:g})" if self.rule == "monotonic"
                else "labelled B (the label rule of every path)")
        return f"rule {self.rule}: a group's path has a barrier when it is {word}, in at least {self.min_share:g} of the seeds"

    @classmethod
    def from_config(cls, shapes: dict | None, where: str = "shapes.barrier_groups") -> "GroupRule":
        rule = from_dict(cls, dict((shapes or {}).get("barrier_groups") or {}), where)  # checks `rule`
        if not rule.tol >= 0:
            raise SettingsError(f"{where}.tol must be >= 0, got {rule.tol}")
        if not 0 < rule.min_share <= 1:
            raise SettingsError(f"{where}.min_share must be in (0, 1], got {rule.min_share}")
        return rule


@dataclass
class RunSpec:
    model: ModelSpec = field(default_factory=ModelSpec)
    data: DataSpec = field(default_factory=DataSpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    init: InitSpec = field(default_factory=InitSpec)
    name: str = "run"

    def validate(self) -> None:
        self.model.validate()
        self.data.validate()
        self.train.validate()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "RunSpec":
        spec = from_dict(cls, raw, "")
        spec.validate()
        return spec

    @classmethod
    def from_yaml(cls, path: str | Path) -> "RunSpec":
        path = Path(path)
        raw = read_yaml(path, "run settings file")
        if raw is None:  # an empty file is more likely a mistake than a wish for every default
            raise SettingsError(f"{path}: file is empty (write {{}} to mean every default)")
        if not isinstance(raw, dict):
            raise SettingsError(f"{path}: expected a mapping of settings at top level, got {shown(raw)}")
        try:
            return cls.from_dict(raw)
        except SettingsError as err:
            raise SettingsError(f"{path}: {err}") from None

    def digest(self) -> str:
        """Short hash of every setting except the free-text name."""
        payload = self.to_dict()
        payload.pop("name")
        return digest(payload)


# --- the instability analysis and the loss planes (config `instability`, `plane`, `planes`) ---------

# Pair kinds an aligned pair sweep writes (linpath.paths.align; config `instability.align`): the independent
# pair after weight matching, and after weight matching and REPAIR.
ALIGNED = "independent_aligned"
ALIGNED_REPAIR = "independent_aligned_repair"


@dataclass
class InstabilitySpec:
    """Config `instability`: how the straight line between two end states is measured."""

    # α grid from 0 to 1 (both ends: the barrier compares the path's maximum with the mean of its ends).
    alphas: str = "0:1:26"
    bn_modes: list[str] = field(default_factory=lambda: list(BN_MODES))
    splits: list[str] = field(default_factory=lambda: list(SPLITS))
    bn_subset: int = 1024  # training images for recomputed BN statistics, in batches of train.batch_size
    batch_size: int = 2048  # the evaluator's chunk (memory is bounded by it)
    device: str = "auto"
    # A spawn is stable when its error barrier is at most this (Frankle et al. 2020 use 2% error).
    threshold: float = 0.02
    # Also measure the run against the same setting's run of the next seed (other init and data order).
    independent: bool = True
    # Settings that do not spawn but get that independent pair too (a setting with `spawn:` has it already).
    independent_settings: list[str] = field(default_factory=list)
    # Measure every independent pair again after weight matching (Ainsworth et al. 2023), without and
    # with REPAIR (Jordan et al. 2023): pair kinds independent_aligned, independent_aligned_repair
    # (linpath.paths.align). On by default: it is one more sweep per independent pair, and the barrier
    # between independent runs says little about basins unless neuron order is factored out.
    align: bool = True
    # Passes of coordinate descent at most. A pass that changes no permutation ends it earlier (the fixed
    # point); Ainsworth et al. report a handful of passes, so 100 is a cap that should not bind.
    align_max_iter: int = 100

    @classmethod
    def from_config(cls, raw: dict | None, where: str = "instability") -> "InstabilitySpec":
        spec = from_dict(cls, raw or {}, where)
        check_alphas(spec.alphas, f"{where}.alphas")
        grid = alpha_values(spec.alphas)
        if len(grid) < 3 or grid[0] != 0 or grid[-1] != 1 or grid != sorted(grid):
            raise SettingsError(f"{where}.alphas must rise from 0 to 1 with a point between (a barrier compares "
                                f"the path's maximum with its ends), got {spec.alphas!r}")
        _check_common(spec, where, spec.bn_modes)
        if not 0 < spec.threshold < 1:
            raise SettingsError(f"{where}.threshold must be an error in (0, 1), got {spec.threshold}")
        if spec.align_max_iter < 1:
            raise SettingsError(f"{where}.align_max_iter must be >= 1, got {spec.align_max_iter}")
        return spec


@dataclass
class PlaneSpec:
    """Config `plane` (defaults) merged with one `planes.<name>`.

    `directions: states` spans the plane by three saved states A, B, C; `directions: random` by two
    filter-normalised Gaussian directions d1, d2 around one centre state (Li et al. 2018), with the line
    centre + a·d1 beside it (linpath.paths.planes)."""

    setting: str = ""  # whose runs
    # A, B, C: init, final, other (another random init), other:<seed>, epoch:<t> (needs t in
    # train.save_epochs), spawn:<k> (the state the children start from), child:<k>/<i> (a child's final).
    # A random plane names one state, its centre.
    states: list[str] = field(default_factory=lambda: ["init", "final", "other"])
    directions: str = "states"  # states | random
    # Random planes: the seeds of d1 and d2. Any two different seeds; they are settings so that a plane can be
    # drawn again exactly, and so that another draw (other seeds) shows how much the picture owes to the draw.
    direction_seeds: list[int] = field(default_factory=lambda: [1, 2])
    # Random planes: points of the line centre + a·d1 over `range`. A 1-D curve costs `points` times less than
    # the grid, so it is drawn finer: 41 points are half the steps of a grid of 21, whose points all fall on it.
    line_points: int = 41
    range: list[float] = field(default_factory=lambda: [-0.2, 1.2])  # α and β from, to
    points: int = 15  # per axis
    bn_mode: str = "interpolate"
    splits: list[str] = field(default_factory=lambda: list(SPLITS))
    bn_subset: int = 1024  # training images for recomputed BN statistics, in batches of train.batch_size
    batch_size: int = 2048
    seeds: list[int] = field(default_factory=list)  # empty: the config's first seed
    device: str = "auto"

    def grid(self) -> list[float]:
        """The α (and β) values: `points` evenly spaced over `range`, rounded so that 0 and 1 are exact
        (and 0 is +0.0: a rounded -2.8e-17 would otherwise be stored as α = -0.0)."""
        return _even(self.range, self.points)

    @property
    def random(self) -> bool:
        return self.directions == "random"

    def line(self) -> list[float]:
        """The a values of a random plane's line (`line_points` over `range`, rounded as `grid`)."""
        return _even(self.range, self.line_points) if self.random else []

    def evaluations(self) -> int:
        """Points evaluated: the grid, and a random plane's line."""
        return self.points**2 + len(self.line())

    @classmethod
    def from_config(cls, defaults: dict | None, own: dict, where: str) -> "PlaneSpec":
        spec = from_dict(cls, {**(defaults or {}), **own}, where)
        if not spec.setting:
            raise SettingsError(f"{where}.setting: name the setting whose runs the plane goes through")
        one_of(spec.directions, ("states", "random"), f"{where}.directions")
        if spec.random:
            if len(spec.states) != 1:
                raise SettingsError(f"{where}.states: a random plane (directions: random) names one state, its "
                                    f"centre, got {spec.states}")
            seeds = spec.direction_seeds
            if len(seeds) != 2 or seeds[0] == seeds[1] or any(s < 0 for s in seeds):
                raise SettingsError(f"{where}.direction_seeds must be two different seeds >= 0 (d1, d2), got {seeds}")
            if spec.line_points < 2:
                raise SettingsError(f"{where}.line_points must be >= 2, got {spec.line_points}")
        elif len(spec.states) != 3:
            raise SettingsError(f"{where}.states must name three states (A, B, C), got {spec.states}")
        elif len(set(spec.states)) != 3:
            raise SettingsError(f"{where}.states must be three different states, got {spec.states}")
        if len(spec.range) != 2 or not spec.range[0] < spec.range[1]:
            raise SettingsError(f"{where}.range must be [from, to] with from < to, got {spec.range}")
        if spec.points < 2:
            raise SettingsError(f"{where}.points must be >= 2, got {spec.points}")
        _check_common(spec, where, [spec.bn_mode])
        return spec


# --- curvature along paths (config `curvature`; linpath.paths.curvature) -------------------------------


@dataclass
class CurvatureSpec:
    """Config `curvature`: the top Hessian eigenvalue and a Hutchinson trace along the full path θ₀ → θ_T of
    the runs of some settings, and along group-wise paths. The BN modes and the BN-recompute subset are the
    setting's own sweep's (`paths`): the curvature belongs to the losses the sweep measured."""

    # setting -> the groups whose group-wise paths are measured besides the full path: [] (none), [all]
    # (every group of the model), [barrier] (the setting's measured barrier groups, shapes.barrier_groups;
    # needs its paths.groups) or group names.
    settings: dict[str, list[str]] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=list)  # empty: every seed of the config
    # 11 points, 0, 0.1, ..., 1: each point costs a full Lanczos run and the probes, and curvature changes
    # on the scale of the path, not of the 0.02 steps a barrier needs.
    alphas: str = "0:1:11"
    # Training images (first ones, no augmentation) the loss is averaged over: a fixed set, so that every α
    # sees the same function; PyHessian estimates on a few batches of this size.
    subset: int = 512
    batch_size: int = 2048  # samples per forward pass in a Hessian-vector product (memory is bounded by it)
    # Lanczos steps at most: the top eigenvalue of a network's Hessian stands apart from the bulk, and
    # Lanczos reaches it to 1e-3 in about ten to twenty products; the residual column shows where it did not.
    iterations: int = 30
    # Stop when the Ritz residual estimate is at most tol x |λ|: 1e-3 relative is below the differences
    # between α points and seeds that a curvature curve shows.
    tol: float = 1.0e-3
    # Rademacher probes of the trace: its standard error falls as 1/√probes; 20 give a few percent on the
    # networks measured here, and each costs one product.
    probes: int = 20
    seed: int = 0  # the Lanczos start vector and the probes (the same at every α)
    device: str = "auto"

    MEASUREMENT = ("alphas", "subset", "batch_size", "iterations", "tol", "probes", "seed", "device")

    def measurement(self) -> dict:
        """What one job measures with (the settings and seeds only plan the jobs)."""
        return {k: getattr(self, k) for k in self.MEASUREMENT}

    @classmethod
    def from_config(cls, raw: dict | None, where: str = "curvature") -> "CurvatureSpec":
        spec = from_dict(cls, raw or {}, where)
        check_alphas(spec.alphas, f"{where}.alphas")
        grid = alpha_values(spec.alphas)
        if grid != sorted(grid) or len(set(grid)) != len(grid):
            raise SettingsError(f"{where}.alphas must rise without repeats, got {spec.alphas!r}")
        for name in ("subset", "batch_size", "iterations", "probes"):
            if getattr(spec, name) < 1:
                raise SettingsError(f"{where}.{name} must be >= 1, got {getattr(spec, name)}")
        if not 0 < spec.tol < 1:
            raise SettingsError(f"{where}.tol must be a relative residual in (0, 1), got {spec.tol}")
        check_device(spec.device, f"{where}.device")
        return spec


def _check_common(spec, where: str, bn_modes: list[str]) -> None:
    for mode in bn_modes:
        if mode not in BN_MODES:
            raise SettingsError(f"{where}: BN mode must be one of {list(BN_MODES)}, got {mode!r}")
    if not spec.splits or any(s not in SPLITS for s in spec.splits):
        raise SettingsError(f"{where}.splits must be a non-empty list of {list(SPLITS)}, got {spec.splits}")
    for name in ("bn_subset", "batch_size"):
        if getattr(spec, name) < 1:
            raise SettingsError(f"{where}.{name} must be >= 1, got {getattr(spec, name)}")
    check_device(spec.device, f"{where}.device")


def _even(span: list[float], points: int) -> list[float]:
    lo, hi = span
    return [round(lo + (hi - lo) * i / (points - 1), 12) + 0.0 for i in range(points)]


def alpha_values(text: str) -> list[float]:
    """The α grid of "start:stop:count" (both ends included) or a comma list: the one definition of every
    sweep's grid (linpath.paths.sweeps.alpha_grid is its array). Start + i·step with the stop written last,
    the arithmetic of numpy.linspace, in pure Python so that the planner needs no numpy."""
    parts = str(text).split(":")
    if len(parts) == 3:
        a, b, n = float(parts[0]), float(parts[1]), int(parts[2])
        if n == 1:
            return [a]
        step = (b - a) / (n - 1)
        return [float(i) * step + a for i in range(n - 1)] + [b]
    return [float(v) for v in str(text).split(",")]
