"""Data sources in their real on-disk formats, spiral and digits, seeded interventions, eval cache."""

from __future__ import annotations

import hashlib
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision import datasets as tvd

from linpath.engine import data
from linpath.engine.data import DataError
from linpath.foundations.hparams import DataSpec, SettingsError

from conftest import CIFAR_TRAIN, write_cifar10, write_mnist

# --- CIFAR-10: the python-pickle batches ----------------------------------------


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def cifar10_with_checksums_of(root: Path) -> type:
    """torchvision's CIFAR10 whose expected checksums are those of the files just written: every
    other line of torchvision's code (integrity check, unpickling, reshaping) runs as it is."""
    folder = root / "cifar-10-batches-py"

    class LocalCIFAR10(tvd.CIFAR10):
        train_list = [[name, _md5(folder / name)] for name in CIFAR_TRAIN]
        test_list = [["test_batch", _md5(folder / "test_batch")]]
        meta = {**tvd.CIFAR10.meta, "md5": _md5(folder / "batches.meta")}

    return LocalCIFAR10


def test_written_cifar_batches_have_the_official_layout(tmp_path):
    write_cifar10(tmp_path)
    raw = (tmp_path / "cifar-10-batches-py" / "data_batch_1").read_bytes()
    entry = pickle.loads(raw, encoding="bytes")  # how the CIFAR page says to read them
    assert set(entry) == {b"batch_label", b"labels", b"data", b"filenames"}
    assert entry[b"data"].dtype == np.uint8 and entry[b"data"].shape == (4, 3072)


def test_cifar10_round_trip(tmp_path, monkeypatch):
    written = write_cifar10(tmp_path)
    # The registry's cifar10 builder, reading with the checksums of the files just written.
    monkeypatch.setattr(data, "cifar10_source", data._torchvision_source(cifar10_with_checksums_of(tmp_path), 10, ""))
    source = data.load_source(DataSpec(dataset="cifar10", root=str(tmp_path)))

    assert source.train.x.shape == (20, 3, 32, 32) and source.test.x.shape == (6, 3, 32, 32)
    assert source.train.x.dtype == torch.uint8 and source.train.y.dtype == torch.int64
    assert source.train.x.is_contiguous()
    # a CIFAR row is the 1024 red, then green, then blue values of a 32x32 image
    assert torch.equal(source.train.x, torch.from_numpy(written["train_x"].reshape(-1, 3, 32, 32)))
    assert torch.equal(source.test.x, torch.from_numpy(written["test_x"].reshape(-1, 3, 32, 32)))
    assert torch.equal(source.train.y, torch.from_numpy(written["train_y"]))
    assert torch.equal(source.test.y, torch.from_numpy(written["test_y"]))
    assert (source.num_classes, source.in_channels, source.input_size, source.is_image) == (10, 3, 32, True)
    pixels = torch.from_numpy(written["train_x"].reshape(-1, 3, 1024)).double() / 255
    assert torch.allclose(source.mean.double(), pixels.mean(dim=(0, 2)), atol=1e-5)
    assert torch.allclose(source.std.double(), pixels.transpose(0, 1).reshape(3, -1).std(dim=1), atol=1e-5)


def test_cifar10_files_that_are_not_the_official_release_are_refused(tmp_path):
    """The stock class checks the official md5 sums: a look-alike file is a DataError, not silently used."""
    write_cifar10(tmp_path)
    with pytest.raises(DataError, match=r"data\.root") as err:
        data.load_source(DataSpec(dataset="cifar10", root=str(tmp_path)))
    assert "corrupted" in str(err.value)


def test_cifar10_missing_files_name_the_files_and_the_root(tmp_path):
    with pytest.raises(DataError) as err:
        data.load_source(DataSpec(dataset="cifar10", root=str(tmp_path)))
    message = str(err.value)
    assert "data.root" in message and str(tmp_path) in message
    assert "cifar-10-batches-py" in message and "data_batch_1..5" in message and "test_batch" in message
    assert "data.download" in message
    assert isinstance(err.value, SettingsError)  # the CLI reports it like any bad setting


