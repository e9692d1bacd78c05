"""`linpath interpolate` on runs trained by `linpath train`: the long-format parquet, the per-path
shape table, losses recomputed by hand from the recorded files, and bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import assert_states_equal, load_tensors, run_spec_with
from linpath.cli import commands as cli
from linpath.engine import models
from linpath.foundations.hparams import RunSpec
from linpath.paths.shapes import curve_metrics
from linpath.engine.train import evaluate, initial_state, train

COLUMNS = {"run_id", "path", "start", "group", "param_group", "bn_mode", "split", "alpha", "loss", "accuracy",
           "start_state", "end_state", "eval_data"}
CURVE = ["path", "start", "group", "param_group", "bn_mode", "split"]


def interpolate(run: Path, out: Path, cache: Path, *extra: str) -> int:
    return cli.main(["interpolate", "--run", str(run), "--eval-cache", str(cache), "--out", str(out),
                     "--no-progress", *extra])


def mlp_loss_by_hand(state: dict, x: torch.Tensor, y: torch.Tensor) -> float:
    """Cross-entropy of the MLP [64 -> 16 -> 10] by matmuls and log-softmax, in float64."""
    h = x.reshape(len(x), -1).double() @ state["layers.0.weight"].double().T + state["layers.0.bias"].double()
    h = torch.clamp(h, min=0)
    z = h @ state["layers.1.weight"].double().T + state["layers.1.bias"].double()
    log_probs = z - torch.logsumexp(z, dim=1, keepdim=True)
    return -log_probs[torch.arange(len(y)), y].mean().item()


@pytest.fixture(scope="module")
def mlp_paths(trained_mlp, tmp_path_factory):
    """`linpath interpolate` with the issue's options on the tiny trained MLP."""
    run_dir, spec, _ = trained_mlp
    work = tmp_path_factory.mktemp("interp")
    out, shapes, cache = work / "paths" / "mlp.parquet", work / "paths" / "mlp_shapes.parquet", work / "cache"
    code = interpolate(run_dir, out, cache, "--groups", "--param-groups", "--bn-mode", "interpolate",
                       "--bn-mode", "recompute", "--start", "init", "--start", "other:3", "--alphas", "0:1:5",
                       "--shapes", str(shapes))
    assert code == 0
    return run_dir, spec, pd.read_parquet(out), pd.read_parquet(shapes), out


def test_interpolate_columns_and_rows(mlp_paths):
    run_dir, _, table, _, _ = mlp_paths
    assert set(table.columns) == COLUMNS
    assert (table["run_id"] == run_dir.name).all()
    # an MLP has no BN: no parameter-group paths; full + two layers, from two starts, in two BN modes, two splits
    plans = set(map(tuple, table[["path", "group", "param_group"]].drop_duplicates().to_numpy()))
    assert plans == {("full", "all", "all"), ("group", "layer1", "all"), ("group", "layer2", "all")}
    assert set(table["start"]) == {"init", "other_init"}
    assert set(table["bn_mode"]) == {"interpolate", "recompute"}
    assert set(table["split"]) == {"train", "test"}
    # group paths start from the first start only; the second start gets the full path
    assert len(table) == (2 + 2) * 2 * 2 * 5
    assert set(table.loc[table["start"] == "other_init", "path"]) == {"full"}
    for _, curve in table.groupby(CURVE):
        assert sorted(curve["alpha"]) == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert table["loss"].notna().all() and table["accuracy"].between(0, 1).all()


def test_interpolate_records_the_files_it_used(mlp_paths):
    run_dir, spec, table, _, _ = mlp_paths
    assert (table["end_state"] == str(run_dir / "final.pt")).all()
    assert set(table.loc[table["start"] == "init", "start_state"]) == {str(run_dir / "init.pt")}
    other = set(table.loc[table["start"] == "other_init", "start_state"])
    assert len(other) == 1
    other_file = Path(other.pop())
    assert other_file.is_file() and other_file != run_dir / "init.pt"
    # other:3 is the random init this run would have drawn with init.seed 3
    reseeded = RunSpec.from_yaml(run_dir / "run.yaml")
    reseeded.init.seed = 3
    assert_states_equal(load_tensors(other_file), initial_state(reseeded))
    assert set(table["eval_data"].str.endswith("/train.pt") | table["eval_data"].str.endswith("/test.pt")) == {True}
    for split, path in table[["split", "eval_data"]].drop_duplicates().to_numpy():
        assert Path(path).is_file() and Path(path).name == f"{split}.pt"


