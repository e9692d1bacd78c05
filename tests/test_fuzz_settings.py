"""Property tests of settings validation: whatever a run's settings, a settings file or a workflow
config holds, reading it either succeeds or raises SettingsError naming the dotted key (or the file);
no other exception escapes, and nothing non-finite gets through.

Run settings are drawn from the RunSpec dataclasses' own type hints (so fields added later are fuzzed
too), mixed with values of every other kind: NaN, ±inf, zero, negative and huge numbers, numbers
written as text, empty strings, unknown keys, non-text keys, wrong list lengths and random nesting.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import re
import types
import typing
from pathlib import Path

import jsonschema
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from linpath.foundations.convert import check_plain_data
from linpath.foundations.hparams import RunSpec, SettingsError
from linpath.foundations.registry import ARCHITECTURES, DATASETS
from linpath.study.plan import Plan

REPO = Path(__file__).resolve().parents[1]
SCHEMA = yaml.safe_load((REPO / "workflow" / "linpath" / "schemas" / "config.schema.yaml").read_text())
MINI = yaml.safe_load((REPO / "tests" / "configs" / "mini.yaml").read_text())

# --- values ------------------------------------------------------------------------------

UNKNOWN_KEYS = st.from_regex(r"x_[a-z]{1,5}", fullmatch=True)  # cannot collide with words of a message
NAMES = st.from_regex(r"[a-z0-9_]{0,6}", fullmatch=True)
NUMBERS = st.one_of(
    st.integers(-3, 300),
    st.sampled_from([0, -1, 10**30, 10**400, -(10**400)]),
    st.floats(),  # NaN, ±inf, ±0.0, subnormals and huge values included
    st.sampled_from([1e-300, 1e300, -1e300, 5e-4, 0.9, 1.0, 0.0]),
)
NUMERIC_TEXT = st.sampled_from(["nan", "NaN", "inf", "-inf", "Infinity", "1e400", "5e-4", "0.1", "1e3", "abc", "",
                                " ", "0x10", "1_000"])
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, NUMERIC_TEXT, st.text(max_size=6), st.dates(),
                    st.binary(max_size=4))
JUNK = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.one_of(NAMES, UNKNOWN_KEYS, st.integers(0, 3)), inner, max_size=3)),
    max_leaves=6,
)
CHOICES = {"arch": tuple(ARCHITECTURES), "dataset": tuple(DATASETS)}  # str fields with a closed set of valid values


def typed(tp: typing.Any, name: str = "") -> st.SearchStrategy:
    """Values of the type `tp` (many of them still invalid: out of range, non-finite, wrong length)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return st.one_of(st.none(), *(typed(a, name) for a in args if a is not type(None)))
    if origin is typing.Literal:
        return st.one_of(st.sampled_from(args), st.text(max_size=5))
    if dataclasses.is_dataclass(tp):
        return sections(tp)
    if origin is list:
        return st.lists(field_values(args[0]), max_size=4)
    if origin is dict:
        return st.dictionaries(st.one_of(NAMES, st.integers(0, 3)), field_values(args[1]), max_size=3)
    if tp is bool:
        return st.booleans()
    if tp is int:
        return st.one_of(st.integers(-2, 40), st.sampled_from([10**30, 10**400]))
    if tp is float:
        return st.one_of(NUMBERS, NUMERIC_TEXT)
    if tp is str:
        return st.one_of(st.sampled_from(CHOICES[name]), st.text(max_size=6)) if name in CHOICES else st.text(max_size=6)
    return JUNK


def field_values(tp: typing.Any, name: str = "") -> st.SearchStrategy:
    """Mostly values of the field's type, sometimes anything at all."""
    return st.one_of(typed(tp, name), typed(tp, name), typed(tp, name), JUNK)


def sections(cls: type) -> st.SearchStrategy:
    """A mapping for dataclass `cls`: any subset of its fields, sometimes an unknown key, sometimes not a mapping."""
    hints = typing.get_type_hints(cls)
    known = st.fixed_dictionaries({}, optional={n: field_values(t, n) for n, t in hints.items()})
    extra = st.dictionaries(st.one_of(UNKNOWN_KEYS, st.integers(0, 3)), JUNK, max_size=1)
    mapping = st.one_of(known, known, known, st.tuples(known, extra).map(lambda pair: {**pair[0], **pair[1]}))
    return st.one_of(mapping, mapping, mapping, mapping, mapping, mapping, mapping, st.none(), JUNK)


RUN_SETTINGS = st.one_of(
    st.fixed_dictionaries({}, optional={n: field_values(t, n) for n, t in typing.get_type_hints(RunSpec).items()}),
    st.tuples(sections(RunSpec), st.just(None)).map(lambda pair: pair[0] if isinstance(pair[0], dict) else {}),
)


# --- what an error must say ----------------------------------------------------------------


