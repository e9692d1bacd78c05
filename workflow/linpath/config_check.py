"""What the JSON schema of the workflow config cannot say, checked before the planner uses the config.

A schema `number` accepts NaN (NaN fails no `minimum`) and ±inf where only one bound is given, and
`run: {type: object}` accepts anything; the planner merges `run` sections into the base recipe, adds
seeds to them and hashes the result, so those must be mappings and integers before it starts. Each
merged recipe is then validated as a whole by `Plan.check` (`RunSpec.from_dict`).
"""

from __future__ import annotations

from .hparams import check_alphas, check_override, check_plain_data


def check_config(config: dict) -> None:
    """Raise SettingsError naming the dotted key of the first value the planner cannot take."""
    check_plain_data(config)
    check_override(config.get("base") or {}, "base")
    path_settings = [("paths", config.get("paths"))]
    for name, setting in (config.get("settings") or {}).items():
        if isinstance(setting, dict):
            check_override(setting.get("run") or {}, f"settings.{name}.run")
            path_settings.append((f"settings.{name}.paths", setting.get("paths")))
    for where, paths in path_settings:
        if isinstance(paths, dict) and "alphas" in paths:
            check_alphas(paths["alphas"], f"{where}.alphas")
