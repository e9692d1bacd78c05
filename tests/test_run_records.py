"""What run.yaml records is what the run is: an MLP has no BatchNorm, and the spiral's counts are integers.
Both are normalised where settings are read, so a run.yaml written before reads back to the same settings
(the same digest) as one written now, and a finished run is still recognised as itself."""

from __future__ import annotations

import pytest
import yaml

from conftest import run_dict
from linpath.engine import data, models
from linpath.engine.train import resolve, train
from linpath.foundations.hparams import DataSpec, ModelSpec, RunSpec, SettingsError


def test_an_mlps_run_yaml_says_it_has_no_batchnorm(trained_mlp):
    out, _, _ = trained_mlp
    written = yaml.safe_load((out / "run.yaml").read_text())
    assert written["model"]["arch"] == "mlp" and written["model"]["batchnorm"] is False
    model = models.build(RunSpec.from_yaml(out / "run.yaml").model)
    assert not any("BatchNorm" in type(m).__name__ for m in model.modules()), "and indeed it has none"


def test_conv_networks_keep_their_batchnorm_setting():
    assert ModelSpec(arch="resnet18").batchnorm is True
    assert ModelSpec(arch="vgg11", batchnorm=False).batchnorm is False
    assert ModelSpec(arch="mlp", batchnorm=True).batchnorm is False


def spiral_dict(**spiral) -> dict:
    return run_dict("mlp", data={"dataset": "spiral", "spiral": {"n_train": 200, "n_test": 100, **spiral}},
                    train={"loss": "bce", "epochs": 1, "batch_size": 50})


def test_the_spirals_counts_are_written_as_integers(tmp_path):
    out = tmp_path / "spiral"
    train(RunSpec.from_dict(spiral_dict(seed=3)), out, progress=False)
    text = (out / "run.yaml").read_text()
    spiral = yaml.safe_load(text)["data"]["spiral"]
    assert spiral == {"n_train": 200, "n_test": 100, "seed": 3}
    assert all(type(v) is int for v in spiral.values()) and "200.0" not in text
    prep = data.prepare(RunSpec.from_yaml(out / "run.yaml").data)
    assert (len(prep.train_y), len(prep.test_y)) == (200, 100)


def test_a_run_yaml_written_with_float_counts_and_mlp_batchnorm_is_the_same_run(tmp_path):
    """Older run.yaml files say n_train: 200.0 and batchnorm: true: they still name the same settings."""
    spec = RunSpec.from_dict(spiral_dict())
    old = resolve(RunSpec.from_dict(spiral_dict()), data.prepare(spec.data)).to_dict()  # as train writes it
    old["data"]["spiral"] = {k: float(v) for k, v in old["data"]["spiral"].items()}
    old["model"]["batchnorm"] = True
    out = tmp_path / "old"
    out.mkdir()
    (out / "run.yaml").write_text(yaml.safe_dump(old))
    assert RunSpec.from_yaml(out / "run.yaml").digest() == RunSpec.from_dict(old).digest()
    assert RunSpec.from_yaml(out / "run.yaml").to_dict() != old
    train(spec, out, progress=False)  # refused with "another run" if the digests differed
    assert (out / "final.pt").is_file()


@pytest.mark.parametrize("key, value", [("n_train", 200.5), ("n_test", 1e-3), ("seed", 0.5)])
def test_a_fractional_count_is_refused_naming_it(key, value):
    with pytest.raises(SettingsError, match=f"data.spiral.{key} must be a whole number"):
        RunSpec.from_dict(spiral_dict(**{key: value}))
    assert DataSpec(spiral={"radius": 2.5}).spiral == {"radius": 2.5}, "shape constants stay numbers"
