"""Which interpolation groups of a model are its *layers*: the candidates for a barrier list (E11, E13, E16)
and the groups whose mean Δ makes a setting's layer tag (H-LB / L-LB).

Every group of a model has a role (a ResNet's stem, its four blocks and its head; a VGG's conv layers and
its classifier; an MLP's hidden layers and its output layer). Config `shapes.layer_groups` names, per
architecture family, the roles that count as layers; `DEFAULT_LAYER_GROUPS` holds the defaults. Pure
Python: the planner and the table jobs use it without importing torch. The roles' group names are those of
`linpath.engine.models` (tests/test_layer_groups.py checks them against the built models).
"""

from __future__ import annotations

from ..foundations.convert import from_dict
from ..foundations.hparams import ModelSpec, SettingsError

# model.arch -> family, the key of `shapes.layer_groups`
ARCH_FAMILY = {"resnet18": "resnet", "resnet34": "resnet", "resnet50": "resnet", "vgg11": "vgg", "mlp": "mlp"}
VGG11_CONVS = 8  # conv layers of VGG-11 (torchvision cfg "A"), whatever max-pools a small input drops

# Roles each family's groups can have, in forward order.
ROLES = {"resnet": ("stem", "block", "head"), "vgg": ("conv", "head"), "mlp": ("hidden", "output")}

# The paper interpolates a ResNet's conv blocks as a whole (the stem conv and the head are single layers
# outside them), each conv layer of a VGG, and the hidden layers of an MLP (App. F widens and narrows those;
# the output layer's width is the number of classes). config/config.yaml repeats these with their reasons.
DEFAULT_LAYER_GROUPS = {"resnet": ["block"], "vgg": ["conv"], "mlp": ["hidden"]}


def _model(model: ModelSpec | dict) -> ModelSpec:
    if isinstance(model, ModelSpec):
        return model
    # Only the fields that name groups: a recipe's group_width may still hold unresolved references.
    return from_dict(ModelSpec, {k: v for k, v in (model or {}).items() if k in ("arch", "hidden")}, "model")


def family(arch: str) -> str:
    if arch not in ARCH_FAMILY:
        raise SettingsError(f"model.arch: {arch!r} has no layer-group family (known: {', '.join(ARCH_FAMILY)})")
    return ARCH_FAMILY[arch]


def group_roles(model: ModelSpec | dict) -> dict[str, str]:
    """Group name -> role, in the forward order of `linpath.engine.models.stages()`."""
    spec = _model(model)
    kind = family(spec.arch)
    if kind == "resnet":
        return {"stem": "stem", **{f"block{k}": "block" for k in range(1, 5)}, "head": "head"}
    if kind == "vgg":
        return {**{f"conv{k}": "conv" for k in range(1, VGG11_CONVS + 1)}, "classifier": "head"}
    n = len(spec.hidden)
    return {**{f"layer{k}": "hidden" for k in range(1, n + 1)}, f"layer{n + 1}": "output"}


def check_rule(rule: dict | None, where: str = "shapes.layer_groups") -> dict[str, list[str]]:
    """The per-family roles of `rule` over the defaults; unknown families and roles are refused."""
    merged = {**DEFAULT_LAYER_GROUPS, **(rule or {})}
    for fam, roles in merged.items():
        if fam not in ROLES:
            raise SettingsError(f"{where}.{fam}: unknown architecture family (known: {', '.join(ROLES)})")
        if not isinstance(roles, list) or not roles:
            raise SettingsError(f"{where}.{fam} must be a non-empty list of roles ({', '.join(ROLES[fam])})")
        for role in roles:
            if role not in ROLES[fam]:
                raise SettingsError(f"{where}.{fam}: unknown role {role!r} (known: {', '.join(ROLES[fam])})")
    return merged


def layer_groups(model: ModelSpec | dict, rule: dict | None = None) -> list[str]:
    """The groups of this model whose role the rule counts as a layer, in forward order."""
    roles = check_rule(rule)[family(_model(model).arch)]
    return [g for g, role in group_roles(model).items() if role in roles]


def describe(rule: dict | None = None) -> str:
    """'layer groups: resnet block; vgg conv; mlp hidden' for the records that used them."""
    return "layer groups: " + "; ".join(f"{fam} {', '.join(roles)}" for fam, roles in check_rule(rule).items())


def setting_layer_groups(plan, setting: str) -> list[str]:
    """The layer groups of a setting's model (its recipe over the base), by the plan's config rule."""
    from ..foundations.convert import deep_merge

    recipe = deep_merge(plan.base, plan.settings[setting].run)
    return layer_groups(recipe.get("model") or {}, (plan.config.get("shapes") or {}).get("layer_groups"))
