"""Connectivity modulo permutations (linpath.paths.align, the aligned pairs of linpath.paths.lmc and
linpath.study.lmc_plan): permutation specs derived from the model, weight matching, REPAIR.

On the project's own architectures and the digits: a network with its hidden units permuted computes the
same function; weight matching undoes a permutation exactly; on two MLPs trained from different seeds the
aligned barrier is not above the unaligned one; REPAIR gives each channel the interpolated statistics.
"""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from conftest import default_config, paper_config, run_spec_with
from linpath.engine import models
from linpath.engine.train import train
from linpath.foundations.hparams import InstabilitySpec, SettingsError
from linpath.foundations.io import load_state, save_torch
from linpath.foundations.layout import RunDir
from linpath.paths import align
from linpath.paths.lmc import ALIGN_COLUMNS, instability_table, pair_sweep
from linpath.study.lmc_plan import ALIGNED, ALIGNED_REPAIR, INDEPENDENT, LmcPlan
from linpath.study.plan import Plan

DIGITS = {"in_channels": 1, "input_size": 8, "num_classes": 10}
ARCHES = {
    "mlp": {"arch": "mlp", "hidden": [16, 12]},
    "vgg_bn": {"arch": "vgg11", "width": 8, "batchnorm": True},
    "vgg": {"arch": "vgg11", "width": 8, "batchnorm": False},
    "resnet_bn": {"arch": "resnet18", "width": 4, "batchnorm": True},
    "resnet": {"arch": "resnet18", "width": 4, "batchnorm": False},
}


def built(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return models.build({**ARCHES[name], **DIGITS})


def with_real_statistics(model: nn.Module, x: torch.Tensor, seed: int = 0) -> dict:
    """The model's state with BN running statistics from the digits and random BN affine parameters (a BN
    left at weight 1, bias 0 would not notice if its parameters were not permuted)."""
    g = torch.Generator().manual_seed(seed)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(x[:128])
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.2)
    model.eval()
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def images(digits):
    return digits.train_x[:256]


# --- permutations ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(ARCHES))
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_a_network_with_permuted_hidden_units_computes_the_same_outputs(name, mode, images):
    model = built(name)
    state = with_real_statistics(model, images)
    spec = align.permutation_spec(model)
    perms = align.random_permutations(spec, torch.Generator().manual_seed(1))
    permuted = align.permute_state(state, spec, perms)
    moved = [k for k in state if state[k].is_floating_point() and not torch.equal(state[k], permuted[k])]
    assert len(moved) > len(spec.sizes)  # the permutation is not the identity, and reaches several tensors
    twin = align.copy_model(model)
    twin.load_state_dict(permuted)
    for m in (model, twin):
        m.train(mode == "train")
    with torch.no_grad():
        a, b = model(images), twin(images)
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-5 * a.abs().max().item())
    # the BN counters are not permuted (they have no unit axis)
    assert all(torch.equal(state[k], permuted[k]) for k in state if k.endswith("num_batches_tracked"))


def test_the_resnet_spec_shares_one_permutation_per_residual_stage_and_moves_bn_with_its_channels():
    model = built("resnet_bn")
    spec = align.permutation_spec(model)
    axes = spec.axes
    stream1 = axes["conv1.weight"][0]  # the stem opens the first stage's stream
    assert axes["layer1.0.conv2.weight"][0] == axes["layer1.1.conv2.weight"][0] == stream1
    assert axes["layer2.0.downsample.0.weight"][:2] == (axes["layer2.0.conv2.weight"][0], stream1)
    assert axes["layer2.1.conv1.weight"][1] == axes["layer2.0.conv2.weight"][0] != stream1
    for key in ("weight", "bias", "running_mean", "running_var"):
        assert axes[f"layer3.1.bn1.{key}"] == (axes["layer3.1.conv1.weight"][0],)
    assert axes["layer3.1.bn1.num_batches_tracked"] == ()
    assert axes["fc.weight"] == (None, axes["layer4.1.conv2.weight"][0])
    # four streams (one per stage) and one inner space per block
    assert len(spec.sizes) == 4 + 8 and spec.batchnorm


@pytest.mark.parametrize("width, hidden", [(2, [3]), (6, [20, 7, 5])])
def test_the_spec_follows_the_configured_width_and_depth(width, hidden):
    vgg = align.permutation_spec(models.build({"arch": "vgg11", "width": width, **DIGITS}))
    assert sorted(vgg.sizes.values()) == sorted(m.out_channels for m in models.build(
        {"arch": "vgg11", "width": width, **DIGITS}).modules() if isinstance(m, nn.Conv2d))
    mlp = align.permutation_spec(models.build({"arch": "mlp", "hidden": hidden, **DIGITS}))
    assert list(mlp.sizes.values()) == hidden and len(mlp.repair_layers) == len(hidden)


