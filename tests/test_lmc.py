"""The instability analysis: spawned children (linpath.study.spawn, train.py's spawn states), the straight line
between two trained states and its barriers (linpath.paths.lmc), the instability table and figure, and the
workflow's rules for them (lmc.smk) on tests/configs/lmc_mini.yaml.

Barriers are checked on hand-made curves; spawning on real tiny training runs (an MLP on the digits),
where a child given its parent's own data-order seed must retrace the parent bit for bit.
"""

from __future__ import annotations

import base64
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from conftest import assert_states_equal, load_tensors, run_dict
from linpath.study.plan import Plan
from linpath.foundations.hparams import RunSpec, SettingsError
from linpath.paths.lmc import (END_STATISTICS, barrier, curve_rows, instability_table, not_trained, pair_sweep,
                                parameter_distance, peak_alpha, skipped_frame, stable_from, sweep_pairs,
                                write_instability)
from linpath.report.lmc_figures import instability_figure
from linpath.study.lmc_plan import INDEPENDENT, LmcPlan
from linpath.foundations.hparams import ALIGNED, ALIGNED_REPAIR, InstabilitySpec
from linpath.foundations.outcome import Outcome, write_outcome
from linpath.study.spawn import CHILD_SEED_STEP, SpawnSpec, child_name, child_run, parent_spawn_epochs
from linpath.engine.train import train

CONFIGS = Path(__file__).resolve().parent / "configs"
LMC_MINI = CONFIGS / "lmc_mini.yaml"


# --- barrier definitions on hand-made curves ------------------------------------------------


@pytest.mark.parametrize("curve, expected", [
    ([0.2, 0.2, 0.2], 0.0),  # flat: no barrier
    ([0.1, 0.5, 0.1], 0.4),  # a bump between equal ends
    ([0.1, 0.2, 0.6, 0.2, 0.3], 0.4),  # the maximum against the mean of the ends (0.2)
    ([0.1, 0.2, 0.3], 0.1),  # a straight line between unequal ends: half their difference, by definition
    ([0.3, 0.05, 0.1], 0.1),  # a dip: the maximum is an end
])
def test_barrier_is_the_maximum_minus_the_mean_of_the_ends(curve, expected):
    assert barrier(curve) == pytest.approx(expected)


def test_barrier_of_a_curve_with_a_nan_is_nan_and_the_peak_is_where_it_is_highest():
    assert np.isnan(barrier([0.1, float("nan"), 0.1]))
    assert peak_alpha([0, 0.25, 0.5, 1], [0.1, 0.3, 0.2, 0.1]) == 0.25


@pytest.mark.parametrize("means, expected", [
    ({0: 0.3, 1: 0.01, 2: 0.015, 4: 0.0}, 1.0),  # stable from k = 1 on
    ({0: 0.3, 1: 0.01, 2: 0.05, 4: 0.0}, 4.0),  # k = 2 rises again: stable only from 4
    ({0: 0.3, 1: 0.01, 2: 0.01, 4: 0.03}, float("nan")),  # not stable at the last k
    ({0: 0.02}, 0.0),  # at the threshold counts as stable
])
def test_stable_from_is_the_first_k_that_stays_stable(means, expected):
    rows = pd.DataFrame([{"spawn_epoch": k, "error_barrier": v + d} for k, v in means.items() for d in (-1e-4, 1e-4)])
    found = stable_from(rows, 0.02)
    assert (np.isnan(found) and np.isnan(expected)) or found == expected


def test_a_curve_needs_two_points_for_a_barrier_and_a_nan_has_no_peak():
    assert np.isnan(barrier([0.3])) and np.isnan(barrier([]))
    assert barrier([0.1, 0.3]) == pytest.approx(0.1), "two points: the higher end minus the mean of both"
    assert np.isnan(peak_alpha([0.0, 0.5, 1.0], [0.1, float("nan"), 0.1]))
    assert peak_alpha([0.0, 0.5, 1.0], [0.1, 0.1, 0.1]) == 0.0, "a tie: the first alpha"


def test_parameter_distance_is_the_l2_distance_and_its_share_of_the_mean_norm():
    a = {"w": torch.tensor([3.0, 0.0]), "b": torch.tensor([4.0]), "skipped": torch.tensor([100.0])}
    b = {"w": torch.tensor([0.0, 0.0]), "b": torch.tensor([0.0]), "skipped": torch.tensor([-100.0])}
    l2, rel = parameter_distance(a, b, ["w", "b"])
    assert l2 == 5.0 and rel == 5.0 / (0.5 * (5.0 + 0.0)), "only the keys given; the norms of both ends"
    assert parameter_distance(b, a, ["w", "b"]) == (l2, rel), "symmetric in the two ends"
    c = {"w": torch.tensor([0.0, 6.0]), "b": torch.tensor([8.0])}
    assert parameter_distance(a, c, ["w", "b"]) == pytest.approx((math.sqrt(9 + 36 + 16), math.sqrt(61) / 7.5))
    small = {"w": torch.tensor([0.3, 0.0]), "b": torch.tensor([0.4])}
    assert parameter_distance(small, b, ["w", "b"]) == pytest.approx((0.5, 2.0)), "a scale below 1 still divides"
    zero, rel_zero = parameter_distance(b, b, ["w", "b"])
    assert zero == 0.0 and np.isnan(rel_zero), "two zero states: no scale to divide by"


