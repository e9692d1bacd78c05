"""The path evaluator (docs/study.md §1, eq. 1-2): loss and accuracy along linear paths.

Checked against hand computations: closed-form losses of MLPs computed with
plain torch ops, endpoint losses of models loaded directly, the exact state the
evaluator writes for group-wise and parameter-group paths, the fast paths
(prefix reuse, folded BatchNorm) against the plain loop, BatchNorm
recomputation against statistics collected by hand and against torch's own
update_bn, how often each stage runs (once per chunk before the moving group),
and the strict-fp32 settings a sweep runs under. Peak memory: test_path_memory.py.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.optim.swa_utils import update_bn

from conftest import load_tensors, run_spec_with
from linpath.engine import models
from linpath.foundations.hparams import ModelSpec
from linpath.paths.evaluator import (EvalSplit, FoldedTwin, HalvingMaxPool, PathEvaluator, conv_bn_pairs,
                                     tensor_kinds)
from linpath.paths.sweeps import alpha_grid, plan_requests
from linpath.engine.train import evaluate, train

ALPHAS = [-0.25, 0.0, 0.1, 0.35, 0.5, 0.8, 1.0, 1.25]


# --- hand computations -------------------------------------------------------------


def hand_state(start: dict, end: dict, alpha: float, keys) -> dict[str, torch.Tensor]:
    """θ(α) in float64: the keys in `keys` at (1-α)·start + α·end, everything else at end."""
    keys = set(keys)
    return {k: ((1 - alpha) * start[k].double() + alpha * end[k].double()) if k in keys else end[k].double()
            for k in end}


def mlp_logits(state: dict, x: torch.Tensor) -> torch.Tensor:
    """Forward of a linpath MLP by matmuls: flatten, Linear+ReLU per hidden layer, Linear."""
    n = len([k for k in state if k.endswith(".weight")])
    h = x.reshape(len(x), -1).double()
    for i in range(n):
        h = h @ state[f"layers.{i}.weight"].double().T + state[f"layers.{i}.bias"].double()
        if i < n - 1:
            h = torch.where(h > 0, h, torch.zeros_like(h))
    return h


def hand_loss(logits: torch.Tensor, y: torch.Tensor, loss: str) -> tuple[float, float]:
    if loss == "bce":
        z, t = logits.reshape(-1), y.double()
        # log(1 + e^z) - t·z, written stably
        per = torch.clamp(z, min=0) + torch.log1p(torch.exp(-z.abs())) - t * z
        return per.mean().item(), ((z > 0).long() == y).double().mean().item()
    shifted = logits - logits.max(dim=1, keepdim=True).values
    log_probs = shifted - torch.log(torch.exp(shifted).sum(dim=1, keepdim=True))
    per = -log_probs[torch.arange(len(y)), y]
    return per.mean().item(), (logits.argmax(1) == y).double().mean().item()


def loaded(spec_model, state: dict) -> nn.Module:
    model = models.build(spec_model)
    model.load_state_dict(state)
    return model.eval()


def by_alpha(frame: pd.DataFrame, split: str) -> pd.DataFrame:
    return frame[frame["split"] == split].set_index("alpha")


# --- small trained runs of this module -----------------------------------------------


@pytest.fixture(scope="module")
def linear_run(tmp_path_factory):
    """A single linear layer (`hidden: []`) trained on the digits with cross-entropy."""
    out = tmp_path_factory.mktemp("paths") / "linear"
    spec = run_spec_with("mlp", {"hidden": []}, train={"epochs": 1})
    train(spec, out, progress=False)
    return out, spec


@pytest.fixture(scope="module")
def spiral_run(tmp_path_factory):
    """A one-output MLP trained with BCE on a small two-class spiral."""
    out = tmp_path_factory.mktemp("paths") / "spiral"
    spec = run_spec_with("mlp", {"hidden": [8]}, data={"dataset": "spiral", "spiral": {"n_train": 400, "n_test": 200}},
                         train={"epochs": 3, "loss": "bce", "batch_size": 50, "lr": 0.1})
    train(spec, out, progress=False)
    return out, spec


@pytest.fixture(scope="module")
def trained_vgg(tmp_path_factory):
    """VGG-11 with BatchNorm (width 8) trained for one epoch on a quarter of the digits."""
    out = tmp_path_factory.mktemp("paths") / "vgg"
    spec = run_spec_with("mlp", {"arch": "vgg11", "width": 8, "batchnorm": True},
                         data={"subset": 0.25}, train={"epochs": 2, "lr": 0.01})
    train(spec, out, progress=False)
    return out, spec


def splits_of(prep, n_train: int = 300, n_test: int = 150) -> list[EvalSplit]:
    return [EvalSplit("train", prep.train_x[:n_train], prep.train_y[:n_train]),
            EvalSplit("test", prep.test_x[:n_test], prep.test_y[:n_test])]


def states(run_dir) -> tuple[dict, dict]:
    return load_tensors(run_dir / "init.pt"), load_tensors(run_dir / "final.pt")


# --- 1. closed form ------------------------------------------------------------------


def test_hidden_empty_is_one_linear_layer():
    model = models.build(ModelSpec(arch="mlp", hidden=[], in_channels=1, input_size=8))
    assert [type(m) for m in model.layers] == [nn.Linear]
    assert (model.layers[0].in_features, model.layers[0].out_features) == (64, 10)
    assert models.groups(model) == {"layer1": ["layers.0.weight", "layers.0.bias"]}


@pytest.mark.parametrize("which", ["linear-ce", "mlp16-ce", "mlp16-ce-layer1", "mlp16-ce-layer2", "mlp8-bce"])
def test_sweep_matches_closed_form(which, linear_run, spiral_run, trained_mlp, digits):
    if which == "linear-ce":
        run_dir, spec = linear_run
    elif which.startswith("mlp16"):
        run_dir, spec, _ = trained_mlp
    else:
        run_dir, spec = spiral_run
    group = which.split("-")[2] if which.count("-") == 2 else "all"
    loss = spec.train.loss
    if loss == "bce":
        from linpath.engine.data import prepare

        prep = prepare(spec.data)
        splits = [EvalSplit("train", prep.train_x, prep.train_y), EvalSplit("test", prep.test_x, prep.test_y)]
    else:
        splits = splits_of(digits, 600, 359)
    start, end = states(run_dir)
    evaluator = PathEvaluator(models.build(spec.model), splits, loss, batch_size=256)
    frame = evaluator.sweep(start, end, ALPHAS, group=group)
    assert len(frame) == len(ALPHAS) * len(splits)
    keys = list(end) if group == "all" else models.groups(evaluator.model)[group]
    accuracies = set()
    for split in splits:
        got = by_alpha(frame, split.name)
        for alpha in ALPHAS:
            want_loss, want_acc = hand_loss(mlp_logits(hand_state(start, end, alpha, keys), split.x), split.y, loss)
            assert got.loc[alpha, "loss"] == pytest.approx(want_loss, rel=1e-5, abs=1e-5), (split.name, alpha)
            assert got.loc[alpha, "accuracy"] == want_acc, (split.name, alpha)
            accuracies.add(want_acc)
    assert len(accuracies) > 2, "the path must pass through states of different accuracy"


# --- 2. the endpoints are the endpoint models ----------------------------------------


def endpoint_models(evaluator: PathEvaluator, spec_model, start: dict, end: dict, group: str):
    """Models loaded directly with θ(0) (group at start, rest at end) and θ(1) = end."""
    at_zero = dict(end)
    for key in evaluator.moving_keys(group):
        at_zero[key] = start[key]
    return loaded(spec_model, at_zero), loaded(spec_model, end)


@pytest.mark.parametrize("reuse_prefix", [True, False])
@pytest.mark.parametrize("arch", ["resnet", "mlp"])
def test_endpoints_are_exact_without_folding(arch, reuse_prefix, trained_resnet, trained_mlp, digits):
    """θ(0) and θ(1) of the full and every group-wise path score exactly as the models loaded directly
    (BN folding is off for the ResNet; the MLP has no BN, so its default settings are used)."""
    run_dir, spec, _ = trained_resnet if arch == "resnet" else trained_mlp
    start, end = states(run_dir)
    splits = splits_of(digits)
    evaluator = PathEvaluator(models.build(spec.model), splits, "ce", batch_size=128,
                              reuse_prefix=reuse_prefix, fold_bn=arch != "resnet")
    assert evaluator.twin is None
    for group in ["all", *evaluator.groups]:
        frame = evaluator.sweep(start, end, [0.0, 0.5, 1.0], group=group)
        m0, m1 = endpoint_models(evaluator, spec.model, start, end, group)
        for split in splits:
            got = by_alpha(frame, split.name)
            assert (got.loc[0.0, "loss"], got.loc[0.0, "accuracy"]) == evaluate(m0, split.x, split.y, "ce", 128), group
            assert (got.loc[1.0, "loss"], got.loc[1.0, "accuracy"]) == evaluate(m1, split.x, split.y, "ce", 128), group
            assert got.loc[0.5, "loss"] != got.loc[1.0, "loss"]


def test_endpoints_with_folded_batchnorm_are_close(trained_resnet, digits):
    """Folding BN into the convs changes the float rounding: equal to 1e-5, not bit for bit."""
    run_dir, spec, _ = trained_resnet
    start, end = states(run_dir)
    splits = splits_of(digits)
    evaluator = PathEvaluator(models.build(spec.model), splits, "ce", batch_size=128)
    assert evaluator.twin is not None, "the default evaluator folds BN"
    for group in ["all", "stem", "block3", "head"]:
        frame = evaluator.sweep(start, end, [0.0, 1.0], group=group)
        m0, m1 = endpoint_models(evaluator, spec.model, start, end, group)
        for split in splits:
            got = by_alpha(frame, split.name)
            for alpha, model in ((0.0, m0), (1.0, m1)):
                loss, acc = evaluate(model, split.x, split.y, "ce", 128)
                assert got.loc[alpha, "loss"] == pytest.approx(loss, rel=1e-5, abs=1e-6), (group, alpha)
                assert got.loc[alpha, "accuracy"] == acc, (group, alpha)


def test_full_path_endpoints_equal_the_training_metrics(trained_mlp, digits):
    """With the batch size training evaluates with, α=0 / α=1 are metrics.parquet's first / last rows."""
    run_dir, spec, _ = trained_mlp
    metrics = pd.read_parquet(run_dir / "metrics.parquet")
    start, end = states(run_dir)
    splits = [EvalSplit("train", digits.train_x, digits.train_y), EvalSplit("test", digits.test_x, digits.test_y)]
    evaluator = PathEvaluator(models.build(spec.model), splits, "ce", batch_size=1024)
    frame = evaluator.sweep(start, end, [0.0, 1.0])
    for split in ("train", "test"):
        got = by_alpha(frame, split)
        assert got.loc[0.0, "loss"] == metrics[f"{split}_loss"].iloc[0]
        assert got.loc[0.0, "accuracy"] == metrics[f"{split}_acc"].iloc[0]
        assert got.loc[1.0, "loss"] == metrics[f"{split}_loss"].iloc[-1]
        assert got.loc[1.0, "accuracy"] == metrics[f"{split}_acc"].iloc[-1]


