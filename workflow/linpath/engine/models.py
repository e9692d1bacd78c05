"""Architectures of the study, each split into named *stages*.

A stage is a slice of the forward pass; running the stages in order is the
model's forward. Every stage is one interpolation group, so the groups of a
model are declared in exactly one place (its `stages()` method), cover every
parameter and buffer once, and tell the path evaluator which activations come
before a group (and can be reused for every α of a group-wise path).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision import models as tvm
from torchvision.models import resnet as tv_resnet
from torchvision.models import vgg as tv_vgg

from ..foundations.hparams import ModelSpec, SettingsError
from ..foundations.registry import ARCHITECTURES, builder

Stage = tuple[str, nn.Module]

_RESNET_LAYOUT = {
    "resnet18": (tv_resnet.BasicBlock, [2, 2, 2, 2]),
    "resnet34": (tv_resnet.BasicBlock, [3, 4, 6, 3]),
    "resnet50": (tv_resnet.Bottleneck, [3, 4, 6, 3]),
}
_VGG11_LAYOUT = tv_vgg.cfgs["A"]  # conv widths and max-pools of VGG-11


def _no_norm(_channels: int) -> nn.Module:
    return nn.Identity()


def _torchvision_init(model: nn.Module, linear_std: float | None) -> None:
    """The initialisation torchvision gives its ResNet / VGG models."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and linear_std is not None:
            nn.init.normal_(m.weight, 0, linear_std)
            nn.init.zeros_(m.bias)


class CifarResNet(tv_resnet.ResNet):
    """torchvision's ResNet with a 3×3 stem, an optional max-pool, a width knob
    and removable BatchNorm. State-dict keys equal torchvision's, so ImageNet
    weights load into it (all but the replaced stem conv and head)."""

    def __init__(self, spec: ModelSpec):
        nn.Module.__init__(self)
        block, layers = _RESNET_LAYOUT[spec.arch]
        w = spec.width
        self._norm_layer = nn.BatchNorm2d if spec.batchnorm else _no_norm
        self.inplanes, self.dilation, self.groups, self.base_width = w, 1, 1, 64
        self.conv1 = nn.Conv2d(spec.in_channels, w, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = self._norm_layer(w)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1) if spec.maxpool else nn.Identity()
        self.layer1 = self._make_layer(block, w, layers[0])
        self.layer2 = self._make_layer(block, 2 * w, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 4 * w, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 8 * w, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8 * w * block.expansion, _outputs(spec))
        _torchvision_init(self, linear_std=None)

    @staticmethod
    def widenable(spec: ModelSpec) -> list[str]:
        return []  # a block's width is tied to its neighbours' by the residual connections

    def stages(self) -> list[Stage]:
        return [
            ("stem", nn.Sequential(self.conv1, self.bn1, self.relu, self.maxpool)),
            ("block1", self.layer1),
            ("block2", self.layer2),
            ("block3", self.layer3),
            ("block4", self.layer4),
            ("head", nn.Sequential(self.avgpool, nn.Flatten(1), self.fc)),
        ]


class SmallVGG(tv_vgg.VGG):
    """VGG-11 (with or without BN) for small inputs: max-pools that would shrink
    the feature map below 1×1 are dropped, and the head is one linear layer."""

    def __init__(self, spec: ModelSpec):
        nn.Module.__init__(self)
        layout, size = [], spec.input_size
        for item in _VGG11_LAYOUT:
            if item == "M":
                if size >= 2:
                    layout.append("M")
                    size //= 2
            else:
                conv = f"conv{sum(1 for x in layout if x != 'M') + 1}"
                layout.append(max(1, round(item * spec.width / 64 * spec.group_width.get(conv, 1.0))))
        features = tv_vgg.make_layers(layout, batch_norm=spec.batchnorm)
        if spec.in_channels != 3:
            first = features[0]
            features[0] = nn.Conv2d(spec.in_channels, first.out_channels, 3, padding=1)
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(layout[-2] if layout[-1] == "M" else layout[-1], _outputs(spec))
        _torchvision_init(self, linear_std=0.01)

    @staticmethod
    def widenable(spec: ModelSpec) -> list[str]:
        return [f"conv{i + 1}" for i in range(sum(1 for item in _VGG11_LAYOUT if item != "M"))]

    def stages(self) -> list[Stage]:
        stages: list[Stage] = []
        current: list[nn.Module] = []
        for module in self.features:
            if isinstance(module, nn.Conv2d) and current:
                stages.append((f"conv{len(stages) + 1}", nn.Sequential(*current)))
                current = []
            current.append(module)
        stages.append((f"conv{len(stages) + 1}", nn.Sequential(*current)))
        stages.append(("classifier", nn.Sequential(self.avgpool, nn.Flatten(1), self.classifier)))
        return stages