def test_alpha_one_loss_recomputed_by_hand_from_the_recorded_files(mlp_paths):
    run_dir, _, table, _, _ = mlp_paths
    at_one = table[table["alpha"] == 1.0]
    for split, rows in at_one.groupby("split"):
        (eval_file,) = set(rows["eval_data"])
        (end_file,) = set(rows["end_state"])
        blob = torch.load(eval_file, map_location="cpu", weights_only=True)
        assert {"x", "y"} <= set(blob) and blob["x"].dtype == torch.float32 and blob["y"].dtype == torch.int64
        assert len(blob["y"]) == {"train": 1438, "test": 359}[split]
        by_hand = mlp_loss_by_hand(torch.load(end_file, map_location="cpu", weights_only=True), blob["x"], blob["y"])
        assert rows["loss"].to_numpy() == pytest.approx(by_hand, rel=1e-5), "every path ends at θ_T"
    # α = 0 of the full path from init is the untrained model: training's epoch-0 metrics
    metrics = pd.read_parquet(run_dir / "metrics.parquet")
    for split in ("train", "test"):
        row = table[(table["path"] == "full") & (table["start"] == "init") & (table["alpha"] == 0.0)
                    & (table["split"] == split) & (table["bn_mode"] == "interpolate")]
        assert row["loss"].item() == pytest.approx(metrics[f"{split}_loss"].iloc[0], rel=1e-6)
        assert row["accuracy"].item() == pytest.approx(metrics[f"{split}_acc"].iloc[0], abs=1e-12)


def test_recompute_changes_nothing_without_batchnorm(mlp_paths):
    _, _, table, _, _ = mlp_paths
    keys = ["path", "start", "group", "param_group", "split", "alpha"]
    a = table[table["bn_mode"] == "interpolate"].sort_values(keys).reset_index(drop=True)
    b = table[table["bn_mode"] == "recompute"].sort_values(keys).reset_index(drop=True)
    assert a[keys].equals(b[keys])
    assert a["loss"].tolist() == b["loss"].tolist()
    other = a[a["start"] == "other_init"].set_index(["path", "group", "split", "alpha"])["loss"]
    init = a[a["start"] == "init"].set_index(["path", "group", "split", "alpha"])["loss"]
    assert (other.loc[("full", "all", "train", 0.5)] != init.loc[("full", "all", "train", 0.5)]), "two different starts"


def test_shapes_one_row_per_path_and_split(mlp_paths):
    _, _, table, shapes, _ = mlp_paths
    assert len(shapes) == (2 + 2) * 2 * 2  # (full × 2 starts + 2 groups) × BN modes × splits
    assert not shapes.duplicated(CURVE).any()
    assert {"label", "delta", "label_rule", "threshold_barrier_tol", "alpha_half"} <= set(shapes.columns)
    for _, row in shapes.iterrows():
        curve = table[np.logical_and.reduce([table[k] == row[k] for k in CURVE])]
        assert len(curve) == 5
        expected = curve_metrics(curve["alpha"].to_numpy(), curve["loss"].to_numpy())
        assert row["delta"] == expected["delta"] and row["label"] == expected["label"]


