"""Batched augmentation on the device and the seeded random streams of training.

Every augmented image is compared with what torchvision.transforms.v2.functional
gives for the same parameters; the drawn parameters are checked for uniformity
(χ², fixed seed, with a biased control that must fail); the streams are checked
for independence from each other and from the global torch RNG.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.transforms.v2 import functional as TF

from conftest import run_spec
from linpath.engine import augment, data
from linpath.foundations.hparams import DataSpec
from linpath.engine.train import initial_state

SEED, EPOCH = 7, 3


def images(n: int = 40, channels: int = 3, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Normalised-looking CIFAR-shaped images: every pixel distinct, so a wrong offset or flip shows."""
    return torch.randn(n, channels, size, size, generator=torch.Generator().manual_seed(seed))


def reference(x: torch.Tensor, shifts: torch.Tensor, flips: torch.Tensor, pad: int) -> torch.Tensor:
    """Pad, crop and flip one image at a time with torchvision's functional ops."""
    size = x.shape[-1]
    out = []
    for img, (top, left), flip in zip(x, shifts.tolist(), flips.tolist()):
        img = TF.crop(TF.pad(img, [pad], fill=0), top, left, size, size)
        out.append(TF.horizontal_flip(img) if flip else img)
    return torch.stack(out)


def epoch_batches(loader: data.DeviceLoader, epoch: int, between=None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    out = []
    for xb, yb in loader.epoch(epoch):
        out.append((xb.clone(), yb.clone()))
        if between is not None:
            between()
    return out


def loader_for(level: str, x: torch.Tensor | None = None, batch_size: int = 16, seed: int = SEED) -> data.DeviceLoader:
    x = images() if x is None else x
    y = torch.arange(len(x)) % 10
    return data.DeviceLoader(x, y, batch_size, seed, level, "cpu")


# --- crop and flip equal torchvision's functional ops --------------------------


def test_crop_flip_equals_torchvision_functional():
    x, pad = images(), augment.pad_for(32)
    assert pad == 4
    g = torch.Generator().manual_seed(1)
    shifts = torch.randint(0, 2 * pad + 1, (len(x), 2), generator=g)
    shifts[:4] = torch.tensor([[0, 0], [8, 8], [0, 8], [8, 0]])  # the four corners of the padded image
    flips = torch.arange(len(x)) % 2 == 0
    padded = torch.nn.functional.pad(x, [pad] * 4)
    assert torch.equal(augment.crop_flip(padded, shifts, flips, 32), reference(x, shifts, flips, pad))
    centre = augment.crop_flip(padded, torch.full((len(x), 2), pad), torch.zeros(len(x), dtype=torch.bool), 32)
    assert torch.equal(centre, x), "offset (pad, pad) without flip is the image itself"


def test_padding_rule_of_small_images():
    assert [augment.pad_for(s) for s in (8, 16, 28, 32, 64)] == [1, 2, 3, 4, 8]


# --- one test per mode: the modes are told apart ----------------------------------


def test_mode_none_serves_the_images_in_the_drawn_order():
    x = images()
    loader = loader_for("none", x)
    draws = augment.draw_epoch(len(x), SEED, EPOCH, "none", 0)
    assert draws.shifts is None and draws.flips is None
    got = torch.cat([xb for xb, _ in loader.epoch(EPOCH)])
    assert torch.equal(got, x[draws.order])
    assert sorted(draws.order.tolist()) == list(range(len(x)))
    assert [len(yb) for _, yb in loader.epoch(EPOCH)] == [16, 16, 8] and len(loader) == 3


def test_mode_crop_crops_and_never_flips():
    x = images()
    draws = augment.draw_epoch(len(x), SEED, EPOCH, "crop", 4)
    assert not draws.flips.any()
    got = torch.cat([xb for xb, _ in loader_for("crop", x).epoch(EPOCH)])
    assert torch.equal(got, reference(x[draws.order], draws.shifts, draws.flips, 4))
    assert (draws.shifts != 4).any(dim=1).sum() > len(x) // 2, "most images are moved"


def test_mode_standard_crops_and_flips_some():
    x = images()
    draws = augment.draw_epoch(len(x), SEED, EPOCH, "standard", 4)
    assert 0 < int(draws.flips.sum()) < len(x)
    assert torch.equal(draws.shifts, augment.draw_epoch(len(x), SEED, EPOCH, "crop", 4).shifts), \
        "crop and standard share the crop draws; only the flips differ"
    got = torch.cat([xb for xb, _ in loader_for("standard", x).epoch(EPOCH)])
    assert torch.equal(got, reference(x[draws.order], draws.shifts, draws.flips, 4))
    cropped = torch.cat([xb for xb, _ in loader_for("crop", x).epoch(EPOCH)])
    same = (got == cropped).flatten(1).all(1)
    assert torch.equal(same, ~draws.flips), "exactly the flipped images differ from crop mode"


def test_mode_more_changes_images_beyond_crop_and_flip(capsys):
    x = images()
    more = loader_for("more", x)
    assert "affine and erasing run per image on the CPU" in capsys.readouterr().out
    standard = [xb for xb, _ in loader_for("standard", x).epoch(EPOCH)]
    got = [xb for xb, _ in more.epoch(EPOCH)]
    changed = sum(int((a != b).flatten(1).any(1).sum()) for a, b in zip(got, standard))
    assert changed > 0.9 * len(x), "the random affine moves nearly every image"
    # reference: torchvision's RandomAffine + RandomErasing per image, on the batch's own seed
    for b, batch in enumerate(standard):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(augment.stream_seed(SEED, "more", EPOCH, b))
            extras = augment.more_extras()
            expected = torch.stack([extras(img) for img in batch])
        assert torch.equal(got[b], expected)
        assert got[b].shape == batch.shape


def test_digits_are_augmented_with_their_padding():
    """Real 8×8 digits: pad 1, so every crop offset is in {0, 1, 2}."""
    prep = data.prepare(DataSpec(dataset="digits", augment="standard"))
    assert prep.augment == "standard"
    loader = data.DeviceLoader(prep.train_x, prep.train_y, 500, SEED, prep.augment, "cpu")
    draws = augment.draw_epoch(len(prep.train_y), SEED, 1, "standard", 1)
    assert set(draws.shifts.unique().tolist()) == {0, 1, 2}
    got = torch.cat([xb for xb, _ in loader.epoch(1)])
    labels = torch.cat([yb for _, yb in loader.epoch(1)])
    assert torch.equal(got, reference(prep.train_x[draws.order], draws.shifts, draws.flips, 1))
    assert torch.equal(labels, prep.train_y[draws.order])
    assert data.prepare(DataSpec(dataset="spiral", spiral={"n_train": 10, "n_test": 10})).augment == "none"


# --- the drawn parameters are uniform ---------------------------------------------

# χ² critical values at significance 1e-3, for scipy-less environments
CRITICAL_1E3 = {1: 10.828, 8: 26.124, 80: 124.839}


def uniform_enough(counts: torch.Tensor) -> bool:
    """χ² goodness of fit against the uniform distribution at significance 1e-3."""
    counts = counts.double()
    try:
        from scipy.stats import chisquare
    except ImportError:
        expected = counts.sum() / len(counts)
        return float(((counts - expected) ** 2 / expected).sum()) < CRITICAL_1E3[len(counts) - 1]
    return chisquare(counts.numpy()).pvalue > 1e-3


def test_shifts_and_flips_are_uniform():
    n, pad = 200_000, 4
    d = augment.draw_epoch(n, SEED, EPOCH, "standard", pad)
    cells = 2 * pad + 1
    joint = torch.bincount(d.shifts[:, 0] * cells + d.shifts[:, 1], minlength=cells * cells)
    assert len(joint) == 81 and uniform_enough(joint), "(top, left) uniform over the 9×9 offsets, independently"
    assert uniform_enough(torch.bincount(d.shifts[:, 0], minlength=cells))
    assert uniform_enough(torch.bincount(d.flips.long(), minlength=2))
    # control: the test tells a slightly biased draw apart (offset 0 made 5% more likely than the others)
    g = torch.Generator().manual_seed(0)
    weights = torch.ones(cells)
    weights[0] = 1.05
    biased = torch.multinomial(weights, n, replacement=True, generator=g)
    assert not uniform_enough(torch.bincount(biased, minlength=cells))


# --- separate streams ----------------------------------------------------------------


def test_stream_seeds_differ_by_name_seed_and_epoch():
    seeds = {augment.stream_seed(s, name, e) for s in (0, 1) for name in ("order", "augment", "more") for e in (1, 2)}
    assert len(seeds) == 12 and all(0 <= s < 2**63 for s in seeds)
    assert augment.stream_seed(3, "order", 1) == augment.stream_seed(3, "order", 1)


def test_epoch_batches_depend_only_on_seed_and_epoch():
    a = epoch_batches(loader_for("standard"), EPOCH)
    again = epoch_batches(loader_for("standard"), EPOCH)  # a fresh loader, as after a resume
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, again))
    other_epoch = epoch_batches(loader_for("standard"), EPOCH + 1)
    other_seed = epoch_batches(loader_for("standard", seed=SEED + 1), EPOCH)
    assert not torch.equal(a[0][0], other_epoch[0][0]) and not torch.equal(a[0][0], other_seed[0][0])