def one_line(error_peak: float, *, pair="k1", k=1, seed=0, status="measured") -> list[dict]:
    """One measured line (interpolate, train) whose error curve is 0, error_peak, 0 (barrier error_peak)."""
    return [{"setting": "base", "experiment": "E2", "seed": seed, "pair_kind": "spawn", "pair": pair, "spawn_epoch": k,
             "run_id": f"base-s{seed}", "end_a": "a", "end_b": "b", "bn_mode": "interpolate", "split": "train",
             "alpha": alpha, "loss": 1.0 + e, "accuracy": 1.0 - e, "error": e, "distance_l2": 2.0,
             "distance_rel": 0.5, "status": status, "status_reason": ""}
            for alpha, e in ((0.0, 0.0), (0.5, error_peak), (1.0, 0.0))]


def test_a_barrier_at_the_threshold_is_stable_and_one_just_above_is_not():
    threshold = 0.25
    for peak, stable in ((0.25, True), (0.25 + 2 ** -20, False), (0.0, True)):
        table = instability_table(pd.DataFrame(one_line(peak)), threshold)
        assert table["error_barrier"].iloc[0] == peak
        assert table["stable"].iloc[0] == stable, (peak, threshold)
        found = table["stable_from_k"].iloc[0]
        assert found == 1.0 if stable else np.isnan(found), "its one spawn epoch, k = 1, is stable or not"
    assert "error barrier <= 0.25" in table["stability_rule"].iloc[0], "the threshold is printed beside its rule"


def test_the_mean_over_the_lines_of_a_pair_decides_and_the_worst_line_is_kept():
    rows = one_line(0.125) + [{**r, "end_b": "c"} for r in one_line(0.5)]
    table = instability_table(pd.DataFrame(rows), 0.3)
    row = table.iloc[0]
    assert row["n_lines"] == 2 and row["error_barrier"] == pytest.approx(0.3125) and row["stable"] == False  # noqa: E712
    assert row["error_barrier_max"] == 0.5 and row["error_barrier_alpha"] == 0.5
    assert row["ends"] == "a, b, c" and row["accuracy_ends_mean"] == 1.0


def hand_paths(seeds=(0, 1), ks=(0, 1, 3)) -> pd.DataFrame:
    """A pair-sweep table of hand-made error curves: a bump of height h(k, seed, mode) on flat ends."""
    rows = []
    for seed in seeds:
        for k in [*ks, None]:
            for mode in ("interpolate", "recompute"):
                for split in ("train", "test"):
                    height = (0.4 if k is None else 0.2 / (1 + (k or 0) ** 2)) * (1 + 0.1 * seed) * (0.5 if mode == "recompute" else 1)
                    for alpha, bump in ((0.0, 0), (0.5, height), (1.0, 0)):
                        rows.append({"setting": "base", "experiment": "E2", "seed": seed,
                                     "pair_kind": INDEPENDENT if k is None else "spawn",
                                     "pair": INDEPENDENT if k is None else f"k{k}", "spawn_epoch": k,
                                     "run_id": f"base-s{seed}", "end_a": f"c0-{seed}", "end_b": f"c1-{seed}",
                                     "bn_mode": mode, "split": split, "alpha": alpha, "loss": 1 + bump,
                                     "accuracy": 0.9 - bump, "error": 0.1 + bump, "distance_l2": 2.0,
                                     "distance_rel": 0.5, "status": "measured", "status_reason": ""})
    return pd.DataFrame(rows)


def test_instability_table_has_one_row_per_setting_seed_k_mode_and_split():
    table = instability_table(hand_paths(), 0.02)
    assert len(table) == 2 * 4 * 2 * 2
    assert not table.duplicated(["setting", "seed", "pair", "bn_mode", "split"]).any()
    row = table[(table["seed"] == 1) & (table["spawn_epoch"] == 1) & (table["bn_mode"] == "interpolate")].iloc[0]
    assert row["error_barrier"] == pytest.approx(0.1 * 1.1) and row["loss_barrier"] == pytest.approx(0.1 * 1.1)
    assert row["accuracy_a"] == pytest.approx(0.9) and row["distance_l2"] == 2.0 and row["n_lines"] == 1
    assert not row["stable"] and row["threshold"] == 0.02
    # k = 3: barrier 0.02 * (1 + 0.1 seed) / (1 or 2): stable in recompute mode for both seeds.
    spawned = table[table["pair_kind"] == "spawn"]
    assert set(spawned[spawned["bn_mode"] == "recompute"]["stable_from_k"]) == {3.0}
    assert spawned[spawned["bn_mode"] == "interpolate"]["stable_from_k"].isna().all()
    independent = table[table["pair_kind"] == INDEPENDENT]
    assert len(independent) == 2 * 2 * 2 and independent["spawn_epoch"].isna().all()
    assert independent["stable_from_k"].isna().all() and "error barrier <= 0.02" in table["stability_rule"].iloc[0]


def test_a_skipped_pair_is_a_row_that_says_why():
    paths = hand_paths(seeds=(0,), ks=(1,))
    skipped = paths[paths["pair"] == "k1"].drop_duplicates(["bn_mode", "split"]).assign(
        status="skipped", status_reason="not measured: c1 diverged", alpha=np.nan, loss=np.nan, error=np.nan)
    table = instability_table(pd.concat([paths[paths["pair"] != "k1"], skipped]), 0.02)
    rows = table[table["pair"] == "k1"]
    assert len(rows) == 4 and (rows["status"] == "skipped").all() and rows["error_barrier"].isna().all()
    assert rows["status_reason"].str.contains("diverged").all()


