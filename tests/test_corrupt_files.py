"""Damaged files: whichever verb reads a truncated checkpoint, a damaged evaluation cache, a file that
is not a parquet table, or a run.yaml with values of the wrong type, it ends with one line on stderr,
"linpath <verb>: error: ...", that names the file, and exit status 2. Hypothesis chooses where a file
is cut or what garbage replaces it.

Every example works on a fresh copy of one small finished MLP run (the session's `trained_mlp`).
"""

from __future__ import annotations

import contextlib
import io
import shutil
import tempfile
from pathlib import Path

import pandas as pd
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import run_dict, run_spec
from linpath.cli import commands as cli
from linpath.foundations.io import load_checkpoint
from linpath.engine.train import train

DAMAGE = st.one_of(
    st.floats(0, 1, exclude_max=True).map(lambda share: ("cut", share)),  # truncated at this share of its size
    st.binary(max_size=48).map(lambda garbage: ("replace", garbage)),  # another file's bytes, or nothing
)
LOSSES = [2.3, 1.0, 1.6, 0.5, 0.1]  # the full path has a barrier at α = 0.5: barrier-init loads both states


def damage(path: Path, how: tuple) -> None:
    kind, arg = how
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * arg)] if kind == "cut" else arg)


def run_verb(argv: list[str]) -> tuple[int, str]:
    """`linpath <argv>` in this process; (exit status, stderr)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = cli.main(argv)
    return code, err.getvalue()


def assert_one_line_naming(code: int, err: str, verb: str, path: Path) -> None:
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert code == 2 and len(lines) == 1, f"exit {code}, stderr:\n{err}"
    assert lines[0].startswith(f"linpath {verb}: error: ") and str(path) in lines[0], lines[0]


@pytest.fixture(scope="module")
def finished(trained_mlp, tmp_path_factory):
    """A finished run, its filled evaluation cache (as `linpath interpolate` leaves it), and an
    interrupted run: training that stopped after its last epoch's checkpoint.pt, before final.pt."""
    run_dir, _, _ = trained_mlp
    work = tmp_path_factory.mktemp("finished")
    shutil.copytree(run_dir, work / "run")
    code, err = run_verb(["interpolate", "--run", str(work / "run"), "--eval-cache", str(work / "cache"),
                          "--out", str(work / "p.parquet"), "--shapes", str(work / "shapes.parquet"), "--groups",
                          "--alphas", "0,0.5,1", "--splits", "train", "--no-progress"])
    assert code == 0, err
    interrupted = work / "interrupted"
    (interrupted / "final.pt").mkdir(parents=True)  # the last write fails: checkpoint.pt stays behind
    with pytest.raises(OSError):
        train(run_spec("mlp", train={"epochs": 2}), interrupted, progress=False)
    (interrupted / "final.pt").rmdir()
    for name in ("metrics.parquet", "summary.yaml"):
        (interrupted / name).unlink()
    assert load_checkpoint(interrupted / "checkpoint.pt")["epoch"] >= 1
    return work


@contextlib.contextmanager
def workspace(finished: Path):
    """A throwaway copy of the finished run, its cache, and a paths table with a barrier between its states."""
    with tempfile.TemporaryDirectory() as tmp:
        w = Path(tmp)
        shutil.copytree(finished / "run", w / "run")
        shutil.copytree(finished / "cache", w / "cache")
        shutil.copytree(finished / "interrupted", w / "interrupted")
        shutil.copy(finished / "shapes.parquet", w / "shapes.parquet")
        rows = [{"run_id": "run", "path": "full", "start": "init", "group": "all", "param_group": "all",
                 "bn_mode": "interpolate", "split": "train", "alpha": a / 4, "loss": loss, "accuracy": 0.5,
                 "start_state": str(w / "run" / "init.pt"), "end_state": str(w / "run" / "final.pt"), "eval_data": ""}
                for a, loss in enumerate(LOSSES)]
        pd.DataFrame(rows).to_parquet(w / "paths.parquet")
        yield w