# --- 3. a group-wise path moves only its group ---------------------------------------


def live_state(evaluator: PathEvaluator) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in evaluator.model.state_dict().items()}


@pytest.mark.parametrize("fold_bn", [True, False])
def test_group_path_moves_only_its_group(fold_bn, trained_resnet, digits):
    run_dir, spec, _ = trained_resnet
    start, end = states(run_dir)
    assert start["layer2.0.bn1.num_batches_tracked"] != end["layer2.0.bn1.num_batches_tracked"]
    splits = splits_of(digits, 200, 1)[:1]
    evaluator = PathEvaluator(models.build(spec.model), splits, "ce", batch_size=128, fold_bn=fold_bn)
    frame = evaluator.sweep(start, end, [0.0, 0.3], group="block2")  # the model is left at the last α
    state = live_state(evaluator)
    assert all(torch.equal(state[k], evaluator.live[k]) for k in state)
    block2 = set(models.groups(evaluator.model)["block2"])
    kinds = tensor_kinds(evaluator.model)
    moved = 0
    for key, value in state.items():
        if key in block2 and kinds[key] != "counter":
            assert torch.equal(value, torch.lerp(start[key], end[key], 0.3)), key
            assert not torch.equal(value, end[key]), f"{key} did not move"
            moved += 1
        else:
            assert torch.equal(value, end[key]), f"{key} is not in block2 but left the end state"
    assert moved == len([k for k in block2 if kinds[k] != "counter"]) > 10
    # and the loss recorded at α=0.3 is that of exactly this state
    loss, acc = evaluate(loaded(spec.model, state), splits[0].x, splits[0].y, "ce", 128)
    got = by_alpha(frame, "train")
    assert got.loc[0.3, "loss"] == pytest.approx(loss, rel=1e-5) and got.loc[0.3, "accuracy"] == acc


