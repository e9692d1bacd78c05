"""Tables and barrier inits at the level of detail a wrong result would show up in: which rows are
selected, which numbers are compared, what a file holds. Written against the mutants that the
test set of test_tables / test_barrier let through (README "Mutation testing").

The study below is a small set of finished runs written to disk in the pipeline's own formats
(run.yaml, summary.yaml, outcome.yaml, paths and shapes parquet per run, shapes computed by `shape_table`), so
the file-level functions are exercised on real files."""

from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from conftest import run_dict
from linpath.foundations.outcome import Outcome, write_outcome
from linpath.paths.barrier import find_barrier, interpolate_state, write_barrier_inits
from linpath.study.plan import Plan
from linpath.foundations.hparams import SettingsError
from linpath.paths.shapes import ShapeThresholds, shape_table
from linpath.report.tables import (SummaryRules, _ordered, accuracy_change, agreement_counts, combined_word,
                                   experiment_table, full_delta, group_barrier, label_counts,
                                   layer_barrier_tag, mean_interval, not_trained, paper_parts, setting_summary,
                                   table1, table1_markdown, trained, write_core_tables,
                                   write_experiment_table, write_table1)

ALPHAS = [0.0, 0.25, 0.5, 0.75, 1.0]
SEEDS = [0, 1, 2]
FALLING = [2.0, 1.5, 1.0, 0.5, 0.25]
BUMP = [2.0, 1.0, 1.75, 0.5, 0.25]          # Δ = 0.75
SMALL_BUMP = [2.0, 1.0, 1.25, 0.5, 0.25]    # Δ = 0.25

SETTINGS = {
    "base": {"experiment": "E2", "intervention": "standard training"},
    "more_wd": {"experiment": "E9", "baseline": "base", "intervention": "more weight decay", "figure": "Fig. 9"},
    "less_data": {"experiment": "E8", "baseline": "base", "intervention": "less data", "figure": "Fig. 6"},
}
# test accuracy per setting and seed (None: the run was not trained)
TEST_ACC = {"base": [0.90, 0.91, 0.92], "more_wd": [0.93, 0.935, 0.95], "less_data": [0.85, 0.87, None]}
# full-path curve (train split, from θ₀) and group-wise curves per setting
FULL = {"base": FALLING, "more_wd": BUMP, "less_data": FALLING}
GROUPS = {"base": {"block1": FALLING, "block2": FALLING}, "more_wd": {"block1": BUMP, "block2": SMALL_BUMP},
          "less_data": {}}
TABLE1 = [
    {"category": "regularisation", "intervention": "weight decay", "settings": ["more_wd"],
     "paper_shape": "B/H-LB", "paper_acc": "better"},
    {"intervention": "data and decay", "settings": ["less_data", "more_wd"], "baseline": "base",
     "paper_shape": "NB"},
]


def curve_frame(run_id: str, losses, *, path="full", group="all", split="train", start="init",
                bn_mode="interpolate") -> list[dict]:
    return [{"run_id": run_id, "path": path, "start": start, "group": group, "param_group": "all",
             "bn_mode": bn_mode, "split": split, "alpha": a, "loss": l, "accuracy": 1.0 - l / 4}
            for a, l in zip(ALPHAS, losses)]


def run_paths(run_id: str, setting: str) -> pd.DataFrame:
    rows = curve_frame(run_id, FULL[setting])
    rows += curve_frame(run_id, [v + 0.1 for v in FULL[setting]], split="test")
    for group, losses in GROUPS[setting].items():
        rows += curve_frame(run_id, losses, path="group", group=group)
    return pd.DataFrame(rows)


REFERENCE = {"tables": {
    "table_wd": {"columns": ["test_acc", "delta", "nonmonotonic_pct", "relative_distance_mean"],
                 "rows": [{"label": "parent", "baseline_of": "more_wd", "paper_test": "90.0"},
                          {"label": "more WD", "setting": "more_wd", "column": "ResNet-18", "paper_test": "93.1"},
                          {"label": "less data", "setting": "less_data"},
                          {"label": "not in this config", "setting": "elsewhere"}]},
    "table_acc": {"rows": [{"label": "base", "setting": "base"}]},
}}