class MLP(nn.Module):
    """Fully connected ReLU network; groups are its layers, layer1..layerN."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        hidden = [max(1, round(w * spec.group_width.get(f"layer{i + 1}", 1.0))) for i, w in enumerate(spec.hidden)]
        widths = [spec.in_channels * spec.input_size**2, *hidden, _outputs(spec)]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The same operations as the stages, without building their modules at every step.
        x = x.flatten(1)
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last:
                x = torch.relu(x)
        return x

    def _stage_modules(self) -> list[nn.Module]:
        out: list[nn.Module] = []
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            parts = [nn.Flatten(1)] if i == 0 else []
            parts.append(layer)
            if i < last:
                parts.append(nn.ReLU())
            out.append(nn.Sequential(*parts))
        return out

    @staticmethod
    def widenable(spec: ModelSpec) -> list[str]:
        return [f"layer{i + 1}" for i in range(len(spec.hidden))]

    def stages(self) -> list[Stage]:
        return [(f"layer{i + 1}", m) for i, m in enumerate(self._stage_modules())]


def widenable_groups(spec: ModelSpec) -> list[str]:
    """Groups whose width `ModelSpec.group_width` can change."""
    return builder(ARCHITECTURES, spec.arch, "model.arch").widenable(spec)


def _outputs(spec: ModelSpec) -> int:
    return 1 if spec.binary else spec.num_classes


def build(spec: ModelSpec | dict) -> nn.Module:
    """The architecture of `spec` (a ModelSpec or the `model` entry of run.yaml)."""
    if isinstance(spec, dict):
        from ..foundations.convert import from_dict

        spec = from_dict(ModelSpec, spec, "model")
    spec.validate()
    unknown = sorted(set(spec.group_width) - set(widenable_groups(spec)))
    if unknown:
        raise SettingsError(f"model.group_width: {unknown[0]!r} cannot be widened for {spec.arch} "
                            f"(widenable: {', '.join(widenable_groups(spec)) or 'none'})")
    return builder(ARCHITECTURES, spec.arch, "model.arch")(spec)


def stages(model: nn.Module) -> list[Stage]:
    if not hasattr(model, "stages"):
        raise TypeError(f"{type(model).__name__} is not a linpath model (it has no stages())")
    return model.stages()


def groups(model: nn.Module) -> dict[str, list[str]]:
    """Group name -> the state_dict keys it owns, in forward order."""
    owner: dict[int, str] = {}
    for name, stage in stages(model):
        for tensor in [*stage.parameters(), *stage.buffers()]:
            if id(tensor) in owner and owner[id(tensor)] != name:
                raise AssertionError(f"tensor shared by groups {owner[id(tensor)]} and {name}")
            owner[id(tensor)] = name
    out: dict[str, list[str]] = {name: [] for name, _ in stages(model)}
    for key, tensor in model.state_dict(keep_vars=True).items():
        if id(tensor) not in owner:
            raise AssertionError(f"state_dict key {key!r} belongs to no interpolation group")
        out[owner[id(tensor)]].append(key)
    return out


def check_group_names(model: nn.Module, names, where: str) -> None:
    known = list(groups(model))
    for name in names:
        if name not in known:
            raise SettingsError(f"{where}: unknown group {name!r} (this model's groups: {', '.join(known)})")


# --- ImageNet-pretrained ResNet weights ------------------------------------

_REPLACED_BY_STUDY = ("conv1.", "fc.")  # the CIFAR stem and the N-class head


def imagenet_state(spec: ModelSpec, weights: str) -> dict[str, torch.Tensor]:
    """ImageNet weights for a ResNet, from torchvision's weights API or a local file.

    `weights` is a torchvision enum member name (e.g. IMAGENET1K_V1), fetched
    into the torch hub cache, or the path of a local state_dict file (for
    clusters without network access)."""
    if spec.arch not in _RESNET_LAYOUT or spec.width != 64 or not spec.batchnorm:
        raise SettingsError(
            "init.source=imagenet needs a torchvision-shaped ResNet "
            f"(model.arch resnet18/34/50, width 64, batchnorm true); got {spec.arch}, width {spec.width}"
        )
    if Path(weights).suffix in (".pt", ".pth") or Path(weights).exists():
        path = Path(weights)
        if not path.is_file():
            raise SettingsError(f"init.imagenet_weights: file not found: {path}")
        from ..foundations.io import load_state

        return load_state(path)
    enum_name = {"resnet18": "ResNet18_Weights", "resnet34": "ResNet34_Weights", "resnet50": "ResNet50_Weights"}[spec.arch]
    try:
        entry = tvm.get_weight(f"{enum_name}.{weights}")
    except (KeyError, ValueError) as err:
        raise SettingsError(f"init.imagenet_weights: {weights!r} is not a {enum_name} member ({err})") from None
    try:
        return entry.get_state_dict(progress=True)
    except OSError as err:  # URLError is an OSError
        raise SettingsError(
            f"init.imagenet_weights: could not download {enum_name}.{weights} ({err}); "
            f"offline, download {entry.url} elsewhere and set init.imagenet_weights to the local file"
        ) from None


def load_pretrained(model: nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    """Copy every pretrained tensor except the replaced stem conv and head; returns the keys copied."""
    own = model.state_dict()
    copied = []
    for key, value in state.items():
        if key.startswith(_REPLACED_BY_STUDY) or key not in own:
            continue
        if own[key].shape != value.shape:
            raise SettingsError(f"pretrained tensor {key} has shape {tuple(value.shape)}, model expects {tuple(own[key].shape)}")
        own[key] = value
        copied.append(key)
    missing = [k for k in own if not k.startswith(_REPLACED_BY_STUDY) and k not in state]
    if missing:
        raise SettingsError(
            f"pretrained weights lack {len(missing)} of the model's tensors (first: {missing[0]}); "
            "are they for another depth, or saved with a prefix such as 'module.'?")
    model.load_state_dict(own)
    return copied