@pytest.mark.parametrize("param_group", ["weights", "bn_affine", "bn_stats"])
@pytest.mark.parametrize("group", ["block2", "all"])
def test_parameter_group_path_moves_only_its_kind(group, param_group, trained_resnet, digits):
    run_dir, spec, _ = trained_resnet
    start, end = states(run_dir)
    evaluator = PathEvaluator(models.build(spec.model), splits_of(digits, 64, 1)[:1], "ce", fold_bn=False)
    evaluator.sweep(start, end, [0.6], group=group, param_group=param_group)
    state = live_state(evaluator)
    kinds = tensor_kinds(evaluator.model)
    owned = set(state) if group == "all" else set(models.groups(evaluator.model)[group])
    should_move = {k for k in owned if kinds[k] == param_group}
    assert should_move and should_move == set(evaluator.moving_keys(group, param_group))
    for key, value in state.items():
        if key in should_move:
            assert torch.equal(value, torch.lerp(start[key], end[key], 0.6)), key
            assert not torch.equal(value, end[key]), f"{key} did not move"
        else:
            assert torch.equal(value, end[key]), key


def test_tensor_kinds_of_a_resnet():
    model = models.build(ModelSpec(arch="resnet18", width=4))
    kinds = tensor_kinds(model)
    assert list(kinds) == list(model.state_dict())
    assert kinds["conv1.weight"] == "weights" and kinds["fc.bias"] == "weights"
    assert kinds["layer1.0.bn2.weight"] == kinds["layer1.0.bn2.bias"] == "bn_affine"
    assert kinds["layer3.0.downsample.1.running_mean"] == kinds["bn1.running_var"] == "bn_stats"
    assert kinds["bn1.num_batches_tracked"] == "counter"
    assert set(kinds.values()) == {"weights", "bn_affine", "bn_stats", "counter"}


