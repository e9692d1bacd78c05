"""E5's has-barrier branch, every time: a parent whose path is known to rise, thresholds that make any
interior rise a barrier, and the steps the workflow takes (plan → train → interpolate → barrier-init →
the barrier-init run's settings and θ₀).

tests/configs/mini.yaml accepts either outcome for its E5 parent, and the paper-scale DAG test forces the
branch with `testing.barrier_alpha` (an assumed α*). Here α* is measured: it must be the top of the largest
rise of the parent's own curve, computed below straight from the README's rule, and the states must sit at
α* and α* ∓ offset with a non-default offset.

Why the branch is certain at this scale: the parent starts from the base run's minimum and is trained
away with a large learning rate that then decays, so its path leaves one low point, climbs, and falls into
another (Δ ≈ 0.1 at the time of writing, against a threshold of 0: barrier_tol = barrier_rel = 0).
CPU training is bit-deterministic, so the curve is the same on every run of the test.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from conftest import load_tensors, run_dict
from linpath.cli import commands as cli
from linpath.study.plan import Plan, as_json
from linpath.foundations.hparams import RunSpec
from linpath.engine.train import train

OFFSET = 0.2  # not the CLI default (0.1), so a lost offset shows


def rule_alpha_star(alphas: np.ndarray, losses: np.ndarray) -> tuple[float, float]:
    """(Δ, α*) by the README's definition: Δ = max over i < j of L_j − L_i, α* = α_j of the first pair
    that attains it. Written out pair by pair, independent of linpath.paths.shapes."""
    best, at = 0.0, None
    for j in range(len(losses)):
        for i in range(j):
            if losses[j] - losses[i] > best:
                best, at = losses[j] - losses[i], j
    return best, (float(alphas[at]) if at is not None else float("nan"))


@pytest.fixture(scope="module")
def e5(tmp_path_factory):
    root = tmp_path_factory.mktemp("e5")
    base = run_dict("mlp", train={"epochs": 3, "lr": 0.1})
    base.pop("name")
    config = {
        "results": str(root / "results"), "seeds": [0], "base": base,
        # test thresholds: any interior rise is a barrier
        "shapes": {"barrier_tol": 0.0, "barrier_rel": 0.0, "barrier_offset": OFFSET},
        "settings": {
            "base": {"experiment": "E2"},
            "parent": {"experiment": "E9", "baseline": "base",
                       "run": {"init": {"source": "@base/final.pt"},
                               "train": {"lr": 0.5, "weight_decay": 0, "epochs": 4, "milestones": [2, 3],
                                         "gamma": 0.1}}},
            "barrier_at": {"experiment": "E5", "baseline": "parent",
                           "run": {"init": {"source": "@barrier:parent/at"}, "train": {"epochs": 1}}},
        },
    }
    plan = Plan(config)
    layout = plan.layout
    base_id, parent_id, child_id = (plan.run_of(s, 0) for s in ("base", "parent", "barrier_at"))
    for run_id in (base_id, parent_id):
        train(RunSpec.from_dict(plan.resolve(run_id)), layout.run_dir(run_id), progress=False)
    assert cli.main(["interpolate", "--run", str(layout.run_dir(parent_id)), "--out", str(layout.sweep(parent_id)),
                     "--no-progress", "--threads", "1"]) == 0
    # barrier-init as the workflow's barrier_init rule calls it: offset and thresholds from the config
    assert cli.main(["barrier-init", "--sweep", str(layout.sweep(parent_id)),
                     "--out", str(layout.barrier_dir(parent_id)), "--offset", str(config["shapes"]["barrier_offset"]),
                     "--thresholds-json", as_json(plan.thresholds())]) == 0
    info = yaml.safe_load(layout.barrier_yaml(parent_id).read_text())
    return plan, parent_id, child_id, info


def test_the_parent_has_a_measured_barrier_at_the_rules_position(e5):
    plan, parent_id, _, info = e5
    sweep = pd.read_parquet(plan.layout.sweep(parent_id))
    curve = sweep.query("path == 'full' and start == 'init' and split == 'train' and bn_mode == 'interpolate'")
    curve = curve.sort_values("alpha")
    delta, alpha_star = rule_alpha_star(curve["alpha"].to_numpy(), curve["loss"].to_numpy())
    assert info["has_barrier"] is True and info["reason"] == "barrier", "measured, not assumed"
    assert 0 < alpha_star < 1 and delta > 0
    assert info["alpha_star"] == pytest.approx(alpha_star, abs=1e-12)
    assert info["delta"] == pytest.approx(delta) and info["barrier_threshold"] == 0.0
    assert info["label"] == "B" and "max(0, 0*|L(0)-L(1)|)" in info["label_rule"]


def test_the_states_sit_at_alpha_star_and_the_offset_either_side(e5):
    plan, parent_id, _, info = e5
    layout = plan.layout
    a = info["alpha_star"]
    assert info["offset"] == OFFSET
    expected = {"before": max(0.0, a - OFFSET), "at": a, "after": min(1.0, a + OFFSET)}
    assert info["alphas"] == pytest.approx(expected)
    start = load_tensors(layout.run_file(parent_id, "init"))
    end = load_tensors(layout.run_file(parent_id, "final"))
    for point, alpha in expected.items():
        state = load_tensors(layout.barrier_state(parent_id, point))
        for key, value in state.items():
            if value.is_floating_point():
                want = (1 - alpha) * start[key].double() + alpha * end[key].double()
                assert torch.allclose(value.double(), want, rtol=1e-6, atol=1e-6), (point, key)
            else:
                assert torch.equal(value, end[key]), (point, key)


def test_the_barrier_init_run_is_planned_and_starts_at_the_barrier(e5):
    plan, parent_id, child_id, info = e5
    layout = plan.layout
    assert plan.runs[child_id].barrier_from == parent_id
    assert plan.skip_reason(child_id, {}, {parent_id: info}) is None
    resolved = plan.resolve(child_id)
    assert resolved["init"]["source"] == str(layout.barrier_state(parent_id, "at"))
    train(RunSpec.from_dict(resolved), layout.run_dir(child_id), progress=False)
    theta0, at = load_tensors(layout.run_file(child_id, "init")), load_tensors(layout.barrier_state(parent_id, "at"))
    assert list(theta0) == list(at)
    for key in at:
        assert torch.equal(theta0[key], at[key]), key
    # without a barrier the same run is skipped, with the parent's reason
    assert "no barrier on the path of" in plan.skip_reason(child_id, {}, {parent_id: {**info, "has_barrier": False}})
