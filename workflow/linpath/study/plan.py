"""From the workflow config to the list of training runs and what to measure on each.

The config names *settings*: overrides of the base recipe, each trained once per seed. A setting may
start from another's recipe (`like`) and refer to other runs (linpath.study.references: files, barrier points,
measured group lists). Each run gets its seed added to the init, data-order and data (subset /
random-label draw) seeds, so seeds differ in all three; `same_data_for_all_seeds: true` keeps one data draw.

A run id is `<setting>-s<seed>-<hash>`; the hash covers the settings with references replaced by the
upstream run ids, so a changed setting anywhere upstream gives a new run, and two targets needing the same
run share it. Helper (`aux`) settings are planned only where a run reads them. Everything here is pure
Python (no torch): the Snakefile plans at parse time.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..foundations.convert import deep_merge
from ..foundations.hparams import RunSpec, SettingsError, ShapeThresholds, SweepSpec
from ..foundations.ids import digest
from ..foundations.layout import Layout
from . import spawn as spawning
from .config import check_config
from .references import Reference, find, substitute

@dataclass(frozen=True)
class HandedRuns:
    """The runs a table or figure job reads, from the files its rule handed it (Plan.handed_runs):
    `files[run id][role]` is the handed outcome, sweep or shapes file of each run read."""

    read: list[str]
    skipped: dict[str, str]
    files: dict[str, dict[str, str]]


# The Snakemake rules that train a run, one per role (Plan.role), and the rules that measure paths of trained
# states. Each of them asks for a GPU in profiles/default/config.yaml (tests/test_one_home.py checks that).
TRAINING_ROLES = ("pretrain", "pretrain_random_labels", "train", "retrain", "spawn")
SWEEP_RULES = ("interpolate", "lmc_path", "plane", "curvature")


@dataclass
class Setting:
    name: str
    experiment: str
    run: dict  # overrides of the base recipe (its `like` chain merged in)
    intervention: str = ""
    figure: str = ""  # the paper's figure, where it is not its experiment's
    baseline: str | None = None
    paths: dict = field(default_factory=dict)
    aux: bool = False  # a helper run (a pretraining source), planned only where another run reads it
    same_data_for_all_seeds: bool = False  # one subset / random-label draw shared by every seed
    like: str | None = None  # the run recipe starts from this setting's (its `run` is merged over it)
    enabled: bool = True  # an overlay sets false to drop a setting of the config it extends
    spawn: dict = field(default_factory=dict)  # children spawned from its runs (linpath.study.spawn)
    spawn_of: dict | None = None  # a spawned child's parent setting, epoch k and child index

    def references(self) -> list[Reference]:
        return list(find(self.run, f"settings.{self.name}"))


@dataclass
class PlannedRun:
    run_id: str
    setting: str
    seed: int
    recipe: dict  # run settings with references still in them
    upstream: list[str]  # run ids this run reads files of
    barrier_from: str | None = None  # run id whose barrier init this run starts from
    groups_from: list[str] = field(default_factory=list)  # settings whose barrier groups it reads
    parent: str | None = None  # a spawned child's parent run (linpath.study.spawn)
    spawn_epoch: int | None = None  # the parent's epoch k it starts from
    child: int | None = None  # its index among the children of that spawn


def load_settings(config: dict) -> dict[str, Setting]:
    """The enabled settings, each with its `like` chain merged into its run recipe."""
    raw_settings = {name: dict(raw) for name, raw in config["settings"].items()}
    disabled = {name for name, raw in raw_settings.items() if raw.get("enabled", True) is False}

    def state(name: str) -> str:
        return "disabled" if name in disabled else "unknown"

    def recipe(name: str, chain: list[str]) -> dict:
        raw = raw_settings[name]
        parent = raw.get("like")
        if not parent:
            return raw.get("run") or {}
        where = f"settings.{name}.like"
        if parent in chain:
            raise SettingsError(f"{where}: circular 'like' {' -> '.join([*chain, parent])}")
        if parent not in raw_settings or parent in disabled:
            raise SettingsError(f"{where}: {state(parent)} setting {parent!r}")
        return deep_merge(recipe(parent, [*chain, parent]), raw.get("run") or {})

    out = {}
    for name in raw_settings:
        if name not in disabled:
            own = {k: v for k, v in raw_settings[name].items() if k not in ("run", "experiment")}
            out[name] = Setting(name=name, experiment=raw_settings[name]["experiment"], run=recipe(name, [name]), **own)
    for s in out.values():
        if s.baseline and s.baseline not in out:
            raise SettingsError(f"settings.{s.name}.baseline: {state(s.baseline)} setting {s.baseline!r}")
    return out


class Plan:
    """Every run of a config, keyed by run id, plus lookups by setting and seed."""

    def __init__(self, config: dict):
        check_config(config)  # NaN/inf, non-mapping sections, non-integer seeds: before they are merged
        self.config = config
        self.layout = Layout(config.get("results", "results"))
        self.seeds = list(config["seeds"])
        self.base = config["base"]
        self.experiments: dict[str, dict] = config.get("experiments", {})
        self.settings = load_settings(config)
        self.settings.update({n: Setting(**kw) for n, kw in spawning.children(self.settings, self.seeds).items()})
        self.runs: dict[str, PlannedRun] = {}
        self.by_setting: dict[tuple[str, int], str] = {}
        for name, setting in self.settings.items():
            if not setting.aux:  # a helper run joins the plan when a run reads it
                for seed in self.seeds:
                    self._plan(name, seed, [])
        for name, setting in self.settings.items():
            for seed in (setting.spawn_of or {}).get("seeds", []):  # spawned children: the seeds that spawn
                self._plan(name, seed, [])

    def run_of(self, setting: str, seed: int) -> str:
        return self.by_setting[(setting, seed)]

    def _plan(self, name: str, seed: int, stack: list[str]) -> str:
        if (name, seed) in self.by_setting:
            return self.by_setting[(name, seed)]
        if name in stack:
            raise SettingsError(f"settings: circular reference {' -> '.join([*stack, name])}")
        if name not in self.settings:
            disabled = " (it is disabled: enabled: false)" if name in self.config["settings"] else ""
            raise SettingsError(f"settings.{stack[-1] if stack else '?'}: reference to unknown setting {name!r}{disabled}")
        setting = self.settings[name]
        recipe = deep_merge(self.base, setting.run)
        recipe.setdefault("init", {})["seed"] = seed + recipe.get("init", {}).get("seed", 0)
        recipe.setdefault("train", {})["seed"] = seed + recipe.get("train", {}).get("seed", 0)
        data_seed = recipe.get("data", {}).get("seed", 0) + (0 if setting.same_data_for_all_seeds else seed)
        recipe["data"] = {**recipe.get("data", {}), "seed": data_seed, "root": self.config.get("data_root", "data")}
        if spawn_epochs := spawning.parent_spawn_epochs(setting, seed, self.seeds):
            recipe["train"]["spawn_epochs"] = spawn_epochs
        upstream, barrier_from, groups_from = [], None, []
        for ref in setting.references():
            for s in (self.seeds if ref.is_group_list else [seed]):
                upstream.append(self._plan(ref.setting, s, [*stack, name]))
            if ref.is_group_list:
                groups_from.append(ref.setting)
            elif ref.kind == "barrier":
                barrier_from = self.run_of(ref.setting, seed)
        identity = substitute(recipe, lambda r: r.identity(self.run_of, seed, self.seeds), f"settings.{name}")
        identity["data"].pop("root", None)  # where the data lives is not what the run is
        run_id = f"{name}-s{seed}-{digest(identity, 8)}"
        spawned = setting.spawn_of or {}
        self.runs[run_id] = PlannedRun(run_id, name, seed, recipe, sorted(set(upstream)), barrier_from,
                                       sorted(set(groups_from)), self.run_of(spawned["parent"], seed) if spawned else None,
                                       spawned.get("epoch"), spawned.get("child"))
        self.by_setting[(name, seed)] = run_id
        return run_id

    # --- what a run reads and is --------------------------------------------------

    def state_inputs(self, run_id: str) -> list[str]:
        """What a run waits for before it starts from other runs' states: their outcome.yaml (each run once)
        and barrier.yaml files; group lists are read separately."""
        run = self.runs[run_id]
        return list(dict.fromkeys(str(ref.input_file(self.layout, self.run_of, run.seed))
                                  for ref in self.settings[run.setting].references() if not ref.is_group_list))

    def resolve(self, run_id: str, groups: dict[str, dict] | None = None) -> dict:
        """Concrete run settings: references become file paths and group names.

        `groups[setting]` is the content of that setting's barrier-groups file."""
        run = self.runs[run_id]
        resolved = substitute(run.recipe, lambda r: r.value(self.layout, self.run_of, run.seed, groups), run_id)
        resolved["name"] = run_id
        widen = resolved.get("model", {}).get("group_width")
        if widen and groups:  # a measured group list only widens groups whose width can change
            allowed = set().union(*(g.get("widenable", list(widen)) for g in groups.values()))
            resolved["model"]["group_width"] = {g: f for g, f in widen.items() if g in allowed}
        return resolved

    def role(self, run_id: str) -> str:
        """Which training rule makes the run: one of TRAINING_ROLES."""
        run = self.runs[run_id]
        if run.spawn_epoch is not None:
            return "spawn"
        if self.settings[run.setting].aux:
            labels = run.recipe.get("data", {}).get("random_labels", 0)
            return "pretrain_random_labels" if labels > 0 else "pretrain"
        return "retrain" if self.state_inputs(run_id) else "train"

    def swept(self, run_id: str) -> bool:
        """Whether the run gets a path sweep of its own: spawned children are measured in pairs (linpath.paths.lmc)."""
        return self.runs[run_id].spawn_epoch is None

    def measured(self, run_id: str) -> bool:
        """Whether the run exists only once a measurement decides it (a barrier point or a measured group
        list, here or upstream): such runs join the DAG after their checkpoints."""
        run = self.runs[run_id]
        return bool(run.barrier_from or run.groups_from) or any(self.measured(u) for u in run.upstream)

    def skip_reason(self, run_id: str, groups: dict[str, dict], barriers: dict[str, dict]) -> str | None:
        """Why a run is not trained, or None. `groups[setting]` is a barrier-groups file, `barriers[run id]`
        a barrier.yaml. A run whose barrier parent has no barrier, or whose measured group list is empty
        (the intervention would act on nothing and train a copy of its base recipe), is skipped."""
        run = self.runs[run_id]
        if run.barrier_from and barriers[run.barrier_from].get("upstream_failed"):
            return barriers[run.barrier_from]["reason"]
        if run.barrier_from and not barriers[run.barrier_from]["has_barrier"]:
            return f"no barrier on the path of {run.barrier_from} ({barriers[run.barrier_from]['reason']})"
        for ref in self.settings[run.setting].references():
            if ref.is_group_list and groups.get(ref.setting, {}).get("upstream_failed"):
                return f"upstream {ref.setting} failed: {groups[ref.setting]['reason']}"
            if ref.is_group_list and not ref.value(self.layout, self.run_of, run.seed, groups):
                kind = "barrier" if ref.kind == "barrier_groups" else "no-barrier"
                return f"no {kind} groups measured in {ref.setting} ({ref.text})"
        widen = self.resolve(run_id, groups).get("model", {}).get("group_width")
        if self.settings[run.setting].run.get("model", {}).get("group_width") and not widen:
            return "none of the measured groups can change width"
        for up in run.upstream:
            if self.measured(up) and self.skip_reason(up, groups, barriers):
                return f"its upstream run {up} is skipped"
        return None

    def measurements(self, run_ids) -> tuple[list[str], list[str]]:
        """(barrier parents, settings whose group lists are read): the measurements (barrier.yaml of E5,
        barrier-groups files of E11/E13/E16) that decide which of these runs exist, upstream included."""
        closure = self.upstream_closure([r for r in run_ids if self.measured(r)])
        parents = sorted({self.runs[r].barrier_from for r in closure if self.runs[r].barrier_from})
        settings = sorted({s for r in closure for s in self.runs[r].groups_from})
        return parents, settings

    def measurement_files(self, run_ids) -> list[str]:
        parents, settings = self.measurements(run_ids)
        return sorted([str(self.layout.barrier_yaml(p)) for p in parents]
                      + [str(self.layout.groups_file(s)) for s in settings])

    def skipped_runs(self, run_ids, read_yaml) -> dict[str, str]:
        """Run id -> why it is not trained, for the measured ones among these runs. `read_yaml(path)` reads a
        measurement file (Plan.measurement_files): the workflow's input functions and the report commands
        work this out the same way, each from the files it has."""
        parents, settings = self.measurements(run_ids)
        barriers = {p: read_yaml(str(self.layout.barrier_yaml(p))) for p in parents}
        groups = {s: read_yaml(str(self.layout.groups_file(s))) for s in settings}
        reasons = {r: self.skip_reason(r, groups, barriers) for r in run_ids if self.measured(r)}
        return {r: why for r, why in reasons.items() if why}

    def run_files(self, run_ids) -> list[str]:
        """The files a table or figure reads of each run: its outcome (its folder's settings and summary beside
        it), sweep and shapes (spawned children have no sweep of their own: they are measured in pairs)."""
        return [str(f) for r in run_ids
                for f in (self.layout.run_file(r, "outcome"), *((self.layout.sweep(r), self.layout.shapes(r))
                                                                 if self.swept(r) else ()))]

    def report_runs(self, job: str, name: str | None = None) -> list[str]:
        """The planned runs a table or figure job reads: every run (core tables), a per-experiment table's
        rows' runs, or an experiment's figure's runs. Measured ones included; some may be skipped."""
        if job == "core_tables":
            return list(self.runs)
        if job == "experiment_table":
            rows = self.reference()["tables"][name]["rows"]
            settings = {self.row_setting(row, name) for row in rows}
            return [r for s in self.settings if s in settings for r in self.runs_of(s)]
        if job == "experiment_figure":
            return self.experiment_runs(name)
        raise ValueError(f"no report job {job!r}")

    def handed_runs(self, planned: list[str], run_files: list[str], measurement_files: list[str]) -> HandedRuns:
        """The runs of `planned` a job reads, worked out from the measurement files it was handed, with their
        handed files. The handed files must be exactly those the plan names (Plan.run_files and
        Plan.measurement_files): a DAG and a command that disagree stop here, naming the first difference."""
        def check(handed: list[str], expected: list[str], flag: str) -> dict[str, str]:
            by_path = {os.path.normpath(f): f for f in handed}
            want = {os.path.normpath(f) for f in expected}
            missing, extra = sorted(want - set(by_path)), sorted(set(by_path) - want)
            if missing or extra:
                words = [f"{len(missing)} planned file(s) not handed, e.g. {missing[0]}" if missing else "",
                         f"{len(extra)} handed file(s) not planned, e.g. {extra[0]}" if extra else ""]
                raise SettingsError(f"{flag}: not the files of the planned runs: " + "; ".join(w for w in words if w))
            return by_path

        check(measurement_files, self.measurement_files(planned), "--measurements")
        skipped = self.skipped_runs(planned, lambda path: yaml.safe_load(Path(path).read_text()) or {})
        read = [r for r in planned if r not in skipped]
        handed = check(run_files, self.run_files(read), "--run-files")
        roles = {"outcome": lambda r: self.layout.run_file(r, "outcome"), "sweep": self.layout.sweep,
                 "shapes": self.layout.shapes}
        files = {r: {role: handed[os.path.normpath(str(where(r)))] for role, where in roles.items()
                     if role == "outcome" or self.swept(r)} for r in read}
        return HandedRuns(read, skipped, files)

    def group_list_settings(self) -> list[str]:
        """The settings whose barrier groups other settings read (E11, E13, E16)."""
        return sorted({s for run in self.runs.values() for s in run.groups_from})

    def handed_group_files(self, settings: list[str], files: list[str], flag: str = "--groups") -> dict[str, str]:
        """Setting -> its handed barrier-groups file; the files must be exactly those of `settings`."""
        by_path = {os.path.normpath(f): f for f in files}
        want = {os.path.normpath(str(self.layout.groups_file(s))): s for s in settings}
        if set(by_path) != set(want):
            missing, extra = sorted(set(want) - set(by_path)), sorted(set(by_path) - set(want))
            raise SettingsError(f"{flag}: not the barrier-groups files of {', '.join(settings) or 'no setting'}"
                                + (f"; missing {missing[0]}" if missing else "") + (f"; not planned {extra[0]}" if extra else ""))
        return {s: by_path[path] for path, s in sorted(want.items(), key=lambda kv: kv[1])}

    def waiting_generations(self, run_id: str) -> int:
        """How many generations of runs wait on this one (0: none). The workflow gives a run's jobs this
        priority, so that on a few cores the runs that others start from or measure from go first and
        the runs that join after a checkpoint do not all end up at the end of the run."""
        if not hasattr(self, "_generations"):
            children: dict[str, list[str]] = {r: [] for r in self.runs}
            for run in self.runs.values():
                for up in run.upstream:
                    children[up].append(run.run_id)
            depth: dict[str, int] = {}

            def below(r: str) -> int:
                if r not in depth:
                    depth[r] = 1 + max(map(below, children[r])) if children[r] else 0
                return depth[r]

            self._generations = {r: below(r) for r in self.runs}
        return self._generations[run_id]

    def runs_of(self, setting: str) -> list[str]:
        return [self.run_of(setting, s) for s in self.seeds]

    def barrier_children(self, parent_run_id: str) -> list[str]:
        return [r.run_id for r in self.runs.values() if r.barrier_from == parent_run_id]

    def upstream_closure(self, run_ids) -> list[str]:
        """These runs and every run they read, transitively, in plan order."""
        seen: set[str] = set()
        stack = list(run_ids)
        while stack:
            run_id = stack.pop()
            if run_id not in seen:
                seen.add(run_id)
                stack.extend(self.runs[run_id].upstream)
        return [r for r in self.runs if r in seen]

    # --- what to measure ----------------------------------------------------------

    def sweep_spec(self, setting: str) -> SweepSpec:
        """The paths a setting's runs are measured along: its own `paths` over the config's."""
        return SweepSpec.from_dict({**self.config.get("paths", {}), **self.settings[setting].paths},
                                   f"settings.{setting}.paths")

    def thresholds(self) -> ShapeThresholds:
        return ShapeThresholds.from_config(self.config.get("shapes"))

    # --- the catalogue ------------------------------------------------------------

    def paper_figure(self, setting: str) -> str:
        """The paper's figure a setting belongs to: its own `figure`, else its experiment's."""
        s = self.settings[setting]
        return s.figure or str(self.experiments.get(s.experiment, {}).get("paper", ""))

    def experiment_settings(self, experiment: str) -> list[str]:
        """What an experiment shows: its listed settings, or its own (non-aux) settings after their baselines."""
        listed = self.experiments.get(experiment, {}).get("settings")
        if listed:
            return [s for s in listed if s in self.settings]
        own = [s.name for s in self.settings.values() if s.experiment == experiment and not s.aux]
        baselines = [self.settings[s].baseline for s in own if self.settings[s].baseline]
        return list(dict.fromkeys([*baselines, *own]))

    def experiment_runs(self, experiment: str) -> list[str]:
        """The planned runs an experiment's figure shows (measured ones included; some may be skipped)."""
        return [r for s in self.experiment_settings(experiment) for r in self.runs_of(s)]

    def reference(self) -> dict:
        """The paper's numbers and the rows of the per-experiment tables (config `reference`)."""
        path = self.config.get("reference")
        return yaml.safe_load(open(path)) if path else {"tables": {}}

    def row_setting(self, row: dict, table: str) -> str:
        """A table row names its setting, or `baseline_of: <setting>` (E5's parent differs per config)."""
        if "baseline_of" not in row:
            return row["setting"]
        of = row["baseline_of"]
        if of not in self.settings or not self.settings[of].baseline:
            raise SettingsError(f"reference table {table}, row {row.get('label')!r}: baseline_of {of!r} is not "
                                "a setting with a baseline")
        return self.settings[of].baseline

    def figure_kind(self, experiment: str) -> str:
        return str(self.experiments.get(experiment, {}).get("figure", "standard"))

    def figure_experiments(self) -> list[str]:
        """Experiments with a figure to draw, in catalogue order: those that show a setting, and for a
        parameter-group figure only where one of its settings measures parameter-group paths."""
        out = []
        for experiment in self.experiments:
            shown = self.experiment_settings(experiment)
            if self.figure_kind(experiment) == "param_groups":
                shown = [s for s in shown if self.sweep_spec(s).param_groups]
            if shown:
                out.append(experiment)
        return out

    def check(self) -> None:
        """Validate every run's settings (with placeholder group lists), every setting's sweep, and every
        name the config refers to, before anything runs."""
        if self.experiments:
            for s in self.settings.values():
                if s.experiment not in self.experiments:
                    raise SettingsError(f"settings.{s.name}.experiment: {s.experiment!r} is not in the catalogue "
                                        f"(`experiments`: {', '.join(self.experiments)})")
            for e, entry in self.experiments.items():
                for name in entry.get("settings", []):
                    if name not in self.settings:
                        raise SettingsError(f"experiments.{e}.settings: unknown setting {name!r}")
        for i, row in enumerate(self.config.get("table1", [])):
            compare = row.get("compare") or {}
            for name in [*row.get("settings", []), *([row["baseline"]] if row.get("baseline") else []),
                         *(b for against in compare.values() for b in against)]:
                if name not in self.settings:
                    raise SettingsError(f"table1[{i}] ({row.get('intervention', '')}): unknown setting {name!r}")
            for name in compare:
                if name not in row.get("settings", []):
                    raise SettingsError(f"table1[{i}] ({row.get('intervention', '')}).compare: {name!r} is not "
                                        "one of the row's settings")
            self._check_table1_readings(i, row)
        self.thresholds()
        for mismatch in path_set_mismatches(self):  # a warning: such a config still plans and runs
            warnings.warn(mismatch, stacklevel=2)
        from .layer_groups import check_rule

        check_rule((self.config.get("shapes") or {}).get("layer_groups"))
        for setting in {r.setting for r in self.runs.values()}:
            self.sweep_spec(setting)
        placeholder = {s: {"with_barrier": [], "without_barrier": []} for s in self.settings}
        for run_id in self.runs:
            try:
                RunSpec.from_dict(self.resolve(run_id, placeholder))
            except SettingsError as err:
                raise SettingsError(f"settings.{self.runs[run_id].setting} (run {run_id}): {err}") from None

    def _check_table1_readings(self, i: int, row: dict) -> None:
        """A second reading of the paper quotes its text; a row whose shape comes from the barrier groups'
        own paths (`shape_from: barrier_groups`) names, in each setting, the barrier groups it changes, and
        measures group-wise paths."""
        where = f"table1[{i}] ({row.get('intervention', '')})"
        if (row.get("paper_shape_alt") or row.get("paper_acc_alt")) and not row.get("paper_source"):
            raise SettingsError(f"{where}: a second reading (paper_shape_alt / paper_acc_alt) needs the paper's "
                                "words behind it in paper_source")
        if row.get("shape_from", "full") != "barrier_groups":
            return
        for name in row.get("settings", []):
            if not any(r.kind == "barrier_groups" for r in self.settings[name].references()):
                raise SettingsError(f"{where}: shape_from barrier_groups, but setting {name!r} changes no "
                                    "'@barrier_groups:<setting>' groups")
            if not self.sweep_spec(name).groups:
                raise SettingsError(f"{where}: shape_from barrier_groups, but setting {name!r} measures no "
                                    "group-wise paths (paths.groups)")

    def table1_group_references(self) -> list[str]:
        """The settings whose barrier groups decide a Table 1 row's shape (`shape_from: barrier_groups`):
        those its settings' `@barrier_groups:<setting>` references name."""
        out = []
        for row in self.config.get("table1", []):
            if row.get("shape_from") == "barrier_groups":
                out += [r.setting for s in row["settings"] if s in self.settings
                        for r in self.settings[s].references() if r.kind == "barrier_groups"]
        return sorted(set(out))