def test_plan_requests_only_splits_groups_with_several_kinds():
    resnet = models.build(ModelSpec(arch="resnet18", width=4))
    plan = plan_requests(resnet, "init", "a.pt", "b.pt", groups=True, param_groups=True)
    kinds = [(r.kind, r.group, r.param_group) for r in plan]
    assert kinds[0] == ("full", "all", "all")
    assert ("group", "head", "all") in kinds and not any(k[1] == "head" and k[0] == "param_group" for k in kinds)
    for block in ("stem", "block1", "block2", "block3", "block4"):
        assert {k[2] for k in kinds if k[1] == block and k[0] == "param_group"} == {"weights", "bn_affine", "bn_stats"}
    assert len(plan) == 1 + 6 + 5 * 3
    mlp = models.build(ModelSpec(arch="mlp", hidden=[4], in_channels=1, input_size=8))
    assert [(r.kind, r.group) for r in plan_requests(mlp, "init", "a", "b", groups=True, param_groups=True)] == [
        ("full", "all"), ("group", "layer1"), ("group", "layer2")]


def test_bad_arguments_are_refused(trained_resnet, digits):
    run_dir, spec, _ = trained_resnet
    start, end = states(run_dir)
    evaluator = PathEvaluator(models.build(spec.model), splits_of(digits, 8, 1)[:1], "ce")
    with pytest.raises(ValueError, match="unknown group 'block9'"):
        evaluator.sweep(start, end, [0.5], group="block9")
    with pytest.raises(ValueError, match="param_group"):
        evaluator.sweep(start, end, [0.5], param_group="biases")
    with pytest.raises(ValueError, match="bn_mode"):
        evaluator.sweep(start, end, [0.5], bn_mode="freeze")
    with pytest.raises(ValueError, match="bn_data"):
        evaluator.sweep(start, end, [0.5], bn_mode="recompute")


def test_alpha_grid():
    assert np.allclose(alpha_grid(None), np.arange(51) / 50) and len(alpha_grid(None)) == 51
    assert alpha_grid("0:1:5").tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert alpha_grid("0,0.5,1.2").tolist() == [0.0, 0.5, 1.2]
    assert alpha_grid([1, 0]).tolist() == [1.0, 0.0]


@pytest.mark.parametrize("spec", ["0:1:51", "0:1:11", "-0.2:1.2:15", "1:0:7", "0.3:0.3:1", "-1:2:301"])
def test_every_sweep_has_one_alpha_grid(spec):
    """The planner's pure-Python grid (instability, curvature, costs) and the sweeps' array are one
    definition, bit for bit the grid numpy.linspace gives (0.1·3 is 0.30000000000000004 in both)."""
    from linpath.foundations.hparams import alpha_values

    start, stop, count = spec.split(":")
    expected = np.linspace(float(start), float(stop), int(count)).tolist()
    assert alpha_values(spec) == expected and alpha_grid(spec).tolist() == expected


# --- 4. fast paths equal the plain loop ----------------------------------------------


def compare_fast_and_plain(spec_model, start, end, splits, requests, alphas, bn_data=None, modes=("interpolate",)):
    kwargs = dict(batch_size=128, bn_data=bn_data, bn_batch_size=512)
    fast = PathEvaluator(models.build(spec_model), splits, "ce", reuse_prefix=True, fold_bn=True, **kwargs)
    plain = PathEvaluator(models.build(spec_model), splits, "ce", reuse_prefix=False, fold_bn=False, **kwargs)
    checked = 0
    for group, param_group in requests:
        for mode in modes:
            a = fast.sweep(start, end, alphas, group=group, param_group=param_group, bn_mode=mode)
            b = plain.sweep(start, end, alphas, group=group, param_group=param_group, bn_mode=mode)
            assert a[["group", "param_group", "bn_mode", "alpha", "split"]].equals(
                b[["group", "param_group", "bn_mode", "alpha", "split"]])
            np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-5, atol=1e-6, err_msg=f"{group}/{param_group}/{mode}")
            np.testing.assert_allclose(a["accuracy"], b["accuracy"], rtol=0, atol=1e-5, err_msg=f"{group}/{param_group}/{mode}")
            checked += 1
    return fast, checked


def test_fast_paths_equal_plain_loop_resnet(trained_resnet, digits):
    run_dir, spec, _ = trained_resnet
    start, end = states(run_dir)
    model = models.build(spec.model)
    requests = [(r.group, r.param_group) for r in plan_requests(model, "init", "", "", groups=True, param_groups=True)]
    fast, checked = compare_fast_and_plain(spec.model, start, end, splits_of(digits), requests, [0.0, 0.3, 0.7, 1.0])
    assert fast.twin is not None and len(conv_bn_pairs(fast.model)) == 20  # every conv of ResNet-18 has its BN
    assert checked == 1 + 6 + 15


