"""Seeded random streams and batched augmentation of image batches on their device.

Every random choice of training has its own stream. θ₀ is built under the CPU
generator seeded with `init.seed` (the same init `other:<seed>` paths rebuild),
inside a fork that leaves the caller's RNG as it was. The data order and the
augmentation of epoch e come from seeds hashed from (`train.seed`, stream name,
e): `torch.Generator`s on the CPU whose draws are moved to the training device,
so a batch is the same on CPU and CUDA, and epoch e can be redrawn from the
epoch number alone (resuming needs no data RNG state). Nothing else that draws
random numbers (the global torch RNG, e.g. dropout) shifts these streams.

Augmentation levels: none | crop (random crop, padding of `pad_for(size)`)
| standard (crop + horizontal flip) | more (standard + affine + erasing).
The crop pads in pixel space, as torchvision's RandomCrop(size, padding) pads an
un-normalised image: the border is black (pixel value 0), which in the
normalised images training sees is (0 − mean) / std per channel (`pad_images`).
Crop and flip are one indexed copy on the device. The affine and erasing steps of
`more` run per image on the CPU with torchvision v2 (an explicit fallback,
announced once per loader), each batch under its own seeded RNG.
"""

from __future__ import annotations

import hashlib
import json
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
from torchvision.transforms import v2

LEVELS = ("none", "crop", "standard", "more")


def stream_seed(seed: int, name: str, *index: int) -> int:
    """A 63-bit seed for stream `name` of `seed` (and e.g. an epoch): unrelated for any two arguments."""
    text = json.dumps([int(seed), name, *map(int, index)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def stream(seed: int, name: str, *index: int) -> torch.Generator:
    return torch.Generator().manual_seed(stream_seed(seed, name, *index))


@contextmanager
def seeded_global_rng(seed: int) -> Iterator[None]:
    """Run code that draws from the global CPU RNG (torchvision transforms, model
    constructors) on a private seed, leaving the caller's global RNG as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)  # the CPU generator only: CUDA's stays as it was
        yield


def pad_for(size: int) -> int:
    """Padding of the random crop: 4 for 32×32 images, at least 1."""
    return max(1, size // 8)


def pad_images(x: torch.Tensor, pad: int, fill: torch.Tensor | None = None) -> torch.Tensor:
    """(N, C, H, W) images with a border of `pad` pixels of value `fill` (one value per channel: the
    normalised value of a black pixel, so the border is what padding the raw image gives); zeros if None."""
    if fill is None:
        return torch.nn.functional.pad(x, [pad] * 4)
    n, c, h, w = x.shape
    out = fill.to(device=x.device, dtype=x.dtype).view(1, c, 1, 1).expand(n, c, h + 2 * pad, w + 2 * pad).clone()
    out[..., pad:pad + h, pad:pad + w] = x
    return out


def more_extras() -> v2.Transform:
    """The steps `more` adds after crop and flip."""
    return v2.Compose([v2.RandomAffine(degrees=15, translate=(0.1, 0.1), scale=(0.9, 1.1)), v2.RandomErasing(p=0.25)])


def per_image_pipeline(level: str, size: int) -> v2.Transform | None:
    """The same augmentation as torchvision v2 per-image transforms (the reference the batched path is checked against)."""
    if level == "none":
        return None
    steps = [v2.RandomCrop(size, padding=pad_for(size))]
    if level in ("standard", "more"):
        steps.append(v2.RandomHorizontalFlip())
    if level == "more":
        steps.append(more_extras())
    return v2.Compose(steps)


@dataclass
class EpochDraws:
    """The random choices of one epoch, indexed by position in the epoch (CPU tensors)."""

    order: torch.Tensor  # permutation of the training set
    shifts: torch.Tensor | None  # (n, 2) crop offsets (top, left) in [0, 2·pad] of the padded image
    flips: torch.Tensor | None  # (n,) bool: mirror horizontally


def draw_epoch(n: int, seed: int, epoch: int, level: str, pad: int) -> EpochDraws:
    order = torch.randperm(n, generator=stream(seed, "order", epoch))
    if level == "none":
        return EpochDraws(order, None, None)
    g = stream(seed, "augment", epoch)
    shifts = torch.randint(0, 2 * pad + 1, (n, 2), generator=g)
    flips = torch.randint(0, 2, (n,), generator=g).bool()
    if level == "crop":
        flips = torch.zeros(n, dtype=torch.bool)
    return EpochDraws(order, shifts, flips)


def crop_flip(padded: torch.Tensor, shifts: torch.Tensor, flips: torch.Tensor, size: int,
              index: torch.Tensor | None = None) -> torch.Tensor:
    """size×size windows of the padded images `padded[index]` (all if None) at per-image offsets
    (top, left), mirrored where `flips`. The windows are a strided view (unfold), read with one
    indexed copy: every pixel is an exact copy of an input pixel."""
    windows = padded.unfold(2, size, 1).unfold(3, size, 1)  # (N, C, 2p+1, 2p+1, size, size), no copy
    if index is None:
        index = torch.arange(len(shifts), device=padded.device)
    out = windows[index, :, shifts[:, 0], shifts[:, 1]]
    return torch.where(flips[:, None, None, None], out.flip(-1), out)


def apply_more_extras(batch: torch.Tensor, seed: int, extras: v2.Transform) -> torch.Tensor:
    """Affine and erasing per image on the CPU, drawn from the batch's own seed."""
    with seeded_global_rng(seed):
        out = torch.stack([extras(image) for image in batch.cpu()])
    return out.to(batch.device)