def swept_paths(spec: SweepSpec) -> set[str]:
    """The paths a sweep measures, by kind, start, BN mode and split: full paths from every start, group and
    parameter-group paths from the first (linpath.paths.sweeps.interpolate_run)."""
    kinds = [f"full path from {s}" for i, s in enumerate(spec.starts) if spec.full or i > 0]
    kinds += [f"{kind} from {spec.starts[0]}" for kind, on in (("group paths", spec.groups),
                                                               ("parameter-group paths", spec.param_groups))
              if on and spec.starts]
    return {f"{k} ({mode} BN, {split})" for k in kinds for mode in spec.bn_modes for split in spec.splits}


def row_comparisons(plan: Plan, row: dict) -> list[tuple[str, str | None]]:
    """(setting, baseline) pairs of a Table 1 row: the one rule that Table 1, Figure A11 and the plan's checks
    pair settings by. A setting named in the row's `compare` is set against each setting listed there (the
    middle fixed LR against each other fixed LR: the paper compares them with each other); any other setting
    against the row's `baseline`, else its own."""
    compare = row.get("compare") or {}
    return [(s, b) for s in row.get("settings", [])
            for b in (compare.get(s) or [row.get("baseline") or getattr(plan.settings.get(s), "baseline", None)])]


def path_set_mismatches(plan: Plan) -> list[str]:
    """Table 1 rows with a setting that sweeps paths which a setting it is compared with does not sweep.

    Each setting of a row is compared with what row_comparisons pairs it with. A path measured on one side only has nothing
    to be compared with: its Δ makes no layer tag, and the figure shows it without its baseline. A setting
    may sweep fewer paths than what it is compared with (a baseline also serves other rows and figures,
    e.g. base's parameter-group paths for E14, and no-BN or E5 settings show the full path only, as the
    paper does), so only paths beyond the other side's are flagged."""
    out = []
    for i, row in enumerate(plan.config.get("table1", [])):
        for name, other in row_comparisons(plan, row):
            if name not in plan.settings or other not in plan.settings:
                continue
            extra = swept_paths(plan.sweep_spec(name)) - swept_paths(plan.sweep_spec(other))
            if extra:
                out.append(f"table1[{i}] ({row.get('intervention', '')}): settings.{name} sweeps "
                           f"{', '.join(sorted(extra))}, which settings.{other} (what it is compared with) "
                           f"does not; give both the same `paths:` or drop those paths from {name}")
    return out


def as_json(spec) -> str:
    """A settings dataclass as the JSON a CLI verb reads back (`--settings-json`, `--thresholds-json`)."""
    return json.dumps(dataclasses.asdict(spec), sort_keys=True)