def test_fast_paths_equal_plain_loop_recompute(trained_resnet, digits):
    run_dir, spec, _ = trained_resnet
    start, end = states(run_dir)
    compare_fast_and_plain(spec.model, start, end, splits_of(digits, 200, 100), [("all", "all"), ("block3", "all")],
                           [0.5], bn_data=digits.train_x[:256], modes=("recompute",))


def test_fast_paths_equal_plain_loop_vgg(trained_vgg, digits):
    run_dir, spec = trained_vgg
    start, end = states(run_dir)
    model = models.build(spec.model)
    requests = [("all", "all")] + [(g, "all") for g in models.groups(model)]
    fast, checked = compare_fast_and_plain(spec.model, start, end, splits_of(digits), requests, [0.0, 0.4, 1.0])
    assert len(conv_bn_pairs(fast.model)) == 8
    assert checked == 1 + 9


def test_paths_that_share_an_end_state_score_it_once_and_exactly(trained_resnet, digits):
    """θ(1) is the end state on every path: the second path reuses the first's scores at α = 1, and its
    table equals, bit for bit, that of the same path swept by a fresh evaluator."""
    run_dir, spec, _ = trained_resnet
    start, end = states(run_dir)
    alphas = [1.0, 0.0, 0.5, 1.0]
    shared = PathEvaluator(models.build(spec.model), splits_of(digits), "ce", batch_size=128)
    shared.sweep(start, end, alphas)
    assert shared._end_scores[0] is end
    for group in ("block3", "head"):
        reused = shared.sweep(start, end, alphas, group=group)
        fresh = PathEvaluator(models.build(spec.model), splits_of(digits), "ce", batch_size=128)
        alone = fresh.sweep(start, end, alphas, group=group)
        pd.testing.assert_frame_equal(reused, alone, check_exact=True)
        got = by_alpha(reused[reused["alpha"] != 1.0], "train")
        assert got.loc[0.0, "loss"] != got.loc[0.5, "loss"]
    other_end = {k: v.clone() for k, v in start.items()}  # another end state is scored, not looked up
    moved = shared.sweep(end, other_end, [0.0, 1.0])
    fresh = PathEvaluator(models.build(spec.model), splits_of(digits), "ce", batch_size=128)
    pd.testing.assert_frame_equal(moved, fresh.sweep(end, other_end, [0.0, 1.0]), check_exact=True)


def test_conv_model_without_batchnorm_is_evaluated_channels_last_and_equals_the_plain_loop(digits):
    """No BN to fold, but the convs still run on the channels-last twin (faster on CPU)."""
    spec = run_spec_with("mlp", {"arch": "vgg11", "width": 8, "batchnorm": False, "in_channels": 1, "input_size": 8,
                                 "num_classes": 10})
    torch.manual_seed(0)
    start = models.build(spec.model).state_dict()
    torch.manual_seed(1)
    end = models.build(spec.model).state_dict()
    requests = [("all", "all"), ("conv1", "all"), ("conv5", "all")]
    fast, checked = compare_fast_and_plain(spec.model, start, end, splits_of(digits, 200, 100), requests, [0.0, 0.6, 1.0])
    assert checked == 3 and conv_bn_pairs(fast.model) == []
    assert fast.twin is not None
    convs = [m for m in fast.runner.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)
    # VGG's 2×2 max-pools run as HalvingMaxPool in the twin (the sweeps above went through them)
    assert any(isinstance(m, HalvingMaxPool) for m in fast.runner.modules())
    assert not any(isinstance(m, nn.MaxPool2d) for m in fast.runner.modules())