@pytest.fixture
def study(tmp_path):
    """A finished study on disk: every trained run with run.yaml, summary.yaml, sweep and shapes."""
    reference = tmp_path / "reference.yaml"
    reference.write_text(yaml.safe_dump(REFERENCE))
    config = {"seeds": SEEDS, "results": str(tmp_path / "results"), "reference": str(reference),
              "base": {"model": {"arch": "resnet18", "width": 4}, "data": {"dataset": "digits"}},
              "settings": SETTINGS, "table1": TABLE1}
    plan = Plan(config)
    layout = plan.layout
    trained_ids, skipped = [], {}
    for (setting, seed), run_id in sorted(plan.by_setting.items()):
        acc = TEST_ACC[setting][seed]
        if acc is None:
            skipped[run_id] = "no barrier on the parent's path"
            continue
        layout.run_dir(run_id).mkdir(parents=True)
        spec = run_dict("resnet18_w4")
        layout.run_file(run_id, "settings").write_text(yaml.safe_dump(spec))
        summary = {"run": run_id, "test_acc": acc, "train_acc": 1.0 - seed / 100,
                   "relative_distance_mean": 0.5 + seed, "relative_distance_global": 0.25 * (seed + 1)}
        layout.run_file(run_id, "summary").write_text(yaml.safe_dump(summary))
        write_outcome(Outcome("trained", run=run_id), layout.run_dir(run_id))
        paths = run_paths(run_id, setting)
        layout.sweep(run_id).parent.mkdir(parents=True, exist_ok=True)
        layout.shapes(run_id).parent.mkdir(parents=True, exist_ok=True)
        paths.to_parquet(layout.sweep(run_id), index=False)
        shape_table(paths).to_parquet(layout.shapes(run_id), index=False)
        trained_ids.append(run_id)
    return plan, trained_ids, skipped, tmp_path


# --- the long tables ----------------------------------------------------------------------------


def test_core_tables_hold_every_planned_run_and_every_curve(study):
    plan, run_ids, skipped, tmp = study
    layout, log = plan.layout, tmp / "logs" / "tables.log"
    write_core_tables(plan, run_ids, skipped, str(log))
    runs = pd.read_parquet(layout.table("runs"))
    assert len(runs) == 9 and set(runs["run_id"]) == set(plan.runs)
    assert list(runs["run_id"][:8]) == run_ids, "trained runs first, in the order given"
    skipped_row = runs[runs["status"] == "skipped"].iloc[0]
    assert skipped_row["run_id"] == plan.by_setting[("less_data", 2)]
    assert skipped_row["status_reason"] == "no barrier on the parent's path"
    assert (skipped_row["setting"], skipped_row["seed"], skipped_row["experiment"]) == ("less_data", 2, "E8")
    assert math.isnan(skipped_row["test_acc"])
    row = runs.set_index("run_id").loc[plan.by_setting[("more_wd", 1)]]
    assert (row["status"], row["status_reason"]) == ("trained", "")
    assert (row["experiment"], row["setting"], row["intervention"], row["seed"]) == ("E9", "more_wd", "more weight decay", 1)
    assert (row["model"], row["dataset"]) == ("resnet18", "digits")
    assert row["test_acc"] == 0.935 and row["relative_distance_global"] == 0.5
    assert json.loads(row["settings"]) == run_dict("resnet18_w4"), "the run's settings, as JSON"
    assert "run" not in runs.columns, "the summary's own run name is not a column"
    base = runs.set_index("run_id").loc[plan.by_setting[("base", 0)]]
    assert base["intervention"] == "standard training"

    paths = pd.read_parquet(layout.table("paths"))
    assert len(paths) == sum(len(run_paths(r, plan.runs[r].setting)) for r in run_ids)
    assert list(paths.columns[:4]) == ["run_id", "seed", "setting", "experiment"]
    one = paths[paths["run_id"] == plan.by_setting[("more_wd", 2)]]
    assert set(one["setting"]) == {"more_wd"} and set(one["seed"]) == {2} and set(one["experiment"]) == {"E9"}
    assert len(one) == len(run_paths("x", "more_wd"))
    shapes = pd.read_parquet(layout.table("shapes"))
    assert len(shapes) == len(paths) // len(ALPHAS)
    full = shapes[(shapes["path"] == "full") & (shapes["split"] == "train")]
    assert dict(zip(full["setting"], full["label"])) == {"base": "NB", "more_wd": "B", "less_data": "NB"}
    assert log.read_text() == f"8 runs (1 skipped) -> {layout.table('runs')} and beside it\n"


def test_trained_and_not_trained():
    runs = pd.DataFrame({"setting": ["a", "a", "a", "b", "b"], "seed": [0, 1, 2, 0, 1],
                         "status": ["trained", "skipped", "skipped", "skipped", "failed"],
                         "status_reason": ["", "no barrier", "no barrier", "why not", "diverged"]})
    assert list(trained(runs)["seed"]) == [0]
    assert trained(runs.drop(columns=["status", "status_reason"])).equals(runs.drop(columns=["status", "status_reason"]))
    assert not_trained(runs, ["a"]) == "a: 2 skipped (no barrier)"
    assert not_trained(runs, ["b", "a"]) == "a: 2 skipped (no barrier) | b: 1 skipped (why not) | b: 1 failed (diverged)"
    assert not_trained(runs, ["c"]) == ""
    assert not_trained(runs.drop(columns=["status"]), ["a"]) == ""
    mixed = pd.DataFrame({"setting": ["b", "a", "b"], "seed": [0, 0, 1], "status": ["skipped"] * 3,
                          "status_reason": ["r1", "r0", "r2"]})
    assert not_trained(mixed, ["a", "b"]) == "b: 2 skipped (r1; r2) | a: 1 skipped (r0)", "in the order runs appear"