@pytest.mark.parametrize("model, words", [
    (nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 2)), "LayerNorm"),
    (nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 36, 2)), "flatten"),
    (nn.Sequential(nn.Conv2d(2, 4, 3, groups=2), nn.ReLU()), "grouped convolution"),
])
def test_an_unsupported_model_is_a_clear_error(model, words):
    with pytest.raises(align.AlignmentError, match=words):
        align.permutation_spec(model)


@pytest.mark.parametrize("name", list(ARCHES))
def test_aligning_to_a_permuted_copy_recovers_the_permutation(name, images):
    model = built(name)
    state = with_real_statistics(model, images)
    spec = align.permutation_spec(model)
    perms = align.random_permutations(spec, torch.Generator().manual_seed(2))
    matching = align.weight_matching(state, align.permute_state(state, spec, perms), spec)
    assert matching.converged and matching.iterations >= 2  # a pass that changed something, then a fixed point
    back = align.permute_state(align.permute_state(state, spec, perms), spec, matching.perms)
    assert all(torch.equal(back[k], state[k]) for k in state)
    assert all(torch.equal(matching.perms[s], torch.argsort(perms[s])) for s in spec.sizes)
    assert matching.objective_after > matching.objective_before


def test_the_iteration_cap_is_reported(images):
    model = built("vgg")
    state = with_real_statistics(model, images)
    other = with_real_statistics(built("vgg", seed=1), images)
    spec = align.permutation_spec(model)
    capped = align.weight_matching(state, other, spec, max_iter=1)
    assert capped.iterations == 1 and not capped.converged
    with pytest.raises(SettingsError, match="align_max_iter"):
        InstabilitySpec.from_config({"align_max_iter": 0})


# --- aligned pairs on trained runs ------------------------------------------------------------------


SPEC = InstabilitySpec.from_config({"alphas": "0:1:5", "bn_subset": 256})
META = {"setting": "s", "experiment": "E", "seed": 0, "pair_kind": ALIGNED, "pair": ALIGNED, "run_id": "r"}


def permuted_copy(run_dir, tmp_path, seed: int = 3):
    """A copy of a run whose final state has its hidden units randomly permuted."""
    copy = tmp_path / f"{run_dir.name}_permuted"
    shutil.copytree(run_dir, copy)
    model = models.build(run_spec_of(run_dir).model)
    spec = align.permutation_spec(model)
    state = load_state(RunDir(run_dir).final)
    save_torch(align.permute_state(state, spec, align.random_permutations(spec, torch.Generator().manual_seed(seed))),
               RunDir(copy).final)
    return copy


def run_spec_of(run_dir):
    from linpath.foundations.hparams import RunSpec

    return RunSpec.from_yaml(RunDir(run_dir).settings)


@pytest.mark.parametrize("fixture", ["trained_mlp", "trained_resnet"])
def test_a_run_aligned_to_its_permuted_copy_has_zero_distance_and_zero_barrier(fixture, request, tmp_path):
    run_dir = request.getfixturevalue(fixture)[0]
    copy = permuted_copy(run_dir, tmp_path)
    frame, summary = pair_sweep([run_dir, copy], tmp_path / "cache", SPEC, META, align=True)
    table = instability_table(frame, 0.02)
    assert set(table["pair_kind"]) == {ALIGNED, ALIGNED_REPAIR} and (table["status"] == "measured").all()
    aligned = table[table["pair_kind"] == ALIGNED]
    assert len(aligned) == 2 * 2  # BN modes x splits
    assert (aligned["distance_l2"] == 0).all() and (aligned["distance_l2_unaligned"] > 0).all()
    assert (aligned["error_barrier"] == 0).all() and (aligned["loss_barrier"].abs() < 1e-6).all()
    repaired = table[table["pair_kind"] == ALIGNED_REPAIR]
    batchnorm = fixture == "trained_resnet"
    # REPAIR of a BN network is the recompute mode; without BN it is listed under every mode
    assert set(repaired["bn_mode"]) == ({"recompute"} if batchnorm else {"interpolate", "recompute"})
    assert (repaired["loss_barrier"].abs() < 1e-5).all() and (repaired["error_barrier"] == 0).all()
    assert repaired["repair"].str.contains("BN statistics recomputed" if batchnorm else "rescaled").all()
    assert (table["align_iterations"] >= 2).all() and table["align_converged"].all()
    assert "passes (fixed point)" in summary
    assert set(ALIGN_COLUMNS) <= set(table.columns)