def _interpolate(w: Path) -> list[str]:
    return ["interpolate", "--run", str(w / "run"), "--eval-cache", str(w / "cache"), "--out", str(w / "out.parquet"),
            "--alphas", "0,1", "--splits", "train", "--no-progress"]


def _barrier_init(w: Path) -> list[str]:
    return ["barrier-init", "--sweep", str(w / "paths.parquet"), "--out", str(w / "barrier")]


def _barrier_groups(w: Path) -> list[str]:
    return ["barrier-groups", "--shapes", str(w / "shapes.parquet"), "--run-yaml", str(w / "run" / "run.yaml"),
            "--out", str(w / "groups.yaml")]


def _resume(w: Path) -> list[str]:
    """The interrupted run again: its checkpoint.pt is read to resume."""
    return ["train", "--config", str(w / "interrupted" / "run.yaml"), "--out", str(w / "interrupted"), "--no-progress"]


def _train_from(w: Path, init: dict) -> list[str]:
    config = w / "retrain.yaml"
    config.write_text(yaml.safe_dump(run_dict(init=init, train={"epochs": 1})))
    return ["train", "--config", str(config), "--out", str(w / "retrain"), "--no-progress"]


def _eval_cache_file(w: Path) -> Path:
    (found,) = (w / "cache").glob("*/train.pt")
    return found


# (verb, the damaged file, the command): every verb that reads each kind of file.
CASES = {
    "interpolate-final.pt": (lambda w: w / "run" / "final.pt", _interpolate),
    "interpolate-init.pt": (lambda w: w / "run" / "init.pt", _interpolate),
    "interpolate-eval-cache": (_eval_cache_file, _interpolate),
    "barrier-init-paths": (lambda w: w / "paths.parquet", _barrier_init),
    "barrier-init-final.pt": (lambda w: w / "run" / "final.pt", _barrier_init),
    "barrier-init-init.pt": (lambda w: w / "run" / "init.pt", _barrier_init),
    "barrier-groups-shapes": (lambda w: w / "shapes.parquet", _barrier_groups),
    "train-resume-checkpoint.pt": (lambda w: w / "interrupted" / "checkpoint.pt", _resume),
    "train-init-source-final.pt": (lambda w: w / "run" / "final.pt",
                                   lambda w: _train_from(w, {"source": str(w / "run" / "final.pt")})),
    "train-init-groups-init.pt": (lambda w: w / "run" / "init.pt",
                                  lambda w: _train_from(w, {"groups": {"layer1": str(w / "run" / "init.pt")}})),
}


@pytest.mark.parametrize("case", list(CASES))
@settings(max_examples=8)
@given(how=DAMAGE)
def test_a_damaged_file_is_named_in_one_line(case, how, finished):
    target, command = CASES[case]
    with workspace(finished) as w:
        argv = command(w)
        damaged = target(w)
        damage(damaged, how)
        code, err = run_verb(argv)
        assert_one_line_naming(code, err, argv[0], damaged)
        for written in (w / "retrain" / "final.pt", w / "interrupted" / "final.pt", w / "barrier" / "at.pt",
                        w / "groups.yaml"):
            assert not written.exists(), written


def test_the_undamaged_cases_succeed(finished):
    """Control: without the damage every command above runs through (so the damage is what fails)."""
    for case, (_, command) in CASES.items():
        with workspace(finished) as w:
            argv = command(w)
            if argv[0] == "train":
                argv += ["--threads", "1"]
            code, err = run_verb(argv)
            assert code == 0, f"{case}: {err}"


def test_a_shapes_table_without_group_paths_is_named(finished):
    with workspace(finished) as w:
        shapes = pd.read_parquet(w / "shapes.parquet")
        shapes[shapes["path"] == "full"].to_parquet(w / "shapes.parquet")
        code, err = run_verb(_barrier_groups(w))
        assert_one_line_naming(code, err, "barrier-groups", w / "shapes.parquet")
        assert "no group-wise paths" in err


