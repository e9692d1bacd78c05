"""From the workflow config to the list of training runs and what to measure on each.

The config names *settings*: overrides of the base recipe, each trained once
per seed. A setting may refer to files of other runs of the same seed:

    "@<setting>/<file>"            a file in that setting's run directory (final.pt, init.pt)
    "@barrier:<setting>/<point>"   a barrier-height init (before | at | after) of that setting's run
    "@barrier_groups:<setting>"    as a key of a group mapping: the groups whose group-wise path
    "@no_barrier_groups:<setting>" shows (or does not show) a barrier in that setting's runs
    "@barrier_groups:<setting>/top<k>"  the k barrier groups with the highest mean Δ

Each run gets its seed added to the init, data-order and data (subset / random-label draw) seeds, so
seeds differ in all three; a setting with `same_data_for_all_seeds: true` keeps one data draw.

A run id is `<setting>-s<seed>-<hash>`; the hash covers the settings with
references replaced by the upstream run ids, so a changed setting anywhere
upstream gives a new run, and two targets needing the same run share it.
Everything here is pure Python (no torch): the Snakefile calls it at parse time.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config_check import check_config
from .hparams import RunSpec, SettingsError

BARRIER_POINTS = ("before", "at", "after")  # the states linpath.barrier writes
TOP = re.compile(r"^top(\d+)$")
REF = re.compile(r"^@(?:(?P<kind>barrier|barrier_groups|no_barrier_groups):)?(?P<setting>[A-Za-z0-9_]+)(?:/(?P<file>[\w.]+))?$")


@dataclass
class Setting:
    name: str
    experiment: str
    run: dict  # overrides of the base recipe
    intervention: str = ""
    category: str = ""
    figure: str = ""
    baseline: str | None = None
    paths: dict = field(default_factory=dict)
    aux: bool = False  # a helper run (pretraining source), not an intervention of its own
    same_data_for_all_seeds: bool = False  # one subset / random-label draw shared by every seed
    like: str | None = None  # the run recipe starts from this setting's (its `run` is merged over it)
    enabled: bool = True  # an overlay sets false to drop a setting of the config it extends


@dataclass
class PlannedRun:
    run_id: str
    setting: str
    seed: int
    recipe: dict  # run settings with references still in them
    upstream: list[str]  # run ids this run reads files of
    barrier_from: str | None = None  # run id whose barrier init this run starts from
    groups_from: list[str] = field(default_factory=list)  # settings whose barrier groups it reads


def deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in (over or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_settings(config: dict) -> dict[str, Setting]:
    """The enabled settings, each with its `like` chain merged into its run recipe."""
    raw_settings = {name: dict(raw) for name, raw in config["settings"].items()}
    disabled = {name for name, raw in raw_settings.items() if raw.get("enabled", True) is False}

    def recipe(name: str, chain: list[str]) -> dict:
        raw = raw_settings[name]
        parent = raw.get("like")
        if not parent:
            return raw.get("run") or {}
        where = f"settings.{name}.like"
        if parent in chain:
            raise SettingsError(f"{where}: circular 'like' {' -> '.join([*chain, parent])}")
        if parent not in raw_settings or parent in disabled:
            state = "disabled" if parent in disabled else "unknown"
            raise SettingsError(f"{where}: {state} setting {parent!r}")
        return deep_merge(recipe(parent, [*chain, parent]), raw.get("run") or {})

    runs = {name: recipe(name, [name]) for name in raw_settings if name not in disabled}
    out = {}
    for name, run in runs.items():
        fields_ = {k: v for k, v in raw_settings[name].items() if k not in ("run", "experiment")}
        out[name] = Setting(name=name, experiment=raw_settings[name]["experiment"], run=run, **fields_)
    for s in out.values():
        if s.baseline and s.baseline not in out:
            state = "disabled" if s.baseline in disabled else "unknown"
            raise SettingsError(f"settings.{s.name}.baseline: {state} setting {s.baseline!r}")
    return out


def _refs(obj: Any):
    """Every reference string in a nested recipe (values and mapping keys)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(k, str) and k.startswith("@"):
                yield k
            yield from _refs(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _refs(v)
    elif isinstance(obj, str) and obj.startswith("@"):
        yield obj


def parse_ref(ref: str, where: str) -> re.Match:
    m = REF.match(ref)
    if not m:
        raise SettingsError(f"{where}: malformed reference {ref!r}")
    return m


def _substitute(obj: Any, fn) -> Any:
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            new_key = fn(k) if isinstance(k, str) and k.startswith("@") else k
            value = _substitute(v, fn)
            if isinstance(new_key, list):  # a group-list reference expands to several keys
                for g in new_key:
                    out[g] = copy.deepcopy(value)
            else:
                out[new_key] = value
        return out
    if isinstance(obj, list):
        return [_substitute(v, fn) for v in obj]
    if isinstance(obj, str) and obj.startswith("@"):
        return fn(obj)
    return obj


def threshold_args(config: dict) -> list[str]:
    """`--barrier-tol` / `--barrier-rel` / `--plateau-alpha` for the shape thresholds the config sets
    (the defaults live in linpath.shapes.ShapeThresholds)."""
    shapes = config.get("shapes", {}) or {}
    flags = {"barrier_tol": "--barrier-tol", "barrier_rel": "--barrier-rel", "plateau_alpha": "--plateau-alpha"}
    return [item for key, flag in flags.items() if key in shapes for item in (flag, str(shapes[key]))]


class Plan:
    """Every run of a config, keyed by run id, plus lookups by setting and seed."""

    def __init__(self, config: dict):
        check_config(config)  # NaN/inf, non-mapping sections, non-integer seeds: before they are merged
        self.config = config
        self.results = Path(config.get("results", "results"))
        self.seeds = list(config["seeds"])
        self.base = config["base"]
        self.experiments: dict[str, dict] = config.get("experiments", {})
        self.settings = load_settings(config)
        self.runs: dict[str, PlannedRun] = {}
        self.by_setting: dict[tuple[str, int], str] = {}
        for name in self.settings:
            for seed in self.seeds:
                self._plan(name, seed, [])

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
        upstream, barrier_from, groups_from = [], None, []
        for ref in _refs(setting.run):
            m = parse_ref(ref, f"settings.{name}")
            if m["kind"] in ("barrier_groups", "no_barrier_groups"):
                if m["file"] and not (m["kind"] == "barrier_groups" and TOP.match(m["file"])):
                    raise SettingsError(f"settings.{name}: {ref!r}: a group list takes no file, or /top<k> "
                                        "after @barrier_groups (the k groups with the highest barriers)")
                groups_from.append(m["setting"])
                for s in self.seeds:
                    upstream.append(self._plan(m["setting"], s, [*stack, name]))
            else:
                if m["kind"] == "barrier" and m["file"] not in BARRIER_POINTS:
                    raise SettingsError(f"settings.{name}: {ref!r}: a barrier point is one of {', '.join(BARRIER_POINTS)}")
                if m["kind"] is None and not m["file"]:
                    raise SettingsError(f"settings.{name}: {ref!r} names no file (e.g. @{m['setting']}/final.pt)")
                up = self._plan(m["setting"], seed, [*stack, name])
                upstream.append(up)
                if m["kind"] == "barrier":
                    barrier_from = up

        def hashed(ref: str):
            m = parse_ref(ref, f"settings.{name}")
            if m["kind"] in ("barrier_groups", "no_barrier_groups"):
                top = f"/{m['file']}" if m["file"] else ""
                return f"@{m['kind']}:" + ",".join(self.by_setting[(m["setting"], s)] for s in self.seeds) + top
            return f"@{m['kind'] or 'run'}:{self.by_setting[(m['setting'], seed)]}/{m['file']}"

        identity = _substitute(recipe, hashed)
        identity.pop("name", None)
        identity["data"].pop("root", None)  # where the data lives is not what the run is
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:8]
        run_id = f"{name}-s{seed}-{digest}"
        self.runs[run_id] = PlannedRun(run_id, name, seed, recipe, sorted(set(upstream)), barrier_from,
                                       sorted(set(groups_from)))
        self.by_setting[(name, seed)] = run_id
        return run_id

    # --- files ---------------------------------------------------------------

    def run_dir(self, run_id: str) -> Path:
        return self.results / "runs" / run_id

    def barrier_dir(self, run_id: str) -> Path:
        return self.results / "derived" / "barrier" / run_id

    def groups_file(self, setting: str) -> Path:
        return self.results / "derived" / "barrier_groups" / f"{setting}.yaml"

    def paths_file(self, run_id: str) -> Path:
        return self.results / "paths" / f"{run_id}.parquet"

    def shapes_file(self, run_id: str) -> Path:
        return self.results / "shapes" / f"{run_id}.parquet"

    def state_inputs(self, run_id: str) -> list[str]:
        """State files a run starts from (other runs' states, barrier inits)."""
        run = self.runs[run_id]
        files = []
        for ref in _refs(self.settings[run.setting].run):
            m = parse_ref(ref, run.setting)
            if m["kind"] == "barrier":
                files.append(str(self.barrier_dir(self.by_setting[(m["setting"], run.seed)]) / "barrier.yaml"))
            elif m["kind"] is None:
                files.append(str(self.run_dir(self.by_setting[(m["setting"], run.seed)]) / m["file"]))
        return files

    def resolve(self, run_id: str, groups: dict[str, dict] | None = None) -> dict:
        """Concrete run settings: references become file paths and group names.

        `groups[setting]` is the content of that setting's barrier_groups file."""
        run = self.runs[run_id]

        def concrete(ref: str):
            m = parse_ref(ref, run.setting)
            if m["kind"] == "barrier":
                return str(self.barrier_dir(self.by_setting[(m["setting"], run.seed)]) / f"{m['file']}.pt")
            if m["kind"] in ("barrier_groups", "no_barrier_groups"):
                if not groups or m["setting"] not in groups:
                    raise SettingsError(f"{run_id}: barrier groups of {m['setting']} are not measured yet")
                return self._groups(ref, groups)
            return str(self.run_dir(self.by_setting[(m["setting"], run.seed)]) / m["file"])

        resolved = _substitute(run.recipe, concrete)
        resolved["name"] = run_id
        widen = resolved.get("model", {}).get("group_width")
        if widen and groups:  # a measured group list only widens groups whose width can change
            allowed = set().union(*(g.get("widenable", list(widen)) for g in groups.values()))
            resolved["model"]["group_width"] = {g: f for g, f in widen.items() if g in allowed}
        return resolved

    # --- the catalogue -----------------------------------------------------------

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

    def figure_kind(self, experiment: str) -> str:
        return str(self.experiments.get(experiment, {}).get("figure", "standard"))

    def figure_experiments(self) -> list[str]:
        """Experiments with a figure to draw, in catalogue order: those that show a setting, and for a
        parameter-group figure only where one of its settings measures parameter-group paths."""
        out = []
        for experiment in self.experiments:
            shown = self.experiment_settings(experiment)
            if self.figure_kind(experiment) == "param_groups":
                shown = [s for s in shown if self.path_settings(s).get("param_groups")]
            if shown:
                out.append(experiment)
        return out

    def path_settings(self, setting: str) -> dict:
        """The `paths` options of a setting: its own over the config's `paths` defaults."""
        return {**self.config.get("paths", {}), **self.settings[setting].paths}

    def check(self) -> None:
        """Validate every run's settings (with placeholder group lists) and every name the
        config refers to, before anything runs."""
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
            for name in [*row.get("settings", []), *([row["baseline"]] if row.get("baseline") else [])]:
                if name not in self.settings:
                    raise SettingsError(f"table1[{i}] ({row.get('intervention', '')}): unknown setting {name!r}")
        placeholder = {s: {"with_barrier": [], "without_barrier": []} for s in self.settings}
        for run_id in self.runs:
            try:
                RunSpec.from_dict(self.resolve(run_id, placeholder))
            except SettingsError as err:
                raise SettingsError(f"settings.{self.runs[run_id].setting} (run {run_id}): {err}") from None

    # --- what to measure -----------------------------------------------------

    def interpolate_args(self, run_id: str) -> list[str]:
        """`linpath interpolate` options of a run, from its setting's `paths` and the `paths` defaults."""
        p = self.path_settings(self.runs[run_id].setting)
        args = ["--alphas", str(p.get("alphas", "0:1:51")), "--bn-subset", str(p.get("bn_subset", 1024)),
                "--batch-size", str(p.get("batch_size", 2048))]
        for start in p.get("starts", ["init"]):
            if start == "other":
                start = f"other:{10_000 + self.runs[run_id].seed}"
            args += ["--start", start]
        for mode in p.get("bn_modes", ["interpolate"]):
            args += ["--bn-mode", mode]
        if p.get("groups", False):
            args.append("--groups")
        if p.get("param_groups", False):
            args.append("--param-groups")
        return args + threshold_args(self.config)

    def role(self, run_id: str) -> str:
        """pretrain | pretrain_random_labels | retrain | train: which training rule makes the run."""
        run = self.runs[run_id]
        if self.settings[run.setting].aux:
            labels = run.recipe.get("data", {}).get("random_labels", 0)
            return "pretrain_random_labels" if labels > 0 else "pretrain"
        return "retrain" if self.state_inputs(run_id) else "train"

    def measured(self, run_id: str) -> bool:
        """Whether the run exists only once a measurement decides it (a barrier point or a measured group
        list, here or upstream): such runs join the DAG after their checkpoints."""
        run = self.runs[run_id]
        return bool(run.barrier_from or run.groups_from) or any(self.measured(u) for u in run.upstream)

    def skip_reason(self, run_id: str, groups: dict[str, dict], barriers: dict[str, dict]) -> str | None:
        """Why a run is not trained, or None. `groups[setting]` is a barrier_groups file, `barriers[run id]`
        a barrier.yaml. A run whose barrier parent has no barrier, or whose measured group list is empty
        (the intervention would act on nothing and train a copy of its base recipe), is skipped."""
        run = self.runs[run_id]
        if run.barrier_from and not barriers[run.barrier_from]["has_barrier"]:
            return f"no barrier on the path of {run.barrier_from} ({barriers[run.barrier_from]['reason']})"
        for ref in _refs(self.settings[run.setting].run):
            m = parse_ref(ref, run.setting)
            if m["kind"] in ("barrier_groups", "no_barrier_groups"):
                listed = _substitute({ref: 1}, lambda r: self._groups(r, groups))
                if not listed:
                    kind = "barrier" if m["kind"] == "barrier_groups" else "no-barrier"
                    return f"no {kind} groups measured in {m['setting']} ({ref})"
        widen = self.resolve(run_id, groups).get("model", {}).get("group_width")
        if self.settings[run.setting].run.get("model", {}).get("group_width") and not widen:
            return "none of the measured groups can change width"
        for up in run.upstream:
            if self.measured(up) and self.skip_reason(up, groups, barriers):
                return f"its upstream run {up} is skipped"
        return None

    def _groups(self, ref: str, groups: dict[str, dict]) -> list[str]:
        m = parse_ref(ref, "")
        found = groups[m["setting"]]
        if m["file"]:  # /top<k>: the k barrier groups with the highest mean Δ
            return list(found.get("ranked", found["with_barrier"]))[: int(TOP.match(m["file"])[1])]
        return list(found["with_barrier" if m["kind"] == "barrier_groups" else "without_barrier"])

    def runs_of(self, setting: str) -> list[str]:
        return [self.by_setting[(setting, s)] for s in self.seeds]

    def barrier_children(self, parent_run_id: str) -> list[str]:
        return [r.run_id for r in self.runs.values() if r.barrier_from == parent_run_id]