def key_paths(obj: typing.Any, where: str = "") -> set[str]:
    """Every dotted key (and list index) in a nested settings dict, as error messages write them."""
    out = set()
    if isinstance(obj, dict):
        for key, value in obj.items():
            path = f"{where}.{key}" if where else str(key)
            out |= {path} | key_paths(value, path)
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            out |= {f"{where}[{i}]"} | key_paths(value, f"{where}[{i}]")
    return out


NAMED = re.compile(r"^(?:unknown setting '(?P<unknown>[^']*)'|(?P<key>\S+?)(?: must | needs |: | \())")


def assert_names_a_key(err: SettingsError, raw: dict) -> None:
    message = str(err)
    assert "\n" not in message, f"not one line: {message!r}"
    found = NAMED.match(message)
    assert found, f"the message does not start with a key: {message!r}"
    key = found["key"] if found["key"] is not None else found["unknown"]
    assert key in key_paths(raw), f"{key!r} is not a key of the input; message: {message!r}"


# --- run settings ----------------------------------------------------------------------------


@settings(max_examples=400)
@given(raw=RUN_SETTINGS)
def test_run_settings_validate_or_name_the_key(raw):
    try:
        spec = RunSpec.from_dict(copy.deepcopy(raw))
    except SettingsError as err:
        assert_names_a_key(err, raw)
        return
    stored = spec.to_dict()
    check_plain_data(stored)  # every number finite, every key text
    again = RunSpec.from_dict(stored)
    assert again == spec and again.digest() == spec.digest(), "run.yaml reads back as the same run"


@pytest.mark.parametrize("raw, key", [
    ({"train": {"lr": float("nan")}}, "train.lr"),
    ({"train": {"weight_decay": float("inf")}}, "train.weight_decay"),
    ({"train": {"lr": "-inf"}}, "train.lr"),
    ({"train": {"momentum": 10**400}}, "train.momentum"),
    ({"train": {"betas": [0.9, float("nan")]}}, "train.betas[1]"),
    ({"train": {"group_overrides": {"block1": {"lr": float("nan")}}}}, "train.group_overrides.block1.lr"),
    ({"model": {"group_width": {"layer1": float("inf")}}}, "model.group_width.layer1"),
    ({"data": {"subset": float("nan")}}, "data.subset"),
    ({"data": {"spiral": {"noise": float("nan")}}}, "data.spiral.noise"),
    ({"train": {"until_train_acc": float("nan")}}, "train.until_train_acc"),
])
def test_non_finite_numbers_are_refused_naming_the_key(raw, key):
    with pytest.raises(SettingsError, match=rf"^{re.escape(key)} must be a finite number"):
        RunSpec.from_dict(raw)


@pytest.mark.parametrize("raw, message", [
    ({"train": {"momentum": -0.1}}, "train.momentum must be in [0, 1)"),
    ({"train": {"optimizer": "adam", "betas": [0.9, 1.0]}}, "train.betas[1] must be in [0, 1)"),
    ({"train": {"nesterov": True, "momentum": 0.0}}, "train.nesterov needs train.momentum > 0"),
    ({"train": {"gamma": 0}}, "train.gamma must be > 0"),
    ({"train": {"device": "gpu"}}, "train.device must be auto, cpu, mps or cuda[:<index>]"),
    ({"train": {"device": "cuda:x"}}, "train.device must be"),
    ({"x_a": 1, 3: 2}, "unknown setting '3'"),
])
def test_settings_torch_would_refuse_mid_run_are_refused_up_front(raw, message):
    with pytest.raises(SettingsError) as err:
        RunSpec.from_dict(raw)
    assert str(err.value).startswith(message)


def test_valid_edge_values_pass():
    spec = RunSpec.from_dict({"train": {"momentum": 0.0, "device": "cuda:1", "lr": "1e-3", "gamma": 1e-300}})
    assert (spec.train.momentum, spec.train.device, spec.train.lr) == (0.0, "cuda:1", 1e-3)


# --- settings files --------------------------------------------------------------------------

SETTINGS_TEXT = st.one_of(
    st.text(max_size=120),
    st.binary(max_size=120).map(lambda b: b.decode("latin-1")),
    RUN_SETTINGS.map(lambda raw: yaml.safe_dump(raw, sort_keys=False)),
    st.tuples(RUN_SETTINGS.map(lambda raw: yaml.safe_dump(raw)), st.floats(0, 1)).map(
        lambda pair: pair[0][: int(len(pair[0]) * pair[1])]),  # cut anywhere
)


@settings(max_examples=250, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.one_of(SETTINGS_TEXT.map(str.encode), st.binary(max_size=60)))
def test_any_settings_file_reads_or_fails_naming_the_file(content, tmp_path):
    path = tmp_path / "run settings.yaml"
    path.write_bytes(content)
    try:
        RunSpec.from_yaml(path)
    except SettingsError as err:
        message = str(err)
        assert "\n" not in message, message
        assert message.startswith(f"{path}: ") or message == f"run settings file not found: {path}", message