def test_the_instability_figure_plots_the_tables_mean_barrier_per_k():
    table = instability_table(hand_paths(), 0.02)
    fig, plotted = instability_figure(table, hand_paths())
    lines = {line.get_gid(): line for ax in fig.axes for line in ax.get_lines() if (line.get_gid() or "").startswith("barrier|")}
    assert len(lines) == 2 * 2  # splits x BN modes of the one setting
    spawned = table[table["pair_kind"] == "spawn"]
    for gid, line in lines.items():
        _, setting, split, mode = gid.split("|")
        expected = spawned[(spawned["split"] == split) & (spawned["bn_mode"] == mode)].groupby("spawn_epoch")["error_barrier"].mean()
        assert list(line.get_xdata()) == list(expected.index)
        np.testing.assert_allclose(line.get_ydata(), expected.to_numpy())
        own = plotted[(plotted["split"] == split) & (plotted["bn_mode"] == mode)]
        np.testing.assert_allclose(own["mean"], expected.to_numpy())
    assert all(ax.get_xscale() == "symlog" for ax in fig.axes if ax.get_xlabel().startswith("spawn epoch"))


# --- the plan: children, pairs -------------------------------------------------------------------


def lmc_config() -> dict:
    return yaml.safe_load(LMC_MINI.read_text())


def test_children_are_runs_of_their_own_that_differ_only_in_the_data_order_seed():
    plan = Plan(lmc_config())
    plan.check()
    for seed in plan.seeds:
        parent = plan.run_of("base", seed)
        assert plan.runs[parent].recipe["train"]["spawn_epochs"] == [0, 1, 3]
        for k in (0, 1, 3):
            ids = [plan.run_of(child_name("base", k, i), seed) for i in (0, 1)]
            runs = [plan.runs[r] for r in ids]
            assert [(r.parent, r.spawn_epoch, r.child) for r in runs] == [(parent, k, 0), (parent, k, 1)]
            assert all(plan.role(r) == "spawn" and not plan.swept(r) for r in ids)
            assert all(r.upstream == [parent] for r in runs)
            first, second = (plan.resolve(r) for r in ids)
            seeds = first["train"].pop("seed"), second["train"].pop("seed")
            assert seeds == (seed + CHILD_SEED_STEP, seed + 2 * CHILD_SEED_STEP)
            first.pop("name"), second.pop("name")
            assert first == second  # everything else: the same recipe, the same starting state
            assert first["init"]["spawn"] == str(plan.layout.run_dir(parent) / f"spawn_{k}.pt")
            assert first["init"]["spawn_optimizer"] and first["init"]["spawn_schedule"]
            parent_recipe = plan.resolve(parent)
            for section in ("model", "data"):
                assert first[section] == parent_recipe[section]
    assert plan.swept(plan.run_of("base", 0)) and plan.role(plan.run_of("base", 0)) == "train"


def test_only_the_spawning_seeds_save_spawn_states_and_have_children():
    config = lmc_config()
    config["settings"]["base"]["spawn"]["seeds"] = [1]
    with pytest.raises(SettingsError, match="'spawn:1' needs 1 in settings.base.spawn.epochs"):
        LmcPlan(Plan(config))  # the children plane of seed 0: seed 0 no longer spawns
    config["planes"]["base_children"]["seeds"] = [1]
    plan = Plan(config)
    assert "spawn_epochs" not in plan.runs[plan.run_of("base", 0)].recipe["train"]
    assert (child_name("base", 1, 0), 0) not in plan.by_setting
    assert (child_name("base", 1, 0), 1) in plan.by_setting
    lmc = LmcPlan(plan)
    assert {p.seed for p in lmc.pairs.values()} == {1}


def test_pairs_cover_every_spawn_and_one_independent_line_per_pair_of_seeds():
    plan = Plan(lmc_config())
    lmc = LmcPlan(plan)
    names = sorted((plan.runs[r].seed, n) for r, n in lmc.pairs)
    # Two seeds: seed 1's next seed is seed 0, the same line as seed 0's: measured once.
    # The independent pair is measured again after alignment (instability.align, on by default).
    assert names == [(0, INDEPENDENT), (0, "independent_aligned"), (0, "k0"), (0, "k1"), (0, "k3"), (1, "k0"),
                     (1, "k1"), (1, "k3")]
    independent = lmc.pairs[(plan.run_of("base", 0), INDEPENDENT)]
    assert independent.ends == (plan.run_of("base", 0), plan.run_of("base", 1)) and independent.spawn_epoch is None
    assert str(plan.layout.table("instability")) in lmc.targets()


@pytest.mark.parametrize("spawn, message", [
    ({"epochs": [1], "children": 1}, r"settings\.base\.spawn\.children must be >= 2 \(a barrier needs two end states\), got 1"),
    ({"epochs": [1], "seeds": [5]}, r"settings\.base\.spawn\.seeds: \[5\] are not seeds of the config"),
    ({"epochs": [9]}, "spawn_epochs: 9 is not an epoch in 0..train.epochs=3"),
    ({"epochs": [1, 1]}, "distinct"),
    ({"epochs": [-1, 1]}, r"distinct epochs >= 0, got \[-1, 1\]"),
    ({"epochs": []}, "give at least one spawn epoch"),
])
def test_a_bad_spawn_section_is_refused_naming_it(spawn, message):
    config = lmc_config()
    config["settings"]["base"]["spawn"] = spawn
    with pytest.raises(SettingsError, match=message):
        Plan(config).check()


