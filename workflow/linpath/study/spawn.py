"""Spawned runs for the instability analysis (Frankle, Dziugaite, Roy & Carbin, ICML 2020).

A setting with a `spawn:` section has children: for every spawn epoch k and child index i, a run that
starts from the parent's whole training state after epoch k (weights, optimiser, LR schedule; its
spawn_<k>.pt) and trains on to the parent's last epoch with its own data order and augmentation. Two
children of one spawn differ in nothing but that stream, so the barrier on the straight line between
their final states (linpath.paths.lmc) measures how much SGD noise after epoch k can still change where
training ends.

Children are ordinary content-addressed runs: each is a setting of its own, `<parent>_k<k>c<i>`, planned
for the seeds that spawn, trained by the workflow's `spawn` rule (the `train` rule's body), listed in
runs.parquet with its parent run, k and child index. They are helper settings (`aux`): no experiment
figure or table shows them. Pure Python (no torch): the Snakefile plans runs at parse time.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from ..foundations.convert import from_dict
from ..foundations.hparams import SettingsError

# A child's data-order seed: its parent's plus this times (child index + 1). Any two children of one
# spawn, and every child and its parent, draw different streams (for seeds below this step).
CHILD_SEED_STEP = 1000


@dataclass
class SpawnSpec:
    """A setting's `spawn:` section."""

    # The epochs k after which children start (0: from θ₀, with a fresh optimiser).
    epochs: list[int] = field(default_factory=list)
    # Children per spawn epoch; every pair of them is measured (Frankle et al. use two).
    children: int = 2
    # The seeds whose runs spawn; empty: every seed of the config.
    seeds: list[int] = field(default_factory=list)
    # What a child takes over besides the weights (defaults: Frankle et al., the whole state): the
    # optimiser state (momentum buffers), and the LR schedule's position (false: it restarts at epoch k).
    keep_optimizer: bool = True
    keep_schedule: bool = True

    @classmethod
    def from_config(cls, raw: dict, where: str, seeds: list[int]) -> "SpawnSpec":
        spec = from_dict(cls, raw, where)
        if not spec.epochs:
            raise SettingsError(f"{where}.epochs: give at least one spawn epoch")
        if len(set(spec.epochs)) != len(spec.epochs) or any(k < 0 for k in spec.epochs):
            raise SettingsError(f"{where}.epochs must be distinct epochs >= 0, got {spec.epochs}")
        if spec.children < 2:
            raise SettingsError(f"{where}.children must be >= 2 (a barrier needs two end states), got {spec.children}")
        unknown = [s for s in spec.seeds if s not in seeds]
        if unknown:
            raise SettingsError(f"{where}.seeds: {unknown} are not seeds of the config ({seeds})")
        spec.seeds = list(spec.seeds) or list(seeds)
        spec.epochs = sorted(spec.epochs)
        return spec


def child_name(parent: str, epoch: int, child: int) -> str:
    """The setting of child `child` spawned from `parent`'s runs after `epoch`."""
    return f"{parent}_k{epoch}c{child}"


def spawn_specs(settings: dict, seeds: list[int]) -> dict[str, SpawnSpec]:
    """Setting name -> its spawn section, for the settings that spawn."""
    return {name: SpawnSpec.from_config(s.spawn, f"settings.{name}.spawn", seeds)
            for name, s in settings.items() if s.spawn}


def child_run(parent_run: dict, parent: str, epoch: int, child: int, spec: SpawnSpec) -> dict:
    """A child's run overrides: the parent's recipe, started from its state after `epoch`, with its own
    data-order seed. Nothing else differs between the children of one spawn."""
    run = copy.deepcopy(parent_run)
    run["init"] = {"seed": (parent_run.get("init") or {}).get("seed", 0), "spawn": f"@spawn:{parent}/{epoch}",
                   "spawn_optimizer": spec.keep_optimizer, "spawn_schedule": spec.keep_schedule}
    train = run.setdefault("train", {})
    train["seed"] = train.get("seed", 0) + CHILD_SEED_STEP * (child + 1)
    train.pop("spawn_epochs", None)
    return run


def children(settings: dict, seeds: list[int]) -> dict[str, dict]:
    """The child settings of every spawning setting, as keyword arguments of experiments.Setting."""
    out = {}
    for parent, spec in spawn_specs(settings, seeds).items():
        s = settings[parent]
        if s.aux:
            raise SettingsError(f"settings.{parent}.spawn: a helper (aux) setting cannot spawn")
        for epoch in spec.epochs:
            for child in range(spec.children):
                name = child_name(parent, epoch, child)
                if name in settings:
                    raise SettingsError(f"settings.{name}: the name is taken by a child spawned from {parent}")
                out[name] = {
                    "name": name, "experiment": s.experiment, "aux": True, "paths": copy.deepcopy(s.paths),
                    "run": child_run(s.run, parent, epoch, child, spec),
                    "intervention": f"{s.intervention or parent}: child {child} spawned after epoch {epoch}",
                    "same_data_for_all_seeds": s.same_data_for_all_seeds,
                    "spawn_of": {"parent": parent, "epoch": epoch, "child": child, "seeds": spec.seeds},
                }
    return out


def parent_spawn_epochs(setting, seed: int, seeds: list[int]) -> list[int]:
    """The epochs after which this setting's run of `seed` keeps its training state for children."""
    if not setting.spawn:
        return []
    spec = SpawnSpec.from_config(setting.spawn, f"settings.{setting.name}.spawn", seeds)
    return spec.epochs if seed in spec.seeds else []
