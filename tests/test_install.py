"""linpath installed the ordinary way (a built wheel, not the editable checkout) has everything it reads at
run time: a cluster's environment or a container is built like this."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The wheel built from a copy of the sources, installed (without dependencies) into a fresh folder."""
    root = tmp_path_factory.mktemp("install")
    source = root / "source"
    source.mkdir()
    for part in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / part, source / part)
    shutil.copytree(REPO / "workflow", source / "workflow",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    dist = root / "dist"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                            "-w", str(dist), str(source)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stdout + build.stderr
    wheels = list(dist.glob("linpath-*.whl"))
    assert len(wheels) == 1, wheels
    target = root / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target", str(target),
                              str(wheels[0])], capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stdout + install.stderr
    return target


def _from_install(target: Path, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(target)  # before site-packages, where the editable checkout is installed
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_the_wheel_ships_the_config_schema(installed):
    wheel = next((installed.parent / "dist").glob("linpath-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "linpath/schemas/config.schema.yaml" in names, [n for n in names if not n.endswith(".py")]


@pytest.mark.slow
def test_an_installed_linpath_plans_the_paper_study(installed, tmp_path):
    """From a folder holding config/ alone (no checkout): `linpath plan` reads the schema from the package."""
    shutil.copytree(REPO / "config", tmp_path / "config")
    which = _from_install(installed, ["-c", "import linpath; print(linpath.__file__)"], tmp_path)
    assert which.stdout.strip().startswith(str(installed)), "the installed copy, not the checkout, is imported"
    proc = _from_install(installed, ["-m", "linpath", "plan", "--configfile", "config/paper.yaml"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "runs" in proc.stdout and "hours" in proc.stdout.lower(), proc.stdout[-2000:]
