"""Names of the architectures and datasets a run can ask for, each with the builder that makes it.

One entry per name: adding a model or a dataset is its builder plus one line here. Builders are
named as "module:attribute" and imported only when used, so settings are checked without torch.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

from .errors import SettingsError

# model.arch -> a class taking the ModelSpec (it provides stages() and widenable(spec))
ARCHITECTURES = {
    "resnet18": "linpath.models:CifarResNet",
    "resnet34": "linpath.models:CifarResNet",
    "resnet50": "linpath.models:CifarResNet",
    "vgg11": "linpath.models:SmallVGG",
    "mlp": "linpath.models:MLP",
}

# data.dataset -> a function taking the DataSpec and returning a linpath.data.Source
DATASETS = {
    "digits": "linpath.data:digits_source",
    "digits_rot4": "linpath.data:digits_rot4_source",
    "spiral": "linpath.data:spiral_source",
    "cifar10": "linpath.data:cifar10_source",
    "cifar100": "linpath.data:cifar100_source",
    "mnist": "linpath.data:mnist_source",
    "fashion_mnist": "linpath.data:fashion_mnist_source",
}


def builder(table: dict[str, str], name: str, where: str) -> Callable[..., Any]:
    """The builder registered under `name`; an unknown name is a settings error listing the known ones."""
    if name not in table:
        raise SettingsError(f"{where}: unknown name {name!r} (known: {', '.join(table)})")
    module, attribute = table[name].split(":")
    return getattr(importlib.import_module(module), attribute)
