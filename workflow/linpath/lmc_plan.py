"""What the instability analysis and the loss planes measure, and where: the plan the Snakefile reads.

Pairs (linpath.lmc): the straight line between two trained end states, θ(α) = (1−α)·θ₁ + α·θ₂. Either
the children of one spawn (pair `k<k>` of the spawning run: every two of them), or the run and the
same setting's run of the next seed (pair `independent`: other init, other data order, Frankle et
al.'s k = 0 with different inits). Config `instability` says how they are measured.

Planes (linpath.planes): the plane through three states A, B, C of one run, in affine coordinates
θ(α, β) = A + α(B−A) + β(C−A), on a grid; the run's saved states projected onto it. Config `plane`
holds the defaults, `planes.<name>` which states of which setting's runs (and any override).

Pure Python (no torch): the Snakefile plans these at parse time.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
from dataclasses import dataclass, field

from .hparams import SettingsError, check_alphas, check_device, from_dict
from .layout import spawn_file
from .spawn import SpawnSpec, child_name

BN_MODES = ("interpolate", "recompute")
SPLITS = ("train", "test")
INDEPENDENT = "independent"


@dataclass
class InstabilitySpec:
    """Config `instability`: how the straight line between two end states is measured."""

    # α grid from 0 to 1 (both ends: the barrier compares the path's maximum with the mean of its ends).
    alphas: str = "0:1:26"
    bn_modes: list[str] = field(default_factory=lambda: list(BN_MODES))
    splits: list[str] = field(default_factory=lambda: list(SPLITS))
    bn_subset: int = 1024  # training samples for the recomputed BN statistics
    batch_size: int = 2048  # the evaluator's chunk (memory is bounded by it)
    device: str = "auto"
    # A spawn is stable when its error barrier is at most this (Frankle et al. 2020 use 2% error).
    threshold: float = 0.02
    # Also measure the run against the same setting's run of the next seed (other init and data order).
    independent: bool = True

    @classmethod
    def from_config(cls, raw: dict | None, where: str = "instability") -> "InstabilitySpec":
        spec = from_dict(cls, raw or {}, where)
        check_alphas(spec.alphas, f"{where}.alphas")
        grid = alpha_values(spec.alphas)
        if len(grid) < 3 or grid[0] != 0 or grid[-1] != 1 or grid != sorted(grid):
            raise SettingsError(f"{where}.alphas must rise from 0 to 1 with a point between (a barrier compares "
                                f"the path's maximum with its ends), got {spec.alphas!r}")
        _check_common(spec, where, spec.bn_modes)
        if not 0 < spec.threshold < 1:
            raise SettingsError(f"{where}.threshold must be an error in (0, 1), got {spec.threshold}")
        return spec


@dataclass
class PlaneSpec:
    """Config `plane` (defaults) merged with one `planes.<name>`."""

    setting: str = ""  # whose runs
    # A, B, C: init, final, other (another random init), other:<seed>, epoch:<t> (needs t in
    # train.save_epochs), spawn:<k> (the state the children start from), child:<k>/<i> (a child's final).
    states: list[str] = field(default_factory=lambda: ["init", "final", "other"])
    range: list[float] = field(default_factory=lambda: [-0.2, 1.2])  # α and β from, to
    points: int = 15  # per axis
    bn_mode: str = "interpolate"
    splits: list[str] = field(default_factory=lambda: list(SPLITS))
    bn_subset: int = 1024
    batch_size: int = 2048
    seeds: list[int] = field(default_factory=list)  # empty: the config's first seed
    device: str = "auto"

    def grid(self) -> list[float]:
        """The α (and β) values: `points` evenly spaced over `range`, rounded so that 0 and 1 are exact."""
        lo, hi = self.range
        return [round(lo + (hi - lo) * i / (self.points - 1), 12) for i in range(self.points)]

    @classmethod
    def from_config(cls, defaults: dict | None, own: dict, where: str) -> "PlaneSpec":
        spec = from_dict(cls, {**(defaults or {}), **own}, where)
        if not spec.setting:
            raise SettingsError(f"{where}.setting: name the setting whose runs the plane goes through")
        if len(spec.states) != 3:
            raise SettingsError(f"{where}.states must name three states (A, B, C), got {spec.states}")
        if len(set(spec.states)) != 3:
            raise SettingsError(f"{where}.states must be three different states, got {spec.states}")
        if len(spec.range) != 2 or not spec.range[0] < spec.range[1]:
            raise SettingsError(f"{where}.range must be [from, to] with from < to, got {spec.range}")
        if spec.points < 2:
            raise SettingsError(f"{where}.points must be >= 2, got {spec.points}")
        _check_common(spec, where, [spec.bn_mode])
        return spec


def _check_common(spec, where: str, bn_modes: list[str]) -> None:
    for mode in bn_modes:
        if mode not in BN_MODES:
            raise SettingsError(f"{where}: BN mode must be one of {list(BN_MODES)}, got {mode!r}")
    if not spec.splits or any(s not in SPLITS for s in spec.splits):
        raise SettingsError(f"{where}.splits must be a non-empty list of {list(SPLITS)}, got {spec.splits}")
    for name in ("bn_subset", "batch_size"):
        if getattr(spec, name) < 1:
            raise SettingsError(f"{where}.{name} must be >= 1, got {getattr(spec, name)}")
    check_device(spec.device, f"{where}.device")


def alpha_values(text: str) -> list[float]:
    """The α grid of "start:stop:count" or a comma list (pure Python twin of linpath.paths.alpha_grid)."""
    parts = str(text).split(":")
    if len(parts) == 3:
        a, b, n = float(parts[0]), float(parts[1]), int(parts[2])
        return [a + (b - a) * i / (n - 1) for i in range(n)] if n > 1 else [a]
    return [float(v) for v in str(text).split(",")]


@dataclass(frozen=True)
class Pair:
    """One pair sweep: the straight lines between every two of `ends` (their final states)."""

    name: str  # k<k> or independent
    run_id: str  # the spawning run (the first end of an independent pair)
    setting: str
    seed: int
    spawn_epoch: int | None
    ends: tuple[str, ...]
    kind: str  # spawn | independent


@dataclass(frozen=True)
class PlaneJob:
    """One plane through three states of one run."""

    plane: str
    run_id: str
    setting: str
    seed: int
    states: tuple[str, ...]  # start points of linpath.paths.resolve_start (init, epoch:<t>, other, label=file)
    reads: tuple[str, ...]  # runs whose states it reads (their outcome files are its inputs)
    spec: PlaneSpec


_CHILD = re.compile(r"^child:(\d+)/(\d+)$")


class LmcPlan:
    """The pairs and planes of a config, on top of its run plan (linpath.experiments.Plan)."""

    def __init__(self, plan):
        self.plan = plan
        config = plan.config
        self.instability = InstabilitySpec.from_config(config.get("instability"))
        self.spawns: dict[str, SpawnSpec] = {
            name: SpawnSpec.from_config(s.spawn, f"settings.{name}.spawn", plan.seeds)
            for name, s in plan.settings.items() if s.spawn}
        self.pairs: dict[tuple[str, str], Pair] = {}
        independent: set[frozenset] = set()  # with two seeds, seed 1's next seed is seed 0: one line, once
        for setting, spawn in self.spawns.items():
            for seed in spawn.seeds:
                run_id = plan.run_of(setting, seed)
                for k in spawn.epochs:
                    ends = tuple(plan.run_of(child_name(setting, k, i), seed) for i in range(spawn.children))
                    self.pairs[(run_id, f"k{k}")] = Pair(f"k{k}", run_id, setting, seed, k, ends, "spawn")
                if self.instability.independent and len(plan.seeds) > 1:
                    other = plan.seeds[(plan.seeds.index(seed) + 1) % len(plan.seeds)]
                    ends = (run_id, plan.run_of(setting, other))
                    if frozenset(ends) not in independent:
                        independent.add(frozenset(ends))
                        self.pairs[(run_id, INDEPENDENT)] = Pair(INDEPENDENT, run_id, setting, seed, None, ends,
                                                                 INDEPENDENT)
        self.planes: dict[tuple[str, str], PlaneJob] = {}
        for name, own in (config.get("planes") or {}).items():
            where = f"planes.{name}"
            if not re.fullmatch(r"[A-Za-z0-9_]+", str(name)):
                raise SettingsError(f"{where}: a plane's name is letters, digits and _ (it names files)")
            spec = PlaneSpec.from_config(config.get("plane"), own or {}, where)
            if spec.setting not in plan.settings or plan.settings[spec.setting].aux:
                raise SettingsError(f"{where}.setting: {spec.setting!r} is not a (non-helper) setting of the config")
            for seed in spec.seeds or plan.seeds[:1]:
                if seed not in plan.seeds:
                    raise SettingsError(f"{where}.seeds: {seed} is not a seed of the config ({plan.seeds})")
                run_id = plan.run_of(spec.setting, seed)
                starts, reads = zip(*(self._state(s, run_id, spec.setting, seed, where) for s in spec.states))
                reads = tuple(dict.fromkeys([run_id, *(r for rs in reads for r in rs)]))  # the run: model, trajectory
                self.planes[(name, run_id)] = PlaneJob(name, run_id, spec.setting, seed, tuple(starts), reads, spec)

    def _state(self, text: str, run_id: str, setting: str, seed: int, where: str) -> tuple[str, tuple[str, ...]]:
        """(start point for linpath.paths.resolve_start, runs read) of one named state."""
        plan, layout = self.plan, self.plan.layout
        train = plan.runs[run_id].recipe.get("train", {})
        if text in ("init", "other") or re.fullmatch(r"other:\d+", text):
            return text, ((run_id,) if text == "init" else ())
        if text == "final":
            return f"final={layout.run_file(run_id, 'final')}", (run_id,)
        if m := re.fullmatch(r"epoch:(\d+)", text):
            if int(m[1]) not in train.get("save_epochs", []):
                raise SettingsError(f"{where}.states: {text!r} needs {m[1]} in the train.save_epochs of {setting}")
            return text, (run_id,)
        if m := re.fullmatch(r"spawn:(\d+)", text):
            if int(m[1]) not in train.get("spawn_epochs", []):
                raise SettingsError(f"{where}.states: {text!r} needs {m[1]} in settings.{setting}.spawn.epochs "
                                    f"(for seed {seed})")
            return f"spawn_{m[1]}={layout.run_dir(run_id) / spawn_file(int(m[1]))}", (run_id,)
        if m := _CHILD.fullmatch(text):
            name = child_name(setting, int(m[1]), int(m[2]))
            if (name, seed) not in plan.by_setting:
                raise SettingsError(f"{where}.states: {text!r}: {setting} spawns no child {m[2]} after epoch {m[1]} "
                                    f"for seed {seed}")
            child = plan.run_of(name, seed)
            return f"child_k{m[1]}c{m[2]}={layout.run_file(child, 'final')}", (child,)
        raise SettingsError(f"{where}.states: {text!r} is not init, final, other, other:<seed>, epoch:<t>, "
                            "spawn:<k> or child:<k>/<i>")

    # --- what the workflow asks for ---------------------------------------------------------

    def pair_names(self) -> list[str]:
        return sorted({p.name for p in self.pairs.values()})

    def spawning_runs(self) -> list[str]:
        return sorted({p.run_id for p in self.pairs.values()})

    def pair_files(self) -> list[str]:
        return [str(self.plan.layout.lmc_sweep(r, n)) for r, n in self.pairs]

    def plane_names(self) -> list[str]:
        return list(dict.fromkeys(name for name, _ in self.planes))

    def plane_runs(self) -> list[str]:
        return sorted({r for _, r in self.planes})

    def plane_files(self, plane: str | None = None) -> list[str]:
        return [str(self.plane_file(n, r)) for n, r in self.planes if plane in (None, n)]

    def plane_file(self, plane: str, run_id: str):
        return self.plan.layout.plane_sweep(plane, run_id)

    def targets(self) -> list[str]:
        layout, out = self.plan.layout, []
        if self.pairs:
            out += [str(layout.table("instability")), str(layout.table("lmc_paths")), str(layout.figure("instability"))]
        if self.planes:
            out += [str(layout.table("planes")), *(str(layout.figure(f"plane_{n}")) for n in self.plane_names())]
        return out

    def meta(self, pair: Pair) -> dict:
        """The columns a pair sweep writes beside its curves."""
        return {"setting": pair.setting, "seed": pair.seed, "pair_kind": pair.kind, "pair": pair.name,
                "spawn_epoch": pair.spawn_epoch, "run_id": pair.run_id,
                "experiment": self.plan.settings[pair.setting].experiment}

    def sweep_json(self) -> str:
        return json.dumps(dataclasses.asdict(self.instability), sort_keys=True)

    def pair_inputs(self, run_id: str, pair: str) -> list[str]:
        """The outcome files a pair sweep waits for (its ends' states exist only when they trained)."""
        return [str(self.plan.layout.run_file(r, "outcome")) for r in self.pairs[(run_id, pair)].ends]

    def pair_args(self, run_id: str, pair: str) -> str:
        """`linpath lmc-path` arguments naming the pair's end runs."""
        return " ".join(f"--end {shlex.quote(str(self.plan.layout.run_dir(r)))}" for r in self.pairs[(run_id, pair)].ends)

    def plane_inputs(self, plane: str, run_id: str) -> list[str]:
        return [str(self.plan.layout.run_file(r, "outcome")) for r in self.planes[(plane, run_id)].reads]

    def plane_args(self, plane: str, run_id: str) -> str:
        """`linpath plane` arguments: the three states and the runs whose outcome it checks."""
        job, layout = self.planes[(plane, run_id)], self.plan.layout
        return " ".join([*(f"--state {shlex.quote(s)}" for s in job.states),
                         *(f"--reads {shlex.quote(str(layout.run_dir(r)))}" for r in job.reads)])

    def plane_meta(self, job: PlaneJob) -> dict:
        """The columns a plane sweep writes beside its grid."""
        return {"plane": job.plane, "setting": job.setting, "seed": job.seed, "run_id": job.run_id,
                "bn_mode": job.spec.bn_mode, "experiment": self.plan.settings[job.setting].experiment}

    def plane_json(self, job: PlaneJob) -> str:
        return json.dumps(dataclasses.asdict(job.spec), sort_keys=True)
