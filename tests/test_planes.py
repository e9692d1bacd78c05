"""Loss planes (linpath.paths.planes): the grid is the path evaluator's lines shifted along C − A, a grid point
scores as the network loaded with A + α(B−A) + β(C−A), the projection recovers affine coordinates, and
a plane of a run that did not train says so instead of failing.

Real data (the digits), real models (an MLP, a BN ResNet of width 4), states from real training.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from conftest import run_dict, run_spec, run_spec_with
from linpath.engine import models
from linpath.foundations.hparams import PlaneSpec
from linpath.foundations.outcome import Outcome, write_outcome
from linpath.paths.evaluator import EvalSplit, PathEvaluator
from linpath.paths.planes import (COLUMNS, affine_note, filter_norms, load_any_state, log_range, moving_keys, plane_geometry,
                                  plane_grid, plane_job, project, random_note, trajectory_states, write_planes)
from linpath.engine.train import evaluate, train

ALPHAS = np.array([-0.5, 0.0, 0.25, 1.0, 1.5])


def random_state(spec, seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return {k: v.clone() for k, v in models.build(spec.model).state_dict().items()}


def evaluator_of(spec, prep, **kwargs) -> PathEvaluator:
    splits = [EvalSplit("train", prep.train_x[:200], prep.train_y[:200]),
              EvalSplit("test", prep.test_x[:100], prep.test_y[:100])]
    return PathEvaluator(models.build(spec.model), splits, spec.train.loss, batch_size=64, **kwargs)


@pytest.fixture(scope="module")
def mlp_states(digits):
    """An MLP's A, B, C: its init, a trained state and another init."""
    from linpath.engine.train import resolve

    spec = resolve(run_spec("mlp"), digits)
    a, c = random_state(spec, 1), random_state(spec, 2)
    b = {k: v + 0.3 * torch.randn_like(v) for k, v in a.items()}
    return spec, a, b, c


@pytest.fixture(scope="module")
def resnet_run(tmp_path_factory):
    """A BN ResNet (width 4) trained for two epochs: init, final and one saved epoch."""
    out = tmp_path_factory.mktemp("planes") / "resnet"
    spec = run_spec_with("resnet18_w4", data={"subset": 0.2}, train={"epochs": 2, "save_epochs": [1]})
    train(spec, out, progress=False)
    return out, spec


@pytest.mark.parametrize("mode", ["interpolate", "recompute"])
def test_the_beta_zero_row_is_the_evaluators_line_from_a_to_b(mode, resnet_run, digits):
    from linpath.foundations.io import load_state
    from linpath.engine.train import resolve

    run, spec = resnet_run
    spec = resolve(spec, digits)
    a, b = load_state(run / "init.pt"), load_state(run / "final.pt")
    c = random_state(spec, 7)
    bn = digits.train_x[:64].clone()
    grid = plane_grid(evaluator_of(spec, digits, bn_data=bn), a, b, c, ALPHAS, [0.0, 0.5], mode)
    line = evaluator_of(spec, digits, bn_data=bn).sweep(a, b, ALPHAS, bn_mode=mode)
    row = grid[grid["beta"] == 0.0].reset_index(drop=True)
    pd.testing.assert_frame_equal(row[["alpha", "split", "loss", "accuracy"]], line[["alpha", "split", "loss", "accuracy"]])
    # The other row is a different line: the plane is not the same line twice.
    other = grid[grid["beta"] == 0.5]
    assert not np.allclose(other["loss"].to_numpy(), row["loss"].to_numpy())


def test_a_grid_point_scores_as_the_network_loaded_there(mlp_states, digits):
    spec, a, b, c = mlp_states
    alpha, beta = 0.25, -0.5
    grid = plane_grid(evaluator_of(spec, digits), a, b, c, [alpha], [beta])
    point = {k: a[k] + alpha * (b[k] - a[k]) + beta * (c[k] - a[k]) for k in a}
    model = models.build(spec.model)
    model.load_state_dict(point)
    for split, x, y in (("train", digits.train_x[:200], digits.train_y[:200]), ("test", digits.test_x[:100], digits.test_y[:100])):
        loss, acc = evaluate(model, x, y, spec.train.loss)
        got = grid[grid["split"] == split].iloc[0]
        assert got["loss"] == pytest.approx(loss, rel=1e-5) and got["accuracy"] == pytest.approx(acc)
    assert set(grid.columns) >= {"alpha", "beta", "split", "loss", "accuracy", "bn_mode"}