def test_cifar10_local_copies_load_without_the_official_checksums(tmp_path):
    written = write_cifar10(tmp_path)
    with pytest.raises(DataError, match="official checksum"):
        data.load_source(DataSpec(dataset="cifar10", root=str(tmp_path)))
    source = data.load_source(DataSpec(dataset="cifar10", root=str(tmp_path), verify_checksums=False))
    assert torch.equal(source.train.x, torch.from_numpy(written["train_x"]).reshape(-1, 3, 32, 32))
    assert torch.equal(source.test.y, torch.from_numpy(written["test_y"]))


# --- MNIST / Fashion-MNIST: big-endian idx files --------------------------------


@pytest.mark.parametrize("verify", [True, False])
@pytest.mark.parametrize("dataset,folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_idx_round_trip(tmp_path, dataset, folder, verify):
    written = write_mnist(tmp_path, folder)
    source = data.load_source(DataSpec(dataset=dataset, root=str(tmp_path), verify_checksums=verify))
    for split, prefix in ((source.train, "train"), (source.test, "t10k")):
        images, labels = written[prefix]
        assert split.x.dtype == torch.uint8 and split.x.shape == (len(labels), 1, 28, 28)
        assert split.y.dtype == torch.int64
        assert torch.equal(split.x[:, 0], torch.from_numpy(images))
        assert torch.equal(split.y, torch.from_numpy(labels.astype(np.int64)))
    assert (source.num_classes, source.in_channels, source.input_size) == (10, 1, 28)
    expected_mean = written["train"][0].astype(np.float64).mean() / 255
    assert source.mean.shape == (1,) and math.isclose(source.mean.item(), expected_mean, rel_tol=1e-5)


def test_mnist_missing_files_name_the_files_and_the_root(tmp_path):
    written = write_mnist(tmp_path)
    assert written
    (tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError) as err:
        data.load_source(DataSpec(dataset="mnist", root=str(tmp_path)))
    message = str(err.value)
    assert f"data.root={str(tmp_path)!r}" in message
    assert "MNIST/raw/" in message and "labels-idx1" in message and "t10k" in message


def test_mnist_corrupt_file_is_a_data_error(tmp_path):
    write_mnist(tmp_path)
    (tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00")
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte"):
        data.load_source(DataSpec(dataset="mnist", root=str(tmp_path)))


# --- spiral and digits ----------------------------------------------------------

SMALL_SPIRAL = {"n_train": 400, "n_test": 200}


def test_spiral_shapes_and_classes():
    source = data.load_source(DataSpec(dataset="spiral", spiral=SMALL_SPIRAL))
    assert source.train.x.shape == (400, 2) and source.test.x.shape == (200, 2)
    assert source.train.x.dtype == torch.float32 and source.train.y.dtype == torch.int64
    assert (source.num_classes, source.in_channels, source.input_size, source.is_image) == (2, 2, 1, False)
    assert torch.bincount(source.train.y).tolist() == [200, 200]
    assert not torch.equal(source.train.x[:200], source.test.x), "test points are fresh draws"


def test_spiral_is_deterministic_and_seeded():
    a = data.load_source(DataSpec(dataset="spiral", spiral=SMALL_SPIRAL))
    b = data.load_source(DataSpec(dataset="spiral", spiral=SMALL_SPIRAL))
    c = data.load_source(DataSpec(dataset="spiral", spiral={**SMALL_SPIRAL, "seed": 1}))
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.test.x, b.test.x)
    assert not torch.equal(a.train.x, c.train.x)


def test_spiral_geometry_without_noise():
    """r = radius·√t and φ = 2π·turns·√t (+π for class 1): the second arm is the first turned by π."""
    radius, turns = 2.0, 4.0
    s = data.load_source(DataSpec(dataset="spiral", spiral={**SMALL_SPIRAL, "noise": 0.0}))
    x, y = s.train.x.double(), s.train.y
    r = x.norm(dim=1)
    assert r.max() <= radius + 1e-5
    phi = torch.atan2(x[:, 1], x[:, 0])
    expected = 2 * math.pi * turns * (r / radius) + math.pi * y
    wrapped = torch.remainder(phi - expected + math.pi, 2 * math.pi) - math.pi
    assert wrapped.abs().max() < 1e-3


def test_spiral_refuses_unknown_constants():
    with pytest.raises(SettingsError, match=r"data\.spiral.*'radiuss'"):
        data.load_source(DataSpec(dataset="spiral", spiral={"radiuss": 1.0}))


def test_digits_source():
    a = data.load_source(DataSpec(dataset="digits"))
    b = data.load_source(DataSpec(dataset="digits"))
    assert a.train.x.shape == (1438, 1, 8, 8) and a.test.x.shape == (359, 1, 8, 8)
    assert a.train.x.dtype == torch.uint8 and a.train.y.dtype == torch.int64
    assert int(a.train.x.max()) == 255 and int(a.train.x.min()) == 0
    assert (a.num_classes, a.in_channels, a.input_size) == (10, 1, 8)
    assert sorted(a.train.y.unique().tolist()) == list(range(10))
    assert sorted(a.test.y.unique().tolist()) == list(range(10))
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.test.y, b.test.y)