def test_the_smallest_spawn_section_is_accepted_in_order_and_for_every_seed():
    """The boundaries of the checks above: epoch 0, two children, no seeds given (every seed)."""
    spec = SpawnSpec.from_config({"epochs": [3, 0], "children": 2}, "settings.base.spawn", [0, 1])
    assert (spec.epochs, spec.children, spec.seeds) == ([0, 3], 2, [0, 1])
    assert spec.keep_optimizer and spec.keep_schedule, "a child takes over the whole state unless told"
    only = SpawnSpec.from_config({"epochs": [1], "seeds": [1]}, "settings.base.spawn", [0, 1])
    assert only.seeds == [1]
    config = lmc_config()
    config["settings"]["base"]["spawn"] = {"epochs": [3, 0], "seeds": [1]}
    config["planes"] = {}
    plan = Plan(config)
    base = plan.settings["base"]
    assert parent_spawn_epochs(base, 1, plan.seeds) == [0, 3] and parent_spawn_epochs(base, 0, plan.seeds) == []
    assert parent_spawn_epochs(plan.settings[child_name("base", 0, 1)], 1, plan.seeds) == [], "a child spawns nothing"
    assert child_name("base", 3, 1) == "base_k3c1"


def test_a_plane_through_a_missing_child_is_refused():
    config = lmc_config()
    config["planes"]["base_children"]["states"] = ["spawn:1", "child:2/0", "child:1/1"]
    with pytest.raises(SettingsError, match="spawns no child 0 after epoch 2"):
        LmcPlan(Plan(config))


# --- spawning on real training -------------------------------------------------------------------


def parent_dict(**train_extra) -> dict:
    return run_dict("mlp", train={"epochs": 3, "milestones": [2], "spawn_epochs": [0, 1, 3], **train_extra})


def child_dict(parent: Path, k: int, seed: int, **init_extra) -> dict:
    return run_dict("mlp", train={"epochs": 3, "milestones": [2], "seed": seed},
                    init={"spawn": str(parent / f"spawn_{k}.pt"), **init_extra})


@pytest.fixture(scope="module")
def parent_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("lmc") / "parent"
    train(RunSpec.from_dict(parent_dict()), out, progress=False)
    return out


@pytest.mark.parametrize("k", [0, 1])
def test_a_child_with_its_parents_seed_retraces_the_parent_bit_for_bit(parent_run, tmp_path, k):
    """The spawn state carries everything training needs: weights, momentum, the schedule's position."""
    child = tmp_path / "child"
    train(RunSpec.from_dict(child_dict(parent_run, k, seed=0)), child, progress=False)
    assert_states_equal(load_tensors(child / "final.pt"), load_tensors(parent_run / "final.pt"))
    metrics = pd.read_parquet(child / "metrics.parquet")
    assert list(metrics["epoch"]) == list(range(k, 4))  # history starts at k
    spawn = torch.load(parent_run / f"spawn_{k}.pt", weights_only=True)
    assert_states_equal(load_tensors(child / "init.pt"), spawn["model"])


def test_resetting_the_optimiser_or_the_schedule_changes_the_continuation(parent_run, tmp_path):
    runs = {}
    for name, extra in {"kept": {}, "fresh_optimizer": {"spawn_optimizer": False},
                        "restarted_schedule": {"spawn_schedule": False}}.items():
        train(RunSpec.from_dict(child_dict(parent_run, 1, seed=0, **extra)), tmp_path / name, progress=False)
        runs[name] = pd.read_parquet(tmp_path / name / "metrics.parquet").set_index("epoch")
    # LR of epoch 3 (after the milestone at 2): continued 0.005, restarted (milestone 2 epochs after k=1) 0.05.
    assert runs["kept"].loc[3, "lr"] == pytest.approx(0.005)
    assert runs["fresh_optimizer"].loc[3, "lr"] == pytest.approx(0.005)
    assert runs["restarted_schedule"].loc[2, "lr"] == pytest.approx(0.05)
    assert runs["restarted_schedule"].loc[3, "lr"] == pytest.approx(0.05)
    kept = load_tensors(tmp_path / "kept" / "final.pt")
    assert not torch.equal(load_tensors(tmp_path / "fresh_optimizer" / "final.pt")["layers.0.weight"], kept["layers.0.weight"])


def train_children(parent_run, k: int, where) -> list:
    """The two children spawned from the parent after epoch k, each with its own data-order seed."""
    ends = []
    for i in (0, 1):
        out = where / f"c{i}"
        train(RunSpec.from_dict(child_dict(parent_run, k, seed=CHILD_SEED_STEP * (i + 1))), out, progress=False)
        ends.append(out)
    return ends


