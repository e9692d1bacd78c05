"""One home per fact: a run directory's file names live in linpath.foundations.layout only.

Read from the package source: a string literal (docstrings and argparse help aside: they describe, they do not name)
that spells a run-folder file name, or the evaluation cache's folder, anywhere but layout.py fails
here. Modules name those files through RunDir / Layout."""

import ast
import re
from pathlib import Path

import pytest

from linpath.foundations.layout import RUN_FILES, Layout, RunDir, epoch_file, spawn_file

PACKAGE = Path(__file__).resolve().parents[1] / "workflow" / "linpath"
HOME = PACKAGE / "foundations" / "layout.py"
EVAL_CACHE = str(Layout().eval_cache())
# A literal (f-string parts joined, each placeholder read as {}) that names a run file.
NAMES = re.compile(r"(?<![\w.])(?:%s|(?:epoch|spawn)_(?:\{\}|\*|\d+)\.pt)(?![\w])" %
                   "|".join(re.escape(n) for n in RUN_FILES.values()))


def _prose(tree: ast.AST) -> set[int]:
    """Docstrings and argparse `help=` texts: words to a reader, not a file a module opens."""
    out = {id(k.value) for node in ast.walk(tree) if isinstance(node, ast.Call)
           for k in node.keywords if k.arg == "help"}
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                out.add(id(first.value))
    return out


def named_files(source: str, filename: str = "<source>") -> list[tuple[int, str]]:
    """(line, literal) of every string literal of `source` that names a run file or the eval cache."""
    tree = ast.parse(source, filename)
    skip = _prose(tree)
    inner = {id(v) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for v in node.values}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            text = "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip | inner:
            text = node.value
        else:
            continue
        if NAMES.search(text) or EVAL_CACHE in text:
            found.append((node.lineno, text))
    return found


def sources() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p != HOME)


@pytest.mark.parametrize("path", sources(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_run_file_names_live_in_layout_only(path):
    found = named_files(path.read_text(), str(path))
    assert not found, (f"{path.relative_to(PACKAGE)} spells run-folder file names; use "
                       f"linpath.foundations.layout.RunDir / Layout: {found}")


def test_the_scan_sees_names_in_literals_and_f_strings():
    """The check itself: plain literals, f-strings and globs are found; docstrings, help and labels are not."""
    code = '''
"""Writes final.pt."""
def f(out, k, t):
    """metrics.parquet then summary.yaml"""
    a = out / "final.pt"
    b = out / f"epoch_{k}.pt"
    c = out.glob("spawn_*.pt")
    d = f"epoch_{t}"                     # a state's label, not a file
    e = "results/cache/eval"
    g = f"{out} has no run.yaml"
    h = "barrier.yaml and at.pt"         # a barrier directory's files
    p.add_argument("--out", help="writes final.pt")
'''
    assert sorted(line for line, _ in named_files(code)) == [5, 6, 7, 9, 10]


def test_run_dir_names_every_file_of_a_run(tmp_path):
    run = RunDir(tmp_path)
    assert {what: run.file(what) for what in RUN_FILES} == {
        "settings": run.settings, "init": run.init, "final": run.final, "metrics": run.metrics,
        "summary": run.summary, "checkpoint": run.checkpoint, "failed": run.failed, "outcome": run.outcome}
    assert len({p.name for p in (run.file(w) for w in RUN_FILES)}) == len(RUN_FILES)
    assert run.epoch(3) == tmp_path / epoch_file(3) and run.spawn(3) == tmp_path / spawn_file(3)
    for p in (run.epoch(1), run.epoch(12), run.spawn(0), run.final):
        p.write_bytes(b"")
    assert run.epoch_states() == [run.epoch(1), run.epoch(12)] and run.spawn_states() == [run.spawn(0)]
    assert Layout(tmp_path).run("r1") == RunDir(tmp_path / "runs" / "r1")
    assert Layout(tmp_path).run_file("r1", "final") == Layout(tmp_path).run("r1").final
    with pytest.raises(KeyError, match="not a run file"):
        run.file("finals")


# --- lists with one home -------------------------------------------------------------------------------

REPO = PACKAGE.parents[1]


def test_every_training_and_sweep_rule_asks_for_a_gpu_and_nothing_else_does():
    import yaml

    from linpath.study.plan import SWEEP_RULES, TRAINING_ROLES

    profile = yaml.safe_load((REPO / "profiles" / "default" / "config.yaml").read_text())
    gpu = {rule for rule, res in profile["set-resources"].items() if res.get("gpu")}
    assert gpu == {*TRAINING_ROLES, *SWEEP_RULES}, "profiles/default/config.yaml: the GPU requests"
    rules = set()
    for smk in (REPO / "workflow" / "rules").glob("*.smk"):
        rules |= {a or b for a, b in re.findall(r"^(?:rule (\w+):|use rule \w+ as (\w+) with:)", smk.read_text(), re.M)}
    assert gpu <= rules, f"GPU requests of rules the workflow does not have: {sorted(gpu - rules)}"


def test_every_role_of_the_default_plan_is_a_training_rule():
    import yaml

    from linpath.study.plan import TRAINING_ROLES, Plan

    plan = Plan(yaml.safe_load((REPO / "config" / "config.yaml").read_text()))
    roles = {plan.role(r) for r in plan.runs}
    assert roles <= set(TRAINING_ROLES) and {"train", "spawn"} <= roles, roles


def test_the_schema_names_the_bn_modes_once_and_they_are_the_settings_modes():
    import yaml

    from linpath.foundations.hparams import BN_MODES

    text = (PACKAGE / "schemas" / "config.schema.yaml").read_text()
    schema = yaml.safe_load(text)
    assert schema["$defs"]["bn_mode"]["enum"] == list(BN_MODES)
    assert text.count(", ".join(BN_MODES)) == 1, "every other BN mode list refers to $defs/bn_mode"


def test_figures_and_layer_groups_share_one_architecture_family_map():
    from linpath.report import figures
    from linpath.study import layer_groups

    assert figures.ARCH_FAMILY is layer_groups.ARCH_FAMILY


def test_table1_and_the_plan_check_pair_settings_by_one_rule():
    from linpath.report import tables
    from linpath.study import plan

    assert tables.row_comparisons is plan.row_comparisons
