"""References from one setting to another's runs: the one parser of the `@` syntax.

    "@<setting>/<file>"                 a file of that setting's run of the same seed (final.pt, init.pt)
    "@barrier:<setting>/<point>"        a barrier-height init (before | at | after) of that run (E5)
    "@barrier_groups:<setting>"         as a key of a group mapping: the layer groups whose group-wise path
                                        has a barrier in that setting's runs (linpath.study.barrier_groups)
    "@no_barrier_groups:<setting>"      every other group of the model (stem and head included): with the
                                        line above, the two sides split the whole network (Table A3)
    "@no_barrier_groups:<setting>/layers"  only the measured layer groups without a barrier (narrowing)
    "@barrier_groups:<setting>/top<k>"  the k widenable barrier groups with the highest mean Δ
    "@spawn:<setting>/<k>"              the training state of that run after epoch k (spawn_<k>.pt), where
                                        children are spawned (linpath.study.spawn)

Pure Python (no torch): the Snakefile plans runs at parse time.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from ..foundations.hparams import SettingsError
from ..foundations.layout import BARRIER_POINTS, RUN_FILES, Layout, spawn_file

_SYNTAX = re.compile(r"^@(?:(?P<kind>barrier|barrier_groups|no_barrier_groups|spawn):)?(?P<setting>[A-Za-z0-9_]+)"
                     r"(?:/(?P<part>[\w.]+))?$")
_TOP = re.compile(r"^top(\d+)$")
GROUP_KINDS = ("barrier_groups", "no_barrier_groups")


@dataclass(frozen=True)
class Reference:
    text: str
    kind: str  # file | barrier | barrier_groups | no_barrier_groups | spawn
    setting: str  # the setting whose runs it reads
    part: str | None = None  # the file, the barrier point, or top<k>

    @classmethod
    def parse(cls, text: str, where: str) -> "Reference":
        m = _SYNTAX.match(text)
        if not m:
            raise SettingsError(f"{where}: malformed reference {text!r}")
        ref = cls(text, m["kind"] or "file", m["setting"], m["part"])
        if ref.kind == "file" and not ref.part:
            raise SettingsError(f"{where}: {text!r} names no file (e.g. @{ref.setting}/{RUN_FILES['final']})")
        if ref.kind == "barrier" and ref.part not in BARRIER_POINTS:
            raise SettingsError(f"{where}: {text!r}: a barrier point is one of {', '.join(BARRIER_POINTS)}")
        if ref.kind == "spawn" and not (ref.part or "").isdigit():
            raise SettingsError(f"{where}: {text!r}: a spawn point is an epoch (e.g. @spawn:{ref.setting}/3)")
        if ref.kind in GROUP_KINDS and ref.part and not (
                (ref.kind == "barrier_groups" and _TOP.match(ref.part))
                or (ref.kind == "no_barrier_groups" and ref.part == "layers")):
            raise SettingsError(f"{where}: {text!r}: a group list takes no file; /top<k> after @barrier_groups "
                                "(the k groups with the highest barriers), /layers after @no_barrier_groups "
                                "(the measured layers without a barrier)")
        return ref

    @property
    def is_group_list(self) -> bool:
        """A measured list of groups, read from every seed's run of the setting; else one run of the same seed."""
        return self.kind in GROUP_KINDS

    def upstream(self, run_of: Callable[[str, int], str], seed: int, seeds: list[int]) -> list[str]:
        """The run ids it reads."""
        return [run_of(self.setting, s) for s in (seeds if self.is_group_list else [seed])]

    def identity(self, run_of: Callable[[str, int], str], seed: int, seeds: list[int]) -> str:
        """What it stands for in a run's hash: the upstream run ids, so a change upstream makes a new run."""
        runs = ",".join(self.upstream(run_of, seed, seeds))
        return f"@{self.kind}:{runs}" + (f"/{self.part}" if self.part else "")

    def input_file(self, layout: Layout, run_of: Callable[[str, int], str], seed: int) -> Path:
        """The file whose existence the run waits for: the upstream run's outcome (its states exist only
        when it trained), a barrier.yaml, or a measured group list."""
        if self.is_group_list:
            return layout.groups_file(self.setting)
        run = run_of(self.setting, seed)
        return layout.barrier_yaml(run) if self.kind == "barrier" else layout.run_file(run, "outcome")

    def value(self, layout: Layout, run_of: Callable[[str, int], str], seed: int,
              groups: dict[str, dict] | None) -> str | list[str]:
        """A file path, or (group lists) the group names from the measured `groups[setting]`."""
        if not self.is_group_list:
            run = run_of(self.setting, seed)
            if self.kind == "barrier":
                return str(layout.barrier_state(run, self.part))
            return str(layout.run_dir(run) / (spawn_file(int(self.part)) if self.kind == "spawn" else self.part))
        if not groups or self.setting not in groups:
            raise SettingsError(f"{self.text}: the barrier groups of {self.setting} are not measured yet")
        found = groups[self.setting]
        if self.part == "layers":
            return list(found.get("without_barrier_layers", found["without_barrier"]))
        if self.part:
            return list(found.get("ranked", found["with_barrier"]))[: int(_TOP.match(self.part)[1])]
        return list(found["with_barrier" if self.kind == "barrier_groups" else "without_barrier"])


def find(obj: Any, where: str) -> Iterator[Reference]:
    """Every reference in a nested recipe (values and mapping keys)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(k, str) and k.startswith("@"):
                yield Reference.parse(k, where)
            yield from find(v, where)
    elif isinstance(obj, list):
        for v in obj:
            yield from find(v, where)
    elif isinstance(obj, str) and obj.startswith("@"):
        yield Reference.parse(obj, where)


def substitute(obj: Any, fn: Callable[[Reference], Any], where: str) -> Any:
    """`obj` with each reference replaced by fn(reference); a key that becomes a list of groups expands
    into one key per group, each with a copy of the value."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            new_key = fn(Reference.parse(k, where)) if isinstance(k, str) and k.startswith("@") else k
            value = substitute(v, fn, where)
            if isinstance(new_key, list):
                for g in new_key:
                    out[g] = copy.deepcopy(value)
            else:
                out[new_key] = value
        return out
    if isinstance(obj, list):
        return [substitute(v, fn, where) for v in obj]
    if isinstance(obj, str) and obj.startswith("@"):
        return fn(Reference.parse(obj, where))
    return obj
