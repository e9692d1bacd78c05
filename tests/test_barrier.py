"""Barrier-height inits (E5): the states at the peak of a measured full path and δ before / after it,
from `linpath.paths.barrier` and `linpath barrier-init`, and a run trained from them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from conftest import assert_states_equal, load_tensors, run_dict
from linpath.cli import commands as cli
from linpath.paths.barrier import find_barrier, interpolate_state, write_barrier_inits
from linpath.paths.shapes import ShapeThresholds

ALPHAS = np.linspace(0, 1, 11)
BARRIER = [1.0, 1.1, 1.3, 1.6, 2.0, 1.9, 1.5, 1.0, 0.6, 0.3, 0.2]  # peak at α = 0.4, above L(0)
MONOTONE = [2.3, 2.2, 2.0, 1.8, 1.5, 1.2, 0.9, 0.6, 0.4, 0.3, 0.2]


def curve_rows(losses, alphas=ALPHAS, *, start_state: str, end_state: str, path="full", group="all", split="train",
               start="init", bn_mode="interpolate") -> list[dict]:
    return [{"run_id": "r1", "path": path, "start": start, "group": group,
             "param_group": "all", "bn_mode": bn_mode, "split": split, "alpha": float(a), "loss": float(l),
             "accuracy": 0.5, "start_state": start_state, "end_state": end_state, "eval_data": ""}
            for a, l in zip(alphas, losses)]


@pytest.fixture
def endpoints(trained_resnet):
    """Two real state_dicts on disk (with BN buffers and integer counters): θ₀ and θ_T of a run."""
    run_dir, spec, _ = trained_resnet
    return run_dir / "init.pt", run_dir / "final.pt", spec


def crafted_paths(start_pt, end_pt, full_train=BARRIER, alphas=ALPHAS) -> pd.DataFrame:
    """The full train path from init plus distractors whose peaks lie elsewhere."""
    s, e = str(start_pt), str(end_pt)
    bump_at_08 = [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.6, 0.9, 3.0, 0.4, 0.2]
    rows = curve_rows(full_train, alphas, start_state=s, end_state=e)
    rows += curve_rows(bump_at_08, start_state=s, end_state=e, split="test")
    rows += curve_rows(bump_at_08, start_state=s, end_state=e, path="group", group="block2")
    rows += curve_rows(bump_at_08, start_state=s, end_state=e, bn_mode="recompute")
    rows += curve_rows(bump_at_08, start_state="/nonexistent/other.pt", end_state=e, start="other_init")
    return pd.DataFrame(rows).sample(frac=1.0, random_state=1)


def lerp_by_hand(start: dict, end: dict, alpha: float) -> dict:
    """(1-α)·θ₀ + α·θ_T per float tensor; integer counters from θ_T."""
    return {k: ((1 - alpha) * start[k].double() + alpha * end[k].double()).float() if end[k].is_floating_point()
            else end[k] for k in end}


def check_written_state(path, start: dict, end: dict, alpha: float) -> None:
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert list(state) == list(end)
    assert_states_equal(state, interpolate_state(start, end, alpha))
    hand = lerp_by_hand(start, end, alpha)
    for key, value in state.items():
        assert value.dtype == end[key].dtype, key
        if value.is_floating_point():
            assert torch.allclose(value, hand[key], rtol=1e-6, atol=1e-6), key
        else:
            assert torch.equal(value, end[key]), f"{key}: counters are taken from the end state"


def test_find_barrier_picks_the_full_train_path_from_init(endpoints):
    start_pt, end_pt, _ = endpoints
    info = find_barrier(crafted_paths(start_pt, end_pt), ShapeThresholds())
    assert info["has_barrier"] is True and info["reason"] == "barrier"
    assert info["alpha_star"] == pytest.approx(0.4)
    assert info["barrier_height"] == pytest.approx(2.0 - 1.0) and info["delta"] == pytest.approx(1.0)
    assert info["label"] == "B"
    assert (info["start_state"], info["end_state"]) == (str(start_pt), str(end_pt))


def test_write_barrier_inits(endpoints, tmp_path):
    start_pt, end_pt, _ = endpoints
    out = tmp_path / "barrier"
    info = write_barrier_inits(crafted_paths(start_pt, end_pt), out, offset=0.1)
    assert sorted(p.name for p in out.iterdir()) == ["after.pt", "at.pt", "barrier.yaml", "before.pt"]
    start, end = load_tensors(start_pt), load_tensors(end_pt)
    assert any(not torch.equal(start[k], end[k]) for k in end if not end[k].is_floating_point()), \
        "the endpoints differ in their integer counters too"
    assert info["alphas"] == pytest.approx({"before": 0.3, "at": 0.4, "after": 0.5})
    for name, alpha in info["alphas"].items():
        check_written_state(out / f"{name}.pt", start, end, alpha)
    saved = yaml.safe_load((out / "barrier.yaml").read_text())
    assert saved["has_barrier"] is True and saved["offset"] == 0.1
    assert saved["alpha_star"] == pytest.approx(0.4)
    assert saved["alphas"] == pytest.approx({"before": 0.3, "at": 0.4, "after": 0.5})
    assert saved["start_state"] == str(start_pt) and saved["end_state"] == str(end_pt)
    assert saved["label_rule"] == ShapeThresholds().rule()
    assert info["alphas"] == saved["alphas"]


# A barrier whose peak stays below L(0): 2.3 → 1.0 → 1.5 → 0.01. The global maximum is L(0), but the
# largest rise (1.0 → 1.5) peaks at α = 0.5: that is the barrier of E5.
BELOW_START = [2.3, 1.8, 1.4, 1.0, 1.25, 1.5, 1.1, 0.7, 0.3, 0.1, 0.01]


@pytest.mark.parametrize("offset", [0.1, 0.2])
def test_a_barrier_below_the_start_gives_an_interior_alpha_star(endpoints, tmp_path, offset):
    start_pt, end_pt, _ = endpoints
    out = tmp_path / "below"
    info = write_barrier_inits(crafted_paths(start_pt, end_pt, BELOW_START), out, offset=offset)
    assert info["has_barrier"] is True and info["alpha_star"] == pytest.approx(0.5)
    assert info["rise_start_alpha"] == pytest.approx(0.3)
    assert info["barrier_height"] == 0.0, "the global maximum is L(0): the barrier height says nothing here"
    expected = {"before": 0.5 - offset, "at": 0.5, "after": 0.5 + offset}
    assert info["alphas"] == pytest.approx(expected)
    start, end = load_tensors(start_pt), load_tensors(end_pt)
    for name, alpha in expected.items():
        check_written_state(out / f"{name}.pt", start, end, alpha)


@pytest.mark.parametrize("peak,expected", [
    (0.95, {"before": 0.85, "at": 0.95, "after": 1.0}),
    (0.05, {"before": 0.0, "at": 0.05, "after": 0.15}),
])
def test_before_and_after_are_clipped_to_the_path(peak, expected, endpoints, tmp_path):
    start_pt, end_pt, _ = endpoints
    alphas = np.array([0.0, 0.05, 0.5, 0.95, 1.0])
    losses = [1.0, 3.0 if peak == 0.05 else 0.9, 0.8, 3.0 if peak == 0.95 else 0.7, 0.2]
    paths = pd.DataFrame(curve_rows(losses, alphas, start_state=str(start_pt), end_state=str(end_pt)))
    info = write_barrier_inits(paths, tmp_path, offset=0.1)
    assert info["alphas"] == pytest.approx(expected)
    start, end = load_tensors(start_pt), load_tensors(end_pt)
    for name, alpha in info["alphas"].items():
        check_written_state(tmp_path / f"{name}.pt", start, end, alpha)
    clipped = "after" if peak == 0.95 else "before"
    state = load_tensors(tmp_path / f"{clipped}.pt")
    assert_states_equal(state, end if clipped == "after" else {k: (start[k] if v.is_floating_point() else v)
                                                                  for k, v in end.items()})


@pytest.mark.parametrize("losses,reason", [
    (MONOTONE, "no barrier: delta=0"),
    ([1.0, 1.0, 1.005, 1.0, 0.9, 0.8, 0.6, 0.5, 0.4, 0.3, 0.2], "no barrier: delta=0.005"),  # within barrier_tol
    ([0.2, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.2, 1.4, 1.5], "no interior peak"),  # rises to the end
])
def test_no_barrier_writes_only_the_yaml(losses, reason, endpoints, tmp_path):
    start_pt, end_pt, _ = endpoints
    out = tmp_path / "none"
    info = write_barrier_inits(crafted_paths(start_pt, end_pt, losses), out)
    assert [p.name for p in out.iterdir()] == ["barrier.yaml"]
    saved = yaml.safe_load((out / "barrier.yaml").read_text())
    assert saved["has_barrier"] is False and info["has_barrier"] is False
    assert saved["reason"].startswith(reason), saved["reason"]
    assert "alphas" not in saved


def test_find_barrier_without_a_matching_path(endpoints):
    start_pt, end_pt, _ = endpoints
    paths = crafted_paths(start_pt, end_pt)
    with pytest.raises(ValueError, match="no full path from 'init' on split 'valid'"):
        find_barrier(paths, ShapeThresholds(), split="valid")
    with pytest.raises(ValueError, match="no full path"):
        find_barrier(paths[paths["path"] != "full"], ShapeThresholds())


# --- the command line, and training from the barrier state --------------------------


def barrier_cli(endpoints, tmp_path, capsys, *options):
    """`linpath barrier-init` on the crafted paths; returns the output folder and captured output."""
    start_pt, end_pt, _ = endpoints
    paths_file = tmp_path / "paths.parquet"
    crafted_paths(start_pt, end_pt).to_parquet(paths_file, index=False)
    out = tmp_path / "inits"
    code = cli.main(["barrier-init", "--sweep", str(paths_file), "--out", str(out), *options])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return out, captured


def test_cli_barrier_init_and_train_from_it(endpoints, tmp_path, write_config, capsys):
    start_pt, end_pt, spec = endpoints
    out, captured = barrier_cli(endpoints, tmp_path, capsys, "--offset", "0.2")
    assert "barrier at alpha=0.4" in captured.out
    start, end = load_tensors(start_pt), load_tensors(end_pt)
    alphas = yaml.safe_load((out / "barrier.yaml").read_text())["alphas"]
    assert alphas == pytest.approx({"before": 0.2, "at": 0.4, "after": 0.6})
    for name, alpha in alphas.items():
        check_written_state(out / f"{name}.pt", start, end, alpha)

    # `linpath train` accepts the barrier state as init.source
    raw = run_dict("resnet18_w4", data={"subset": 0.25}, train={"epochs": 1, "lr": 0.01},
                   init={"source": str(out / "at.pt")})
    run = tmp_path / "from-barrier"
    code = cli.main(["train", "--config", str(write_config(raw)), "--out", str(run), "--no-progress"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    at = load_tensors(out / "at.pt")
    assert_states_equal(load_tensors(run / "init.pt"), at)
    final = load_tensors(run / "final.pt")
    assert not torch.equal(final["conv1.weight"], at["conv1.weight"]), "training moved away from the barrier state"
    metrics = pd.read_parquet(run / "metrics.parquet")
    assert metrics["epoch"].tolist() == [0, 1] and np.isfinite(metrics["train_loss"]).all()


def test_cli_barrier_init_threshold_and_no_barrier(endpoints, tmp_path, capsys):
    out, captured = barrier_cli(endpoints, tmp_path, capsys, "--barrier-tol", "1.5")
    assert "no barrier" in captured.out and "barrier.yaml only" in captured.out
    assert [p.name for p in out.iterdir()] == ["barrier.yaml"]
    saved = yaml.safe_load((out / "barrier.yaml").read_text())
    assert saved["has_barrier"] is False and "threshold=1.5" in saved["reason"]
    assert "max(1.5, " in saved["reason"], "the rule that decided is written beside the decision"


def test_cli_barrier_init_bad_input(endpoints, tmp_path, capsys):
    start_pt, end_pt, _ = endpoints
    assert cli.main(["barrier-init", "--sweep", str(tmp_path / "missing.parquet"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("linpath barrier-init: error:") and "missing.parquet" in err
    paths_file = tmp_path / "only-test.parquet"
    paths = crafted_paths(start_pt, end_pt)
    paths[paths["split"] == "test"].to_parquet(paths_file, index=False)
    assert cli.main(["barrier-init", "--sweep", str(paths_file), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "only-test.parquet" in err and "no full path" in err
    assert not (tmp_path / "o").exists()


def test_a_monotone_path_writes_no_states_and_says_why(endpoints, tmp_path):
    start_pt, end_pt, _ = endpoints
    info = write_barrier_inits(crafted_paths(start_pt, end_pt, MONOTONE), tmp_path / "monotone")
    assert info["has_barrier"] is False and "alphas" not in info
    assert info["reason"].startswith("no barrier: delta=0 <= threshold=")
    assert sorted(p.name for p in (tmp_path / "monotone").iterdir()) == ["barrier.yaml"]
    real = find_barrier(crafted_paths(start_pt, end_pt), ShapeThresholds())
    assert real["alpha_star"] == pytest.approx(0.4) and real["reason"] == "barrier"


@pytest.mark.parametrize("outside", [[-1.0, -0.5], [1.5, 2.0]])
def test_points_outside_zero_to_one_are_not_part_of_the_path(outside):
    """A sweep may extend α beyond [0, 1] (extrapolation); a rise there is no barrier of the path θ0 -> θT."""
    inside = list(np.linspace(0, 1, 6))
    alphas = sorted(inside + outside)
    if outside[0] < 0:  # -1 -> -0.5 rises from 0.1 to 5.0; 0 .. 1 falls
        losses = [0.1, 5.0] + [1.0 - 0.15 * a for a in inside]
    else:  # 1 -> 1.5 falls to 0.1, 2.0 rises to 5.0
        losses = [1.0 - 0.15 * a for a in inside] + [0.1, 5.0]
    paths = pd.DataFrame(curve_rows(losses, alphas, start_state="s.pt", end_state="e.pt"))
    info = find_barrier(paths, ShapeThresholds())
    assert not info["has_barrier"] and info["label"] == "NB"
    assert info["delta"] == 0.0