def test_prepare_normalises_with_training_statistics():
    prep = data.prepare(DataSpec(dataset="digits"))
    assert prep.train_x.dtype == torch.float32 and prep.train_x.shape == (1438, 1, 8, 8)
    assert abs(prep.train_x.mean().item()) < 1e-4 and abs(prep.train_x.std().item() - 1) < 1e-3
    assert prep.augment == "none"
    assert data.prepare(DataSpec(dataset="digits", augment="standard")).augment == "standard"
    spiral = data.prepare(DataSpec(dataset="spiral", spiral=SMALL_SPIRAL))
    assert torch.allclose(spiral.train_x.mean(0), torch.zeros(2), atol=1e-5)


def test_device_loader_augments_and_keeps_shapes():
    prep = data.prepare(DataSpec(dataset="digits", augment="more"))
    loader = data.DeviceLoader(prep.train_x, prep.train_y, 32, 0, prep.augment, "cpu")
    batches = list(loader.epoch(1))
    assert len(batches) == len(loader) == 45  # 1438 images: 44 full batches and one of 30
    xb, yb = batches[0]
    assert xb.shape == (32, 1, 8, 8) and yb.shape == (32,) and xb.dtype == torch.float32
    exact = [any(torch.equal(xb[i], row) for row in prep.train_x[prep.train_y == yb[i]]) for i in range(32)]
    assert not all(exact), "augmentation must change some images"
    assert sorted(torch.cat([b[1] for b in batches]).tolist()) == sorted(prep.train_y.tolist()), "each image once"


def test_device_loader_refuses_augmenting_non_images():
    spiral = data.prepare(DataSpec(dataset="spiral", spiral=SMALL_SPIRAL))
    with pytest.raises(SettingsError, match=r"data\.augment='crop' needs images"):
        data.DeviceLoader(spiral.train_x, spiral.train_y, 32, 0, "crop")
    xb, yb = next(iter(data.DeviceLoader(spiral.train_x, spiral.train_y, 32, 0, spiral.augment).epoch(1)))
    assert xb.shape == (32, 2) and yb.shape == (32,)


# --- seeded subsets and random labels -------------------------------------------


@pytest.fixture(scope="module")
def digits_train():
    return data.load_source(DataSpec(dataset="digits")).train


def test_subset_size_and_reproducibility(digits_train):
    a = data.subset_and_relabel(digits_train, DataSpec(subset=0.25, seed=1), 10)
    b = data.subset_and_relabel(digits_train, DataSpec(subset=0.25, seed=1), 10)
    c = data.subset_and_relabel(digits_train, DataSpec(subset=0.25, seed=2), 10)
    assert len(a.y) == len(a.x) == round(0.25 * 1438)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert not torch.equal(a.x, c.x)
    # a subset keeps real (image, label) pairs, labels unchanged
    full = {bytes(x.flatten().tolist()): int(y) for x, y in zip(digits_train.x, digits_train.y)}
    assert all(full.get(bytes(x.flatten().tolist())) == int(y) for x, y in zip(a.x, a.y))