# --- Table 1 and the experiment tables from the files ---------------------------------------------


@pytest.fixture
def summary_tables(study):
    """Table 1 from the core tables, and each experiment table from its rows' runs, as the workflow writes them."""
    plan, run_ids, skipped, tmp = study
    layout = plan.layout
    write_core_tables(plan, run_ids, skipped)
    log = tmp / "summary.log"
    write_table1(plan, layout.table("runs"), layout.table("shapes"), layout.table("table1"),
                 layout.table("table1", ".md"), str(log))
    for name, settings in {"table_wd": ["base", "more_wd", "less_data"], "table_acc": ["base"]}.items():
        ids = [r for r in run_ids if plan.runs[r].setting in settings]
        write_experiment_table(plan, name, ids, {r: why for r, why in skipped.items() if plan.runs[r].setting in settings},
                               layout.table(name), str(log))
    return plan, layout, log


def test_table1_rows_from_the_files(summary_tables):
    plan, layout, log = summary_tables
    t1 = pd.read_parquet(layout.table("table1"))
    assert log.read_text().splitlines() == [
        f"Table 1: 2 rows -> {layout.table('table1')}, {layout.table('table1', '.md')}",
        f"table_wd: 3 rows from 8 runs -> {layout.table('table_wd')}",
        f"table_acc: 1 rows from 3 runs -> {layout.table('table_acc')}"]
    assert len(t1) == 2
    wd, mixed = t1.iloc[0], t1.iloc[1]
    assert (wd["category"], wd["intervention"], wd["figure"], wd["settings"]) == \
           ("regularisation", "weight decay", "Fig. 9", "more_wd")
    assert (mixed["category"], mixed["figure"], mixed["settings"]) == ("", "Fig. 6, Fig. 9", "less_data, more_wd")
    assert wd["shape"] == "B" and wd["shape_fractions"] == "B 3/3"
    assert mixed["shape"] == "NB/B" and mixed["shape_fractions"] == "NB 2/5, B 3/5"
    # group Δ: more_wd (0.75 + 0.25) / 2 = 0.5 against base 0: higher; less_data has no group paths
    assert wd["layer_barrier"] == "H-LB" and wd["group_delta"] == "more_wd: 0.5 vs 0"
    assert mixed["layer_barrier"] == "H-LB" and mixed["group_delta"] == "more_wd: 0.5 vs 0"
    diffs = np.array([3.0, 2.5, 3.0])
    assert wd["acc_change_pp_mean"] == pytest.approx(diffs.mean())
    assert wd["acc_change_pp_std"] == pytest.approx(diffs.std(ddof=1))
    low, high = mean_interval(diffs, 0.95)
    assert (wd["acc_ci_low"], wd["acc_ci_high"]) == (pytest.approx(low), pytest.approx(high)) and low > 0
    assert wd["acc_word"] == "better" and wd["acc_words"] == f"more_wd: +2.83 [{low:+.2f}, {high:+.2f}] better"
    assert wd["acc_interval"] == f"+2.83 [{low:+.2f}, {high:+.2f}]" and not wd["acc_pooled"] and wd["acc_ci_caveat"] == ""
    assert wd["comparison"] == "more_wd vs base" and mixed["comparison"] == "less_data vs base; more_wd vs base"
    assert wd["acc_rule"] == SummaryRules().acc_rule() and wd["layer_rule"] == SummaryRules().layer_rule()
    assert wd["shape_rule"] == f"{ShapeThresholds().rule()}; {SummaryRules().label_rule()}"
    assert (wd["n_seeds"], wd["not_trained"]) == (3, "")
    assert (wd["paper_shape"], wd["paper_layer"], wd["paper_acc"]) == ("B", "H-LB", "better")
    assert wd["agrees_shape"] == True and wd["agrees_layer"] == True and wd["agrees_acc"] == True  # noqa: E712
    assert wd["agrees"] == True  # noqa: E712
    # the row of two settings pools the paired differences of both in acc_ci_*, and says so; what it shows is
    # each comparison's own interval, the one its word comes from (less_data: 2 seeds, marked unreliable)
    pooled = np.array([-5.0, -4.0, 3.0, 2.5, 3.0])
    assert mixed["acc_change_pp_mean"] == pytest.approx(pooled.mean())
    assert (mixed["acc_ci_low"], mixed["acc_ci_high"]) == tuple(pytest.approx(v) for v in mean_interval(pooled, 0.95))
    assert mixed["acc_pooled"] and mixed["acc_ci_caveat"] == ""
    assert mixed["acc_word"] == "mixed"
    assert mixed["acc_words"] == (f"less_data: -4.50 [-10.85, +1.85] (unreliable: 2 seeds < 3) same; "
                                  f"more_wd: +2.83 [{low:+.2f}, {high:+.2f}] better")
    assert mixed["acc_interval"] == mixed["acc_words"]
    # the config sweeps no group paths (more_wd's were written by hand): less_data's comparison has no tag, and
    # says why, while the row shows the tag it has
    assert mixed["layer_missing"] == "less_data vs base: not swept" and wd["layer_missing"] == ""
    assert (mixed["n_seeds"], mixed["not_trained"]) == (3, "less_data: 1 skipped (no barrier on the parent's path)")
    assert (mixed["paper_shape"], mixed["paper_layer"], mixed["paper_acc"]) == ("NB", "", "")
    assert mixed["agrees_shape"] == False and pd.isna(mixed["agrees_layer"]) and pd.isna(mixed["agrees_acc"])  # noqa: E712
    assert mixed["agrees"] == False  # noqa: E712
    assert str(t1["agrees"].dtype) == "boolean"


