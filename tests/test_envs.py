"""envs/linpath.yaml (the conda environment of cluster jobs) pins what pyproject.toml pins."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = REPO / "pyproject.toml"
ENV = REPO / "envs" / "linpath.yaml"


def _requirement_map(lines: list[str], where: str) -> dict[str, tuple]:
    out: dict[str, tuple] = {}
    for line in lines:
        req = Requirement(line)
        name = canonicalize_name(req.name)
        assert name not in out, f"{where}: {req.name} listed twice"
        out[name] = (req.specifier, tuple(sorted(req.extras)), str(req.marker or ""))
    return out


def pyproject_pins(text: str) -> dict[str, tuple]:
    """name -> (specifier, extras, marker) of pyproject's [project] dependencies."""
    return _requirement_map(tomllib.loads(text)["project"]["dependencies"], "pyproject.toml")


def env_pip_section(text: str) -> list[str]:
    env = yaml.safe_load(text)
    sections = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(sections) == 1, "envs/linpath.yaml needs exactly one pip section"
    return [str(entry) for entry in sections[0]]


def env_pins(text: str) -> dict[str, tuple]:
    """name -> (specifier, extras, marker) of the pip section; pip options (-e .., -r ...) are not pins."""
    return _requirement_map([e for e in env_pip_section(text) if not e.lstrip().startswith("-")],
                            "envs/linpath.yaml")


def differences(pyproject_text: str, env_text: str) -> list[str]:
    ours, theirs = pyproject_pins(pyproject_text), env_pins(env_text)
    out = [f"{n}: only in pyproject.toml" for n in sorted(ours.keys() - theirs.keys())]
    out += [f"{n}: only in envs/linpath.yaml" for n in sorted(theirs.keys() - ours.keys())]
    out += [f"{n}: pyproject {ours[n]} != env {theirs[n]}" for n in sorted(ours.keys() & theirs.keys())
            if ours[n] != theirs[n]]
    return out


def test_env_pip_pins_equal_the_pyproject_dependencies():
    problems = differences(PYPROJECT.read_text(), ENV.read_text())
    assert not problems, "envs/linpath.yaml and pyproject.toml disagree:\n" + "\n".join(problems)


def test_both_files_pin_the_torch_pair_exactly():
    for pins in (pyproject_pins(PYPROJECT.read_text()), env_pins(ENV.read_text())):
        for name in ("torch", "torchvision", "snakemake"):
            specs = list(pins[name][0])
            assert len(specs) == 1 and specs[0].operator == "==", f"{name} is not pinned exactly: {pins[name][0]}"


DEPENDENCIES = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]


def _changed(line: str) -> str:
    """Another requirement for the same package: an exact pin moves, a lower bound rises."""
    req = Requirement(line)
    spec = next(iter(req.specifier))
    version = spec.version.split(".")
    version[-1] = str(int(re.match(r"\d+", version[-1])[0]) + 1)
    return f"{req.name}{spec.operator}{'.'.join(version)}"


def _env_with(env_text: str, line: str, new: str | None) -> str:
    """The env file with the pip entry `line` replaced by `new` (None: removed)."""
    pattern = re.compile(rf"^(\s*- ){re.escape(line)}\n", re.MULTILINE)
    assert len(pattern.findall(env_text)) == 1, f"{line!r} is not one entry of envs/linpath.yaml"
    return pattern.sub("" if new is None else rf"\g<1>{new}\n", env_text)


@pytest.mark.parametrize("line", DEPENDENCIES)
def test_a_pin_changed_in_either_file_is_detected(line):
    env_text, py_text = ENV.read_text(), PYPROJECT.read_text()
    assert f'"{line}"' in py_text
    new = _changed(line)
    assert SpecifierSet(str(Requirement(new).specifier)) != Requirement(line).specifier
    name = canonicalize_name(Requirement(line).name)
    in_env = differences(py_text, _env_with(env_text, line, new))
    in_pyproject = differences(py_text.replace(f'"{line}"', f'"{new}"'), env_text)
    assert [d.split(":")[0] for d in in_env] == [name]
    assert [d.split(":")[0] for d in in_pyproject] == [name]
    dropped = differences(py_text, _env_with(env_text, line, None))
    assert dropped == [f"{name}: only in pyproject.toml"]


def test_a_package_only_in_the_env_is_detected():
    env = yaml.safe_load(ENV.read_text())
    next(d for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)["pip"].append("requests==2.32.3")
    assert differences(PYPROJECT.read_text(), yaml.safe_dump(env)) == ["requests: only in envs/linpath.yaml"]


def test_env_python_satisfies_requires_python_and_has_pip():
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    conda = [d for d in yaml.safe_load(ENV.read_text())["dependencies"] if isinstance(d, str)]
    python = [d for d in conda if re.match(r"^python\s*[=<>]", d)]
    assert len(python) == 1, conda
    version = re.sub(r"^python\s*=*\s*", "", python[0])
    assert SpecifierSet(project["requires-python"]).contains(version), (python[0], project["requires-python"])
    assert "pip" in conda
