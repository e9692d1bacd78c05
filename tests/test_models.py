"""Architectures: build, forward shape, interpolation groups, stage-wise forward, ImageNet weights."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torchvision
from torch import nn

from linpath.engine import models
from linpath.foundations.hparams import ModelSpec, RunSpec, SettingsError
from linpath.engine.train import initial_state

RESNET_GROUPS = ["stem", "block1", "block2", "block3", "block4", "head"]
VGG_GROUPS = [f"conv{i}" for i in range(1, 9)] + ["classifier"]

CASES = {
    "resnet18": dict(arch="resnet18", width=4),
    "resnet18-nobn": dict(arch="resnet18", width=4, batchnorm=False),
    "resnet18-maxpool": dict(arch="resnet18", width=4, maxpool=True),
    "resnet18-gray8": dict(arch="resnet18", width=8, in_channels=1, input_size=8),
    "resnet34": dict(arch="resnet34", width=4),
    "resnet50": dict(arch="resnet50", width=4),
    "resnet50-binary": dict(arch="resnet50", width=4, num_classes=2, binary=True),
    "vgg11-bn-32": dict(arch="vgg11", width=8, input_size=32, batchnorm=True),
    "vgg11-32": dict(arch="vgg11", width=8, input_size=32, batchnorm=False),
    "vgg11-bn-8": dict(arch="vgg11", width=8, input_size=8, batchnorm=True, in_channels=1),
    "vgg11-8": dict(arch="vgg11", width=8, input_size=8, batchnorm=False),
    "mlp": dict(arch="mlp", hidden=[16], in_channels=1, input_size=8),
    "mlp-deep": dict(arch="mlp", hidden=[16, 12, 8], in_channels=3, input_size=4, num_classes=7),
    "mlp-spiral-binary": dict(arch="mlp", hidden=[16], in_channels=2, input_size=1, num_classes=2, binary=True),
}


def expected_groups(spec: ModelSpec) -> list[str]:
    if spec.arch.startswith("resnet"):
        return RESNET_GROUPS
    if spec.arch == "vgg11":
        return VGG_GROUPS
    return [f"layer{i}" for i in range(1, len(spec.hidden) + 2)]


def make_input(spec: ModelSpec, n: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(123)
    if spec.arch == "mlp" and spec.input_size == 1:
        return torch.randn(n, spec.in_channels, generator=g)  # the spiral's (N, 2) points
    return torch.randn(n, spec.in_channels, spec.input_size, spec.input_size, generator=g)


@pytest.fixture(params=list(CASES), ids=list(CASES))
def case(request):
    spec = ModelSpec(**CASES[request.param])
    torch.manual_seed(0)
    return spec, models.build(spec)


def test_forward_shape(case):
    spec, model = case
    model.eval()
    out = model(make_input(spec))
    assert out.shape == (3, 1 if spec.binary else spec.num_classes)
    assert torch.isfinite(out).all()


def test_build_from_plain_dict_equals_build_from_spec(case):
    spec, model = case
    torch.manual_seed(0)
    again = models.build(dataclasses.asdict(spec))  # the `model` entry of a run.yaml
    assert type(again) is type(model)
    a, b = model.state_dict(), again.state_dict()
    assert list(a) == list(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_groups_partition_the_state_dict(case):
    spec, model = case
    groups = models.groups(model)
    assert list(groups) == expected_groups(spec)
    keys = list(model.state_dict())
    owned = [k for ks in groups.values() for k in ks]
    assert sorted(owned) == sorted(keys), "every state_dict key in exactly one group"
    assert len(owned) == len(set(owned))
    names = list(groups)
    for i, a in enumerate(names):
        assert groups[a], f"group {a} is empty"
        for b in names[i + 1:]:
            assert not set(groups[a]) & set(groups[b]), (a, b)


def test_groups_follow_the_architecture(case):
    """Each group owns the modules the paper means by it, not just any partition."""
    spec, model = case
    groups = models.groups(model)
    if spec.arch.startswith("resnet"):
        assert all(k.startswith(("conv1.", "bn1.")) for k in groups["stem"])
        assert "conv1.weight" in groups["stem"]
        for i in range(1, 5):
            assert all(k.startswith(f"layer{i}.") for k in groups[f"block{i}"])
        assert sorted(groups["head"]) == ["fc.bias", "fc.weight"]
        if spec.batchnorm:
            assert {"bn1.weight", "bn1.running_mean", "bn1.running_var", "bn1.num_batches_tracked"} <= set(groups["stem"])
        else:
            assert not any("bn" in k for k in model.state_dict())
    elif spec.arch == "vgg11":
        state = model.state_dict()
        for i in range(1, 9):
            convs = [k for k in groups[f"conv{i}"] if state[k].dim() == 4]
            assert len(convs) == 1, f"conv{i} must own exactly one conv kernel, got {convs}"
            if spec.batchnorm:
                assert any(k.endswith("running_mean") for k in groups[f"conv{i}"])
        assert sorted(groups["classifier"]) == ["classifier.bias", "classifier.weight"]
    else:
        for i, name in enumerate(groups):
            assert groups[name] == [f"layers.{i}.weight", f"layers.{i}.bias"]


def test_stages_in_order_equal_forward(case):
    spec, model = case
    model.eval()
    x = make_input(spec)
    with torch.no_grad():
        expected = model(x)
        h = x
        for _, stage in models.stages(model):
            h = stage(h)
    assert torch.equal(h, expected)


def test_vgg_keeps_only_pools_the_input_allows():
    for size, pools in [(8, 3), (32, 5)]:
        model = models.build(ModelSpec(arch="vgg11", width=8, input_size=size))
        assert sum(isinstance(m, nn.MaxPool2d) for m in model.features) == pools


def test_resnet_width_scales_stages():
    model = models.build(ModelSpec(arch="resnet18", width=8))
    assert model.conv1.weight.shape == (8, 3, 3, 3)  # 3x3 CIFAR stem, not the 7x7 ImageNet one
    assert model.layer4[0].conv1.weight.shape[0] == 64
    assert model.fc.weight.shape == (10, 64)
    assert models.build(ModelSpec(arch="resnet50", width=4)).fc.weight.shape == (10, 128)


def test_build_refuses_bad_settings():
    with pytest.raises(SettingsError, match=r"model\.arch"):
        models.build(ModelSpec(arch="resnet19"))
    with pytest.raises(SettingsError, match=r"model\.widht"):
        models.build({"arch": "resnet18", "widht": 8})
    with pytest.raises(SettingsError, match=r"model\.width"):
        models.build({"arch": "resnet18", "width": "eight"})
    with pytest.raises(SettingsError, match=r"model\.hidden\[1\]"):
        models.build({"arch": "mlp", "hidden": [4, 0]})
    with pytest.raises(SettingsError, match=r"model\.binary"):
        models.build({"arch": "mlp", "binary": True, "num_classes": 10})


def test_stages_refuses_foreign_modules_and_unknown_group_names():
    with pytest.raises(TypeError, match="not a linpath model"):
        models.stages(nn.Linear(2, 2))
    model = models.build(ModelSpec(arch="mlp", hidden=[4]))
    with pytest.raises(SettingsError, match=r"train\.group_overrides: unknown group 'block2'.*layer1, layer2"):
        models.check_group_names(model, ["layer1", "block2"], "train.group_overrides")


# --- ImageNet weights, offline --------------------------------------------------

REPLACED = {"conv1.weight", "fc.weight", "fc.bias"}


@pytest.fixture(scope="module")
def imagenet_file(tmp_path_factory):
    """A torchvision resnet18 state_dict (random, not downloaded) saved as a local .pth file."""
    torch.manual_seed(7)
    state = torchvision.models.resnet18().state_dict()
    path = tmp_path_factory.mktemp("imagenet") / "resnet18-imagenet.pth"
    torch.save(state, path)
    return path, state


def test_imagenet_state_and_load_pretrained(imagenet_file):
    path, source = imagenet_file
    spec = ModelSpec(arch="resnet18", width=64)
    state = models.imagenet_state(spec, str(path))
    assert state.keys() == source.keys()
    torch.manual_seed(0)
    model = models.build(spec)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    copied = models.load_pretrained(model, state)
    assert set(copied) == set(source) - REPLACED
    after = model.state_dict()
    for key in after:
        if key in REPLACED:
            assert torch.equal(after[key], before[key]), f"{key} must keep the study's own init"
        else:
            assert torch.equal(after[key], source[key]), key
    assert after["conv1.weight"].shape == (64, 3, 3, 3) and after["fc.weight"].shape == (10, 512)


def test_imagenet_init_source_through_initial_state(imagenet_file):
    path, source = imagenet_file
    spec = RunSpec.from_dict({
        "model": {"arch": "resnet18", "width": 64},
        "init": {"seed": 3, "source": "imagenet", "imagenet_weights": str(path)},
    })
    theta0 = initial_state(spec)
    torch.manual_seed(3)
    random_init = models.build(spec.model).state_dict()
    for key, value in theta0.items():
        expected = random_init[key] if key in REPLACED else source[key]
        assert torch.equal(value, expected), key


def test_imagenet_invalid_weights_name_names_the_setting():
    with pytest.raises(SettingsError, match=r"init\.imagenet_weights.*NOT_A_MEMBER.*ResNet18_Weights"):
        models.imagenet_state(ModelSpec(arch="resnet18", width=64), "NOT_A_MEMBER")
    with pytest.raises(SettingsError, match=r"init\.imagenet_weights.*ResNet50_Weights"):
        models.imagenet_state(ModelSpec(arch="resnet50", width=64), "IMAGENET1K.V1")


def test_imagenet_missing_local_file(tmp_path):
    missing = tmp_path / "nowhere.pth"
    with pytest.raises(SettingsError, match=r"init\.imagenet_weights: file not found"):
        models.imagenet_state(ModelSpec(arch="resnet18", width=64), str(missing))


@pytest.mark.parametrize("spec", [
    ModelSpec(arch="resnet18", width=8),
    ModelSpec(arch="resnet18", width=64, batchnorm=False),
    ModelSpec(arch="vgg11", width=64),
], ids=["width8", "no-bn", "vgg"])
def test_imagenet_needs_a_torchvision_shaped_resnet(spec, imagenet_file):
    path, _ = imagenet_file
    with pytest.raises(SettingsError, match=r"init\.source=imagenet needs .*width 64") as err:
        models.imagenet_state(spec, str(path))
    assert f"width {spec.width}" in str(err.value) and spec.arch in str(err.value)


def test_load_pretrained_refuses_wrong_shapes(imagenet_file):
    _, source = imagenet_file
    model = models.build(ModelSpec(arch="resnet50", width=64))
    with pytest.raises(SettingsError, match=r"pretrained tensor layer1\.0\.conv1\.weight has shape"):
        models.load_pretrained(model, source)


def test_load_pretrained_refuses_weights_of_another_depth(imagenet_file):
    _, source = imagenet_file
    model = models.build(ModelSpec(arch="resnet34", width=64))
    with pytest.raises(SettingsError, match=r"layer1\.2\."):
        models.load_pretrained(model, source)