@pytest.fixture(scope="module")
def two_mlps(tmp_path_factory):
    """Two MLPs (two hidden layers of 32) trained from different seeds: init and data order, 230 steps each."""
    root = tmp_path_factory.mktemp("two_mlps")
    runs = []
    for seed in (0, 1):
        spec = run_spec_with("mlp", {"hidden": [32, 32]}, init={"seed": seed},
                             train={"seed": seed, "epochs": 10, "lr": 0.05, "weight_decay": 0})
        train(spec, root / f"s{seed}", progress=False)
        runs.append(root / f"s{seed}")
    return runs


@pytest.fixture(scope="module")
def mlp_pairs(two_mlps, tmp_path_factory):
    """The two MLPs' line as measured and aligned: (curves, instability table)."""
    cache = tmp_path_factory.mktemp("cache")
    plain, _ = pair_sweep(two_mlps, cache, SPEC, {**META, "pair_kind": INDEPENDENT, "pair": INDEPENDENT})
    aligned, _ = pair_sweep(two_mlps, cache, SPEC, META, align=True)
    paths = pd.concat([plain, aligned], ignore_index=True)
    return paths, instability_table(paths, 0.02)


def test_on_two_mlps_from_different_seeds_the_aligned_barrier_is_not_above_the_unaligned_one(mlp_pairs):
    table = mlp_pairs[1]
    train_rows = table[(table["split"] == "train") & (table["bn_mode"] == "interpolate")].set_index("pair_kind")
    assert train_rows.loc[INDEPENDENT, "loss_barrier"] > 0  # there is a barrier to remove
    assert train_rows.loc[ALIGNED, "loss_barrier"] <= train_rows.loc[INDEPENDENT, "loss_barrier"]
    assert train_rows.loc[ALIGNED, "error_barrier"] <= train_rows.loc[INDEPENDENT, "error_barrier"]
    # matching brings the second network closer; the unaligned distance is the plain pair's own
    assert train_rows.loc[ALIGNED, "distance_l2"] < train_rows.loc[ALIGNED, "distance_l2_unaligned"]
    assert train_rows.loc[ALIGNED, "distance_l2_unaligned"] == pytest.approx(train_rows.loc[INDEPENDENT, "distance_l2"])
    # the ends of the aligned line are the same two networks: same end scores as the plain line
    for end in ("accuracy_a", "accuracy_b"):
        assert train_rows.loc[ALIGNED, end] == pytest.approx(train_rows.loc[INDEPENDENT, end])


def test_the_instability_figure_draws_each_pair_kinds_barrier_as_in_the_table(mlp_pairs, tmp_path):
    from linpath.report.lmc_figures import instability_figure, write_instability_figure

    paths, table = mlp_pairs
    fig, _ = instability_figure(table, paths)
    bars = {p.get_gid(): p.get_height() for ax in fig.axes for p in ax.patches if (p.get_gid() or "").startswith("pairs|")}
    assert len(bars) == 3 * 2 * 2  # pair kinds x splits x BN modes (no BN: REPAIR in both)
    for _, row in table.iterrows():
        assert bars[f"pairs|s|{row['split']}|{row['bn_mode']}|{row['pair_kind']}"] == pytest.approx(row["error_barrier"])
    labels = {line.get_label() for ax in fig.axes for line in ax.get_lines()}
    assert {"independent", "independent, weight matching", "independent, matching + REPAIR"} <= labels
    paths.assign(align_converged=paths["align_converged"].astype("boolean")).to_parquet(tmp_path / "p.parquet")
    table.to_parquet(tmp_path / "t.parquet")
    write_instability_figure(tmp_path / "t.parquet", tmp_path / "p.parquet", tmp_path / "f.png")
    assert (tmp_path / "f.png").stat().st_size > 0


# --- REPAIR ------------------------------------------------------------------------------------------


def repair_case(name: str, images, two_mlps=None):
    """(model, spec, the two end states) of an architecture without BN: the trained MLPs, or two random
    inits of a conv network."""
    if name == "mlp":
        model = models.build(run_spec_of(two_mlps[0]).model)
        a, b = (load_state(RunDir(r).final) for r in two_mlps)
    else:
        model = built(name)
        a, b = (with_real_statistics(built(name, seed), images, seed) for seed in (0, 1))
    spec = align.permutation_spec(model)
    added = align.add_zero_biases(model, spec)
    for state in (a, b):
        state.update({k: torch.zeros_like(model.state_dict()[k]) for k in added})
    b = align.permute_state(b, spec, align.weight_matching(a, b, spec).perms)
    return model, spec, a, b, added


