"""The random crop pads in pixel space: its border is a black pixel, as torchvision's RandomCrop(size,
padding) gives on the raw image before Normalize, not the mean colour that padding the normalised
images with zeros would give. Checked on the real 8×8 digits against torchvision v2 per image."""

from __future__ import annotations

import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from linpath.engine import augment, data
from linpath.foundations.hparams import DataSpec

SEED = 11


def digits(level: str = "crop"):
    spec = DataSpec(dataset="digits", augment=level)
    return spec, data.load_source(spec), data.prepare(spec)


def raw_pipeline(source: data.Source):
    """Raw uint8 image(s) -> [0, 1] -> torchvision's Normalize: the training images, unaugmented."""
    normalize = v2.Normalize(source.mean.tolist(), source.std.tolist())
    return lambda x: normalize(x.float().div(255))


def test_the_border_value_is_the_normalised_black_pixel():
    _, source, prep = digits()
    assert prep.pad_value.shape == (1,)
    assert torch.equal(prep.pad_value, (torch.zeros(1) - source.mean) / source.std)
    assert prep.pad_value.item() < -0.1, "black is darker than the mean: the old zero border was the mean colour"
    padded = augment.pad_images(prep.train_x[:3], 1, prep.pad_value)
    assert padded.shape == (3, 1, 10, 10)
    border = torch.ones(10, 10, dtype=torch.bool)
    border[1:-1, 1:-1] = False
    assert (padded[:, :, border] == prep.pad_value).all()
    assert torch.equal(padded[:, :, 1:-1, 1:-1], prep.train_x[:3])


def test_loader_crops_equal_torchvision_padding_of_the_raw_image_then_normalize():
    _, source, prep = digits("standard")
    raw = data.subset_and_relabel(source.train, DataSpec(dataset="digits"), source.num_classes).x
    assert torch.equal(raw_pipeline(source)(raw), prep.train_x), "the training images are the raw ones normalised"
    pad, size = augment.pad_for(8), 8
    loader = data.DeviceLoader(prep.train_x, prep.train_y, 256, SEED, prep.augment, "cpu", prep.pad_value)
    draws = augment.draw_epoch(len(raw), SEED, 2, prep.augment, pad)
    got = torch.cat([xb for xb, _ in loader.epoch(2)])
    normalise = raw_pipeline(source)
    expected = []
    for i, (top, left), flip in zip(draws.order.tolist(), draws.shifts.tolist(), draws.flips.tolist()):
        image = TF.crop(TF.pad(raw[i], [pad], fill=0), top, left, size, size)  # RandomCrop's padding, fill 0
        expected.append(normalise(TF.horizontal_flip(image) if flip else image))
    assert torch.equal(got, torch.stack(expected))
    corner = (draws.shifts[:, 0] == 0) & (draws.shifts[:, 1] == 0)
    assert corner.any() and (got[corner][:, :, 0, :] == prep.pad_value).all(), "a (0, 0) crop starts with the border"


def test_random_crop_transform_output_is_one_of_the_loaders_crops():
    """torchvision's own RandomCrop(8, padding=1) on raw images, then Normalize: every output equals the
    crop of the pixel-space-padded normalised image at the offset it drew (found by matching the raw crop)."""
    _, source, prep = digits()
    raw = data.subset_and_relabel(source.train, DataSpec(dataset="digits"), source.num_classes).x[:40]
    crop, normalise = v2.RandomCrop(8, padding=1), raw_pipeline(source)
    padded_raw = TF.pad(raw, [1], fill=0)
    padded = augment.pad_images(prep.train_x[:40], 1, prep.pad_value)
    torch.manual_seed(SEED)
    moved = 0
    for i in range(len(raw)):
        out = crop(raw[i])
        offsets = [(t, l) for t in range(3) for l in range(3)
                   if torch.equal(padded_raw[i, :, t:t + 8, l:l + 8], out)]
        assert offsets, f"image {i}: RandomCrop gave a window the padded raw image does not hold"
        t, l = offsets[0]
        moved += (t, l) != (1, 1)
        shifts = torch.tensor([[t, l]])
        ours = augment.crop_flip(padded[i:i + 1], shifts, torch.zeros(1, dtype=torch.bool), 8)
        assert torch.equal(ours[0], normalise(out)), (i, t, l)
    assert moved > len(raw) // 2, "most crops move the image, so the border is compared"