def test_two_children_of_one_spawn_start_alike_and_end_apart(parent_run, tmp_path, digits):
    ends = train_children(parent_run, 1, tmp_path)
    assert_states_equal(load_tensors(ends[0] / "init.pt"), load_tensors(ends[1] / "init.pt"))
    assert not torch.equal(load_tensors(ends[0] / "final.pt")["layers.0.weight"],
                           load_tensors(ends[1] / "final.pt")["layers.0.weight"])
    spec = InstabilitySpec.from_config({"alphas": "0:1:5", "bn_modes": ["interpolate"], "device": "cpu"})
    frame = sweep_pairs(ends, tmp_path / "cache", spec)
    assert frame["distance_l2"].iloc[0] > 0 and np.allclose(frame["error"], 1 - frame["accuracy"])
    # α = 0 and 1 are the two children as they scored at the end of training.
    for end, alpha in zip(ends, (0.0, 1.0)):
        last = pd.read_parquet(end / "metrics.parquet").iloc[-1]
        got = frame[(frame["alpha"] == alpha)].set_index("split")
        assert got.loc["test", "accuracy"] == pytest.approx(last["test_acc"])
        assert got.loc["train", "loss"] == pytest.approx(last["train_loss"], rel=1e-6)


def test_a_spawn_at_the_last_epoch_gives_identical_children_and_a_zero_barrier(parent_run, tmp_path):
    ends = train_children(parent_run, 3, tmp_path)
    assert_states_equal(load_tensors(ends[0] / "final.pt"), load_tensors(ends[1] / "final.pt"))
    spec = InstabilitySpec.from_config({"alphas": "0:1:5", "device": "cpu"})
    frame, _ = pair_sweep(ends, tmp_path / "cache", spec, {"setting": "s", "seed": 0, "pair_kind": "spawn",
                                                          "pair": "k3", "spawn_epoch": 3})
    table = instability_table(frame, 0.02)
    assert len(table) == 2 * 2 and (table["error_barrier"] == 0).all() and (table["loss_barrier"] == 0).all()
    assert (table["distance_l2"] == 0).all() and table["stable"].all() and (table["stable_from_k"] == 3).all()


def test_a_pair_with_an_end_that_did_not_train_is_skipped_with_the_reason(parent_run, tmp_path):
    failed = tmp_path / "failed"
    write_outcome(Outcome("skipped", kind="upstream_failed", reason="upstream parent diverged"), failed)
    spec = InstabilitySpec.from_config({"alphas": "0:1:5"})
    frame, summary = pair_sweep([parent_run, failed], tmp_path / "cache", spec, {"setting": "s", "pair": "k1"})
    assert len(frame) == 4 and (frame["status"] == "skipped").all()
    assert frame["status_reason"].str.contains("upstream parent diverged").all() and "skipped" in summary


def test_a_run_that_saves_spawn_states_refuses_a_stop_rule_without_a_last_epoch():
    with pytest.raises(SettingsError, match="until_train_acc"):
        RunSpec.from_dict(parent_dict(until_train_acc=0.9))


# --- the workflow ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_instability_figure_alone_builds_only_base_runs_spawns_and_pair_sweeps(tmp_path):
    from conftest import job_stats, output_of, snakemake, tail, with_default_config

    workdir = with_default_config(tmp_path)
    proc = snakemake(workdir, "-n", "--cores", "2", "results/figures/instability.png")
    assert proc.returncode == 0, tail(proc)
    stats = job_stats(output_of(proc))
    plan = Plan(yaml.safe_load((workdir / "config" / "config.yaml").read_text()))
    lmc = LmcPlan(plan)
    spawning = {p.setting for p in lmc.pairs.values() if p.kind == "spawn"}
    # the settings measured besides: independent pairs only (instability.independent_settings)
    assert {p.setting for p in lmc.pairs.values()} - spawning == set(lmc.instability.independent_settings)
    parents = {r for p in lmc.pairs.values() for r in p.ends if plan.runs[r].spawn_epoch is None} | {
        p.run_id for p in lmc.pairs.values()}
    children = [r for r in plan.runs if plan.runs[r].spawn_epoch is not None]
    assert spawning == {"base"} and len(children) >= 6
    assert {rule: n for rule, n in stats.items() if rule != "total"} == {
        "train": len(parents), "spawn": len(children), "lmc_path": len(lmc.pairs), "instability_table": 1,
        "instability_figure": 1}


@pytest.fixture(scope="module")
def lmc_run(tmp_path_factory):
    """tests/configs/lmc_mini.yaml run to the end with `--cores 2`."""
    from conftest import snakemake, tail

    workdir = tmp_path_factory.mktemp("lmc_workflow")
    (workdir / "config").mkdir()
    shutil.copy(LMC_MINI, workdir / "config" / LMC_MINI.name)
    proc = snakemake(workdir, "--cores", "2", "--configfile", str(workdir / "config" / LMC_MINI.name), timeout=1200)
    if proc.returncode != 0:
        logs = sorted((workdir / "logs").rglob("*.log")) if (workdir / "logs").exists() else []
        pytest.fail(f"the lmc workflow failed:\n{tail(proc, 6000)}\n" +
                    "\n".join(f"--- {p}\n{p.read_text()[-1500:]}" for p in logs[-3:]))
    return workdir, Plan(lmc_config())