@pytest.mark.parametrize("fraction", [0.3, 1.0])
def test_random_labels_fraction_and_reproducibility(digits_train, fraction):
    a = data.subset_and_relabel(digits_train, DataSpec(random_labels=fraction, seed=5), 10)
    b = data.subset_and_relabel(digits_train, DataSpec(random_labels=fraction, seed=5), 10)
    c = data.subset_and_relabel(digits_train, DataSpec(random_labels=fraction, seed=6), 10)
    assert torch.equal(a.y, b.y) and not torch.equal(a.y, c.y)
    assert torch.equal(a.x, digits_train.x), "images stay"
    assert a.y.min() >= 0 and a.y.max() < 10
    n = round(fraction * 1438)
    changed = int((a.y != digits_train.y).sum())
    mean, sd = n * 0.9, math.sqrt(n * 0.9 * 0.1)  # a uniform new label equals the old one 1 time in 10
    assert abs(changed - mean) < 4 * sd, (changed, mean)


def test_no_intervention_is_the_identity(digits_train):
    out = data.subset_and_relabel(digits_train, DataSpec(seed=3), 10)
    assert torch.equal(out.x, digits_train.x) and torch.equal(out.y, digits_train.y)
    assert out.y is not digits_train.y


def test_interventions_touch_only_the_training_split():
    prep = data.prepare(DataSpec(dataset="digits", subset=0.5, random_labels=0.5, seed=4))
    plain = data.prepare(DataSpec(dataset="digits"))
    assert len(prep.train_y) == 719
    assert torch.equal(prep.test_x, plain.test_x) and torch.equal(prep.test_y, plain.test_y)


# --- cached evaluation splits ---------------------------------------------------


def test_eval_cache_files(tmp_path):
    spec = DataSpec(dataset="digits", subset=0.5, seed=2, augment="standard")
    prep = data.prepare(spec)
    for split, (x, y) in {"train": (prep.train_x, prep.train_y), "test": (prep.test_x, prep.test_y)}.items():
        path = data.write_eval_split(spec, split, tmp_path)
        assert path == tmp_path / data.cache_key(spec, split) / f"{split}.pt"
        blob = torch.load(path, weights_only=True)
        assert blob["x"].dtype == torch.float32 and blob["y"].dtype == torch.int64
        assert torch.equal(blob["x"], x) and torch.equal(blob["y"], y), "no augmentation in the eval split"
        lx, ly = data.load_eval_split(path)
        assert torch.equal(lx, x) and torch.equal(ly, y)
    stamp = path.stat().st_mtime_ns, path.stat().st_ino
    assert data.write_eval_split(spec, "test", tmp_path) == path
    assert (path.stat().st_mtime_ns, path.stat().st_ino) == stamp, "an existing split is kept"


def test_eval_cache_keys():
    base = DataSpec(dataset="digits")
    variants = [DataSpec(dataset="digits", subset=0.5), DataSpec(dataset="digits", random_labels=0.1),
                DataSpec(dataset="digits", seed=9, subset=0.5)]
    train_keys = {data.cache_key(s, "train") for s in [base, *variants]}
    assert len(train_keys) == 4, "training-set interventions change the train split"
    assert {data.cache_key(s, "test") for s in [base, *variants]} == {data.cache_key(base, "test")}
    assert data.cache_key(DataSpec(dataset="digits", augment="more"), "train") == data.cache_key(base, "train")
    assert data.cache_key(base, "test").startswith("digits-")
    spiral = [DataSpec(dataset="spiral", spiral={"seed": s}) for s in (0, 1)]
    assert data.cache_key(spiral[0], "test") != data.cache_key(spiral[1], "test")
    with pytest.raises(SettingsError, match="split"):
        data.eval_path(base, "valid", "cache")


def test_load_eval_split_refuses_other_files(tmp_path):
    path = tmp_path / "state.pt"
    torch.save({"w": torch.zeros(2)}, path)
    with pytest.raises(DataError, match="not an evaluation split"):
        data.load_eval_split(path)
