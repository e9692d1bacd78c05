"""What the instability analysis and the loss planes measure, and where: the plan the Snakefile reads.

Pairs (linpath.paths.lmc): the straight line between two trained end states, θ(α) = (1−α)·θ₁ + α·θ₂. Either
the children of one spawn (pair `k<k>` of the spawning run: every two of them), or the run and the
same setting's run of the next seed (pair `independent`: other init, other data order, Frankle et
al.'s k = 0 with different inits), also for the settings `instability.independent_settings` names. With
`instability.align`, every independent pair is measured again after weight matching, without and with
REPAIR (pair `independent_aligned`, linpath.paths.align). Config `instability` says how they are
measured (InstabilitySpec).

Planes (linpath.paths.planes): the plane through three states A, B, C of one run, in affine coordinates
θ(α, β) = A + α(B−A) + β(C−A), on a grid; the run's saved states projected onto it. A random plane
(`directions: random`) names one state, its centre, and is spanned by two filter-normalised Gaussian
directions drawn from `direction_seeds`, with a line along the first. Config `plane` holds the defaults,
`planes.<name>` which states of which setting's runs (and any override; PlaneSpec).
Both specs are settings dataclasses in linpath.foundations.hparams; this module only plans.

Pure Python (no torch): the Snakefile plans these at parse time.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
from dataclasses import dataclass

from ..foundations.hparams import ALIGNED, ALIGNED_REPAIR, InstabilitySpec, PlaneSpec, SettingsError  # noqa: F401
from ..foundations.layout import spawn_file
from .spawn import SpawnSpec, child_name

INDEPENDENT = "independent"
# An independent pair measured again after weight matching (ALIGNED), and after weight matching and REPAIR
# (ALIGNED_REPAIR; linpath.paths.align): one job (`lmc_path` with pair independent_aligned) writes both kinds.
# The InstabilitySpec fields only the aligned job reads, and the one that only plans jobs: left out of the
# other jobs' sweep settings, so that changing them reruns no other pair sweep.
ALIGN_FIELDS = ("align", "align_max_iter")
PLAN_FIELDS = ("independent_settings",)


@dataclass(frozen=True)
class Pair:
    """One pair sweep: the straight lines between every two of `ends` (their final states)."""

    name: str  # k<k>, independent or independent_aligned
    run_id: str  # the spawning run (the first end of an independent pair)
    setting: str
    seed: int
    spawn_epoch: int | None
    ends: tuple[str, ...]
    kind: str  # spawn | independent | independent_aligned (whose job also writes independent_aligned_repair)


@dataclass(frozen=True)
class PlaneJob:
    """One plane through three states of one run."""

    plane: str
    run_id: str
    setting: str
    seed: int
    # start points of linpath.paths.sweeps.resolve_start (init, epoch:<t>, other, label=file): A, B, C, or a
    # random plane's centre
    states: tuple[str, ...]
    reads: tuple[str, ...]  # runs whose states it reads (their outcome files are its inputs)
    spec: PlaneSpec


_CHILD = re.compile(r"^child:(\d+)/(\d+)$")


class LmcPlan:
    """The pairs and planes of a config, on top of its run plan (linpath.study.plan.Plan)."""

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
                if self.instability.independent:
                    self._independent(setting, seed, independent)
        for setting in self._independent_settings():
            for seed in plan.seeds:
                self._independent(setting, seed, independent)
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

    def _independent_settings(self) -> list[str]:
        """`instability.independent_settings`, checked: non-helper settings of the config that do not
        spawn (a spawning setting has its independent pair already)."""
        out = []
        for name in self.instability.independent_settings:
            where = "instability.independent_settings"
            if name not in self.plan.settings or self.plan.settings[name].aux:
                raise SettingsError(f"{where}: {name!r} is not a (non-helper) setting of the config")
            if self.instability.independent and name in self.spawns:
                continue
            out.append(name)
        return out

    def _independent(self, setting: str, seed: int, seen: set) -> None:
        """The run of `setting` and `seed` against the same setting's run of the next seed (pair
        `independent`), and the same two after alignment (`independent_aligned`) where the config aligns.
        With two seeds, seed 1's next seed is seed 0: one line, planned once."""
        plan = self.plan
        if len(plan.seeds) < 2:
            return
        run_id = plan.run_of(setting, seed)
        other = plan.seeds[(plan.seeds.index(seed) + 1) % len(plan.seeds)]
        ends = (run_id, plan.run_of(setting, other))
        if frozenset(ends) in seen:
            return
        seen.add(frozenset(ends))
        self.pairs[(run_id, INDEPENDENT)] = Pair(INDEPENDENT, run_id, setting, seed, None, ends, INDEPENDENT)
        if self.instability.align:
            self.pairs[(run_id, ALIGNED)] = Pair(ALIGNED, run_id, setting, seed, None, ends, ALIGNED)

    def _state(self, text: str, run_id: str, setting: str, seed: int, where: str) -> tuple[str, tuple[str, ...]]:
        """(start point for linpath.paths.sweeps.resolve_start, runs read) of one named state."""
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

    def sweep_json(self, run_id: str | None = None, pair: str | None = None) -> str:
        """The InstabilitySpec a pair sweep reads: the alignment fields only for an aligned pair, the list of
        extra independent settings never (so that changing them reruns no other pair sweep)."""
        aligned = pair is not None and self.pairs[(run_id, pair)].kind == ALIGNED
        drop = PLAN_FIELDS if aligned else (*PLAN_FIELDS, *ALIGN_FIELDS)
        spec = {k: v for k, v in dataclasses.asdict(self.instability).items() if k not in drop}
        return json.dumps(spec, sort_keys=True)

    def pair_inputs(self, run_id: str, pair: str) -> list[str]:
        """The outcome files a pair sweep waits for (its ends' states exist only when they trained)."""
        return [str(self.plan.layout.run_file(r, "outcome")) for r in self.pairs[(run_id, pair)].ends]

    def pair_args(self, run_id: str, pair: str) -> str:
        """`linpath lmc-path` arguments naming the pair's end runs."""
        found = self.pairs[(run_id, pair)]
        ends = " ".join(f"--end {shlex.quote(str(self.plan.layout.run_dir(r)))}" for r in found.ends)
        return f"{ends} --align" if found.kind == ALIGNED else ends

    def plane_inputs(self, plane: str, run_id: str) -> list[str]:
        return [str(self.plan.layout.run_file(r, "outcome")) for r in self.planes[(plane, run_id)].reads]

    def plane_args(self, plane: str, run_id: str) -> str:
        """`linpath plane` arguments: the three states (a random plane: its centre) and the runs whose outcome it
        checks."""
        job, layout = self.planes[(plane, run_id)], self.plan.layout
        return " ".join([*(f"--state {shlex.quote(s)}" for s in job.states),
                         *(f"--reads {shlex.quote(str(layout.run_dir(r)))}" for r in job.reads)])

    def plane_meta(self, job: PlaneJob) -> dict:
        """The columns a plane sweep writes beside its grid."""
        return {"plane": job.plane, "setting": job.setting, "seed": job.seed, "run_id": job.run_id,
                "bn_mode": job.spec.bn_mode, "experiment": self.plan.settings[job.setting].experiment}

    def plane_json(self, job: PlaneJob) -> str:
        return json.dumps(dataclasses.asdict(job.spec), sort_keys=True)