def test_projection_returns_the_anchors_own_coordinates(mlp_states):
    _, a, b, c = mlp_states
    keys = list(a)
    for state, expected in ((a, (0, 0)), (b, (1, 0)), (c, (0, 1))):
        alpha, beta, residual = project(state, a, b, c, keys)
        assert (alpha, beta) == pytest.approx(expected, abs=1e-9)
        assert residual == pytest.approx(0.0, abs=1e-9)


def test_projection_recovers_a_point_and_measures_its_distance_from_the_plane(mlp_states):
    _, a, b, c = mlp_states
    keys = list(a)
    on_plane = {k: a[k] + 0.3 * (b[k] - a[k]) - 0.2 * (c[k] - a[k]) for k in a}
    assert project(on_plane, a, b, c, keys)[:2] == pytest.approx((0.3, -0.2), abs=1e-6)
    torch.manual_seed(3)
    off = {k: v + 0.5 * torch.randn_like(v) for k, v in on_plane.items()}
    alpha, beta, residual = project(off, a, b, c, keys)
    assert 0.1 < residual < 1  # off the plane; most of the offset from A is still in it
    # The least-squares point is the closest: moving its coordinates only increases the distance.
    def distance(x, y):
        return sum(((off[k] - (a[k] + x * (b[k] - a[k]) + y * (c[k] - a[k]))).double() ** 2).sum().item() for k in keys)
    best = distance(alpha, beta)
    assert best <= min(distance(alpha + 0.01, beta), distance(alpha, beta - 0.01))


def test_a_plane_job_writes_the_grid_anchors_and_trajectory(resnet_run, tmp_path):
    run, _ = resnet_run
    spec = PlaneSpec.from_config({}, {"setting": "x", "points": 3, "range": [-0.5, 1.5], "bn_subset": 32}, "plane")
    frame, summary = plane_job(run, [run], ["init", f"final={run / 'final.pt'}", "other"], tmp_path / "cache", spec,
                               tmp_path, {"plane": "p", "seed": 0})
    assert "3x3 grid" in summary
    grid = frame[frame["kind"] == "grid"]
    assert len(grid) == 9 * 2 and set(grid["beta"]) == {-0.5, 0.5, 1.5}
    anchors = frame[frame["kind"] == "anchor"].set_index("label")
    assert list(anchors.index) == ["init", "final", "other_init"]
    trajectory = frame[frame["kind"] == "trajectory"].set_index("label")
    assert list(trajectory.index) == ["init", "epoch_1", "final"] and list(trajectory["epoch"]) == [0, 1, 2]
    assert trajectory.loc["final", ["alpha", "beta"]].tolist() == pytest.approx([1, 0], abs=1e-9)
    assert 0 < trajectory.loc["epoch_1", "residual_rel"] < 1
    assert (frame["status"] == "measured").all() and (frame["norm_ba"] > 0).all()
    assert np.allclose(grid["error"], 1 - grid["accuracy"])
    assert list(frame.columns) == COLUMNS and (frame["status_reason"] == "").all()
    assert anchors[["alpha", "beta", "residual_rel"]].values.tolist() == [[0, 0, 0], [1, 0, 0], [0, 1, 0]]
    assert (set(frame["state_a"]), set(frame["state_b"]), set(frame["state_c"])) == ({"init"}, {"final"}, {"other_init"})
    for split, source in zip(grid["split"], grid["eval_data"]):  # the cached evaluation split each row scored
        assert str(source).startswith(str(tmp_path / "cache" / "digits-")) and str(source).endswith(f"{split}.pt")
    assert (frame["directions"] == "states").all() and frame["direction_seed_1"].isna().all()
    assert summary == (f"3x3 grid, test: loss {grid[grid['split'] == 'test']['loss'].min():.4g}.."
                       f"{grid[grid['split'] == 'test']['loss'].max():.4g}; train: loss "
                       f"{grid[grid['split'] == 'train']['loss'].min():.4g}..{grid[grid['split'] == 'train']['loss'].max():.4g}")


