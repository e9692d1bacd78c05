"""`linpath interpolate` → `linpath barrier-init` through the installed console script, as the workflow
calls them: the defaults of one feed the other without extra flags, and a non-default offset reaches
barrier.yaml and the states written."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
import yaml

from conftest import load_tensors, run_cli
from linpath.cli import commands as cli
from linpath.paths.shapes import ShapeThresholds, curve_metrics


def check_states_close(state: dict, start: dict, end: dict, alpha: float) -> None:
    """state == (1-α)·θ₀ + α·θ_T for float tensors (computed here in float64); other tensors from θ_T."""
    assert list(state) == list(end)
    for key, value in state.items():
        assert value.dtype == end[key].dtype, key
        if value.is_floating_point():
            expected = ((1 - alpha) * start[key].double() + alpha * end[key].double()).to(value.dtype)
            assert torch.allclose(value, expected, rtol=1e-6, atol=1e-6), key
        else:
            assert torch.equal(value, end[key]), key


# Each test runs the installed console script on a trained run (tens of seconds): the slow part of the suite.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def default_paths(trained_mlp, tmp_path_factory):
    """`linpath interpolate --run R --out P` with every other option at its default."""
    run_dir, _, _ = trained_mlp
    work = tmp_path_factory.mktemp("handoff")
    done = run_cli(["interpolate", "--run", str(run_dir), "--out", "paths.parquet", "--no-progress",
                    "--threads", "1"], cwd=work)
    assert done.returncode == 0, done.stderr
    return run_dir, work, work / "paths.parquet"


def test_interpolate_defaults_feed_barrier_init_without_flags(default_paths):
    run_dir, work, paths_file = default_paths
    paths = pd.read_parquet(paths_file)
    done = run_cli(["barrier-init", "--sweep", str(paths_file), "--out", "inits"], cwd=work)
    assert done.returncode == 0, done.stderr
    saved = yaml.safe_load((work / "inits" / "barrier.yaml").read_text())
    # barrier-init found the path it looks for by default: full, from θ₀, train split, interpolated BN
    assert (saved["start_state"], saved["end_state"]) == (str(run_dir / "init.pt"), str(run_dir / "final.pt"))
    full = paths.query("path == 'full' and start == 'init' and split == 'train' and bn_mode == 'interpolate'")
    assert len(full) == 51, "the default α grid: 0, 0.02, ..., 1"
    expected = curve_metrics(full["alpha"].to_numpy(), full["loss"].to_numpy())
    assert saved["delta"] == pytest.approx(expected["delta"]) and saved["label"] == expected["label"]
    assert saved["label_rule"] == ShapeThresholds().rule() and saved["offset"] == 0.1
    written = sorted(p.name for p in (work / "inits").iterdir())
    assert written == (["after.pt", "at.pt", "barrier.yaml", "before.pt"] if saved["has_barrier"] else ["barrier.yaml"])


def test_states_from_interpolate_output_with_a_non_default_offset(default_paths, tmp_path, capsys):
    """The recorded state files load and interpolate; the offset given is the offset used and written.
    The tiny run's own path may have no barrier, so its measured sweep is given one: the full train curve's
    loss gets a bump that peaks at α = 0.5 (the state files it names are the run's own)."""
    run_dir, work, paths_file = default_paths
    paths = pd.read_parquet(paths_file)
    full = (paths["path"] == "full") & (paths["start"] == "init") & (paths["split"] == "train") \
        & (paths["bn_mode"] == "interpolate")
    paths.loc[full, "loss"] = 1.0 - 0.5 * paths.loc[full, "alpha"] + 2.0 * (paths.loc[full, "alpha"] - 0.5).abs().rsub(0.25).clip(lower=0)
    crafted = tmp_path / "paths_with_a_bump.parquet"
    paths.to_parquet(crafted, index=False)
    out = work / "offset"
    code = cli.main(["barrier-init", "--sweep", str(crafted), "--out", str(out), "--offset", "0.25"])
    assert code == 0
    saved = yaml.safe_load((out / "barrier.yaml").read_text())
    assert saved["offset"] == 0.25 and saved["has_barrier"] is True
    assert saved["alphas"] == pytest.approx({"before": 0.25, "at": 0.5, "after": 0.75})
    start, end = load_tensors(run_dir / "init.pt"), load_tensors(run_dir / "final.pt")
    for name, alpha in saved["alphas"].items():
        check_states_close(load_tensors(out / f"{name}.pt"), start, end, alpha)
    assert "barrier at alpha=0.5" in capsys.readouterr().out
