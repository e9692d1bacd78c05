"""Settings of one training run as dataclasses.

A run is fully described by a `RunSpec`; its `run.yaml` is `RunSpec.to_dict()`
and `RunSpec.from_dict(yaml)` rebuilds it. Unknown keys and wrong types are
refused with an error that names the dotted setting, before any work starts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import yaml


class SettingsError(ValueError):
    """A setting is missing, unknown or of the wrong type/value."""


ARCHS = ("resnet18", "resnet34", "resnet50", "vgg11", "mlp")
DATASETS = ("digits", "digits_rot4", "spiral", "cifar10", "cifar100", "mnist", "fashion_mnist")


@dataclass
class ModelSpec:
    """Architecture; `build(spec)` in linpath.models rebuilds it from this alone."""

    arch: str = "resnet18"
    num_classes: int = 10
    in_channels: int = 3
    input_size: int = 32
    # ResNet / VGG: channels of the first stage (paper: 64); later stages scale from it.
    width: int = 64
    batchnorm: bool = True
    # ResNet: keep the max-pool after the stem (torchvision keeps it; CIFAR variants drop it).
    maxpool: bool = False
    # MLP: widths of the hidden layers.
    hidden: list[int] = field(default_factory=lambda: [50, 50])
    # Number of outputs for a binary task trained with BCE is 1.
    binary: bool = False
    # Width multipliers per group (VGG conv<k>, MLP hidden layer<k>): widen or narrow single layers.
    group_width: dict[str, float] = field(default_factory=dict)

    def validate(self, where: str = "model") -> None:
        _choice(self.arch, ARCHS, f"{where}.arch")
        _positive(self.num_classes, f"{where}.num_classes")
        _positive(self.in_channels, f"{where}.in_channels")
        _positive(self.input_size, f"{where}.input_size")
        _positive(self.width, f"{where}.width")
        for i, w in enumerate(self.hidden):
            _positive(w, f"{where}.hidden[{i}]")
        for group, factor in self.group_width.items():
            if factor <= 0:
                raise SettingsError(f"{where}.group_width.{group} must be > 0, got {factor}")
        if self.binary and self.num_classes != 2:
            raise SettingsError(f"{where}.binary needs {where}.num_classes == 2, got {self.num_classes}")


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
    # Spiral only: sizes and shape constants (PAPER.md section 2).
    spiral: dict[str, float] = field(default_factory=dict)
    # Images only: side length after a bilinear resize of every image (0 keeps the dataset's own size).
    resize: int = 0

    def validate(self, where: str = "data") -> None:
        _choice(self.dataset, DATASETS, f"{where}.dataset")
        if self.resize < 0:
            raise SettingsError(f"{where}.resize must be >= 0 (0 keeps the image size), got {self.resize}")
        if self.resize and self.dataset == "spiral":
            raise SettingsError(f"{where}.resize applies to images; data.dataset=spiral holds 2-D points")
        _choice(self.augment, ("none", "crop", "standard", "more"), f"{where}.augment")
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
    until_train_acc: Optional[float] = None
    # Seeds the data order and the augmentation (separate streams per epoch, see
    # linpath.augment); the init seed is InitSpec.seed.
    seed: int = 0
    # Epochs after which the state is kept as epoch_<k>.pt (for "epoch t -> final" paths).
    save_epochs: list[int] = field(default_factory=list)
    group_overrides: dict[str, GroupOverride] = field(default_factory=dict)
    loss: Literal["ce", "bce"] = "ce"
    device: str = "auto"
    # CUDA only (CPU always trains in fp32): autocast precision of the training step.
    # Per-epoch metrics are always computed in strict fp32.
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
        _choice(self.optimizer, ("sgd", "adam"), f"{where}.optimizer")
        _choice(self.loss, ("ce", "bce"), f"{where}.loss")
        if self.lr <= 0:
            raise SettingsError(f"{where}.lr must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise SettingsError(f"{where}.weight_decay must be >= 0, got {self.weight_decay}")
        _positive(self.batch_size, f"{where}.batch_size")
        _positive(self.epochs, f"{where}.epochs")
        _choice(self.precision, ("fp32", "bf16"), f"{where}.precision")
        _positive(self.checkpoint_every, f"{where}.checkpoint_every")
        _positive(self.eval_every, f"{where}.eval_every")
        if len(self.betas) != 2:
            raise SettingsError(f"{where}.betas must have two numbers, got {self.betas}")
        for m in self.milestones:
            _positive(m, f"{where}.milestones")
        for group, override in self.group_overrides.items():
            for key in ("lr", "weight_decay"):
                value = getattr(override, key)
                if value is not None and value < 0:
                    raise SettingsError(f"{where}.group_overrides.{group}.{key} must be >= 0, got {value}")
        if self.until_train_acc is not None and not 0 < self.until_train_acc <= 1:
            raise SettingsError(f"{where}.until_train_acc must be in (0, 1], got {self.until_train_acc}")


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
        if not path.is_file():
            raise SettingsError(f"run settings file not found: {path}")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise SettingsError(f"{path}: not valid YAML: {err}") from None
        if not isinstance(raw, dict):
            raise SettingsError(f"{path}: expected a mapping of settings at top level")
        try:
            return cls.from_dict(raw)
        except SettingsError as err:
            raise SettingsError(f"{path}: {err}") from None

    def digest(self) -> str:
        """Short hash of every setting except the free-text name."""
        payload = self.to_dict()
        payload.pop("name")
        text = json.dumps(payload, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:10]


# --- generic dict -> dataclass conversion with named errors -----------------


def from_dict(cls: type, raw: Any, where: str) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise SettingsError(f"{where or 'settings'} must be a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        known = ", ".join(sorted(names))
        raise SettingsError(f"unknown setting {_join(where, unknown[0])!r} (known: {known})")
    values = {k: _convert(hints[k], v, _join(where, k)) for k, v in raw.items()}
    return cls(**values)


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], value, where)
    if origin is Literal:
        if value not in args:
            raise SettingsError(f"{where} must be one of {list(args)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise SettingsError(f"{where} must be a list, got {value!r}")
        return [_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise SettingsError(f"{where} must be a mapping, got {value!r}")
        return {str(k): _convert(args[1], v, f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise SettingsError(f"{where} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SettingsError(f"{where} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):
            try:
                return float(value)  # YAML reads 5e-4 as a string
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SettingsError(f"{where} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise SettingsError(f"{where} must be a string, got {value!r}")
        return value
    return value


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _choice(value: Any, options: tuple, where: str) -> None:
    if value not in options:
        raise SettingsError(f"{where} must be one of {list(options)}, got {value!r}")


def _positive(value: int, where: str) -> None:
    if value <= 0:
        raise SettingsError(f"{where} must be > 0, got {value}")
