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
    "resnet18": "linpath.engine.models:CifarResNet",
    "resnet34": "linpath.engine.models:CifarResNet",
    "resnet50": "linpath.engine.models:CifarResNet",
    "vgg11": "linpath.engine.models:SmallVGG",
    "mlp": "linpath.engine.models:MLP",
}

# data.dataset -> a function taking the DataSpec and returning a linpath.engine.data.Source
DATASETS = {
    "digits": "linpath.engine.data:digits_source",
    "digits_rot4": "linpath.engine.data:digits_rot4_source",
    "spiral": "linpath.engine.data:spiral_source",
    "cifar10": "linpath.engine.data:cifar10_source",
    "cifar100": "linpath.engine.data:cifar100_source",
    "mnist": "linpath.engine.data:mnist_source",
    "fashion_mnist": "linpath.engine.data:fashion_mnist_source",
}


def builder(table: dict[str, str], name: str, where: str) -> Callable[..., Any]:
    """The builder registered under `name`; an unknown name is a settings error listing the known ones."""
    if name not in table:
        raise SettingsError(f"{where}: unknown name {name!r} (known: {', '.join(table)})")
    module, attribute = table[name].split(":")
    return getattr(importlib.import_module(module), attribute)