def test_table1_markdown_from_the_files(summary_tables):
    plan, layout, _ = summary_tables
    t1 = pd.read_parquet(layout.table("table1"))
    text = layout.table("table1", ".md").read_text()
    assert text == table1_markdown(t1, pd.read_parquet(layout.table("runs")))
    lines = text.split("\n")
    cols = ["category", "intervention", "comparison", "figure", "shape", "shape_fractions", "layer_barrier", "acc",
            "acc_word", "n", "paper_shape", "paper_layer", "paper_acc", "paper_source", "agrees_shape", "agrees_layer",
            "agrees_acc"]
    assert lines[0] == "| " + " | ".join(cols) + " |"
    assert lines[1] == "|" + "---|" * len(cols)
    wd, mixed = t1.iloc[0], t1.iloc[1]
    acc = f"{wd['acc_change_pp_mean']:+.2f} [{wd['acc_ci_low']:+.2f}, {wd['acc_ci_high']:+.2f}]"
    assert acc.startswith("+2.83 [")
    assert lines[2] == (f"| regularisation | weight decay | more_wd vs base | Fig. 9 | B | B 3/3 | H-LB | {acc} | better "
                        "| 3/3 | B | H-LB | better | Table 1 | yes | yes | yes |")
    # the pooled row shows each comparison's interval and word, not the pooled interval
    pooled = f"{mixed['acc_change_pp_mean']:+.2f} [{mixed['acc_ci_low']:+.2f}, {mixed['acc_ci_high']:+.2f}]"
    assert lines[3] == ("|  | data and decay | less_data vs base; more_wd vs base | Fig. 6, Fig. 9 | NB/B | NB 2/5, B 3/5 "
                        f"| H-LB | {mixed['acc_words']} | mixed | 5/6 | NB |  |  | Table 1 | no | – | – |")
    assert pooled not in text and "(unreliable: 2 seeds < 3) same; more_wd: " in lines[3]
    assert lines[4] == ""
    assert lines[5] == ("Agreement with the paper, each part on its own (a part agrees only when the label sets are "
                        "equal; – = the paper states nothing for that part, or nothing was measured): "
                        "shape 1/2 rows; layer 1/1 rows; acc 1/1 rows.")
    assert lines[6] == ""
    assert lines[7].startswith("`comparison`: what the row's measured columns compare, each setting against its "
                               "baseline (or the settings its `compare` names), paired by seed. `shape`: full-path "
                               "labels (θ0 → θT, train split)")
    # every value a cell can hold is named
    for value in ("NB no barrier", "B barrier", "P plateau", "NaN", "H-LB higher", "L-LB lower", "none within",
                  "not swept (", "not trained (", "no baseline (", "no layer groups (", "not finite (",
                  "fewer than 3 seeds, or of zero width, is marked unreliable", "n/a in `shape`", "`paper_layer`"):
        assert value in lines[7], value
    assert "`n`: runs trained / runs planned for the row" in lines[7]
    assert lines[8:11] == [f"Shape labels: {wd['shape_rule']}.", f"Layer barriers: {wd['layer_rule']}.",
                           f"Accuracy words: {wd['acc_rule']}."]
    assert lines[11:] == ["", "Runs that did not train (1 of 9):",
                          f"- `{plan.run_of('less_data', 2)}` (less_data, seed 2): skipped: no barrier on the parent's path",
                          ""]