def test_interpolate_a_batchnorm_run(trained_resnet, tmp_path, capsys):
    """Parameter-group paths and both BN modes on a ResNet; α=1 of the interpolate mode is θ_T."""
    run_dir, spec, _ = trained_resnet
    out = tmp_path / "resnet.parquet"
    code = interpolate(run_dir, out, tmp_path / "cache", "--no-full", "--param-groups", "--start", "epoch:1",
                       "--bn-mode", "interpolate", "--bn-mode", "recompute", "--alphas", "0,0.5,1",
                       "--splits", "train", "--bn-subset", "256")
    captured = capsys.readouterr()
    assert code == 0, captured.err
    table = pd.read_parquet(out)
    assert f"{len(table)} rows -> {out}" in captured.out
    assert set(table["path"]) == {"param_group"} and set(table["start"]) == {"epoch_1"}
    assert set(table["start_state"]) == {str(run_dir / "epoch_1.pt")}
    plans = set(map(tuple, table[["group", "param_group"]].drop_duplicates().to_numpy()))
    assert plans == {(g, pg) for g in ("stem", "block1", "block2", "block3", "block4")
                     for pg in ("weights", "bn_affine", "bn_stats")}
    assert len(table) == 15 * 2 * 3
    (eval_file,) = set(table["eval_data"])
    blob = torch.load(eval_file, map_location="cpu", weights_only=True)
    assert len(blob["y"]) == 360, "the run's training subset"
    model = models.build(spec.model)
    model.load_state_dict(load_tensors(run_dir / "final.pt"))
    loss, acc = evaluate(model, blob["x"], blob["y"], "ce")
    final = table[(table["alpha"] == 1.0) & (table["bn_mode"] == "interpolate")]
    assert final["loss"].to_numpy() == pytest.approx(loss, rel=1e-5)
    assert (final["accuracy"] == acc).all()
    mid = table[table["alpha"] == 0.5].pivot_table(index=["group", "param_group"], columns="bn_mode", values="loss")
    assert (mid["interpolate"] - mid["recompute"]).abs().max() > 1e-3, "recomputed BN statistics change the loss"


# --- bad input ---------------------------------------------------------------------


def test_run_without_final_state_exits_2(trained_mlp, tmp_path, capsys):
    run_dir, _, _ = trained_mlp
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    for name in ("run.yaml", "init.pt"):
        shutil.copy(run_dir / name, unfinished / name)
    out = tmp_path / "paths.parquet"
    assert interpolate(unfinished, out, tmp_path / "cache") == 2
    err = capsys.readouterr().err
    assert err.startswith("linpath interpolate: error:") and "final.pt" in err and str(unfinished) in err
    assert not out.exists()
    assert interpolate(tmp_path / "no-such-run", out, tmp_path / "cache") == 2
    assert "run.yaml" in capsys.readouterr().err


@pytest.mark.parametrize("start,message", [
    ("bogus", "sweep.starts[0] must be init, other, other:<seed>, epoch:<t> or <label>=<file>, got 'bogus'"),
    ("epoch:7", "epoch_7.pt does not exist"),
])
def test_unknown_start_exits_2(start, message, trained_mlp, tmp_path, capsys):
    run_dir, _, _ = trained_mlp
    out = tmp_path / "paths.parquet"
    assert interpolate(run_dir, out, tmp_path / "cache", "--start", start) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_bad_seed_and_bad_split_exit_2(trained_mlp, tmp_path, capsys):
    run_dir, _, _ = trained_mlp
    out = tmp_path / "p.parquet"
    assert interpolate(run_dir, out, tmp_path / "cache", "--start", "other:x") == 2
    assert capsys.readouterr().err.startswith("linpath interpolate: error:")
    assert interpolate(run_dir, out, tmp_path / "cache", "--splits", "train,valid") == 2
    assert "'valid'" in capsys.readouterr().err
    assert not out.exists()


def test_other_init_of_two_runs_sharing_an_output_folder(trained_mlp, tmp_path, capsys):
    run_dir, _, _ = trained_mlp
    narrow = tmp_path / "runs" / "narrow"
    train(run_spec_with("mlp", {"hidden": [8]}, train={"epochs": 1}), narrow, progress=False)
    shared = tmp_path / "paths"
    for run in (run_dir, narrow):
        out = shared / f"{run.name}.parquet"
        code = interpolate(run, out, tmp_path / "cache", "--start", "other:3", "--alphas", "0,1", "--splits", "test")
        assert code == 0, capsys.readouterr().err
        table = pd.read_parquet(out)
        state = load_tensors(table["start_state"].iloc[0])
        spec = RunSpec.from_yaml(run / "run.yaml")
        assert state["layers.0.weight"].shape[0] == spec.model.hidden[0]