def test_an_empty_file_is_an_error_and_a_partial_file_takes_defaults(tmp_path):
    empty = tmp_path / "empty.yaml"
    for content in ("", "\n\n", "# only a comment\n"):
        empty.write_text(content)
        with pytest.raises(SettingsError, match=rf"^{re.escape(str(empty))}: file is empty"):
            RunSpec.from_yaml(empty)
    partial = tmp_path / "partial.yaml"
    partial.write_text("train: {lr: 0.25}\n")
    spec = RunSpec.from_yaml(partial)
    defaults = RunSpec()
    assert spec.train.lr == 0.25
    assert (spec.model, spec.data, spec.init) == (defaults.model, defaults.data, defaults.init)
    assert dataclasses.replace(spec.train, lr=defaults.train.lr) == defaults.train
    partial.write_text("{}\n")
    assert RunSpec.from_yaml(partial) == defaults, "{} is the deliberate way to ask for every default"


def test_yaml_errors_are_one_line_with_the_position(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("train:\n  lr: [0.1\n")
    with pytest.raises(SettingsError) as err:
        RunSpec.from_yaml(broken)
    assert "\n" not in str(err.value) and re.search(r"broken\.yaml: not valid YAML at line \d+, column \d+", str(err.value))
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("train: {name: \xe9}".encode("latin-1"))
    with pytest.raises(SettingsError, match="latin.yaml: not UTF-8 text"):
        RunSpec.from_yaml(latin)


# --- the workflow config -------------------------------------------------------------------

VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


def leaf_paths(obj: typing.Any, where: tuple = ()) -> list[tuple]:
    """Paths (tuples of keys and indices) of every node below the root."""
    out = []
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else []
    for key, value in items:
        out.append((*where, key))
        out += leaf_paths(value, (*where, key))
    return out


@st.composite
def workflow_configs(draw) -> dict:
    """The mini test config with a few random edits: a value replaced, a key added or removed."""
    config = copy.deepcopy(MINI)
    for _ in range(draw(st.integers(1, 3))):
        paths = leaf_paths(config)
        path = draw(st.sampled_from(paths))
        parent = config
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["replace", "replace", "replace", "add", "remove"]))
        if action == "replace":
            parent[path[-1]] = draw(st.one_of(JUNK, NUMBERS, st.just(float("nan"))))
        elif action == "add" and isinstance(parent, dict):
            parent[draw(st.one_of(UNKNOWN_KEYS, st.sampled_from(["seed", "lr", "init", "train", "alphas"]),
                                  st.integers(0, 2), st.none()))] = draw(JUNK)
        elif action == "remove" and isinstance(parent, dict):
            del parent[path[-1]]
    return config


@settings(max_examples=200)
@given(config=workflow_configs())
def test_workflow_config_schema_then_plan_check(config):
    try:
        VALIDATOR.validate(config)
    except jsonschema.ValidationError:
        return  # snakemake reports these with the key path
    try:
        Plan(config).check()
    except SettingsError as err:
        assert_names_a_key(err, config)


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["shapes"].update(barrier_tol=float("nan")), "shapes.barrier_tol must be a finite number"),
    (lambda c: c["shapes"].update(plateau_alpha=float("nan")), "shapes.plateau_alpha must be a finite number"),
    (lambda c: c["shapes"].update(layer_barrier_ratio=float("inf")), "shapes.layer_barrier_ratio must be a finite"),
    (lambda c: c["base"]["train"].update(lr=float("nan")), "base.train.lr must be a finite number"),
    (lambda c: c["settings"]["base"]["run"]["train"].update(weight_decay=float("inf")),
     "settings.base.run.train.weight_decay must be a finite number"),
    (lambda c: c["settings"]["base"]["run"].update(train=None), "settings.base.run.train must be a mapping"),
    (lambda c: c["settings"]["base"]["run"].update(init={"seed": "x"}), "settings.base.run.init.seed must be an integer"),
    (lambda c: c["settings"]["base"]["run"]["train"].update(lr=datetime.date(2022, 7, 1)),
     "settings.base.run.train.lr must be text, a number"),
    (lambda c: c["settings"]["base"]["run"].update(model={"group_width": {1: 2.0, "layer1": 2.0}}),
     "settings.base.run.model.group_width.1: a key must be a name"),
    (lambda c: c["paths"].update(alphas="0:1:0"), "paths.alphas: the count of '0:1:0' must be at least 1"),
    (lambda c: c["settings"]["base"]["paths"].update(alphas="9" * 400 + ",1"), "settings.base.paths.alphas must hold finite"),
])
def test_workflow_config_values_the_schema_lets_through(edit, message):
    config = copy.deepcopy(MINI)
    edit(config)
    VALIDATOR.validate(config)  # the schema alone accepts each of these
    with pytest.raises(SettingsError) as err:
        Plan(config).check()
    assert str(err.value).startswith(message), str(err.value)


def test_the_mini_config_passes_unchanged():
    VALIDATOR.validate(MINI)
    Plan(copy.deepcopy(MINI)).check()
