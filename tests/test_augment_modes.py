"""Augmentation level `more` against torchvision's v2 functional ops with the parameters spelled out.

tests/test_augment.py checks none / crop / standard against `TF.pad`, `TF.crop` and
`TF.horizontal_flip` with the drawn offsets and flips, and `more` against the same seeded v2
transforms the loader builds. Here every image of `more` is rebuilt from `TF.affine` and `TF.erase`
with parameters drawn by transforms written out in this file (±15°, ±10 % shift, scale 0.9–1.1,
erasing with p = 0.25), so a change of the stated ranges, of the order of the steps or of the
interpolation shows up as a different image.
"""

from __future__ import annotations

import torch
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms.v2 import functional as TF

from linpath.engine import augment, data

SEED, EPOCH, SIZE = 7, 3, 32


def batches(level: str, x: torch.Tensor) -> list[torch.Tensor]:
    loader = data.DeviceLoader(x, torch.arange(len(x)) % 10, 16, SEED, level, "cpu")
    return [xb for xb, _ in loader.epoch(EPOCH)]


def test_more_is_affine_then_erasing_with_the_stated_parameters(capsys):
    x = torch.randn(48, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    standard, more = batches("standard", x), batches("more", x)
    capsys.readouterr()  # the loader announces its CPU fallback
    affine = v2.RandomAffine(degrees=15, translate=(0.1, 0.1), scale=(0.9, 1.1))
    erasing = v2.RandomErasing(p=0.25)
    angles, erased = [], 0
    for b, (cropped, got) in enumerate(zip(standard, more)):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(augment.stream_seed(SEED, "more", EPOCH, b))
            for image, out in zip(cropped, got):
                p = affine.make_params([image])
                assert -15 <= p["angle"] <= 15 and 0.9 <= p["scale"] <= 1.1 and p["shear"] == (0.0, 0.0)
                assert all(abs(t) <= round(0.1 * SIZE) for t in p["translate"])
                expected = TF.affine(image, angle=p["angle"], translate=list(p["translate"]), scale=p["scale"],
                                     shear=[0.0, 0.0], interpolation=InterpolationMode.NEAREST, fill=0)
                if torch.rand(1) < 0.25:  # RandomErasing's own coin, then its box and fill
                    e = erasing.make_params([image])
                    expected = TF.erase(expected, e["i"], e["j"], e["h"], e["w"], e["v"])
                    erased += 1
                angles.append(p["angle"])
                assert torch.equal(out, expected)
    assert 0 < erased < len(x), "some images are erased, not all"
    assert max(angles) - min(angles) > 15, "the angles spread over the range"


def test_the_four_levels_give_four_different_epochs():
    x = torch.randn(32, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    epochs = {level: torch.cat(batches(level, x)) for level in augment.LEVELS}
    order = augment.draw_epoch(len(x), SEED, EPOCH, "none", 0).order
    assert torch.equal(epochs["none"], x[order]), "none: the images themselves, in the drawn order"
    for i, a in enumerate(augment.LEVELS):
        for b in augment.LEVELS[i + 1:]:
            assert not torch.equal(epochs[a], epochs[b]), (a, b)