def test_a_plane_of_a_run_that_did_not_train_is_one_skipped_row(tmp_path):
    run = tmp_path / "runs" / "failed"
    write_outcome(Outcome("diverged", kind="diverged", reason="training loss nan in epoch 2", run="failed"), run)
    spec = PlaneSpec.from_config({}, {"setting": "x"}, "plane")
    frame, summary = plane_job(run, [run], ["init", "final=x", "other"], tmp_path, spec, tmp_path, {"plane": "p"})
    assert len(frame) == 1 and frame["status"].iloc[0] == "skipped"
    assert "training loss nan in epoch 2" in frame["status_reason"].iloc[0] and "diverged" in summary
    assert list(frame.columns) == COLUMNS and (frame["kind"].iloc[0], frame["bn_mode"].iloc[0]) == ("grid", spec.bn_mode)
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'runs' / 'running' / 'outcome.yaml'}: the run has not finished"):
        plane_job(run, [tmp_path / "runs" / "running"], ["init", "final=x", "other"], tmp_path, spec, tmp_path, {})


@pytest.mark.parametrize("points, span", [(15, [-0.2, 1.2]), (29, [-0.2, 1.2]), (5, [-0.5, 1.5]), (7, [-1.0, 2.0])])
def test_the_grid_holds_zero_and_one_exactly_and_no_negative_zero(points, span):
    """-0.2 + 1.4 * 2/14 is -2.8e-17 before rounding: rounded it would be stored as α = -0.0."""
    grid = PlaneSpec.from_config({}, {"setting": "x", "points": points, "range": span}, "plane").grid()
    assert 0.0 in grid and 1.0 in grid
    assert all(np.copysign(1.0, v) > 0 for v in grid if v == 0), grid
    assert grid == sorted(grid) and len(set(grid)) == points


@pytest.mark.parametrize("values, log", [
    ([1.0, 20.0], False),  # a span of exactly 20x stays linear
    ([1.0, 20.001], True),
    ([2.0, 30.0], False),  # the ratio decides (15), not the size of the values
    ([0.1, 3.0], True),
    ([0.5, 100.0, 2.0], True),
    ([0.0, 100.0], False),  # a zero (or anything below) cannot be drawn on a log scale
    ([-1.0, 100.0], False),
    ([1.0, float("nan"), float("inf"), 30.0], True),  # only the finite values count
    ([float("nan")], False),
    ([], False),
])
def test_the_colour_scale_is_logarithmic_only_above_a_span_of_20(values, log):
    assert log_range(values) is log


def test_geometry_of_a_plane_and_of_a_degenerate_one():
    a = {"w": torch.zeros(2), "n": torch.tensor(5)}
    b = {"w": torch.tensor([3.0, 0.0]), "n": torch.tensor(7)}
    c = {"w": torch.tensor([1.0, 1.0]), "n": torch.tensor(9)}
    keys = moving_keys(b)
    assert keys == ["w"], "the counter does not move"
    geometry = plane_geometry(a, b, c, keys)
    assert geometry == pytest.approx({"norm_ba": 3.0, "norm_ca": 2 ** 0.5, "cos_ba_ca": 2 ** -0.5})
    for flat in (plane_geometry(a, a, c, keys), plane_geometry(a, b, a, keys)):
        assert np.isnan(flat["cos_ba_ca"]), "a direction of length 0 has no angle"
    assert plane_geometry(a, a, c, keys)["norm_ca"] == pytest.approx(2 ** 0.5)
    assert project(a, a, b, c, keys) == (0.0, 0.0, 0.0), "A itself: no offset to divide by"


