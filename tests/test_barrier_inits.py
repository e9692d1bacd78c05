"""The barrier point of a path and the states written around it (linpath.paths.barrier): the threshold
and files find_barrier reports, a path of one point, the split a barrier init reads, and dtypes and
counters of an interpolated state."""

from __future__ import annotations

import pandas as pd
import torch

from linpath.paths.barrier import find_barrier, interpolate_state, write_barrier_inits
from linpath.paths.shapes import ShapeThresholds

ALPHAS = [0.0, 0.25, 0.5, 0.75, 1.0]
FALLING = [2.0, 1.5, 1.0, 0.5, 0.25]
BUMP = [2.0, 1.0, 1.75, 0.5, 0.25]


def barrier_rows(losses, alphas, split="train", start_state="s.pt", end_state="e.pt"):
    return [{"path": "full", "split": split, "start": "init", "bn_mode": "interpolate", "alpha": a, "loss": l,
             "start_state": start_state, "end_state": end_state} for a, l in zip(alphas, losses)]


def test_find_barrier_reports_its_threshold_and_the_files():
    paths = pd.DataFrame(barrier_rows([2.0, 1.0, 1.5, 0.5, 0.25], ALPHAS))
    info = find_barrier(paths, ShapeThresholds(barrier_tol=0.125, barrier_rel=0.0))
    assert info["barrier_threshold"] == 0.125 and info["delta"] == 0.5 and info["has_barrier"] is True
    assert (info["start_state"], info["end_state"]) == ("s.pt", "e.pt")
    assert info["rise_start_alpha"] == 0.25 and info["alpha_star"] == 0.5


def test_find_barrier_on_a_path_of_one_point():
    info = find_barrier(pd.DataFrame(barrier_rows([2.0], [0.5])), ShapeThresholds())
    assert info["has_barrier"] is False and info["delta"] == 0.0
    assert (info["start_state"], info["end_state"]) == ("s.pt", "e.pt")


def test_barrier_inits_on_the_split_asked_for(tmp_path):
    start = {"w": torch.zeros(3, dtype=torch.float64), "h": torch.zeros(2, dtype=torch.float16),
             "n": torch.tensor(1)}
    end = {"w": torch.ones(3, dtype=torch.float64), "h": torch.ones(2, dtype=torch.float16), "n": torch.tensor(7)}
    torch.save(start, tmp_path / "s.pt")
    torch.save(end, tmp_path / "e.pt")
    s, e = str(tmp_path / "s.pt"), str(tmp_path / "e.pt")
    paths = pd.DataFrame(barrier_rows(FALLING, ALPHAS, "train", s, e) + barrier_rows(BUMP, ALPHAS, "test", s, e))
    assert write_barrier_inits(paths, tmp_path / "train")["has_barrier"] is False
    info = write_barrier_inits(paths, tmp_path / "test", split="test", offset=0.25)
    assert info["has_barrier"] is True and info["alphas"] == {"before": 0.25, "at": 0.5, "after": 0.75}
    at = torch.load(tmp_path / "test" / "at.pt", weights_only=True)
    assert at["w"].dtype == torch.float64 and at["h"].dtype == torch.float16, "each tensor keeps its dtype"
    assert torch.equal(at["w"], torch.full((3,), 0.5, dtype=torch.float64))
    assert torch.equal(at["n"], torch.tensor(7))


def test_interpolate_state_keeps_dtypes_and_copies_counters():
    start = {"w": torch.zeros(2, dtype=torch.float64), "n": torch.tensor(3)}
    end = {"w": torch.full((2,), 4.0, dtype=torch.float64), "n": torch.tensor(9)}
    mid = interpolate_state(start, end, 0.25)
    assert mid["w"].dtype == torch.float64 and torch.equal(mid["w"], torch.ones(2, dtype=torch.float64))
    assert torch.equal(mid["n"], end["n"]) and mid["n"].data_ptr() != end["n"].data_ptr(), "a copy, not the tensor"