def test_a_paths_file_of_another_kind_is_named(finished):
    with workspace(finished) as w:
        (w / "paths.parquet").write_text("path,split,alpha,loss\nfull,train,0,2.3\n")
        code, err = run_verb(_barrier_init(w))
        assert_one_line_naming(code, err, "barrier-init", w / "paths.parquet")
        assert "not a readable parquet table" in err
        shapes = w / "shapes.parquet"
        pd.DataFrame({"path": ["full"], "split": ["train"], "label": ["B"]}).to_parquet(shapes)
        code, err = run_verb(["barrier-init", "--sweep", str(shapes), "--out", str(w / "barrier")])
        assert_one_line_naming(code, err, "barrier-init", shapes)
        assert "no column 'start'" in err


def test_a_state_of_another_network_is_named(finished, tmp_path):
    """A `<label>=<file>` start, or a final.pt, that does not hold the run's tensors fails before the sweep."""
    import torch

    other = tmp_path / "other.pt"
    torch.save({"layers.0.weight": torch.zeros(3, 64), "layers.0.bias": torch.zeros(3)}, other)
    with workspace(finished) as w:
        code, err = run_verb([*_interpolate(w), "--start", f"mine={other}"])
        assert_one_line_naming(code, err, "interpolate", other)
        assert "does not fit the network" in err
        shutil.copy(other, w / "run" / "final.pt")
        code, err = run_verb(_interpolate(w))
        assert_one_line_naming(code, err, "interpolate", w / "run" / "final.pt")


def _kind(value) -> str:
    return "none" if value is None else "bool" if isinstance(value, bool) else \
        "number" if isinstance(value, (int, float)) else type(value).__name__


def _leaves(obj, where=()):
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from _leaves(value, (*where, key))
    elif isinstance(obj, list) and obj:
        for i, value in enumerate(obj):
            yield from _leaves(value, (*where, i))
    else:
        yield where, obj


WRONG = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-5, 10), st.floats(), st.text(max_size=5)),
                     lambda inner: st.one_of(st.lists(inner, max_size=2), st.dictionaries(st.text(max_size=3), inner,
                                                                                          max_size=2)), max_leaves=4)


@pytest.mark.parametrize("verb", ["interpolate", "train"])
@settings(max_examples=12)
@given(data=st.data())
def test_run_yaml_with_a_value_of_the_wrong_type(verb, data, finished):
    with workspace(finished) as w:
        settings_file = w / "run" / "run.yaml"
        raw = yaml.safe_load(settings_file.read_text())
        path, old = data.draw(st.sampled_from(sorted(_leaves(raw), key=str)))
        parent = raw
        for key in path[:-1]:
            parent = parent[key]
        parent[path[-1]] = data.draw(WRONG.filter(lambda v: _kind(v) != _kind(old)))
        settings_file.write_text(yaml.safe_dump(raw))
        # train: the same run again into its directory (finished: nothing to do unless run.yaml disagrees)
        config = w / "original.yaml"
        shutil.copy(finished / "run" / "run.yaml", config)
        argv = _interpolate(w) if verb == "interpolate" else ["train", "--config", str(config), "--out",
                                                                str(w / "run"), "--no-progress"]
        code, err = run_verb(argv)
        if code != 0:  # a wrong-typed value that still is a valid setting (e.g. a number for a null) passes
            assert_one_line_naming(code, err, verb, settings_file)


def test_a_refused_file_leaves_no_warning_behind(tmp_path):
    """torch warns before it fails on some damaged files; the error is the only thing the user sees."""
    import warnings

    from linpath.foundations.io import CheckpointError

    damaged = tmp_path / "state.pt"
    damaged.write_bytes(b"\x80\x62 not a pickle of protocol 98")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(CheckpointError, match=r"state\.pt.*Unsupported operand"):
            load_checkpoint(damaged)
    assert caught == []
