"""Datasets as in-memory tensors, the device-resident training loader and cached evaluation splits.

Images are kept as uint8 (N, C, H, W) and normalised with per-channel
statistics of the full training set. The evaluation splits (training set
without augmentation, test set) are written once as
`<cache>/<dataset>-<key>/<split>.pt`, a dict {"x": float32 normalised,
"y": int64}, so a loss can be recomputed from files alone.
"""

from __future__ import annotations

import math
import pickle
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torchvision import datasets as tvd
from torchvision.transforms import v2

from ..foundations.hparams import DataSpec, SettingsError
from ..foundations.ids import digest
from ..foundations.io import load_checkpoint, save_torch
from ..foundations.registry import DATASETS, builder
from . import augment as augment_mod


class DataError(SettingsError):
    """The dataset files are missing or unreadable."""


@dataclass
class Split:
    x: torch.Tensor  # uint8 images (N, C, H, W), or float features (N, D) for the spiral
    y: torch.Tensor  # int64 labels


@dataclass
class Source:
    """Raw train/test splits plus what a model needs to know about them."""

    train: Split
    test: Split
    num_classes: int
    in_channels: int
    input_size: int
    mean: torch.Tensor
    std: torch.Tensor

    @property
    def is_image(self) -> bool:
        return self.train.x.dim() == 4


# --- raw sources ------------------------------------------------------------

SPIRAL_DEFAULTS = {"n_train": 10000, "n_test": 5000, "radius": 2.0, "turns": 4.0, "noise": 0.05, "seed": 0}
DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0  # fixed: the digits train/test split is part of the dataset's definition


def spiral_points(n: int, *, radius: float, turns: float, noise: float, generator: torch.Generator) -> Split:
    """Two interleaved spirals; the class-2 arm is the class-1 arm turned by π."""
    t = torch.rand(n, generator=generator)
    labels = torch.arange(n) % 2
    r = radius * t.sqrt()
    phi = 2 * math.pi * turns * t.sqrt() + math.pi * labels
    pts = torch.stack([r * torch.cos(phi), r * torch.sin(phi)], dim=1)
    pts = pts + noise * torch.randn(n, 2, generator=generator)
    return Split(pts.float(), labels.long())


def spiral_source(spec: DataSpec) -> Source:
    unknown = set(spec.spiral) - set(SPIRAL_DEFAULTS)
    if unknown:
        raise SettingsError(f"data.spiral: unknown setting {sorted(unknown)[0]!r} (known: {sorted(SPIRAL_DEFAULTS)})")
    p = {**SPIRAL_DEFAULTS, **spec.spiral}
    g = torch.Generator().manual_seed(int(p["seed"]))
    kw = dict(radius=p["radius"], turns=p["turns"], noise=p["noise"], generator=g)
    train = spiral_points(int(p["n_train"]), **kw)
    test = spiral_points(int(p["n_test"]), **kw)
    return Source(train, test, 2, 2, 1, train.x.mean(0), train.x.std(0))


def _digits_tensors(root: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The digits as uint8 images and labels, kept under data.root after the first read:
    importing scikit-learn costs more than the training of a small run."""
    cache = Path(root) / "digits" / "digits.pt"
    if cache.is_file():
        blob = load_checkpoint(cache)
        return blob["images"], blob["labels"]
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy(np.round(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)).unsqueeze(1)
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    save_torch({"images": images, "labels": labels}, cache)
    return images, labels


def digits_source(spec: DataSpec) -> Source:
    """scikit-learn's bundled 8×8 digits (1797 images): real data with no download."""
    images, labels = _digits_tensors(spec.root)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(DIGITS_SPLIT_SEED))
    n_test = round(DIGITS_TEST_FRACTION * len(labels))
    test_idx, train_idx = order[:n_test].sort().values, order[n_test:].sort().values
    return _image_source(Split(images[train_idx], labels[train_idx]), Split(images[test_idx], labels[test_idx]), 10)


_IDX_FILES = "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte"


def _rotations(split: Split) -> Split:
    """Rotation prediction (0°, 90°, 180°, 270°): a label-free pretext task on the same images."""
    xs = [torch.rot90(split.x, k, dims=(2, 3)) for k in range(4)]
    ys = [torch.full_like(split.y, k) for k in range(4)]
    return Split(torch.cat(xs), torch.cat(ys))


def digits_rot4_source(spec: DataSpec) -> Source:
    """Self-supervised source task on the digits training images; stands in for ImageNet
    pretraining where nothing can be downloaded. The test split is rotations of the test images."""
    digits = digits_source(spec)
    return _image_source(_rotations(digits.train), _rotations(digits.test), 4)