def test_table1_markdown_of_rows_without_numbers():
    t1 = pd.DataFrame([{"category": "", "intervention": "x", "comparison": "x vs base", "figure": "", "shape": "n/a",
                        "shape_fractions": "n/a", "layer_barrier": "not trained", "acc_change_pp_mean": np.nan, "acc_ci_low": np.nan,
                        "acc_ci_high": np.nan, "acc_word": "n/a", "n_seeds": 0, "n": "0/3", "paper_shape": "", "paper_acc": "",
                        "paper_source": "",
                        "agrees_shape": pd.NA, "agrees_layer": False, "agrees_acc": True,
                        "shape_rule": "S", "layer_rule": "L", "acc_rule": "A"}])
    for col in ("agrees_shape", "agrees_layer", "agrees_acc"):
        t1[col] = t1[col].astype("boolean")
    text = table1_markdown(t1)
    assert "| x | x vs base |  | n/a | n/a | not trained | n/a | n/a | 0/3 |  |  |  |  | – | no | yes |" in text
    assert "shape 0/0 rows; layer 0/1 rows; acc 1/1 rows." in text
    assert text.endswith("Shape labels: S.\nLayer barriers: L.\nAccuracy words: A.\n")
    empty = table1_markdown(t1.iloc[:0])
    assert "Shape labels" not in empty and empty.endswith("\"often X\" is compared as X.\n")


def test_experiment_tables_from_the_files(summary_tables):
    plan, layout, _ = summary_tables
    table = pd.read_parquet(layout.table("table_wd"))
    assert list(table["row"]) == ["parent", "more WD", "less data"], "a row of a setting not planned is left out"
    assert list(table["setting"]) == ["base", "more_wd", "less_data"], "baseline_of: the parent setting"
    assert list(table["table"]) == ["table_wd"] * 3 and list(table["column"]) == ["", "ResNet-18", ""]
    wd = table.set_index("setting").loc["more_wd"]
    assert wd["test_acc_mean"] == pytest.approx(100 * np.mean([0.93, 0.935, 0.95]))
    assert wd["test_acc_std"] == pytest.approx(100 * np.std([0.93, 0.935, 0.95], ddof=1))
    assert wd["delta_mean"] == pytest.approx(0.75) and wd["delta_std"] == pytest.approx(0.0)
    assert wd["nonmonotonic_pct_mean"] == pytest.approx(100.0)
    assert wd["relative_distance_mean_mean"] == pytest.approx(1.5)
    assert (wd["shape"], wd["shape_fractions"], wd["paper_test"]) == ("B", "B 3/3", "93.1")
    less = table.set_index("setting").loc["less_data"]
    assert less["n_seeds"] == 2 and less["not_trained"] == "less_data: 1 skipped (no barrier on the parent's path)"
    assert less["nonmonotonic_pct_mean"] == 0.0 and pd.isna(less["paper_test"])
    assert table.set_index("setting").loc["base", "paper_test"] == "90.0"
    default = pd.read_parquet(layout.table("table_acc"))
    assert [c for c in default.columns if c.endswith("_mean")] == ["train_acc_mean", "test_acc_mean"]
    assert default.iloc[0]["train_acc_mean"] == pytest.approx(100 * np.mean([1.0, 0.99, 0.98]))


def test_experiment_table_rules_and_errors(study):
    plan, run_ids, skipped, tmp = study
    with pytest.raises(KeyError, match=f"{tmp / 'reference.yaml'} has no table 'nope'"):
        write_experiment_table(plan, "nope", run_ids, skipped, tmp / "nope.parquet")
    assert not (tmp / "nope.parquet").exists()
    with pytest.raises(SettingsError, match=r"table t, row 'r': baseline_of 'base' is not a setting with a baseline"):
        plan.row_setting({"label": "r", "baseline_of": "base"}, "t")
    with pytest.raises(SettingsError, match="baseline_of 'ghost'"):
        plan.row_setting({"label": "r", "baseline_of": "ghost"}, "t")
    assert plan.row_setting({"label": "r", "baseline_of": "more_wd", "paper_x": "1"}, "t") == "base"
    assert plan.row_setting({"label": "r", "setting": "more_wd"}, "t") == "more_wd"
    with pytest.raises(KeyError, match=r"unknown column 'bogus' \(known: train_acc, test_acc, relative_distance_mean"):
        experiment_table("t", {"rows": [], "columns": ["bogus"]}, pd.DataFrame())
    # without shapes, the label columns say so; one seed has no spread
    runs = pd.DataFrame([{"setting": "s", "seed": 0, "test_acc": 0.5, "train_acc": 0.75}])
    table = experiment_table("t", {"rows": [{"label": "one", "setting": "s"}]}, runs)
    assert table.iloc[0]["shape"] == "n/a" and table.iloc[0]["shape_fractions"] == "n/a"
    assert table.iloc[0]["test_acc_mean"] == 50.0 and math.isnan(table.iloc[0]["test_acc_std"])
    two = pd.DataFrame([{"setting": "s", "seed": i, "test_acc": a, "train_acc": 1.0} for i, a in enumerate([0.5, 0.7])])
    table = experiment_table("t", {"rows": [{"label": "two", "setting": "s"}]}, two)
    assert table.iloc[0]["test_acc_std"] == pytest.approx(100 * np.std([0.5, 0.7], ddof=1))
    # a setting's labels under a stricter share
    shapes = pd.DataFrame([{"setting": "s", "path": "full", "start": "init", "bn_mode": "interpolate",
                            "split": "train", "label": lab, "delta": 0.0, "monotonic": True}
                           for lab in ["NB", "NB", "B"]])
    table = experiment_table("t", {"rows": [{"label": "x", "setting": "s"}]}, two, shapes, SummaryRules(label_min_share=0.5))
    assert table.iloc[0]["shape"] == "NB" and table.iloc[0]["shape_fractions"] == "NB 2/3, B 1/3"


