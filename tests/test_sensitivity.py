"""Table 1 under other barrier thresholds (linpath.report.sensitivity), on hand-made loss curves measured by the
same code as real paths (linpath.paths.shapes.shape_table): the stored Δ, L(0), L(1) and α_half relabel to what
measuring the curves at those thresholds gives; a row whose small bump is a barrier only at low thresholds
is not robust, one with a real barrier is; the configured point is Table 1 itself; Lucas et al.'s criterion
sits beside ours; the `report` verb writes the table and Table 1 states the count."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import run_cli
from linpath.study.plan import Plan
from linpath.foundations.hparams import ShapeThresholds
from linpath.report.sensitivity import (SensitivityGrid, relabel, robust_counts, robustness_line,
                                        sensitivity_markdown, sensitivity_table)
from linpath.paths.shapes import curve_metrics, shape_table
from linpath.report.tables import table1

SEEDS = [0, 1, 2, 3]
ALPHAS = np.linspace(0, 1, 51)
DECAY = 2.3 - 2.25 * ALPHAS  # chance level down to 0.05, 0.045 per grid step


def curve(kind: str) -> np.ndarray:
    if kind == "bump":  # +0.1 at α = 0.5: a rise of 0.055 over the point before it
        return DECAY + np.where(np.isclose(ALPHAS, 0.5), 0.1, 0.0)
    if kind == "barrier":  # a hump of height 1 around α = 0.5
        return DECAY + np.exp(-((ALPHAS - 0.5) / 0.08) ** 2)
    if kind == "plateau":
        return np.where(ALPHAS < 0.8, 2.30, 2.30 - (ALPHAS - 0.8) / 0.2 * 2.25)
    return DECAY


def paths_of(setting: str, seed: int, kind: str, path: str = "full", group: str = "all") -> pd.DataFrame:
    return pd.DataFrame({"run_id": f"{setting}-s{seed}", "path": path, "start": "init", "group": group,
                         "param_group": "all", "bn_mode": "interpolate", "split": "train", "alpha": ALPHAS,
                         "loss": curve(kind), "accuracy": 0.5})


# setting -> (full-path curve, mean group Δ as a small bump on block1's path)
KINDS = {"base": "decay", "bump": "bump", "barrier": "barrier"}
GROUP_RISE = {"base": 0.0, "bump": 0.0, "barrier": 0.005}


def measured_shapes() -> pd.DataFrame:
    frames = []
    for setting, kind in KINDS.items():
        for s in SEEDS:
            frames.append(paths_of(setting, s, kind))
            group = paths_of(setting, s, "decay", "group", "block1")
            group.loc[25, "loss"] += GROUP_RISE[setting] + 0.045  # a rise of GROUP_RISE after the step down
            frames.append(group)
    shapes = shape_table(pd.concat(frames, ignore_index=True))
    shapes["setting"] = shapes["run_id"].str.rsplit("-s", n=1).str[0]
    shapes["seed"] = shapes["run_id"].str.rsplit("-s", n=1).str[1].astype(int)
    return shapes


def plan() -> Plan:
    settings = {"base": {"experiment": "E2"}, "bump": {"experiment": "E9", "baseline": "base"},
                "barrier": {"experiment": "E9", "baseline": "base"}}
    rows = [{"category": "c", "intervention": "small bump", "settings": ["bump"], "paper_shape": "NB"},
            {"category": "c", "intervention": "real barrier", "settings": ["barrier"], "paper_shape": "B/H-LB",
             "paper_acc": "worse"},
            {"category": "c", "intervention": "own row", "settings": ["bump"]}]
    return Plan({"seeds": SEEDS, "base": {"model": {"arch": "resnet18", "width": 4}, "data": {"dataset": "digits"}},
                 "settings": settings, "table1": rows, "shapes": {}})


def runs() -> pd.DataFrame:
    acc = {"base": 0.90, "bump": 0.90, "barrier": 0.88}
    return pd.DataFrame([{"run_id": f"{n}-s{s}", "setting": n, "seed": s, "test_acc": a + 0.001 * s,
                          "train_acc": 1.0, "model": "resnet18"} for n, a in acc.items() for s in SEEDS])


@pytest.mark.parametrize("rel,tol", [(0.0, 1e-4), (0.02, 1e-3), (0.05, 0.01), (0.1, 0.01), (0.01, 0.5)])
def test_relabelled_shapes_equal_measuring_the_curves_at_those_thresholds(rel, tol):
    thresholds = ShapeThresholds(barrier_tol=tol, barrier_rel=rel)
    shapes = measured_shapes()
    again = relabel(shapes, thresholds)
    for kind in ("decay", "bump", "barrier", "plateau"):
        assert curve_metrics(ALPHAS, curve(kind), thresholds)["label"] in ("NB", "B", "P")
    expected = [curve_metrics(ALPHAS, c["loss"].to_numpy(), thresholds)
                for _, c in pd.concat([paths_of(n, s, k) for n, k in KINDS.items() for s in SEEDS])
                .groupby("run_id", sort=False)]
    full = again[again["path"] == "full"]
    assert list(full["label"]) == [m["label"] for m in expected]
    assert list(full["monotonic"]) == [m["monotonic"] for m in expected]
    assert (again["label_rule"] == thresholds.rule()).all()


def test_the_configured_thresholds_reproduce_the_stored_labels_and_a_plateau_stays_p():
    shapes = measured_shapes()
    assert relabel(shapes, ShapeThresholds())["label"].tolist() == shapes["label"].tolist()
    plateau = shape_table(paths_of("p", 0, "plateau"))
    assert relabel(plateau, ShapeThresholds(barrier_tol=1e-4, barrier_rel=0))["label"].tolist() == ["P"]
    nan = plateau.assign(label="NaN", delta=np.nan)
    assert relabel(nan, ShapeThresholds(barrier_tol=0, barrier_rel=0))["label"].tolist() == ["NaN"]


@pytest.fixture(scope="module")
def grid_table() -> pd.DataFrame:
    return sensitivity_table(plan(), runs(), measured_shapes())


def by_row(frame: pd.DataFrame, row: int) -> pd.DataFrame:
    return frame[frame["row"] == row]


def test_a_bump_that_only_low_thresholds_call_a_barrier_is_not_robust(grid_table):
    bump = by_row(grid_table, 0)
    assert len(bump) == 15, "5 barrier_rel x 3 barrier_tol; the configured point is one of them"
    at = bump.set_index(["barrier_rel", "barrier_tol"])["shape"]
    assert at[(0.05, 0.01)] == "NB" and at[(0.1, 0.01)] == "NB"   # 0.055 <= 0.05 * 2.25
    assert at[(0.02, 0.01)] == "B" and at[(0.0, 1e-4)] == "B"     # 0.055 > 0.045, > 1e-4
    assert not bump["shape_robust"].any() and not bump["agreement_robust"].any()
    conf = bump[bump["configured"]].iloc[0]
    assert (conf["barrier_rel"], conf["barrier_tol"], conf["shape"], conf["agrees"]) == (0.05, 0.01, "NB", True)


def test_a_real_barrier_is_robust_in_shape_and_its_layer_tag_follows_the_floor(grid_table):
    barrier = by_row(grid_table, 1)
    assert set(barrier["shape"]) == {"B"} and barrier["shape_robust"].all()
    layer = barrier.set_index("barrier_tol")["layer_barrier"]
    # block1's rise: 0.005 against 0 in the baseline; a barrier only where the floor is below it
    assert set(layer[0.01]) == {"none"} and set(layer[1e-3]) == {"H-LB"} and set(layer[1e-4]) == {"H-LB"}
    assert not barrier["labels_robust"].any() and not barrier["agreement_robust"].any()


def test_the_configured_point_is_table1_and_an_own_row_is_not_compared(grid_table):
    t1 = table1(plan(), runs(), measured_shapes())
    conf = grid_table[grid_table["configured"]].set_index("row")
    for col in ("shape", "shape_fractions", "layer_barrier", "acc_word", "agrees_shape", "agrees_layer", "agrees"):
        assert list(conf[col].astype(str)) == list(t1[col].astype(str)), col
    own = by_row(grid_table, 2)
    assert own["agrees"].isna().all() and own["agreement_robust"].all()
    assert t1.loc[2, "paper_source"] == "" and t1.loc[1, "paper_source"] == "Table 1"


def test_lucas_criterion_beside_ours(grid_table):
    lucas = grid_table.groupby("row").first()
    assert lucas.loc[0, "lucas_shape"] == "B" and lucas.loc[0, "lucas_fractions"] == "B 4/4"
    assert lucas.loc[1, "lucas_shape"] == "B"
    assert "delta > 0.0001" in lucas.loc[0, "lucas_rule"]
    tolerant = sensitivity_table(plan(), runs(), measured_shapes(), SensitivityGrid(lucas_tol=0.1))
    assert tolerant.groupby("row").first().loc[0, "lucas_shape"] == "NB", "the bump is below a tolerance of 0.1"


def test_the_robustness_count_and_markdown(grid_table):
    assert robust_counts(grid_table) == {"measured": 3, "labels": 0, "compared": 2, "agreement": 0}
    line = robustness_line(grid_table)
    assert line.startswith("Robust to the thresholds: 0 of 3 rows keep their labels")
    assert "barrier_rel {0, 0.01, 0.02, 0.05, 0.1} x barrier_tol {0.0001, 0.001, 0.01}" in line
    text = sensitivity_markdown(grid_table)
    assert line in text and "| small bump | NB | B ×9, NB ×6 |" in text
    assert "rel 0 tol 0.0001" in text


def test_a_configured_point_off_the_grid_is_added():
    config = plan().config
    config["shapes"] = {"barrier_rel": 0.03, "barrier_tol": 0.02, "sensitivity": {"barrier_rel": [0], "barrier_tol": [0.01]}}
    frame = sensitivity_table(Plan(config), runs(), measured_shapes())
    points = frame.drop_duplicates(["barrier_rel", "barrier_tol", "layer_barrier_floor"])
    assert len(points) == 2 and points["configured"].sum() == 1
    conf = points[points["configured"]].iloc[0]
    assert (conf["barrier_rel"], conf["barrier_tol"], conf["layer_barrier_floor"]) == (0.03, 0.02, 0.01)


def test_report_verb_writes_the_sensitivity_and_table1_states_the_count(tmp_path: Path):
    record = tmp_path / "config.json"
    record.write_text(json.dumps(plan().config, sort_keys=True))
    runs().to_parquet(tmp_path / "runs.parquet", index=False)
    measured_shapes().to_parquet(tmp_path / "shapes.parquet", index=False)
    common = ["--config", str(record), "--runs", str(tmp_path / "runs.parquet"), "--shapes", str(tmp_path / "shapes.parquet")]
    sens = [tmp_path / "table1_sensitivity.parquet", tmp_path / "table1_sensitivity.md"]
    proc = run_cli(["report", "table1-sensitivity", *common, "--out", *map(str, sens)])
    assert proc.returncode == 0, proc.stderr
    frame = pd.read_parquet(sens[0])
    assert len(frame) == 3 * 15 and "Robust to the thresholds" in sens[1].read_text()
    out = [tmp_path / "table1.parquet", tmp_path / "table1.md"]
    proc = run_cli(["report", "table1", *common, "--sensitivity", str(sens[0]), "--out", *map(str, out)])
    assert proc.returncode == 0, proc.stderr
    text = out[1].read_text()
    assert robustness_line(frame) in text
    assert text.index("Agreement with the paper") < text.index("Robust to the thresholds")
    bad = run_cli(["report", "table1", *common, "--sensitivity", str(tmp_path / "missing.parquet"),
                   "--out", *map(str, out)])
    assert bad.returncode == 2 and "--sensitivity: file not found" in bad.stderr
