"""Random planes (linpath.paths.planes, Li et al. 2018): filter-normalised Gaussian directions around one
state, the plane θ_c + a·d1 + b·d2 and the line θ_c + a·d1, in both BN modes, as the default config plans them.

Real models (the MLP, VGG-11 and ResNet-18 of linpath.engine.models), a ResNet trained on the digits,
the default config's own plan.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import run_dict
from linpath.engine import models
from linpath.engine.train import evaluate, resolve
from linpath.foundations.hparams import PlaneSpec, RunSpec, SettingsError
from linpath.foundations.io import load_state
from linpath.paths.evaluator import tensor_kinds
from linpath.paths.planes import filter_directions, plane_job, random_states

REPO = Path(__file__).resolve().parents[1]

MODELS = {
    "mlp": {"arch": "mlp", "hidden": [16, 12]},
    "vgg11": {"arch": "vgg11", "width": 8},
    "vgg11_nobn": {"arch": "vgg11", "width": 8, "batchnorm": False},
    "resnet18": {"arch": "resnet18", "width": 4},
}


def centre_of(name: str, digits) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """A model of the digits' shape and a state of it whose every tensor is non-trivial: weights from the
    init, BN statistics and affine parameters moved off their defaults, one filter of each weight zeroed."""
    spec = resolve(RunSpec.from_dict({**run_dict("mlp"), "model": dict(MODELS[name])}), digits)
    torch.manual_seed(5)
    model = models.build(spec.model)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for key, value in state.items():
        if value.is_floating_point():
            value.add_(0.1 * torch.rand_like(value))  # running_var stays positive
    for key, kind in tensor_kinds(model).items():
        if kind == "weights" and state[key].dim() > 1:
            state[key][-1].zero_()
    return model, state


@pytest.mark.parametrize("name", list(MODELS))
def test_every_filter_of_a_direction_has_the_norm_of_its_filter_in_the_centre(name, digits):
    model, centre = centre_of(name, digits)
    kinds = tensor_kinds(model)
    direction = filter_directions(kinds, centre, seed=3)
    assert direction.keys() == centre.keys()
    filtered = [k for k, kind in kinds.items() if kind == "weights" and centre[k].dim() > 1]
    shapes = {centre[k].dim() for k in filtered}
    assert shapes == ({2} if name == "mlp" else {2, 4})  # linear rows, and conv output channels
    for key in filtered:
        d, c = direction[key], centre[key]
        assert d.shape == c.shape and d.dtype == c.dtype
        # A filter is the slice of one output channel (conv: out x in x k x k) / one row (linear: out x in).
        got, want = d.flatten(1).double().norm(dim=1), c.flatten(1).double().norm(dim=1)
        assert torch.allclose(got, want, rtol=1e-5, atol=0), key
        assert torch.count_nonzero(d[-1]) == 0  # the centre's zero filter stays zero
        # Not the centre rescaled: a random direction, nearly orthogonal to the centre's filters.
        cos = torch.nn.functional.cosine_similarity(d[0].flatten().double(), c[0].flatten().double(), dim=0)
        assert abs(cos.item()) < 0.99, key
    if name == "mlp":  # rows, not columns: the norms per input of the first layer are not the centre's
        key = filtered[0]
        per_input = direction[key].transpose(0, 1).flatten(1).double().norm(dim=1)
        assert not torch.allclose(per_input, centre[key].transpose(0, 1).flatten(1).double().norm(dim=1), rtol=1e-3)


@pytest.mark.parametrize("name", list(MODELS))
def test_bias_and_batchnorm_entries_of_a_direction_are_zero(name, digits):
    model, centre = centre_of(name, digits)
    kinds = tensor_kinds(model)
    direction = filter_directions(kinds, centre, seed=3)
    zero = [k for k in centre if not (kinds[k] == "weights" and centre[k].dim() > 1)]
    assert any(k.endswith("bias") for k in zero)
    if name in ("vgg11", "resnet18"):
        assert {kinds[k] for k in zero} == {"weights", "bn_affine", "bn_stats", "counter"}
        assert any(k.endswith("running_var") for k in zero)
    else:
        assert "bn_stats" not in {kinds[k] for k in zero}
    for key in zero:
        assert torch.count_nonzero(direction[key]) == 0, key
    # The states B = centre + d1, C = centre + d2 leave those tensors exactly at the centre's values.
    b, c, geometry = random_states(model, centre, [1, 2])
    for key in zero:
        assert torch.equal(b[key], centre[key]) and torch.equal(c[key], centre[key]), key
    assert geometry["norm_ba"] > 0 and geometry["norm_ca"] > 0 and abs(geometry["cos_ba_ca"]) < 0.2


def test_the_same_seed_draws_the_same_direction_and_another_seed_another(digits):
    model, centre = centre_of("resnet18", digits)
    kinds = tensor_kinds(model)
    first, again, other = (filter_directions(kinds, centre, s) for s in (7, 7, 8))
    assert all(torch.equal(first[k], again[k]) for k in centre)
    moved = [k for k in centre if torch.count_nonzero(first[k])]
    assert moved and all(not torch.equal(first[k], other[k]) for k in moved)


def random_spec(**own) -> PlaneSpec:
    return PlaneSpec.from_config({}, {"setting": "x", "states": ["final"], "directions": "random",
                                      "direction_seeds": [1, 2], "range": [-1.0, 1.0], "points": 5,
                                      "line_points": 9, "bn_subset": 64, **own}, "planes.x")


@pytest.fixture(scope="module", params=["interpolate", "recompute"])
def random_plane(request, trained_resnet, tmp_path_factory):
    """The random plane and line of a trained BN ResNet around its final state, in one BN mode."""
    run, _, _ = trained_resnet
    tmp = tmp_path_factory.mktemp("random_plane")
    spec = random_spec(bn_mode=request.param)
    frame, summary = plane_job(run, [run], [f"final={run / 'final.pt'}"], tmp / "cache", spec, tmp,
                               {"plane": "r", "seed": 0, "bn_mode": request.param})
    return request.param, spec, frame, summary, tmp / "cache"


def centre_scores(run: Path, cache: Path, mode: str) -> dict[str, float]:
    """The centre's loss per split, computed apart from the plane machinery: the model loaded with the final
    state (recompute: its BN statistics recomputed by torch.optim.swa_utils.update_bn on the same images)."""
    from linpath.paths.sweeps import run_eval_splits

    spec = RunSpec.from_yaml(run / "run.yaml")
    model = models.build(spec.model)
    model.load_state_dict(load_state(run / "final.pt"))
    splits = run_eval_splits(run, cache)
    if mode == "recompute":
        train = next(s for s in splits if s.name == "train")
        batches = list(train.x[:64].split(spec.train.batch_size))
        torch.optim.swa_utils.update_bn(batches, model)
    return {s.name: evaluate(model, s.x, s.y, spec.train.loss)[0] for s in splits}


def test_the_random_plane_at_its_origin_is_the_centre(random_plane, trained_resnet):
    mode, spec, frame, summary, cache = random_plane
    assert "5x5 grid and a line of 9 points" in summary
    assert (frame["directions"] == "random").all() and set(frame["direction_seed_1"]) == {1}
    assert set(frame["direction_seed_2"]) == {2} and (frame["bn_mode"] == mode).all()
    grid = frame[frame["kind"] == "grid"]
    assert len(grid) == 5 * 5 * 2 and set(grid["alpha"]) == set(grid["beta"]) == {-1.0, -0.5, 0.0, 0.5, 1.0}
    anchors = frame[frame["kind"] == "anchor"]
    assert list(anchors["label"]) == ["final"] and (anchors[["alpha", "beta"]] == 0).all(axis=None)
    assert not (frame["kind"] == "trajectory").any()
    assert frame["state_b"].iloc[0] == "d1 (seed 1)" and frame["state_c"].iloc[0] == "d2 (seed 2)"
    origin = grid[(grid["alpha"] == 0) & (grid["beta"] == 0)].set_index("split")["loss"]
    for split, loss in centre_scores(trained_resnet[0], cache, mode).items():
        assert origin[split] == pytest.approx(loss, rel=1e-4), split
    # A trained network sits in a valley of its random plane: a full filter-sized step raises the loss.
    train = grid[grid["split"] == "train"].set_index(["alpha", "beta"])["loss"]
    corners = [train[(a, b)] for a in (-1.0, 1.0) for b in (-1.0, 1.0)]
    assert min(corners) > train[(0.0, 0.0)]


def test_the_random_line_is_the_planes_b_zero_row(random_plane):
    _, spec, frame, _, _ = random_plane
    line = frame[frame["kind"] == "line"]
    assert sorted(set(line["alpha"])) == spec.line() and len(line) == 9 * 2 and (line["beta"] == 0).all()
    row = frame[(frame["kind"] == "grid") & (frame["beta"] == 0.0)]
    shared = line[line["alpha"].isin(set(row["alpha"]))]
    assert len(shared) == len(row) == 5 * 2
    cols = ["alpha", "split", "loss", "accuracy"]
    pd.testing.assert_frame_equal(shared[cols].sort_values(["split", "alpha"]).reset_index(drop=True),
                                  row[cols].sort_values(["split", "alpha"]).reset_index(drop=True))
    # The other rows are other lines: b moves the network.
    assert not np.allclose(frame[(frame["kind"] == "grid") & (frame["beta"] == 1.0)]["loss"].to_numpy(),
                           row["loss"].to_numpy())


def test_the_random_plane_figure_draws_the_line_beside_the_contours(random_plane):
    import matplotlib.pyplot as plt

    from linpath.report.lmc_figures import plane_figure

    mode, _, frame, _, _ = random_plane
    fig, grid = plane_figure(frame)
    axes = fig.axes
    drawn = {line.get_gid(): line for ax in axes for line in ax.get_lines() if line.get_gid()}
    for split in ("train", "test"):
        curve = frame[(frame["kind"] == "line") & (frame["split"] == split)].sort_values("alpha")
        plotted = drawn[f"line|0|{split}|loss"]
        assert np.allclose(plotted.get_xdata(), curve["alpha"]) and np.allclose(plotted.get_ydata(), curve["loss"])
    title = fig.get_suptitle()
    assert "random plane r" in title and f"BN {mode}" in title and "Li et al. 2018" in title
    assert not any("trajectory" in str(t.get_text()) for ax in axes if ax.get_legend()
                   for t in ax.get_legend().get_texts())
    assert len(grid) == 5 * 5 * 2
    plt.close(fig)


@pytest.mark.parametrize("own, words", [
    ({"states": ["init", "final", "other"]}, "planes.x.states: a random plane"),
    ({"direction_seeds": [4, 4]}, "planes.x.direction_seeds must be two different seeds"),
    ({"direction_seeds": [4]}, "planes.x.direction_seeds"),
    ({"line_points": 1}, "planes.x.line_points must be >= 2"),
    ({"directions": "pca"}, "planes.x.directions must be one of"),
])
def test_a_random_plane_with_bad_settings_is_refused_naming_the_setting(own, words):
    with pytest.raises(SettingsError, match=words.replace(".", r"\.")):
        random_spec(**own)


def test_the_default_config_plans_the_spiral_mlps_random_plane_and_prices_it():
    from linpath.study.config import load_config
    from linpath.study.cost import estimate
    from linpath.study.lmc_plan import LmcPlan
    from linpath.study.plan import Plan

    files = [str(REPO / "config" / "config.yaml")]
    config = load_config(files)
    plan = Plan(config)
    lmc = LmcPlan(plan)
    random = {key: job for key, job in lmc.planes.items() if job.spec.random}
    assert [(name, job.setting) for (name, _), job in random.items()] == [("mlp_spiral_random", "mlp_spiral")]
    (name, run_id), job = next(iter(random.items()))
    final = str(plan.layout.run_file(run_id, "final"))
    assert job.states == (f"final={final}",) and job.reads == (run_id,)
    assert lmc.plane_args(name, run_id).count("--state ") == 1
    assert len(set(job.spec.direction_seeds)) == 2 and job.spec.range[0] < 0 < job.spec.range[1]
    assert 0.0 in job.spec.grid() and 0.0 in job.spec.line()
    assert str(plan.layout.figure(f"plane_{name}")) in lmc.targets()
    assert str(lmc.plane_file(name, run_id)) in lmc.plane_files()
    # `linpath plan` prices the grid and the line.
    est = estimate(config, files)
    states_points = sum(j.spec.points**2 for j in lmc.planes.values() if not j.spec.random)
    assert est.rules["plane"].path_points == states_points + job.spec.points**2 + job.spec.line_points
    assert est.rules["plane"].jobs == len(lmc.planes)


def test_linpath_plane_writes_a_random_plane_and_refuses_three_states_for_it(trained_resnet, tmp_path, capsys):
    import json

    from linpath.cli import commands as cli

    run, _, _ = trained_resnet
    spec = json.dumps({"directions": "random", "range": [-1.0, 1.0], "points": 3, "line_points": 5,
                       "direction_seeds": [4, 9]})
    out = tmp_path / "random.parquet"
    base = ["plane", "--run", str(run), "--eval-cache", str(tmp_path / "cache"), "--spec-json", spec,
            "--meta-json", json.dumps({"plane": "r", "seed": 0}), "--out", str(out), "--no-progress"]
    code = cli.main([*base[:3], "--state", "init", "--state", f"final={run / 'final.pt'}", "--state", "other",
                     *base[3:]])
    assert code != 0 and "--state: give one state (the centre of a random plane), got 3" in capsys.readouterr().err
    assert not out.exists()
    assert cli.main([*base[:3], "--state", f"final={run / 'final.pt'}", *base[3:]]) == 0
    frame = pd.read_parquet(out)
    assert set(frame["kind"]) == {"grid", "line", "anchor"} and (frame["directions"] == "random").all()
    assert set(frame["direction_seed_1"]) == {4} and set(frame["direction_seed_2"]) == {9}
    assert "3x3 grid and a line of 5 points" in capsys.readouterr().out