def test_nonmonotonic_share_counts_the_main_path_only():
    runs = pd.DataFrame([{"setting": "s", "seed": 0, "test_acc": 0.5, "train_acc": 0.5}])
    shapes = pd.DataFrame([
        {"setting": "s", "path": "full", "start": "init", "bn_mode": "interpolate", "split": "train",
         "label": "NB", "delta": 0.0, "monotonic": True},
        {"setting": "s", "path": "group", "start": "init", "bn_mode": "interpolate", "split": "train",
         "label": "B", "delta": 0.5, "monotonic": False},
        {"setting": "s", "path": "full", "start": "init", "bn_mode": "interpolate", "split": "test",
         "label": "B", "delta": 0.5, "monotonic": False},
    ])
    spec = {"rows": [{"label": "s", "setting": "s"}], "columns": ["nonmonotonic_pct", "delta"]}
    row = experiment_table("t", spec, runs, shapes).iloc[0]
    assert row["nonmonotonic_pct_mean"] == 0.0 and row["delta_mean"] == 0.0


# --- per-seed labels and group barriers ------------------------------------------------------------


def shape(setting, label, delta, seed=0, **where):
    row = {"setting": setting, "seed": seed, "path": "full", "start": "init", "group": "all", "bn_mode": "interpolate",
           "split": "train", "label": label, "delta": delta, "label_rule": "rule"}
    row.update(where)
    return row


DISTRACTORS = [dict(split="test"), dict(start="other_init"), dict(bn_mode="recompute")]


def test_label_counts_and_deltas_read_the_main_path_only():
    rows = [shape("s", "NB", 0.0, seed=0), shape("s", None, np.nan, seed=1)]
    rows += [shape("s", "B", 9.0, **where) for where in DISTRACTORS + [dict(path="group", group="block1")]]
    shapes = pd.DataFrame(rows)
    assert label_counts(shapes, ["s"]) == Counter({"NB": 1, "NaN": 1}), "a missing label counts as NaN"
    assert full_delta(shapes, "s") == 0.0
    assert full_delta(shapes, "other") is None


def test_group_barrier_reads_group_paths_from_init_on_the_train_split_only():
    rows = [shape("s", "B", 0.5, path="group", group="block1"), shape("s", "NB", 0.25, path="group", group="block2")]
    rows += [shape("s", "B", 9.0, path="group", group="block1", **where) for where in DISTRACTORS]
    rows += [shape("s", "B", 9.0)]
    shapes = pd.DataFrame(rows)
    assert group_barrier(shapes, "s") == pytest.approx(0.375)
    assert group_barrier(shapes[shapes["path"] == "full"], "s") is None


def test_ordered_puts_unknown_labels_last_in_name_order():
    assert _ordered(["zz", "B", "aa", "none", "NB", "H-LB", "NaN", "P", "L-LB"]) == \
           ["NB", "B", "P", "NaN", "H-LB", "L-LB", "none", "aa", "zz"]


@pytest.mark.parametrize("mine,baseline", [(float("nan"), 0.2), (0.2, float("nan")), (float("inf"), 0.2),
                                           (0.2, None), (None, None)])
def test_layer_barrier_tag_needs_two_finite_means(mine, baseline):
    assert layer_barrier_tag(mine, baseline, SummaryRules()) is None


def test_layer_barrier_tag_lower_at_exactly_the_ratio_is_none():
    assert layer_barrier_tag(0.2, 0.25, SummaryRules()) == "none"
    assert layer_barrier_tag(0.2, 0.2501, SummaryRules()) == "L-LB"


def test_summary_rules_from_config():
    rules = SummaryRules.from_config({"label_min_share": "0.5", "acc_confidence": 0.9, "barrier_tol": 0.3,
                                      "layer_barrier_ratio": 2})
    assert rules == SummaryRules(label_min_share=0.5, acc_confidence=0.9, layer_barrier_ratio=2.0)
    assert isinstance(rules.layer_barrier_ratio, float)
    assert SummaryRules.from_config(None) == SummaryRules() == SummaryRules.from_config({})
    assert rules.acc_rule().startswith("better / worse: the 90% Student-t interval of the mean paired change lies "
                                       "above / below 0; else same. ")
    assert SummaryRules(layer_barrier_ratio=1.5, layer_barrier_floor=0.02).layer_rule() == \
           "H-LB / L-LB: mean group delta above / below the baseline's by a factor 1.5, both raised to at least 0.02"
    assert SummaryRules(label_min_share=0.3).label_rule() == \
           "a label holds for a setting when at least 0.3 of its seeds show it"