@pytest.mark.parametrize("shape", [(4, 3, 8, 8), (2, 5, 7, 9), (3, 2, 3, 4), (2, 8, 33, 32)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_halving_max_pool_equals_max_pool2d_exactly(shape, channels_last):
    torch.manual_seed(0)
    x = torch.randn(shape)
    x.view(-1)[::7] = torch.nan  # NaN propagates in both
    x.view(-1)[3::11] = -torch.inf
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    want = nn.functional.max_pool2d(x, 2)
    got = HalvingMaxPool()(x)
    assert got.shape == want.shape
    assert torch.equal(got.isnan(), want.isnan())
    assert torch.equal(got.nan_to_num(0.0), want.nan_to_num(0.0))


def test_twin_keeps_max_pools_that_are_not_halving():
    """Only kernel 2, stride 2, no padding, floor mode is replaced; ResNet's 3×3 stem pool stays."""
    model = nn.Sequential(nn.MaxPool2d(3, 2, 1), nn.MaxPool2d(2, ceil_mode=True), nn.MaxPool2d(2),
                          nn.MaxPool2d(kernel_size=(2, 2), stride=2))
    twin = FoldedTwin(model, []).model
    assert [type(m).__name__ for m in twin] == ["MaxPool2d", "MaxPool2d", "HalvingMaxPool", "HalvingMaxPool"]
    x = torch.randn(2, 3, 30, 30)  # 15 → 8 (ceil mode) → 4 → 2
    with torch.inference_mode():
        assert torch.equal(twin(x), model.eval()(x))


def test_fast_paths_equal_plain_loop_mlp(trained_mlp, digits):
    run_dir, spec, _ = trained_mlp
    start, end = states(run_dir)
    requests = [("all", "all"), ("layer1", "all"), ("layer2", "all")]
    compare_fast_and_plain(spec.model, start, end, splits_of(digits), requests, [0.0, 0.25, 0.9, 1.0])


# --- 5. BatchNorm recomputation ------------------------------------------------------


def recompute_by_hand(model: nn.Module, x: torch.Tensor) -> None:
    """Reset every BN's running stats to the per-channel mean and unbiased variance of its input
    over `x`, the inputs taken from one forward pass in training mode (batch statistics)."""
    inputs: dict[nn.Module, torch.Tensor] = {}
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    hooks = [bn.register_forward_pre_hook(lambda mod, args: inputs.__setitem__(mod, args[0].detach().clone()))
             for bn in bns]
    model.train()
    with torch.no_grad():
        model(x)
    for hook in hooks:
        hook.remove()
    for bn in bns:
        h = inputs[bn].double().transpose(0, 1).reshape(bn.num_features, -1)
        bn.running_mean.copy_(h.mean(1))
        bn.running_var.copy_(h.var(1, unbiased=True))
    model.eval()


def test_recompute_matches_hand_recomputation(trained_resnet, digits):
    run_dir, spec, _ = trained_resnet
    start, end = states(run_dir)
    bn_x = digits.train_x[:200]
    splits = splits_of(digits, 300, 150)
    evaluator = PathEvaluator(models.build(spec.model), splits, "ce", batch_size=128, bn_data=bn_x, bn_batch_size=256)
    alpha = 0.4
    interpolated = evaluator.sweep(start, end, [alpha], bn_mode="interpolate")
    recomputed = evaluator.sweep(start, end, [alpha], bn_mode="recompute")
    assert (recomputed["bn_mode"] == "recompute").all() and (interpolated["bn_mode"] == "interpolate").all()
    live = live_state(evaluator)

    kinds = tensor_kinds(evaluator.model)
    theta = {k: (torch.lerp(start[k], end[k], alpha) if kinds[k] != "counter" else end[k]) for k in end}
    model = loaded(spec.model, theta)
    recompute_by_hand(model, bn_x)
    by_hand = model.state_dict()
    for key, kind in kinds.items():
        if kind == "bn_stats":
            assert torch.allclose(live[key], by_hand[key], rtol=1e-4, atol=1e-5), key
            assert not torch.allclose(live[key], theta[key], rtol=1e-3, atol=1e-4), f"{key} was not recomputed"
        elif kind != "counter":
            assert torch.equal(live[key], theta[key]), key
    for split in splits:
        loss, acc = evaluate(model, split.x, split.y, "ce", 128)
        got = by_alpha(recomputed, split.name)
        assert got.loc[alpha, "loss"] == pytest.approx(loss, rel=1e-5)
        assert got.loc[alpha, "accuracy"] == acc
        other = by_alpha(interpolated, split.name)
        assert abs(other.loc[alpha, "loss"] - got.loc[alpha, "loss"]) > 1e-3, "recomputing BN changed nothing"


def test_recompute_is_a_no_op_without_batchnorm(trained_mlp, digits):
    run_dir, spec, _ = trained_mlp
    start, end = states(run_dir)
    evaluator = PathEvaluator(models.build(spec.model), splits_of(digits), "ce")  # no bn_data needed
    a = evaluator.sweep(start, end, [0.0, 0.5, 1.0], bn_mode="interpolate")
    b = evaluator.sweep(start, end, [0.0, 0.5, 1.0], bn_mode="recompute")
    assert a["loss"].tolist() == b["loss"].tolist() and (b["bn_mode"] == "recompute").all()


def test_a_recompute_sweep_does_not_leak_into_the_next_sweep(trained_resnet, digits):
    run_dir, spec, _ = trained_resnet
    start, end = states(run_dir)
    evaluator = PathEvaluator(models.build(spec.model), splits_of(digits, 200, 100), "ce", batch_size=128,
                              bn_data=digits.train_x[:128])
    before = evaluator.sweep(start, end, [0.0, 0.5, 1.0], group="block1")
    evaluator.sweep(start, end, [0.5], bn_mode="recompute")
    after = evaluator.sweep(start, end, [0.0, 0.5, 1.0], group="block1")
    assert before["loss"].tolist() == after["loss"].tolist()


# --- 6. recompute with prefix reuse equals update_bn at every α ------------------------


def update_bn_reference(spec_model, start, end, keys, alphas, bn_x, bn_batch_size, splits, batch_size):
    """The straightforward recompute mode, from torch alone: θ(α) loaded into a fresh model,
    torch.optim.swa_utils.update_bn over the whole network on the BN batches, then evaluated."""
    keys = set(keys)
    out = {}
    for alpha in alphas:
        theta = {k: torch.lerp(start[k].float(), end[k].float(), alpha) if k in keys else end[k] for k in end}
        model = loaded(spec_model, theta)
        update_bn(list(bn_x.split(bn_batch_size)), model)
        model.eval()
        for split in splits:
            out[alpha, split.name] = evaluate(model, split.x, split.y, "ce", batch_size)
    return out


@pytest.mark.parametrize("fold_bn", [False, True])
def test_recompute_with_prefix_reuse_equals_update_bn_at_every_alpha(fold_bn, trained_resnet, digits):
    """The prefix runs once per BN batch and per chunk; the losses are update_bn's to 1e-6
    (1e-5 with folded BN, whose rounding differs)."""
    run_dir, spec, _ = trained_resnet
    start, end = states(run_dir)
    bn_x, splits, alphas = digits.train_x[:300], splits_of(digits, 250, 120), [0.0, 0.3, 0.75, 1.0]
    evaluator = PathEvaluator(models.build(spec.model), splits, "ce", batch_size=100, bn_data=bn_x,
                              bn_batch_size=128, fold_bn=fold_bn)
    rel = 1e-5 if fold_bn else 1e-6
    for group, param_group in [("all", "all"), ("block2", "all"), ("block3", "weights"), ("head", "all")]:
        frame = evaluator.sweep(start, end, alphas, group=group, param_group=param_group, bn_mode="recompute")
        want = update_bn_reference(spec.model, start, end, evaluator.moving_keys(group, param_group), alphas,
                                   bn_x, 128, splits, 100)
        for split in splits:
            got = by_alpha(frame, split.name)
            for alpha in alphas:
                loss, acc = want[alpha, split.name]
                assert got.loc[alpha, "loss"] == pytest.approx(loss, rel=rel, abs=1e-7), (group, param_group, alpha)
                assert got.loc[alpha, "accuracy"] == pytest.approx(acc, abs=1.5 / len(split.y)), (group, alpha)
    # the head path moves no BN: its recomputed curve is that of θ_T's recomputed statistics at α=1
    head = by_alpha(frame, "train")
    assert head.loc[1.0, "loss"] == pytest.approx(want[1.0, "train"][0], rel=rel)


def stage_calls(evaluator: PathEvaluator) -> tuple[dict[str, int], list]:
    """Counts of forward calls per stage, through hooks on each stage's first module."""
    calls: dict[str, int] = {}
    hooks = []
    for name, stage in evaluator.stages:
        first_module = next(iter(stage.children()), stage)
        hooks.append(first_module.register_forward_pre_hook(
            lambda *_, name=name: calls.__setitem__(name, calls.get(name, 0) + 1)))
    return calls, hooks


@pytest.mark.parametrize("bn_mode", ["interpolate", "recompute"])
def test_prefix_runs_once_per_chunk_and_suffix_once_per_chunk_and_alpha(bn_mode, trained_resnet, digits):
    run_dir, spec, _ = trained_resnet
    start, end = states(run_dir)
    splits = splits_of(digits, 250, 120)  # chunks of 100: 3 + 2
    bn_x = digits.train_x[:300]  # BN batches of 128: 3
    evaluator = PathEvaluator(models.build(spec.model), splits, "ce", batch_size=100, bn_data=bn_x,
                              bn_batch_size=128, fold_bn=False)  # unfolded: the same modules serve both phases
    calls, hooks = stage_calls(evaluator)
    alphas = [0.0, 0.25, 0.5, 0.75, 1.0]
    evaluator.sweep(start, end, alphas, group="block3", bn_mode=bn_mode)
    for hook in hooks:
        hook.remove()
    chunks, bn_batches = 5, 3 if bn_mode == "recompute" else 0
    per_prefix = chunks + bn_batches
    per_suffix = (chunks + bn_batches) * len(alphas)
    assert calls == {"stem": per_prefix, "block1": per_prefix, "block2": per_prefix,
                     "block3": per_suffix, "block4": per_suffix, "head": chunks * len(alphas) + bn_batches * len(alphas)}


def test_chunk_size_changes_only_the_rounding(trained_resnet, digits):
    run_dir, spec, _ = trained_resnet
    start, end = states(run_dir)
    splits = splits_of(digits, 300, 150)
    frames = [PathEvaluator(models.build(spec.model), splits, "ce", batch_size=size).sweep(
        start, end, [0.0, 0.6, 1.0], group="block2") for size in (37, 1024)]
    np.testing.assert_allclose(frames[0]["loss"], frames[1]["loss"], rtol=1e-6)
    assert frames[0]["accuracy"].tolist() == frames[1]["accuracy"].tolist()


# --- 7. strict fp32 ------------------------------------------------------------------

B = torch.backends


def precision_snapshot() -> list:
    """Every fp32-precision setting, by both APIs (torch refuses some legacy reads after a mix: "refused")."""
    out = [B.fp32_precision] + [k.fp32_precision for k in (B.cuda.matmul, B.cudnn.conv, B.cudnn.rnn, B.mkldnn.matmul,
                                                            B.mkldnn.conv)]
    for read in (torch.get_float32_matmul_precision, lambda: B.cuda.matmul.allow_tf32, lambda: B.cudnn.allow_tf32):
        try:
            out.append(read())
        except RuntimeError:
            out.append("refused")
    return out


def torch_default_precision() -> None:
    torch.set_float32_matmul_precision("highest")
    B.cudnn.allow_tf32 = True
    B.fp32_precision = "none"
    B.cuda.matmul.fp32_precision = "none"
    B.mkldnn.matmul.fp32_precision = B.mkldnn.conv.fp32_precision = "none"


CALLER_PRECISION = {
    "legacy TF32 on": lambda: (setattr(B.cuda.matmul, "allow_tf32", True), setattr(B.cudnn, "allow_tf32", True)),
    "matmul precision high": lambda: torch.set_float32_matmul_precision("high"),
    "new API TF32 on": lambda: (setattr(B.cuda.matmul, "fp32_precision", "tf32"),
                                setattr(B.cudnn.conv, "fp32_precision", "tf32")),
    "generic TF32 on": lambda: setattr(B, "fp32_precision", "tf32"),
    "oneDNN bf16": lambda: setattr(B.mkldnn.conv, "fp32_precision", "bf16"),
}


@pytest.mark.parametrize("caller", list(CALLER_PRECISION))
def test_sweep_runs_in_strict_fp32_and_restores_the_settings(caller, trained_resnet, digits):
    """Whatever the caller set, and inside a bfloat16 autocast: during the sweep TF32 and autocast are off
    (the losses equal those of a plain call); after it, every setting is as the caller left it."""
    run_dir, spec, _ = trained_resnet
    start, end = states(run_dir)
    evaluator = PathEvaluator(models.build(spec.model), splits_of(digits, 200, 100), "ce", batch_size=128)
    seen = []
    hook = evaluator.runner.conv1.register_forward_pre_hook(lambda _, args: seen.append(
        (B.cuda.matmul.allow_tf32, B.cudnn.allow_tf32, B.cuda.matmul.fp32_precision, B.cudnn.conv.fp32_precision,
         B.mkldnn.conv.fp32_precision, torch.is_autocast_enabled("cpu"), args[0].dtype)))
    plain = evaluator.sweep(start, end, [0.0, 0.5, 1.0])
    try:
        CALLER_PRECISION[caller]()
        before = precision_snapshot()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            # a new end dict: θ(1) is evaluated again (the evaluator reuses it only for the same end state)
            frame = evaluator.sweep(start, dict(end), [0.0, 0.5, 1.0])
            assert torch.is_autocast_enabled("cpu")
        assert precision_snapshot() == before
    finally:
        torch_default_precision()
        hook.remove()
    assert len(seen) == 2 * 3 * 3  # two sweeps × three chunks (128 + 72 train, 100 test) × three α
    assert set(seen) == {(False, False, "ieee", "ieee", "ieee", False, torch.float32)}
    assert frame["loss"].tolist() == plain["loss"].tolist()


def test_torch_default_precision_is_torch_default():
    """The helper above leaves the settings a fresh interpreter has (checked against one)."""
    import subprocess
    import sys

    fresh = subprocess.run([sys.executable, "-c", "import torch; B = torch.backends; print(["
                            "B.fp32_precision, B.cuda.matmul.fp32_precision, B.cudnn.conv.fp32_precision, "
                            "B.cudnn.rnn.fp32_precision, B.mkldnn.matmul.fp32_precision, B.mkldnn.conv.fp32_precision, "
                            "torch.get_float32_matmul_precision(), B.cuda.matmul.allow_tf32, B.cudnn.allow_tf32])"],
                           capture_output=True, text=True, check=True).stdout.strip()
    torch_default_precision()
    assert str(precision_snapshot()) == fresh


@pytest.mark.parametrize("arch", ["resnet", "mlp"])
def test_a_double_model_and_double_states_are_evaluated_in_fp32(arch, trained_resnet, trained_mlp, digits):
    """The evaluator (and the folded twin) hold fp32 tensors whatever they are given."""
    run_dir, spec, _ = trained_resnet if arch == "resnet" else trained_mlp
    start, end = states(run_dir)
    splits = splits_of(digits, 200, 100)
    fp32 = PathEvaluator(models.build(spec.model), splits, "ce").sweep(start, end, [0.0, 0.4, 1.0])
    as_double = {k: v.double() if v.is_floating_point() else v for k, v in start.items()}, \
        {k: v.double() if v.is_floating_point() else v for k, v in end.items()}
    evaluator = PathEvaluator(models.build(spec.model).double(), splits, "ce")
    tensors = list(evaluator.live.values()) + (list(evaluator.twin.target.values()) if evaluator.twin else [])
    assert {t.dtype for t in tensors if t.is_floating_point()} == {torch.float32}
    assert (evaluator.twin is not None) == (arch == "resnet")
    frame = evaluator.sweep(*as_double, [0.0, 0.4, 1.0])
    np.testing.assert_allclose(frame["loss"], fp32["loss"], rtol=1e-6)