def test_a_spawn_state_and_a_plain_state_load_as_the_same_weights(tmp_path):
    weights = {"w": torch.arange(3.0)}
    torch.save(weights, tmp_path / "plain.pt")
    torch.save({"epoch": 1, "model": weights, "optimizer": {}, "scheduler": {}}, tmp_path / "spawn_1.pt")
    for name in ("plain.pt", "spawn_1.pt"):
        loaded = load_any_state(tmp_path / name)
        assert loaded.keys() == {"w"} and torch.equal(loaded["w"], weights["w"]), name


def test_the_notes_state_the_coordinates_the_figure_uses():
    assert affine_note() == "affine coordinates θ(α, β) = A + α(B−A) + β(C−A): A, B, C at (0,0), (1,0), (0,1)"
    assert random_note() == ("θ(a, b) = centre + a·d1 + b·d2, d1 and d2 filter-normalised Gaussian directions "
                             "(Li et al. 2018); biases and BN zero")


def test_a_state_off_the_plane_by_less_than_one_has_its_relative_residual():
    a, b, c = ({"w": torch.tensor(v)} for v in ([0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]))
    assert project({"w": torch.tensor([0.0, 0.0, 0.5])}, a, b, c, ["w"]) == pytest.approx((0.0, 0.0, 1.0))
    assert project({"w": torch.tensor([0.3, 0.0, 0.4])}, a, b, c, ["w"]) == pytest.approx((0.3, 0.0, 0.8))


def test_a_random_planes_corners_are_the_centre_plus_each_direction(digits):
    from linpath.engine.train import resolve
    from linpath.paths.evaluator import tensor_kinds
    from linpath.paths.planes import filter_directions, random_states

    spec = resolve(run_spec_with("resnet18_w4"), digits)
    model = models.build(spec.model)
    centre = {k: v.clone() for k, v in model.state_dict().items()}
    b, c, geometry = random_states(model, centre, [1, 2])
    for corner, seed in ((b, 1), (c, 2)):
        d = filter_directions(tensor_kinds(model), centre, seed)
        for key, value in centre.items():
            assert torch.equal(corner[key], value + d[key] if value.is_floating_point() else value), key
    assert geometry["norm_ba"] > 0 and geometry["norm_ca"] > 0 and abs(geometry["cos_ba_ca"]) < 0.5


def test_the_trajectory_is_init_the_saved_epochs_strictly_inside_and_final(tmp_path):
    from linpath.foundations.layout import RunDir

    run = RunDir(tmp_path / "run")
    run.settings.parent.mkdir(parents=True)
    run.settings.write_text(yaml.safe_dump(run_dict("mlp", train={"epochs": 3, "save_epochs": [0, 1, 2, 3, 5]})))
    pd.DataFrame({"epoch": [0, 1, 3]}).to_parquet(run.metrics, index=False)
    for t in (0, 1, 3, 5):  # epoch 2 was not kept; 0 and 3 are init and final; 5 is past the end
        run.epoch(t).write_bytes(b"")
    assert trajectory_states(run.path) == [("init", 0, run.init), ("epoch_1", 1, run.epoch(1)), ("final", 3, run.final)]


def test_the_planes_table_is_every_plane_file_in_order(tmp_path):
    files = []
    for i, rows in enumerate((2, 3)):
        files.append(tmp_path / f"p{i}.parquet")
        pd.DataFrame({"plane": [f"p{i}"] * rows, "loss": np.arange(rows, dtype=float)}).to_parquet(files[-1], index=False)
    log = tmp_path / "logs" / "planes.log"
    table = write_planes([str(f) for f in files], tmp_path / "planes.parquet", str(log))
    assert list(table["plane"]) == ["p0", "p0", "p1", "p1", "p1"] and list(table.index) == list(range(5))
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "planes.parquet"), table)
    assert log.read_text() == f"2 planes, 5 rows -> {tmp_path / 'planes.parquet'}\n"


def test_filter_norms_are_the_norms_of_each_output_channel():
    weight = torch.tensor([[[3.0, 4.0]], [[0.0, 0.0]], [[1.0, 0.0]]], dtype=torch.float32)
    norms = filter_norms(weight)
    assert norms.dtype == torch.float64 and torch.equal(norms, torch.tensor([5.0, 0.0, 1.0], dtype=torch.float64))