# --- the accuracy test -------------------------------------------------------------------------------


def test_accuracy_change_is_in_points_and_paired_by_seed():
    runs = pd.DataFrame([{"setting": "a", "seed": 0, "test_acc": 0.90}, {"setting": "a", "seed": 1, "test_acc": 0.80},
                         {"setting": "a", "seed": 5, "test_acc": 0.10},
                         {"setting": "b", "seed": 1, "test_acc": 0.75}, {"setting": "b", "seed": 0, "test_acc": 0.95}])
    assert accuracy_change(runs, "a", "b") == pytest.approx([-5.0, 5.0])


def test_mean_interval_with_two_seeds_and_without_spread():
    low, high = mean_interval([1.0, 3.0], 0.95)
    half = 12.706204736174704 * 1.0  # t(0.975, 1) · s / √2 with s = √2
    assert (low, high) == (pytest.approx(2.0 - half), pytest.approx(2.0 + half))
    assert mean_interval([1.0, 1.0, 1.0], 0.95) == (1.0, 1.0)
    assert mean_interval([2, 2], 0.95) == (2.0, 2.0)
    low, high = mean_interval([0.0, 1.0, 2.0], 0.5)
    assert high - low == pytest.approx(2 * 0.8164965809277261 / math.sqrt(3)), "t(0.75, 2) · s / √3 with s = 1"


def test_combined_word_takes_the_most_frequent_word():
    assert combined_word(["better", "better", "same"]) == "often better"
    assert combined_word(["same", "better", "better"]) == "often better"
    assert combined_word(["better", "same", "worse"]) == "mixed"


def test_paper_labels_with_commas():
    assert paper_parts("NB, B") == ({"NB", "B"}, None)
    assert paper_parts("B,H-LB") == ({"B"}, {"H-LB"})
    assert paper_parts("") == (None, None) and paper_parts(None) == (None, None)


def test_setting_summary_without_a_baseline():
    runs = pd.DataFrame([{"setting": "s", "seed": 0, "test_acc": 0.5}])
    shapes = pd.DataFrame([shape("s", "NB", 0.0), shape("s", "B", 0.5, path="group", group="block1")])
    plan = Plan({"seeds": [0], "base": {}, "settings": {"s": {"experiment": "E2"}}, "table1": []})
    out = setting_summary(plan, runs, shapes, "s", None, SummaryRules())
    assert out["baseline"] is None and out["baseline_group_delta"] is None and out["layer_tag"] is None
    assert out["group_delta"] == 0.5 and out["labels"] == ["NB"]
    assert len(out["diffs"]) == 0 and out["word"] is None and out["ci"] == (-math.inf, math.inf)


def test_agreement_counts_count_only_stated_parts():
    t1 = pd.DataFrame({"agrees_shape": [True, False, None], "agrees_layer": [None, None, None],
                       "agrees_acc": [True, True, False]})
    for col in t1.columns:
        t1[col] = t1[col].astype("boolean")
    assert agreement_counts(t1) == {"shape": (1, 2), "layer": (0, 0), "acc": (2, 3)}


