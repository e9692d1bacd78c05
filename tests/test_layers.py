"""The package's parts import only the parts below them: foundations < engine < paths < study < report < cli.

Read from the source (every `import` and `from ... import`, including those inside functions), so a
lazy import that reaches upward fails here as surely as one at the top of a file."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "workflow" / "linpath"
ORDER = ["foundations", "engine", "paths", "study", "report", "cli"]
# Each part's height; the benchmarks may use every part but the command line, the entry point all.
RANK = {**{part: i for i, part in enumerate(ORDER)}, "bench": 4.5, "__main__": len(ORDER)}


def part_of(module: str) -> str | None:
    """`linpath.engine.train` -> engine; linpath itself and names outside it -> None."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "linpath" else None


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every linpath import in a file, relative ones resolved."""
    package = list(path.relative_to(PACKAGE.parent).parts[:-1])  # a module's package, or an __init__'s own
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1]) if node.level else ""
            module = ".".join(p for p in (base, node.module) if p)
            # `from . import models`, `from linpath import cli`: each name may be a module of its own
            out += [(node.lineno, f"{module}.{a.name}") for a in node.names]
    return [(line, m) for line, m in out if m.startswith("linpath.")]


def sources() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p != PACKAGE / "__init__.py")


@pytest.mark.parametrize("path", sources(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_a_part_imports_only_the_parts_below_it(path):
    own = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
    upward = [f"line {line}: {module}" for line, module in imported_modules(path)
              if (other := part_of(module)) in RANK and RANK[other] > RANK[own]]
    assert not upward, f"{path.relative_to(PACKAGE)} ({own}) imports a part above it: {upward}"


def test_every_module_belongs_to_a_part():
    """A new module goes into one of the parts; the package root holds only its face and entry point."""
    loose = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert loose == ["__init__.py", "__main__.py"]
    assert sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()) == sorted(
        [*ORDER, "bench"])


def test_the_reader_sees_relative_and_lazy_imports():
    """The check itself: relative imports resolve to their part, and imports inside functions count."""
    found = {m for _, m in imported_modules(PACKAGE / "engine" / "train.py")}
    assert {"linpath.foundations.hparams.RunSpec", "linpath.engine.models"} <= found
    parts = {part_of(m) for _, m in imported_modules(PACKAGE / "cli" / "reports.py")}
    assert {"foundations", "study", "report"} <= parts, "the verbs import their parts inside functions"
