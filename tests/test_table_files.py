"""The table files (linpath.report.tables) written from a study on disk, at the level of detail a wrong
result would show up in: which rows are selected, which numbers are compared, what a file holds (the
core tables, Table 1 and the experiment tables).

The study below is a small set of finished runs written to disk in the pipeline's own formats
(run.yaml, summary.yaml, outcome.yaml, paths and shapes parquet per run, shapes computed by `shape_table`), so
the file-level functions are exercised on real files."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import run_dict
from linpath.foundations.outcome import Outcome, write_outcome
from linpath.study.plan import Plan
from linpath.foundations.hparams import SettingsError
from linpath.paths.shapes import ShapeThresholds, shape_table
from linpath.report.tables import (SummaryRules, experiment_table, mean_interval, not_trained, table1_markdown,
                                   trained, write_core_tables, write_experiment_table, write_table1)

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
    assert log.read_text() == (f"8 runs (1 skipped) -> {layout.table('runs')}, {layout.table('paths')}, "
                               f"{layout.table('shapes')}\n"), "the log names the three files written"


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
