"""From raw settings (YAML, JSON, the command line) to the settings dataclasses, with the dotted key
of the first bad value in a one-line SettingsError: the type conversion every dataclass uses, and the
checks of values that a JSON schema cannot express (NaN and ±inf, α grids, device names, partial recipes).
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from .errors import SettingsError


def json_argument(text: str | None, flag: str, kind: type = dict, what: str | None = None) -> Any:
    """A JSON object (or list) given on the command line, {} or [] when absent: the one reader of
    every settings, rule or run list a verb takes as JSON; errors name the flag."""
    import json

    if text is None:
        return kind()
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise SettingsError(f"{flag}: not valid JSON: {err}") from None
    if not isinstance(value, kind):
        raise SettingsError(f"{flag}: expected {what or ('a JSON object' if kind is dict else 'a JSON list')}, "
                            f"got {type(value).__name__}")
    return value


def deep_merge(base: dict, over: dict) -> dict:
    """`over` merged into a copy of `base`, mapping by mapping: how a setting overrides the base recipe."""
    import copy

    out = copy.deepcopy(base)
    for key, value in (over or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def from_dict(cls: type, raw: Any, where: str) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise SettingsError(f"{where or 'settings'} must be a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names, key=str)  # YAML keys may be numbers or null
    if unknown:
        known = ", ".join(sorted(names))
        raise SettingsError(f"unknown setting {join(where, str(unknown[0]))!r} (known: {known})")
    values = {k: _convert(hints[k], v, join(where, k)) for k, v in raw.items()}
    return cls(**values)


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], value, where)
    if origin is Literal:
        if value not in args:
            raise SettingsError(f"{where} must be one of {list(args)}, got {shown(value)}")
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise SettingsError(f"{where} must be a list, got {shown(value)}")
        return [_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise SettingsError(f"{where} must be a mapping, got {shown(value)}")
        return {str(k): _convert(args[1], v, f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise SettingsError(f"{where} must be true or false, got {shown(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SettingsError(f"{where} must be an integer, got {shown(value)}")
        return value
    if tp is float:
        number = value
        if isinstance(value, str):
            try:
                number = float(value)  # YAML reads 5e-4 as a string
            except ValueError:
                pass
        if isinstance(number, bool) or not isinstance(number, (int, float)):
            raise SettingsError(f"{where} must be a number, got {shown(value)}")
        return finite(number, where)
    if tp is str:
        if not isinstance(value, str):
            raise SettingsError(f"{where} must be a string, got {shown(value)}")
        return value
    return value


def join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def one_of(value: Any, options: tuple, where: str) -> None:
    if value not in options:
        raise SettingsError(f"{where} must be one of {list(options)}, got {shown(value)}")


def positive(value: int, where: str) -> None:
    if value <= 0:
        raise SettingsError(f"{where} must be > 0, got {shown(value)}")


def shown(value: Any, limit: int = 80) -> str:
    """A value as an error message quotes it: its repr, on one line and cut to `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 5]}...{text[-2:]}"


def finite(value: int | float, where: str) -> float:
    """`value` as a finite float. NaN and ±inf pass every range check (NaN compares false with
    everything), so they are refused where settings are read, not deep inside training."""
    try:
        number = float(value)
    except OverflowError:  # an integer beyond the float range
        number = math.inf
    if not math.isfinite(number):
        raise SettingsError(f"{where} must be a finite number, got {shown(value)}")
    return number


DEVICE = re.compile(r"^(auto|cpu|mps|(cuda|xpu)(:\d+)?)$")


def check_device(value: str, where: str) -> None:
    """A device name torch.device accepts (availability is checked where the device is used)."""
    if not DEVICE.match(value):
        raise SettingsError(f"{where} must be auto, cpu, mps or cuda[:<index>], got {shown(value)}")


def check_alphas(text: str, where: str) -> None:
    """The α grid of a path setting: "start:stop:count" (count ≥ 1, both ends included) or a comma list;
    every α finite. Pure Python, so that the planner refuses a bad grid before any job runs."""
    parts = str(text).split(":")
    try:
        if len(parts) == 3:
            ends, count = [float(parts[0]), float(parts[1])], int(parts[2])
        elif len(parts) == 1:
            ends, count = [float(a) for a in parts[0].split(",")], None
        else:
            raise ValueError(text)
    except ValueError:
        raise SettingsError(f"{where} must be \"start:stop:count\" or a comma list of numbers, got {shown(text)}") from None
    if count is not None and count < 1:
        raise SettingsError(f"{where}: the count of {shown(text)} must be at least 1")
    if not all(math.isfinite(a) for a in ends):
        raise SettingsError(f"{where} must hold finite numbers, got {shown(text)}")


def read_yaml(path: Path, what: str) -> Any:
    """A YAML file's content; a missing, unreadable or malformed file is a one-line SettingsError naming it."""
    if not path.is_file():
        raise SettingsError(f"{what} not found: {path}")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise SettingsError(f"{path}: not UTF-8 text (byte {err.start}): is it the right file?") from None
    except OSError as err:
        raise SettingsError(f"{path}: cannot read: {err.strerror or err}") from None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SettingsError(f"{path}: not valid YAML{where}: {err.problem or err.context}") from None
    except (yaml.YAMLError, RecursionError) as err:
        raise SettingsError(f"{path}: not valid YAML: {' '.join(str(err).split())}") from None


def check_plain_data(obj: Any, where: str = "") -> None:
    """Nested settings hold only strings, booleans, finite numbers, null, lists and mappings with string
    keys: what YAML can also say (dates, sets, binary, NaN, numeric keys) is refused, naming the key."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            if not isinstance(key, str):
                raise SettingsError(f"{join(where, str(key))}: a key must be a name (text), got {shown(key)}")
            check_plain_data(value, join(where, key))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            check_plain_data(value, f"{where}[{i}]")
    elif isinstance(obj, float):
        finite(obj, where or "settings")
    elif not (obj is None or isinstance(obj, (str, bool, int))):
        raise SettingsError(f"{where or 'settings'} must be text, a number, true/false, a list or a mapping, "
                            f"got {type(obj).__name__} {shown(obj)}")


def check_override(raw: Any, where: str, cls: type) -> None:
    """The mappings and integers of a partial RunSpec (a workflow config's `base`, a setting's `run`).

    A planner merges such overrides section by section and adds seeds to them before the merged
    recipe is validated as a whole (`RunSpec.from_dict`), so these two kinds are checked first;
    every other value is left to that validation."""
    if not isinstance(raw, dict):
        raise SettingsError(f"{where} must be a mapping, got {shown(raw)}")
    hints = typing.get_type_hints(cls)
    for key, value in raw.items():
        if key in hints:
            _check_shape(hints[key], value, join(where, key))


def _check_shape(tp: Any, value: Any, where: str) -> None:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return
        tp = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        check_override(value, where, tp)
    elif origin is dict:
        if not isinstance(value, dict):
            raise SettingsError(f"{where} must be a mapping, got {shown(value)}")
        for key, item in value.items():
            _check_shape(args[1], item, f"{where}.{key}")
    elif tp is int:
        _convert(int, value, where)
