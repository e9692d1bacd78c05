"""Recomputed BN statistics are estimated in batches of the run's own train.batch_size (what its BN layers
kept statistics of while training), over `bn_subset` training images, in every job that recomputes them
(paths, instability pairs, planes); and the instability table says which statistics scored the ends.

A real BN ResNet (width 4) trained on the digits; the reference is torch.optim.swa_utils.update_bn."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch.optim.swa_utils import update_bn

from linpath.engine import data, models
from linpath.engine.objective import strict_fp32
from linpath.engine.train import evaluate
from linpath.foundations.hparams import InstabilitySpec, PlaneSpec, RunSpec, SweepSpec
from linpath.foundations.io import load_state
from linpath.paths.lmc import END_STATISTICS, instability_table, sweep_pairs
from linpath.paths.planes import plane_run
from linpath.paths.sweeps import interpolate_run
from linpath.report.lmc_figures import instability_figure


def recomputed(run_dir, state: dict, batch: int, subset: int) -> tuple[float, float]:
    """Test loss and accuracy of `state` with BN statistics from update_bn over batches of `batch`."""
    spec = RunSpec.from_yaml(run_dir / "run.yaml")
    prep = data.prepare(spec.data)
    model = models.build(spec.model)
    model.load_state_dict(state)
    with strict_fp32():
        update_bn(list(prep.train_x[:subset].split(batch)), model)
    return evaluate(model, prep.test_x, prep.test_y, spec.train.loss)


def lerp(a: dict, b: dict, alpha: float) -> dict:
    return {k: torch.lerp(a[k].float(), b[k].float(), alpha) if b[k].is_floating_point() else b[k] for k in b}


def test_a_sweep_recomputes_bn_statistics_in_the_runs_training_batches(trained_resnet, tmp_path):
    run_dir, spec, _ = trained_resnet
    batch = spec.train.batch_size
    assert batch == 64
    settings = SweepSpec(alphas="0.5,1", groups=False, bn_modes=["recompute"], splits=["test"], bn_subset=4 * batch,
                         device="cpu")
    frame = interpolate_run(run_dir, tmp_path / "cache", settings).set_index("alpha")
    start, end = load_state(run_dir / "init.pt"), load_state(run_dir / "final.pt")
    for alpha in (0.5, 1.0):
        want = recomputed(run_dir, lerp(start, end, alpha), batch, 4 * batch)
        one_batch = recomputed(run_dir, lerp(start, end, alpha), 4 * batch, 4 * batch)
        assert frame.loc[alpha, "loss"] == pytest.approx(want[0], rel=1e-5), alpha
        assert abs(want[0] - one_batch[0]) > 10 * 1e-5 * want[0], "the batch size must matter for this to test it"


def test_a_plane_recomputes_in_the_runs_training_batches(trained_resnet, tmp_path):
    run_dir, spec, _ = trained_resnet
    plane = PlaneSpec.from_config({}, {"setting": "x", "points": 2, "range": [0.0, 1.0], "bn_mode": "recompute",
                                       "splits": ["test"], "bn_subset": 128, "device": "cpu"}, "plane")
    frame = plane_run(run_dir, ["init", f"final={run_dir / 'final.pt'}", "epoch:1"], tmp_path / "cache", plane,
                      tmp_path, {})
    at_b = frame[(frame["kind"] == "grid") & (frame["alpha"] == 1.0) & (frame["beta"] == 0.0)]
    want = recomputed(run_dir, load_state(run_dir / "final.pt"), spec.train.batch_size, 128)
    assert at_b["loss"].iloc[0] == pytest.approx(want[0], rel=1e-5)


@pytest.fixture(scope="module")
def pair_table(trained_resnet, tmp_path_factory):
    """A line measured in both BN modes between the run's epoch-1 state and its final state (two ends)."""
    run_dir, _, _ = trained_resnet
    other = tmp_path_factory.mktemp("epoch1")
    (other / "run.yaml").write_bytes((run_dir / "run.yaml").read_bytes())
    (other / "final.pt").write_bytes((run_dir / "epoch_1.pt").read_bytes())
    spec = InstabilitySpec.from_config({"alphas": "0:1:3", "bn_subset": 128, "device": "cpu"})
    paths = sweep_pairs([other, run_dir], tmp_path_factory.mktemp("cache"), spec)
    for key, value in {"setting": "base", "experiment": "E2", "seed": 0, "pair_kind": "spawn", "pair": "k1",
                       "spawn_epoch": 1, "run_id": "r", "status": "measured", "status_reason": ""}.items():
        paths[key] = value
    return paths, instability_table(paths, 0.02), other


def test_the_instability_table_says_which_statistics_scored_the_ends(pair_table, trained_resnet):
    paths, table, other = pair_table
    run_dir, spec, _ = trained_resnet
    rows = table[table["split"] == "test"].set_index("bn_mode")
    last = pd.read_parquet(run_dir / "metrics.parquet").iloc[-1]
    # interpolate: the end is the trained network itself
    assert rows.loc["interpolate", "accuracy_b"] == pytest.approx(last["test_acc"])
    # recompute: the same state scored with recomputed statistics (batches of train.batch_size)
    curve = paths[(paths["bn_mode"] == "recompute") & (paths["split"] == "test")].set_index("alpha")
    want = recomputed(run_dir, load_state(run_dir / "final.pt"), spec.train.batch_size, 128)
    assert curve.loc[1.0, "loss"] == pytest.approx(want[0], rel=1e-5)
    assert curve.loc[1.0, "loss"] != pytest.approx(last["test_loss"], rel=1e-4), "so the end rows differ by mode"
    assert dict(zip(table["bn_mode"], table["end_statistics"])) == END_STATISTICS
    assert "recomputed" in END_STATISTICS["recompute"] and "own" in END_STATISTICS["interpolate"]
    fig, _ = instability_figure(table, paths)
    title = fig._suptitle.get_text()
    assert all(text in title for text in END_STATISTICS.values())