@pytest.mark.parametrize("name", ["mlp", "vgg", "resnet"])
def test_repair_gives_each_channel_the_interpolated_end_statistics(name, images, two_mlps):
    model, spec, a, b, added = repair_case(name, images, two_mlps)
    assert bool(added) == (name == "resnet")  # the ResNet's convs have no bias of their own
    x = images if name != "mlp" else images.flatten(1)
    ends = [align.channel_statistics(model, s, spec.repair_layers, x) for s in (a, b)]
    alpha = 0.5
    targets = align.interpolated_statistics(*ends, alpha)
    middle = align.lerp_state(a, b, alpha)
    before = align.channel_statistics(model, middle, spec.repair_layers, x)
    repaired = align.repair_state(model, middle, targets, x)
    after = align.channel_statistics(model, repaired, spec.repair_layers, x)
    # the plain midpoint's activations have collapsed (its standard deviations are below the targets)
    assert any((before[n][1] < 0.95 * targets[n][1]).float().mean() > 0.5 for n in spec.repair_layers)
    for layer in spec.repair_layers:
        mean, std = after[layer]
        t_mean, t_std = targets[layer]
        scale = t_std.max().item()
        assert torch.allclose(mean, t_mean, atol=1e-4 * scale), layer
        assert torch.allclose(std, t_std, rtol=1e-4, atol=1e-4 * scale), layer


# --- the plan ---------------------------------------------------------------------------------------


def test_the_default_plan_measures_aligned_pairs_for_the_base_resnet_and_one_mlp():
    plan = Plan(default_config())
    lmc = LmcPlan(plan)
    aligned = {p.setting for p in lmc.pairs.values() if p.kind == ALIGNED}
    independent = {p.setting for p in lmc.pairs.values() if p.kind == INDEPENDENT}
    assert "base" in aligned and aligned <= independent
    mlps = [s for s in aligned if plan.settings[s].run.get("model", {}).get("arch") == "mlp"]
    assert mlps, f"no MLP setting among the aligned pairs {sorted(aligned)}"
    run_id = plan.run_of("base", 0)
    assert ALIGNED in lmc.pair_names() and (run_id, ALIGNED) in lmc.pairs
    assert lmc.pair_args(run_id, ALIGNED).endswith("--align") and "--align" not in lmc.pair_args(run_id, INDEPENDENT)
    # the other pair sweeps do not read the alignment settings (changing them reruns none of them)
    assert "align" in lmc.sweep_json(run_id, ALIGNED) and "align" not in lmc.sweep_json(run_id, INDEPENDENT)
    assert str(plan.layout.lmc_sweep(run_id, ALIGNED)) in lmc.pair_files()


def test_the_paper_plan_aligns_too_and_align_false_plans_no_aligned_pair():
    lmc = LmcPlan(Plan(paper_config()))
    assert {p.setting for p in lmc.pairs.values() if p.kind == ALIGNED} >= {"base"}
    config = default_config()
    config["instability"]["align"] = False
    off = LmcPlan(Plan(config))
    assert not [p for p in off.pairs.values() if p.kind == ALIGNED]
    assert [p for p in off.pairs.values() if p.kind == INDEPENDENT]


def test_an_unknown_independent_setting_is_an_error_naming_the_key():
    config = default_config()
    config["instability"]["independent_settings"] = ["no_such_setting"]
    with pytest.raises(SettingsError, match="instability.independent_settings"):
        LmcPlan(Plan(config))


def test_aligned_rows_keep_their_columns_when_an_end_did_not_train(tmp_path, trained_mlp):
    from linpath.foundations.outcome import Outcome, write_outcome

    failed = tmp_path / "failed"
    write_outcome(Outcome("skipped", kind="upstream_failed", reason="upstream diverged"), failed)
    frame, summary = pair_sweep([trained_mlp[0], failed], tmp_path / "cache", SPEC, META, align=True)
    assert set(frame["pair_kind"]) == {ALIGNED, ALIGNED_REPAIR} and (frame["status"] == "skipped").all()
    table = instability_table(frame, 0.02)
    assert len(table) == 2 * 2 * 2 and np.isnan(table["align_iterations"]).all()


def test_linpath_plan_prices_the_aligned_pairs():
    """`linpath plan` counts each aligned job: a BN network's sweeps in both modes (REPAIR is the recompute
    one), an MLP's two modes and its REPAIRed line."""
    from pathlib import Path

    from linpath.study.config import load_config
    from linpath.study.cost import estimate

    repo = Path(__file__).resolve().parents[1]
    files = [str(repo / "config" / "config.yaml"), str(repo / "config" / "paper.yaml")]
    config = load_config(files)
    lmc = LmcPlan(Plan(config))
    without = {**config, "instability": {**config["instability"], "align": False}}
    priced, plain = estimate(config, files).rules["lmc_path"], estimate(without, files).rules["lmc_path"]
    aligned = [p for p in lmc.pairs.values() if p.kind == ALIGNED]
    assert {p.setting for p in aligned} == {"base", "mlp_digits"} and len(aligned) == 3 + 10
    assert priced.jobs == plain.jobs + len(aligned) and priced.hours > plain.hours
    alphas = 26
    assert priced.path_points == plain.path_points + alphas * (3 * 2 + 10 * 3)