def test_table1_single_setting_rows_and_the_ci_of_pooled_rows():
    settings = {"base": {"experiment": "E2"}, "a": {"experiment": "E9", "baseline": "base"},
                "b": {"experiment": "E9", "baseline": "base"}, "other": {"experiment": "E9"}}
    rows = [{"intervention": "a", "settings": ["a"], "paper_shape": "NB", "paper_acc": "worse"},
            {"intervention": "a and b", "settings": ["a", "b"]},
            {"intervention": "against other", "settings": ["a"], "baseline": "other"},
            {"intervention": "untrained", "settings": ["nothing_here"]}]
    plan = Plan({"seeds": [0, 1, 2], "base": {}, "settings": settings, "table1": rows, "shapes": {"acc_confidence": 0.5}})
    acc = {"base": [0.90, 0.90, 0.90], "a": [0.80, 0.82, 0.81], "b": [0.95, 0.96, 0.93], "other": [0.5, 0.5, 0.5]}
    runs = pd.DataFrame([{"setting": s, "seed": i, "test_acc": v, "status": "trained"}
                         for s, vs in acc.items() for i, v in enumerate(vs)])
    shapes = pd.DataFrame([shape(s, "NB", 0.0, seed=i) for s in acc for i in range(3)])
    t1 = table1(plan, runs, shapes)
    a_diffs = np.array([-10.0, -8.0, -9.0])
    assert (t1.iloc[0]["acc_ci_low"], t1.iloc[0]["acc_ci_high"]) == tuple(pytest.approx(v) for v in mean_interval(a_diffs, 0.5))
    pooled = np.array([-10.0, -8.0, -9.0, 5.0, 6.0, 3.0])
    assert (t1.iloc[1]["acc_ci_low"], t1.iloc[1]["acc_ci_high"]) == tuple(pytest.approx(v) for v in mean_interval(pooled, 0.5))
    assert t1.iloc[1]["acc_word"] == "mixed" and t1.iloc[0]["acc_word"] == "worse"
    assert t1.iloc[2]["acc_change_pp_mean"] == pytest.approx(100 * (0.81 - 0.5)), "the row's baseline wins"
    assert t1.iloc[0]["layer_barrier"] == "not swept" and t1.iloc[0]["group_delta"] == "", "no group paths planned"
    assert t1.iloc[0]["layer_missing"] == "a vs base: not swept"
    assert not t1.iloc[0]["acc_pooled"] and t1.iloc[1]["acc_pooled"]
    assert list(t1["comparison"]) == ["a vs base", "a vs base; b vs base", "a vs other", "nothing_here (no baseline)"]
    assert t1.iloc[3]["layer_barrier"] == "no baseline" and t1.iloc[3]["acc_interval"] == "n/a"
    assert t1.iloc[0]["agrees_shape"] == True and t1.iloc[0]["agrees_acc"] == True  # noqa: E712
    assert t1.iloc[0]["shape_rule"] == f"rule; {SummaryRules().label_rule()}", "the label rule of the shapes read"
    empty = t1.iloc[3]
    assert (empty["settings"], empty["shape"], empty["shape_fractions"], empty["acc_word"]) == ("", "n/a", "n/a", "n/a")
    assert math.isnan(empty["acc_change_pp_mean"]) and math.isnan(empty["acc_ci_low"]) and math.isnan(empty["acc_ci_high"])
    assert math.isnan(empty["acc_change_pp_std"]) and empty["n_seeds"] == 0 and empty["figure"] == ""
    assert pd.isna(empty["agrees"])
    no_shapes = table1(plan, runs, shapes.iloc[:0])
    assert no_shapes.iloc[0]["shape_rule"].startswith(ShapeThresholds().rule())


# --- barrier inits --------------------------------------------------------------------------------


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


def test_experiment_table_file_follows_the_config_rules_and_names_its_table(study):
    plan, run_ids, skipped, tmp = study
    layout = plan.layout
    # one of more_wd's three seeds relabelled NB: NB 1/3 holds at the default share 0.25, not at 0.5
    first = layout.shapes(plan.run_of("more_wd", 0))
    shapes = pd.read_parquet(first)
    shapes.loc[(shapes["path"] == "full") & (shapes["split"] == "train"), "label"] = "NB"
    shapes.to_parquet(first, index=False)
    ref = tmp / "mixed_reference.yaml"
    ref.write_text(yaml.safe_dump({"tables": {"t": {"rows": [{"label": "mix", "setting": "more_wd"}]}}}))
    plan.config["reference"] = str(ref)
    write_experiment_table(plan, "t", run_ids, skipped, tmp / "default.parquet")
    assert pd.read_parquet(tmp / "default.parquet").iloc[0]["shape"] == "NB/B"
    plan.config["shapes"] = {"label_min_share": 0.5}  # the config's summary rules reach the file
    write_experiment_table(plan, "t", run_ids, skipped, tmp / "strict.parquet")
    assert pd.read_parquet(tmp / "strict.parquet").iloc[0]["shape"] == "B"
    # a table of runs that were all skipped: rows with their reasons, no numbers, no shapes
    only_skipped = tmp / "only_skipped.parquet"
    write_experiment_table(plan, "t", [], {plan.run_of("more_wd", 0): "why"}, only_skipped)
    row = pd.read_parquet(only_skipped).iloc[0]
    assert (row["n_seeds"], row["shape"], row["not_trained"]) == (0, "n/a", "more_wd: 1 skipped (why)")
    assert math.isnan(row["train_acc_mean"]) and math.isnan(row["test_acc_std"])
    # a bad row names its table; a reference file without tables has none
    ref.write_text(yaml.safe_dump({"tables": {"t": {"rows": [{"label": "r", "baseline_of": "base"}]}}}))
    with pytest.raises(SettingsError, match=r"reference table t, row 'r'"):
        write_experiment_table(plan, "t", run_ids, skipped, tmp / "bad.parquet")
    ref.write_text(yaml.safe_dump({"other": 1}))
    with pytest.raises(KeyError, match="has no table 't'"):
        write_experiment_table(plan, "t", run_ids, skipped, tmp / "bad.parquet")


def test_experiment_table_without_shapes_has_no_path_numbers():
    runs = pd.DataFrame([{"setting": "s", "seed": 0, "test_acc": 0.5, "train_acc": 0.5}])
    row = experiment_table("t", {"rows": [{"label": "s", "setting": "s"}], "columns": ["delta", "nonmonotonic_pct"]},
                           runs).iloc[0]
    assert math.isnan(row["delta_mean"]) and math.isnan(row["nonmonotonic_pct_mean"]) and row["shape"] == "n/a"