def _torchvision_source(cls: type, num_classes: int, files: str):
    """A registry builder reading one torchvision dataset class from data.root (`files`: its layout)."""
    def build(spec: DataSpec) -> Source:
        split = lambda train: _torchvision_split(spec, cls, files, train)  # noqa: E731
        return _image_source(split(True), split(False), num_classes)

    return build


def _torchvision_split(spec: DataSpec, cls: type, files: str, train: bool) -> Split:
    if not spec.verify_checksums:  # every other line of torchvision's reader still runs
        unchecked = {"_check_integrity": lambda self: True}
        if isinstance(getattr(cls, "meta", None), dict):  # CIFAR also checks batches.meta
            unchecked["meta"] = {**cls.meta, "md5": None}
        # same class name: torchvision's MNIST readers find their folder by it
        cls = type(cls.__name__, (cls,), unchecked)
    try:
        ds = cls(root=spec.root, train=train, download=spec.download)
    except RuntimeError as err:
        hint = "" if spec.download else " (or set data.download: true where the network allows)"
        raise DataError(
            f"data.dataset={spec.dataset}: files missing or failing the official checksum under "
            f"data.root={spec.root!r}: expected {spec.root}/{files}{hint}. torchvision said: {err}"
        ) from None
    except (AssertionError, ValueError, TypeError, EOFError, OSError, pickle.UnpicklingError) as err:
        raise DataError(
            f"data.dataset={spec.dataset}: unreadable files under data.root={spec.root!r} "
            f"({spec.root}/{files}): {type(err).__name__} {err}"
        ) from None
    x = torch.as_tensor(np.asarray(ds.data))
    x = x.permute(0, 3, 1, 2) if x.dim() == 4 else x.unsqueeze(1)  # CIFAR is NHWC, MNIST NHW
    return Split(x.contiguous(), torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64))


def _image_source(train: Split, test: Split, num_classes: int) -> Source:
    pixels = train.x.float().div(255)
    mean = pixels.mean(dim=(0, 2, 3))
    std = pixels.std(dim=(0, 2, 3)).clamp_min(1e-6)
    return Source(train, test, num_classes, train.x.shape[1], train.x.shape[-1], mean, std)


cifar10_source = _torchvision_source(tvd.CIFAR10, 10, "cifar-10-batches-py/{data_batch_1..5, test_batch}")
cifar100_source = _torchvision_source(tvd.CIFAR100, 100, "cifar-100-python/{train, test}")
mnist_source = _torchvision_source(tvd.MNIST, 10, "MNIST/raw/: " + _IDX_FILES)
fashion_mnist_source = _torchvision_source(tvd.FashionMNIST, 10, "FashionMNIST/raw/: " + _IDX_FILES)


def load_source(spec: DataSpec) -> Source:
    """The dataset's train and test splits, by its entry in linpath.foundations.registry.DATASETS."""
    source = builder(DATASETS, spec.dataset, "data.dataset")(spec)
    return _resized(source, spec.resize) if spec.resize else source


def _resized(source: Source, size: int) -> Source:
    """Every image resized (bilinear, uint8 kept), statistics recomputed: a network built for larger maps
    (VGG-11 on 32×32) sees maps of its size instead of collapsing 8×8 digits to 1×1 halfway through."""
    def resize(split: Split) -> Split:
        return Split(v2.functional.resize(split.x, [size, size], antialias=True), split.y)

    return _image_source(resize(source.train), resize(source.test), source.num_classes)


# --- interventions on the training set ------------------------------------


def subset_and_relabel(split: Split, spec: DataSpec, num_classes: int) -> Split:
    """Seeded subset (data.subset) and random labels (data.random_labels) of a training split."""
    g = torch.Generator().manual_seed(spec.seed)
    x, y = split.x, split.y.clone()
    if spec.subset < 1.0:
        keep = max(1, round(spec.subset * len(y)))
        idx = torch.randperm(len(y), generator=g)[:keep].sort().values
        x, y = x[idx], y[idx]
    if spec.random_labels > 0:
        n = round(spec.random_labels * len(y))
        idx = torch.randperm(len(y), generator=g)[:n]
        y[idx] = torch.randint(num_classes, (n,), generator=g)
    return Split(x, y)


def normalise(source: Source, x: torch.Tensor) -> torch.Tensor:
    if not source.is_image:
        return (x - source.mean) / source.std
    return v2.Normalize(source.mean.tolist(), source.std.tolist())(x.float().div(255))