@pytest.mark.slow
def test_lmc_workflow_writes_the_instability_and_plane_outputs(lmc_run):
    workdir, plan = lmc_run
    results = workdir / "results"
    for name in ("instability.png", "plane_mlp_lucas.png", "plane_base_children.png", "figure_A11.png"):
        assert (results / "figures" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    table = pd.read_parquet(results / "tables" / "instability.parquet")
    # 2 seeds x 3 spawn epochs + 1 independent line, x 2 BN modes x 2 splits; the independent line aligned
    # (2 BN modes) and REPAIRed (the recompute mode, in a BN network), x 2 splits.
    assert (table["status"] == "measured").all()
    assert table["pair_kind"].value_counts().to_dict() == {"spawn": 2 * 3 * 2 * 2, "independent": 2 * 2,
                                                           "independent_aligned": 2 * 2,
                                                           "independent_aligned_repair": 2}
    aligned = table[table["pair_kind"] == "independent_aligned"]
    assert (aligned["distance_l2"] < aligned["distance_l2_unaligned"]).all() and (aligned["align_iterations"] >= 1).all()
    last = table[table["spawn_epoch"] == 3]
    assert (last["error_barrier"] == 0).all() and (last["distance_l2"] == 0).all() and last["stable"].all()
    early = table[table["spawn_epoch"] == 0]
    assert (early["distance_l2"] > 0).all()
    assert table["stable_from_k"].dropna().isin([0, 1, 3]).all()
    runs = pd.read_parquet(results / "tables" / "runs.parquet")
    children = runs[runs["spawn_epoch"].notna()]
    assert len(children) == 2 * 3 * 2 and (children["status"] == "trained").all()
    assert set(children["parent"]) == set(plan.runs_of("base"))
    assert set(children["child"]) == {0, 1} and set(children["spawn_epoch"]) == {0, 1, 3}
    # Children are measured in pairs, not swept one by one.
    paths = pd.read_parquet(results / "tables" / "paths.parquet")
    assert not set(children["run_id"]) & set(paths["run_id"])
    planes = pd.read_parquet(results / "tables" / "planes.parquet")
    assert set(planes["plane"]) == {"mlp_lucas", "base_children"}
    assert set(planes["kind"]) == {"grid", "anchor", "trajectory"}
    lucas = planes[(planes["plane"] == "mlp_lucas") & (planes["kind"] == "grid")]
    assert len(lucas) == 5 * 5 * 2
    children_plane = planes[(planes["plane"] == "base_children") & (planes["kind"] == "anchor")]
    assert list(children_plane["label"]) == ["spawn_1", "child_k1c0", "child_k1c1"]
    # Every new job logged the CPU seconds it used.
    for log in [*(workdir / "logs" / "lmc_path").glob("*.log"), *(workdir / "logs" / "plane").glob("*.log")]:
        assert "cpu seconds:" in log.read_text(), log


def report_results(report: Path) -> dict[str, dict]:
    """The results of a `snakemake --report` page by file name: the JSON object its page script holds
    (rule, mime type, caption, labels, the file as a data URI)."""
    text = report.read_text()
    start = text.index("var results = ", text.index('<script id="results">')) + len("var results = ")
    results, _ = json.JSONDecoder().raw_decode(text, start)
    return {Path(path).name: entry for path, entry in results.items()}


@pytest.mark.slow
def test_the_html_report_shows_the_tables_and_every_figure_with_its_caption(lmc_run, tmp_path):
    """`snakemake --report`: Table 1 and its sensitivity table as pages, the instability figure and each
    plane beside the experiment figures and Figure A11, each with its caption."""
    from conftest import snakemake, tail

    workdir, plan = lmc_run
    report = tmp_path / "report.html"
    proc = snakemake(workdir, "--report", str(report), "--configfile", str(workdir / "config" / LMC_MINI.name))
    assert proc.returncode == 0, tail(proc)
    results = report_results(report)
    expected = {  # file: (rule, mime type, words of its caption)
        "table1.html": ("table1", "text/html", "layer_barrier"),
        "table1_sensitivity.html": ("table1_sensitivity", "text/html", "grid of thresholds"),
        "instability.png": ("instability_figure", "image/png", "error barrier"),
        "plane_mlp_lucas.png": ("plane_figure", "image/png", "dashed white contour"),
        "plane_base_children.png": ("plane_figure", "image/png", "dashed white contour"),
        "figure_A11.png": ("figure_a11", "image/png", "Scatter panels"),
        "E1.png": ("experiment_figure", "image/png", "How to read it"),
        "E2.png": ("experiment_figure", "image/png", "How to read it"),
    }
    assert set(results) == set(expected)
    for name, (rule, mime, words) in expected.items():
        entry = results[name]
        assert (entry["job_properties"]["rule"], entry["mime_type"]) == (rule, mime), name
        assert words in entry["caption"] and "System Message" not in entry["caption"], name  # valid reST
    assert results["plane_mlp_lucas.png"]["labels"] == {"plane": "mlp_lucas"}
    # the Table 1 page is the table the run wrote: its one row, beside the paper's labels
    page = base64.b64decode(results["table1.html"]["data_uri"].split("base64,", 1)[1]).decode()
    assert page == (workdir / "results" / "tables" / "table1.html").read_text()
    assert "<td>MLP</td>" in page and "<td>mlp vs base</td>" in page


def test_linpath_plan_costs_the_children_pairs_and_planes():
    from linpath.study.cost import estimate
    from linpath.study.config import load_config

    repo = Path(__file__).resolve().parents[1]
    files = [str(repo / "config" / "config.yaml"), str(repo / "config" / "paper.yaml")]
    config = load_config(files)
    plan, est = Plan(config), estimate(config, files)
    lmc = LmcPlan(plan)
    children = [r for r in plan.runs.values() if r.spawn_epoch is not None]
    assert est.rules["spawn"].jobs == len(children) == 3 * 7 * 2
    assert est.rules["spawn"].epochs == sum(100 - r.spawn_epoch for r in children)
    assert est.rules["lmc_path"].jobs == len(lmc.pairs) and est.rules["lmc_path"].hours > 0
    random = [job for job in lmc.planes.values() if job.spec.random]
    # E1's two MLPs, E2's base and children planes; random planes: the spiral MLP's, base's in both BN modes.
    assert est.rules["plane"].jobs == len(lmc.planes) == 4 + 3 and len(random) == 3
    # A grid of 29 x 29 points; a random plane's grid and line.
    assert est.rules["plane"].path_points == 4 * 29 * 29 + sum(j.spec.points**2 + j.spec.line_points for j in random)


def test_the_instability_files_hold_every_pair_sweep_and_the_log_counts_the_skipped(tmp_path):
    paths = hand_paths(seeds=(0,), ks=(1, 3))  # three pairs: the independent one, k1 (skipped) and k3
    skipped = paths[paths["pair"] == "k1"].drop_duplicates(["bn_mode", "split"]).assign(
        status="skipped", status_reason="not measured: c1 diverged", alpha=np.nan, loss=np.nan, error=np.nan)
    files = [tmp_path / "independent.parquet", tmp_path / "k1.parquet"]
    paths[paths["pair"] != "k1"].to_parquet(files[0], index=False)
    skipped.to_parquet(files[1], index=False)
    out_table, out_paths, log = tmp_path / "t" / "instability.parquet", tmp_path / "t" / "paths.parquet", tmp_path / "log"
    table = write_instability([str(f) for f in files], 0.02, out_table, out_paths, str(log))
    read = pd.read_parquet(out_table)  # `stable` of a skipped row: NaN in the frame, None in the file
    pd.testing.assert_frame_equal(read.drop(columns="stable"), table.drop(columns="stable"))
    assert read["stable"].isna().tolist() == table["stable"].isna().tolist() == [False] * 8 + [True] * 4
    assert read["stable"].iloc[:8].tolist() == table["stable"].iloc[:8].tolist()
    written = pd.read_parquet(out_paths)
    assert len(written) == len(paths[paths["pair"] != "k1"]) + len(skipped), "every row of every sweep file"
    assert len(table) == 12 and (table["status"] == "skipped").sum() == 4
    assert log.read_text() == f"12 rows (4 skipped) -> {out_table}; curves -> {out_paths}\n"


def test_a_pair_end_without_an_outcome_has_not_finished_and_names_the_file(tmp_path):
    done, running = tmp_path / "done", tmp_path / "running"
    write_outcome(Outcome("trained", run="done"), done)
    with pytest.raises(FileNotFoundError, match=f"{running / 'outcome.yaml'}: the run has not finished"):
        not_trained([done, running])
    assert not_trained([done]) is None


def test_a_skipped_pair_has_one_row_per_mode_and_split_and_an_aligned_one_per_kind():
    spec = InstabilitySpec(bn_modes=["interpolate", "recompute"], splits=["train", "test"])
    meta = {"setting": "base", "seed": 0, "pair_kind": INDEPENDENT, "pair": INDEPENDENT}
    plain = skipped_frame(meta, spec, "not measured: b diverged")
    assert len(plain) == 4 and set(plain["pair"]) == {INDEPENDENT} and (plain["status"] == "skipped").all()
    assert set(zip(plain["bn_mode"], plain["split"])) == {(m, s) for m in spec.bn_modes for s in spec.splits}
    aligned = skipped_frame(meta, spec, "not measured: b diverged", align=True)
    assert len(aligned) == 8 and (aligned["pair"] == aligned["pair_kind"]).all()
    assert set(aligned["pair_kind"]) == {ALIGNED, ALIGNED_REPAIR}
    assert (aligned["status_reason"] == "not measured: b diverged").all()


def test_a_child_run_is_its_parents_recipe_from_the_spawn_state_with_its_own_data_order():
    parent = {"init": {"seed": 7, "source": "x.pt"}, "train": {"seed": 3, "lr": 0.1, "spawn_epochs": [1, 2]}}
    spec = SpawnSpec(epochs=[1], keep_optimizer=False, keep_schedule=True)
    child = child_run(parent, "base", 1, 1, spec)
    assert child["init"] == {"seed": 7, "spawn": "@spawn:base/1", "spawn_optimizer": False, "spawn_schedule": True}
    assert child["train"] == {"seed": 3 + 2 * CHILD_SEED_STEP, "lr": 0.1}, "no spawn states of its own"
    assert parent["train"] == {"seed": 3, "lr": 0.1, "spawn_epochs": [1, 2]}, "the parent's recipe is left alone"
    bare = child_run({"model": {"arch": "mlp"}}, "base", 0, 0, SpawnSpec(epochs=[0]))
    assert bare["init"]["seed"] == 0 and bare["train"] == {"seed": CHILD_SEED_STEP} and bare["model"] == {"arch": "mlp"}


def test_an_unknown_key_of_a_spawn_section_is_named_with_its_place():
    with pytest.raises(SettingsError, match="unknown setting 'settings.base.spawn.child'"):
        SpawnSpec.from_config({"epochs": [1], "child": 2}, "settings.base.spawn", [0, 1])


def two_settings_lines() -> pd.DataFrame:
    """One line (k1, interpolate, train) of `zeta` then one of `alpha`: loss 1, 2, 1.5 and error 0.1, 0.4, 0.2."""
    rows = []
    for setting in ("zeta", "alpha"):
        for alpha, loss, err in ((0.0, 1.0, 0.1), (0.5, 2.0, 0.4), (1.0, 1.5, 0.2)):
            rows.append({"setting": setting, "experiment": "E2", "seed": 0, "pair_kind": "spawn", "pair": "k1",
                         "spawn_epoch": 1, "run_id": "r", "end_a": "a", "end_b": "b", "bn_mode": "interpolate",
                         "split": "train", "alpha": alpha, "loss": loss, "accuracy": 1 - err, "error": err,
                         "distance_l2": 2.0, "distance_rel": 0.5, "status": "measured", "status_reason": ""})
    return pd.DataFrame(rows)


def test_a_line_is_its_barriers_ends_and_distance_and_the_table_keeps_the_measured_order():
    paths = two_settings_lines()
    line = curve_rows(paths.assign(distance_l2_unaligned=3.0, distance_rel_unaligned=0.75, align_iterations=2,
                                   align_converged=True, repair=""))[0]
    assert {k: line[k] for k in ("setting", "loss_a", "loss_b", "loss_barrier", "error_barrier", "error_barrier_alpha",
                                 "accuracy_a", "accuracy_b", "distance_l2", "distance_rel", "distance_l2_unaligned",
                                 "align_iterations", "align_converged")} == pytest.approx(
        {"setting": "zeta", "loss_a": 1.0, "loss_b": 1.5, "loss_barrier": 0.75, "error_barrier": 0.25,
         "error_barrier_alpha": 0.5, "accuracy_a": 0.9, "accuracy_b": 0.8, "distance_l2": 2.0, "distance_rel": 0.5,
         "distance_l2_unaligned": 3.0, "align_iterations": 2, "align_converged": True})
    table = instability_table(paths, 0.02)
    assert list(table["setting"]) == ["zeta", "alpha"], "rows in the order the sweeps measured them"
    assert list(table.columns) == [
        "setting", "experiment", "seed", "pair_kind", "pair", "spawn_epoch", "bn_mode", "split", "n_lines",
        "error_barrier", "loss_barrier", "distance_l2", "distance_rel", "error_barrier_max", "error_barrier_alpha",
        "accuracy_a", "accuracy_b", "accuracy_ends_mean", "ends", "distance_l2_unaligned", "distance_rel_unaligned",
        "align_iterations", "align_converged", "repair", "status", "status_reason", "threshold", "stable",
        "stable_from_k", "stability_rule", "end_statistics"]
    assert (table["status_reason"] == "").all() and (table["n_lines"] == 1).all()
    assert table["align_converged"].dtype == "boolean" and table["end_statistics"].tolist() == [
        END_STATISTICS["interpolate"]] * 2
    assert table["stability_rule"].iloc[0] == (
        "stable: error barrier <= 0.02 (error = 1 - accuracy; barrier = max along the path - mean of its two ends); "
        "stable_from_k: the smallest spawn epoch k from which the mean over seeds stays stable at every larger k "
        "measured")


def test_a_table_of_skipped_pairs_alone_has_every_column_and_says_why():
    skipped = two_settings_lines().iloc[[0]].assign(status="skipped", status_reason="not measured: b diverged")
    table = instability_table(skipped, 0.02)
    assert list(table.columns) == [
        "setting", "experiment", "seed", "pair_kind", "pair", "spawn_epoch", "bn_mode", "split", "n_lines", "status",
        "status_reason", "error_barrier", "loss_barrier", "distance_l2", "distance_rel", "accuracy_ends_mean",
        "distance_l2_unaligned", "distance_rel_unaligned", "align_iterations", "align_converged", "repair", "threshold",
        "stable", "stable_from_k", "stability_rule", "end_statistics"]
    row = table.iloc[0]
    assert (row["n_lines"], row["status"], row["status_reason"]) == (0, "skipped", "not measured: b diverged")
    assert np.isnan(row["error_barrier"]) and pd.isna(row["stable"]) and np.isnan(row["stable_from_k"])


def test_a_helper_setting_cannot_spawn_and_a_childs_name_cannot_be_taken():
    config = lmc_config()
    config["settings"]["base"]["aux"] = True
    with pytest.raises(SettingsError, match=r"settings\.base\.spawn: a helper \(aux\) setting cannot spawn"):
        Plan(config).check()
    config = lmc_config()
    config["settings"][child_name("base", 1, 0)] = {"experiment": config["settings"]["base"]["experiment"]}
    with pytest.raises(SettingsError, match=r"settings\.base_k1c0: the name is taken by a child spawned from base"):
        Plan(config).check()


def test_a_child_is_described_by_its_parents_intervention_or_name():
    config = lmc_config()
    config["settings"]["base"].pop("intervention", None)
    assert Plan(config).settings[child_name("base", 1, 0)].intervention == "base: child 0 spawned after epoch 1"
    config["settings"]["base"]["intervention"] = "standard training"
    assert Plan(config).settings[child_name("base", 3, 1)].intervention == "standard training: child 1 spawned after epoch 3"