def test_augmentation_ignores_what_the_model_draws():
    dropout = nn.Sequential(nn.Flatten(), nn.Dropout(0.5))

    def model_draws():
        dropout.train()(torch.randn(8, 3, 32, 32))
        torch.manual_seed(12345)  # even a reseeded global RNG changes nothing

    for level in ("standard", "more"):
        quiet = epoch_batches(loader_for(level), EPOCH)
        noisy = epoch_batches(loader_for(level), EPOCH, between=model_draws)
        assert all(torch.equal(q[0], n[0]) and torch.equal(q[1], n[1]) for q, n in zip(quiet, noisy)), level


def test_more_leaves_the_global_rng_alone():
    torch.manual_seed(0)
    before = torch.get_rng_state()
    epoch_batches(loader_for("more"), EPOCH)
    assert torch.equal(torch.get_rng_state(), before)


def test_data_order_seed_leaves_theta0_identical():
    a = initial_state(run_spec("resnet18_w4", train={"seed": 0}))
    torch.manual_seed(99)
    before = torch.get_rng_state()
    b = initial_state(run_spec("resnet18_w4", train={"seed": 5}))
    assert torch.equal(torch.get_rng_state(), before), "θ₀ is drawn from its own stream"
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    c = initial_state(run_spec("resnet18_w4", init={"seed": 1}))
    assert not torch.equal(a["conv1.weight"], c["conv1.weight"])


def test_training_seeds_move_order_but_not_init(tmp_path):
    from linpath.engine.train import train

    from conftest import load_tensors

    runs = {}
    for name, sections in {"a": {}, "b": {"train": {"seed": 1}}}.items():
        train(run_spec("mlp", train={"epochs": 1, **sections.get("train", {})}), tmp_path / name, progress=False)
        runs[name] = load_tensors(tmp_path / name / "init.pt"), load_tensors(tmp_path / name / "final.pt")
    assert all(torch.equal(runs["a"][0][k], runs["b"][0][k]) for k in runs["a"][0])
    assert not torch.equal(runs["a"][1]["layers.0.weight"], runs["b"][1]["layers.0.weight"])