@dataclass
class Prepared:
    """Everything training needs: normalised tensors and model-shape facts."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    in_channels: int
    input_size: int
    augment: str  # the augmentation level training applies ("none" for non-image data)
    # Images: the normalised value of a black pixel per channel, (0 - mean) / std: the crop's border.
    pad_value: torch.Tensor | None = None


def prepare(spec: DataSpec) -> Prepared:
    source = load_source(spec)
    train = subset_and_relabel(source.train, spec, source.num_classes)
    black = normalise(source, torch.zeros(1, source.in_channels, 1, 1, dtype=torch.uint8)).flatten() \
        if source.is_image else None
    return Prepared(
        normalise(source, train.x), train.y, normalise(source, source.test.x), source.test.y,
        source.num_classes, source.in_channels, source.input_size, spec.augment if source.is_image else "none",
        black,
    )


class DeviceLoader:
    """The training set held on the training device, served as shuffled, augmented batches.

    Images are padded once with `pad_value` (per channel: the normalised value of a black
    pixel, `Prepared.pad_value`, so the border is what RandomCrop's padding of the raw image
    gives; zeros if None); each batch is cropped and flipped straight out of the padded set. The random choices of
    epoch e depend only on (seed, e) (see linpath.engine.augment), so `epoch(e)` yields the same
    batches on any device, in any process, whatever else drew random numbers in between."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int, augment: str,
                 device: torch.device | str = "cpu", pad_value: torch.Tensor | None = None):
        if augment not in augment_mod.LEVELS:
            raise SettingsError(f"data.augment must be one of {list(augment_mod.LEVELS)}, got {augment!r}")
        if augment != "none" and x.dim() != 4:
            raise SettingsError(f"data.augment={augment!r} needs images (N, C, H, W), got shape {tuple(x.shape)}")
        self.batch_size, self.seed, self.augment, self.device = batch_size, seed, augment, torch.device(device)
        self.size = x.shape[-1]
        self.pad = augment_mod.pad_for(self.size) if augment != "none" else 0
        x = x.to(self.device)
        self.images = augment_mod.pad_images(x, self.pad, pad_value) if self.pad else x
        self.labels = y.to(self.device)
        self.extras = augment_mod.more_extras() if augment == "more" else None
        if self.extras is not None:
            print(f"data.augment=more: crop and flip are batched on {self.device}; affine and erasing "
                  "run per image on the CPU (torchvision v2)")

    def __len__(self) -> int:
        return math.ceil(len(self.labels) / self.batch_size)

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.labels)
        draws = augment_mod.draw_epoch(n, self.seed, epoch, self.augment, self.pad)
        order = draws.order.to(self.device)
        if draws.shifts is not None:
            shifts, flips = draws.shifts.to(self.device), draws.flips.to(self.device)
        for b, start in enumerate(range(0, n, self.batch_size)):
            at = slice(start, start + self.batch_size)
            idx = order[at]
            if self.pad:
                xb = augment_mod.crop_flip(self.images, shifts[at], flips[at], self.size, idx)
            else:
                xb = self.images[idx]
            if self.extras is not None:
                xb = augment_mod.apply_more_extras(xb, augment_mod.stream_seed(self.seed, "more", epoch, b), self.extras)
            yield xb, self.labels[idx]


# --- cached evaluation splits ----------------------------------------------


def cache_key(spec: DataSpec, split: str) -> str:
    """Directory name of a split's cache: dataset plus a hash of what changes its content."""
    content = {"dataset": spec.dataset, "spiral": spec.spiral, **({"resize": spec.resize} if spec.resize else {})}
    if split == "train":  # the test split ignores training-set interventions
        content.update(subset=spec.subset, random_labels=spec.random_labels, seed=spec.seed)
    return f"{spec.dataset}-{digest(content)}"


def eval_path(spec: DataSpec, split: str, cache_dir: str | Path) -> Path:
    if split not in ("train", "test"):
        raise SettingsError(f"split must be 'train' or 'test', got {split!r}")
    return Path(cache_dir) / cache_key(spec, split) / f"{split}.pt"


def write_eval_split(spec: DataSpec, split: str, cache_dir: str | Path, prep: Prepared | None = None) -> Path:
    """Write (or keep) the cached evaluation tensors of a split; returns the path."""
    path = eval_path(spec, split, cache_dir)
    if not path.exists():
        prep = prep or prepare(spec)
        x, y = (prep.train_x, prep.train_y) if split == "train" else (prep.test_x, prep.test_y)
        save_torch({"x": x.contiguous().float(), "y": y.long(), "data": asdict(spec)}, path)
    return path


def load_eval_split(path: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    blob = load_checkpoint(path)
    if not isinstance(blob, dict) or "x" not in blob or "y" not in blob:
        raise DataError(f"{path} is not an evaluation split (a dict with 'x' and 'y')")
    return blob["x"], blob["y"]
