"""Table 1 under other thresholds (linpath.report.sensitivity), on hand-made loss curves measured by the
same code as real paths (linpath.paths.shapes.shape_table): the stored Δ, L(0), L(1) and α_half relabel to what
measuring the curves at those thresholds gives; a row whose small bump is a barrier only at low thresholds
is not robust, one with a real barrier is; a late fall flips P → NB at a higher plateau_alpha, a split
over seeds loses a label at a higher label_min_share, a group Δ 1.3 times the baseline's loses its H-LB at
a higher layer_barrier_ratio, each at its nearest grid point; the configured point is Table 1 itself;
Lucas et al.'s criterion sits beside ours; the barrier groups each group rule picks are set against the
barrier-groups file the workflow wrote, with the dependent settings whose runs would differ; the `report`
verb writes the tables and Table 1 states the count."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import run_cli
from linpath.foundations.hparams import GroupRule, RunSpec, SettingsError, ShapeThresholds
from linpath.paths.shapes import curve_metrics, shape_table
from linpath.report.sensitivity import (SensitivityGrid, _lucas, _nearest_flip, grid_points, group_references,
                                        group_markdown, group_sensitivity, point_name, relabel, robust_counts,
                                        robustness_line, sensitivity_markdown, sensitivity_table, with_robustness_line,
                                        write_sensitivity)
from linpath.report.tables import table1
from linpath.study.barrier_groups import write_barrier_groups
from linpath.study.plan import Plan

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
    if kind == "late":  # flat to α = 0.5, then down: α_half = 0.75 (P at 0.7, NB at 0.8)
        return np.where(ALPHAS < 0.5, 2.30, 2.30 - (ALPHAS - 0.5) / 0.5 * 2.25)
    return DECAY


def paths_of(setting: str, seed: int, kind: str, path: str = "full", group: str = "all") -> pd.DataFrame:
    return pd.DataFrame({"run_id": f"{setting}-s{seed}", "path": path, "start": "init", "group": group,
                         "param_group": "all", "bn_mode": "interpolate", "split": "train", "alpha": ALPHAS,
                         "loss": curve(kind), "accuracy": 0.5})


# setting -> its full-path curve (one per seed where they differ)
KINDS = {"base": "decay", "bump": "bump", "barrier": "barrier", "late": "late",
         "split": ["barrier", "decay", "decay", "decay"], "ratio": "decay", "plain": "decay"}
# setting -> the rise on block1's group-wise path: the mean group Δ set against the baseline's (0)
GROUP_RISE = {"base": 0.0, "bump": 0.0, "barrier": 0.005, "late": 0.0, "split": 0.0, "ratio": 0.013, "plain": 0.0}
# The setting whose barrier groups E11-like settings read: group -> (rise, seeds that show it).
# block1 rises 5e-4: a barrier by the monotonic rule at tol 1e-4 but not 1e-3, and B only at rel 0, tol 1e-4;
# block2 rises 0.2: a barrier by every rule but B at barrier_rel 0.1 (0.1 * 2.25 > 0.2); block3 falls
# all the way; block4 rises 5e-4 in one seed of four (a barrier group only at min_share 0.25).
REF_GROUPS = {"block1": (5e-4, SEEDS), "block2": (0.2, SEEDS), "block3": (0.0, []), "block4": (5e-4, [0])}


def kind_of(setting: str, seed: int) -> str:
    kind = KINDS[setting]
    return kind[seed] if isinstance(kind, list) else kind


def with_rise(path: pd.DataFrame, rise: float) -> pd.DataFrame:
    path.loc[25, "loss"] += rise + 0.045  # a rise of `rise` after the step down of 0.045
    return path


def measured_shapes(with_ref: bool = False) -> pd.DataFrame:
    frames = []
    for setting in KINDS:
        for s in SEEDS:
            frames.append(paths_of(setting, s, kind_of(setting, s)))
            frames.append(with_rise(paths_of(setting, s, "decay", "group", "block1"), GROUP_RISE[setting]))
    if with_ref:
        frames += ref_paths()
    return _named(shape_table(pd.concat(frames, ignore_index=True)))


def ref_paths() -> list[pd.DataFrame]:
    frames = []
    for s in SEEDS:
        frames.append(paths_of("ref", s, "decay"))
        for group, (rise, seeds) in REF_GROUPS.items():
            path = paths_of("ref", s, "decay", "group", group)
            frames.append(with_rise(path, rise) if s in seeds else path)
    return frames


def _named(shapes: pd.DataFrame) -> pd.DataFrame:
    shapes["setting"] = shapes["run_id"].str.rsplit("-s", n=1).str[0]
    shapes["seed"] = shapes["run_id"].str.rsplit("-s", n=1).str[1].astype(int)
    return shapes


ROWS = ["small bump", "real barrier", "own row", "late fall", "split seeds", "layer ratio", "plain decay"]


def plan(readers: bool = False) -> Plan:
    settings = {"base": {"experiment": "E2"}, **{s: {"experiment": "E9", "baseline": "base"} for s in KINDS if s != "base"}}
    rows = [{"category": "c", "intervention": "small bump", "settings": ["bump"], "paper_shape": "NB"},
            {"category": "c", "intervention": "real barrier", "settings": ["barrier"], "paper_shape": "B/H-LB",
             "paper_acc": "worse"},
            {"category": "c", "intervention": "own row", "settings": ["bump"]},
            {"category": "c", "intervention": "late fall", "settings": ["late"], "paper_shape": "P"},
            {"category": "c", "intervention": "split seeds", "settings": ["split"]},
            {"category": "c", "intervention": "layer ratio", "settings": ["ratio"], "paper_shape": "NB/H-LB"},
            {"category": "c", "intervention": "plain decay", "settings": ["plain"], "paper_shape": "NB"}]
    if readers:  # E11-like settings: a smaller LR on ref's barrier groups, or on the others
        settings["ref"] = {"experiment": "E2"}
        for name, ref in (("lr_barrier", "@barrier_groups:ref"), ("lr_other", "@no_barrier_groups:ref")):
            settings[name] = {"experiment": "E11", "baseline": "ref",
                              "run": {"train": {"group_overrides": {ref: {"lr": 0.005}}}}}
    return Plan({"seeds": SEEDS, "base": {"model": {"arch": "resnet18", "width": 4}, "data": {"dataset": "digits"}},
                 "settings": settings, "table1": rows, "shapes": {}})


def runs() -> pd.DataFrame:
    acc = {s: 0.90 for s in KINDS} | {"barrier": 0.88}
    return pd.DataFrame([{"run_id": f"{n}-s{s}", "setting": n, "seed": s, "test_acc": a + 0.001 * s,
                          "train_acc": 1.0, "model": "resnet18"} for n, a in acc.items() for s in SEEDS])


@pytest.mark.parametrize("rel,tol,plateau", [(0.0, 1e-4, 0.7), (0.02, 1e-3, 0.6), (0.05, 0.01, 0.8),
                                             (0.1, 0.01, 0.9), (0.01, 0.5, 0.7)])
def test_relabelled_shapes_equal_measuring_the_curves_at_those_thresholds(rel, tol, plateau):
    thresholds = ShapeThresholds(barrier_tol=tol, barrier_rel=rel, plateau_alpha=plateau)
    shapes = measured_shapes()
    again = relabel(shapes, thresholds)
    expected = [curve_metrics(ALPHAS, c["loss"].to_numpy(), thresholds)
                for _, c in pd.concat([paths_of(n, s, kind_of(n, s)) for n in KINDS for s in SEEDS])
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
    late = shape_table(paths_of("p", 0, "late"))
    assert [relabel(late, ShapeThresholds(plateau_alpha=a))["label"].iloc[0] for a in (0.7, 0.8)] == ["P", "NB"]
    nan = plateau.assign(label="NaN", delta=np.nan)
    assert relabel(nan, ShapeThresholds(barrier_tol=0, barrier_rel=0))["label"].tolist() == ["NaN"]


def test_the_grid_is_the_barrier_product_and_a_star_of_the_summary_thresholds():
    points = pd.DataFrame(grid_points(plan(), SensitivityGrid()))
    assert list(points["varied"].value_counts().sort_index().items()) == [
        ("barrier_rel x barrier_tol", 15), ("label_min_share", 2), ("layer_barrier_ratio", 3), ("plateau_alpha", 3)]
    assert points["configured"].sum() == 1
    star = points[points["varied"] != "barrier_rel x barrier_tol"]
    for axis, configured in (("barrier_rel", 0.05), ("barrier_tol", 0.01), ("layer_barrier_floor", 0.01)):
        assert (star[axis] == configured).all(), axis
    by_value = star.set_index(["varied", "plateau_alpha", "layer_barrier_ratio", "label_min_share"])["steps"]
    assert by_value[("plateau_alpha", 0.8, 1.25, 0.25)] == 1 and by_value[("plateau_alpha", 0.9, 1.25, 0.25)] == 2
    ratio = star[star["varied"] == "layer_barrier_ratio"].set_index("layer_barrier_ratio")["steps"]
    assert ratio.to_dict() == {1.1: 1, 1.5: 1, 2.0: 2}
    product = points[points["varied"] == "barrier_rel x barrier_tol"].set_index(["barrier_rel", "barrier_tol"])["steps"]
    assert product[(0.05, 0.01)] == 0 and product[(0.02, 0.001)] == 2 and product[(0.0, 1e-4)] == 5


@pytest.fixture(scope="module")
def grid_table() -> pd.DataFrame:
    return sensitivity_table(plan(), runs(), measured_shapes())


def by_row(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    return frame[frame["row"] == ROWS.index(name)]


def product_part(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["varied"] == "barrier_rel x barrier_tol"]


def test_a_bump_that_only_low_thresholds_call_a_barrier_is_not_robust(grid_table):
    bump = by_row(grid_table, "small bump")
    assert len(bump) == 15 + 3 + 3 + 2, "5 barrier_rel x 3 barrier_tol, then 3 + 3 + 2 star points"
    at = product_part(bump).set_index(["barrier_rel", "barrier_tol"])["shape"]
    assert at[(0.05, 0.01)] == "NB" and at[(0.1, 0.01)] == "NB"   # 0.055 <= 0.05 * 2.25
    assert at[(0.02, 0.01)] == "B" and at[(0.0, 1e-4)] == "B"     # 0.055 > 0.045, > 1e-4
    assert not bump["shape_robust"].any() and not bump["agreement_robust"].any()
    conf = bump[bump["configured"]].iloc[0]
    assert (conf["barrier_rel"], conf["barrier_tol"], conf["shape"], conf["agrees"]) == (0.05, 0.01, "NB", True)
    assert conf["shapes_on_grid"] == "NB ×14, B ×9"  # B at rel 0, 0.01, 0.02 for each tol
    assert (conf["flip_steps"], conf["nearest_flip"]) == (1, "barrier_rel 0.02: shape NB → B")


def test_a_real_barrier_is_robust_in_shape_and_its_layer_tag_follows_the_floor(grid_table):
    barrier = by_row(grid_table, "real barrier")
    assert set(barrier["shape"]) == {"B"} and barrier["shape_robust"].all()
    layer = product_part(barrier).set_index("barrier_tol")["layer_barrier"]
    # block1's rise: 0.005 against 0 in the baseline; a barrier only where the floor is below it
    assert set(layer[0.01]) == {"none"} and set(layer[1e-3]) == {"H-LB"} and set(layer[1e-4]) == {"H-LB"}
    assert not barrier["labels_robust"].any() and not barrier["agreement_robust"].any()
    conf = barrier[barrier["configured"]].iloc[0]
    assert conf["nearest_flip"] == "barrier_tol 0.001: layer none → H-LB" and conf["flip_steps"] == 1


def test_a_late_fall_is_p_until_plateau_alpha_passes_its_alpha_half(grid_table):
    late = by_row(grid_table, "late fall")
    assert set(product_part(late)["shape"]) == {"P"}, "no rise: the barrier thresholds leave it alone"
    star = late[late["varied"] == "plateau_alpha"].set_index("plateau_alpha")["shape"]
    assert star.to_dict() == {0.6: "P", 0.8: "NB", 0.9: "NB"}
    conf = late[late["configured"]].iloc[0]
    assert (conf["shape"], conf["flip_steps"], conf["nearest_flip"]) == ("P", 1, "plateau_alpha 0.8: shape P → NB")
    assert conf["shapes_on_grid"] == "P ×21, NB ×2" and not conf["agreement_robust"]


def test_a_split_over_seeds_loses_its_minority_label_at_a_higher_share(grid_table):
    split = by_row(grid_table, "split seeds")
    conf = split[split["configured"]].iloc[0]
    assert conf["shape"] == "NB/B" and conf["shape_fractions"] == "NB 3/4, B 1/4"
    share = split[split["varied"] == "label_min_share"].set_index("label_min_share")["shape"]
    assert share.to_dict() == {0.1: "NB/B", 0.5: "NB"}
    assert conf["nearest_flip"] == "label_min_share 0.5: shape NB/B → NB" and conf["flip_steps"] == 1


def test_a_layer_ratio_near_the_factor_flips_at_the_next_ratio(grid_table):
    ratio = by_row(grid_table, "layer ratio")
    at = ratio[ratio["varied"] == "layer_barrier_ratio"].set_index("layer_barrier_ratio")["layer_barrier"]
    assert at.to_dict() == {1.1: "H-LB", 1.5: "none", 2.0: "none"}  # 0.013 / 0.01 = 1.3
    conf = ratio[ratio["configured"]].iloc[0]
    assert conf["layer_barrier"] == "H-LB" and conf["agrees"]
    assert conf["nearest_flip"] == "layer_barrier_ratio 1.5: layer H-LB → none"
    assert conf["layers_on_grid"] == "H-LB ×21, none ×2"


def test_a_row_without_a_flip_says_so(grid_table):
    plain = by_row(grid_table, "plain decay")
    assert plain["labels_robust"].all() and plain["agreement_robust"].all()
    assert plain["flip_steps"].isna().all() and set(plain["nearest_flip"]) == {"none on the grid"}
    assert set(plain["shapes_on_grid"]) == {"NB ×23"}


def test_the_configured_point_is_table1_and_an_own_row_is_not_compared(grid_table):
    t1 = table1(plan(), runs(), measured_shapes())
    conf = grid_table[grid_table["configured"]].set_index("row")
    for col in ("shape", "shape_fractions", "layer_barrier", "acc_word", "agrees_shape", "agrees_layer", "agrees"):
        assert list(conf[col].astype(str)) == list(t1[col].astype(str)), col
    own = by_row(grid_table, "own row")
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
    assert robust_counts(grid_table) == {"measured": 7, "labels": 1, "compared": 5, "agreement": 1}
    line = robustness_line(grid_table)
    assert line.startswith("Robust to the thresholds: 1 of 7 rows keep their labels")
    assert ("barrier_rel {0, 0.01, 0.02, 0.05, 0.1} x barrier_tol {0.0001, 0.001, 0.01}, layer floor = barrier_tol; "
            "one at a time: plateau_alpha {0.6, 0.8, 0.9}, layer_barrier_ratio {1.1, 1.5, 2}, label_min_share {0.1, 0.5}") in line
    text = sensitivity_markdown(grid_table)
    assert line in text and "| small bump | NB | NB ×14, B ×9 |" in text
    assert "barrier_rel 0.02: shape NB → B (1 step)" in text
    assert "| barrier_rel 0, barrier_tol 0.0001 |" in text and "| plateau_alpha 0.6 |" in text
    assert "| late fall | P / none | P / none | NB / none | NB / none | P / none |" in text  # configured, then plateau_alpha 0.6, 0.8, 0.9
    assert "Barrier groups" not in text


def test_a_configured_point_off_the_grid_is_added():
    config = plan().config
    config["shapes"] = {"barrier_rel": 0.03, "barrier_tol": 0.02, "plateau_alpha": 0.75,
                        "sensitivity": {"barrier_rel": [0], "barrier_tol": [0.01], "plateau_alpha": [0.75, 0.85],
                                        "layer_barrier_ratio": [1.25], "label_min_share": [0.25]}}
    frame = sensitivity_table(Plan(config), runs(), measured_shapes())
    points = frame.drop_duplicates("point")
    assert list(points["varied"]) == ["barrier_rel x barrier_tol", "configured", "plateau_alpha"]
    assert points["configured"].sum() == 1
    conf = points[points["configured"]].iloc[0]
    assert (conf["barrier_rel"], conf["barrier_tol"], conf["layer_barrier_floor"], conf["plateau_alpha"]) == (0.03, 0.02, 0.01, 0.75)
    assert points.iloc[2]["plateau_alpha"] == 0.85 and points.iloc[2]["steps"] == 1


@pytest.mark.parametrize("sensitivity,message", [
    ({"plateau_alpha": [1.2]}, "shapes.sensitivity.plateau_alpha must be a non-empty list of numbers in [0, 1]"),
    ({"layer_barrier_ratio": [0.5]}, "shapes.sensitivity.layer_barrier_ratio must be a non-empty list of numbers in [1, inf)"),
    ({"label_min_share": [0]}, "shapes.sensitivity.label_min_share must be a non-empty list of numbers in (0, 1]"),
    ({"group_tol": []}, "shapes.sensitivity.group_tol must be a non-empty list"),
    ({"group_share": [0.5]}, "shapes.sensitivity.group_share: unknown setting"),
])
def test_a_bad_grid_is_refused_by_name(sensitivity, message):
    with pytest.raises(SettingsError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        SensitivityGrid.from_config({"sensitivity": sensitivity})


# --- the barrier groups -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def groups_used(tmp_path_factory) -> dict[str, dict]:
    """ref's barrier-groups file as the workflow writes it (the configured rule: monotonic, tol 1e-4, 0.5)."""
    tmp = tmp_path_factory.mktemp("groups")
    files = []
    for s, frame in _named(shape_table(pd.concat(ref_paths(), ignore_index=True))).groupby("seed"):
        files.append(tmp / f"ref-s{s}.parquet")
        frame.to_parquet(files[-1], index=False)
    run_yaml = tmp / "run.yaml"
    run_yaml.write_text(yaml.safe_dump(RunSpec.from_dict({"model": {"arch": "resnet18", "width": 4}}).to_dict()))
    write_barrier_groups([str(f) for f in files], str(run_yaml), tmp / "ref.yaml", rule=GroupRule())
    return {"ref": yaml.safe_load((tmp / "ref.yaml").read_text())}


@pytest.fixture(scope="module")
def group_table(groups_used) -> pd.DataFrame:
    return group_sensitivity(plan(readers=True), measured_shapes(with_ref=True), groups_used)


def rule_rows(frame: pd.DataFrame, rule: str, **where) -> pd.DataFrame:
    sel = frame[frame["rule"] == rule]
    for k, v in where.items():
        sel = sel[np.isclose(sel[k], v)]
    return sel


def test_the_readers_of_each_group_list_are_found():
    assert group_references(plan(readers=True)) == {"ref": ["lr_barrier", "lr_other"]}
    assert group_references(plan()) == {}


def test_the_configured_group_rule_picks_the_groups_the_workflow_used(groups_used, group_table):
    assert groups_used["ref"]["with_barrier"] == ["block1", "block2"]
    conf = group_table[group_table["configured"]]
    assert len(conf) == 1 and conf.iloc[0]["rule"] == "monotonic" and conf.iloc[0]["tol"] == 1e-4
    assert conf.iloc[0]["with_barrier"] == "block1, block2" and conf.iloc[0]["same_as_used"]
    assert not conf.iloc[0]["runs_differ"] and conf.iloc[0]["readers_changed"] == ""
    assert (group_table["readers"] == "lr_barrier, lr_other").all()


def test_a_larger_tolerance_drops_a_small_rise_and_the_readers_runs_change(group_table):
    picked = rule_rows(group_table, "monotonic", min_share=0.5).set_index("tol")["with_barrier"]
    assert picked.to_dict() == {0.0: "block1, block2", 1e-5: "block1, block2", 1e-4: "block1, block2",
                                1e-3: "block2", 1e-2: "block2"}
    at = rule_rows(group_table, "monotonic", tol=1e-3, min_share=0.5).iloc[0]
    assert not at["same_as_used"] and at["runs_differ"]
    assert at["readers_changed"] == "lr_barrier (other groups), lr_other (other groups)"


def test_the_label_rule_picks_by_the_relabelled_paths_and_an_empty_list_skips_a_reader(group_table):
    label = rule_rows(group_table, "label").set_index(["barrier_rel", "barrier_tol"])
    assert label.loc[(0.0, 1e-4), "with_barrier"] == "block1, block2"  # 5e-4 > 1e-4
    assert label.loc[(0.05, 0.01), "with_barrier"] == "block2"          # 5e-4 below every floor
    nothing = label.loc[(0.1, 0.01)]
    assert nothing["with_barrier"] == "" and nothing["rule_text"].startswith("rule label")
    assert nothing["readers_changed"] == "lr_barrier (skipped), lr_other (other groups)"
    assert label["tol"].isna().all() and rule_rows(group_table, "monotonic")["barrier_rel"].isna().all()


def test_the_share_of_seeds_decides_a_group_seen_in_one_seed(group_table):
    share = group_table[group_table["varied"] == "group_min_share"].set_index("min_share")["with_barrier"]
    assert share.to_dict() == {0.25: "block1, block2, block4", 1.0: "block1, block2"}
    assert not group_table["groups_robust"].any()
    assert group_table["groups_on_grid"].iloc[0].startswith("block2 ×")


def test_a_missing_or_failed_group_list_is_named(groups_used):
    shapes = measured_shapes(with_ref=True)
    with pytest.raises(SettingsError, match="no barrier-groups file for ref .*read by lr_barrier, lr_other"):
        group_sensitivity(plan(readers=True), shapes, {})
    failed = group_sensitivity(plan(readers=True), shapes, {"ref": {"with_barrier": [], "without_barrier": [],
                                                                    "upstream_failed": True,
                                                                    "reason": "none of the 4 runs trained"}})
    assert len(failed) == 1 and failed.iloc[0]["note"] == "not measured: none of the 4 runs trained"


@pytest.mark.slow
def test_report_verb_writes_the_sensitivity_and_table1_states_the_count(tmp_path: Path, groups_used):
    config = {**plan(readers=True).config, "results": str(tmp_path / "results")}
    record = tmp_path / "config.json"
    record.write_text(json.dumps(config, sort_keys=True))
    groups_file = Plan(config).layout.groups_file("ref")  # where the workflow writes it: the rule hands that file
    groups_file.parent.mkdir(parents=True)
    runs().to_parquet(tmp_path / "runs.parquet", index=False)
    measured_shapes(with_ref=True).to_parquet(tmp_path / "shapes.parquet", index=False)
    groups_file.write_text(yaml.safe_dump(groups_used["ref"]))
    common = ["--config", str(record), "--runs", str(tmp_path / "runs.parquet"), "--shapes", str(tmp_path / "shapes.parquet")]
    sens = [tmp_path / "table1_sensitivity.parquet", tmp_path / "table1_sensitivity.md",
            tmp_path / "table1_sensitivity_groups.parquet"]
    groups = ["--groups", str(groups_file)]
    proc = run_cli(["report", "table1-sensitivity", *common, *groups, "--out", *map(str, sens)])
    assert proc.returncode == 0, proc.stderr
    frame = pd.read_parquet(sens[0])
    assert len(frame) == 7 * 23 and "Robust to the thresholds" in sens[1].read_text()
    assert "## Barrier groups under other group rules" in sens[1].read_text()
    assert "| ref | lr_barrier, lr_other | monotonic, tol 0.0001, min_share 0.5 (configured) | block1, block2 | yes | – |" \
        in sens[1].read_text()
    assert len(pd.read_parquet(sens[2])) == 5 + 15 + 2
    out = [tmp_path / "table1.parquet", tmp_path / "table1.md"]
    proc = run_cli(["report", "table1", *common, "--sensitivity", str(sens[0]), "--out", *map(str, out)])
    assert proc.returncode == 0, proc.stderr
    text = out[1].read_text()
    assert robustness_line(frame) in text and text.count("Robust to the thresholds") == 1
    assert text.index("Agreement with the paper") < text.index("Robust to the thresholds")
    bad = run_cli(["report", "table1", *common, "--sensitivity", str(tmp_path / "missing.parquet"),
                   "--out", *map(str, out)])
    assert bad.returncode == 2 and "--sensitivity: file not found" in bad.stderr
    missing = run_cli(["report", "table1-sensitivity", *common, "--groups", str(tmp_path / "no.yaml"),
                       "--out", *map(str, sens)])
    assert missing.returncode == 2 and "--groups: file not found" in missing.stderr and "no.yaml" in missing.stderr
    (tmp_path / "other.yaml").write_text(groups_file.read_text())
    other = run_cli(["report", "table1-sensitivity", *common, "--groups", str(tmp_path / "other.yaml"),
                     "--out", *map(str, sens)])
    assert other.returncode == 2 and "--groups: not the barrier-groups files of ref; missing " in other.stderr


# --- each threshold decision at its boundary --------------------------------------------------------


@pytest.mark.parametrize("sensitivity, grid", [
    ({"plateau_alpha": [0, 1]}, {"plateau_alpha": (0.0, 1.0)}),  # both ends of [0, 1]
    ({"barrier_rel": [0], "barrier_tol": [0], "group_tol": [0]}, {"barrier_rel": (0.0,), "barrier_tol": (0.0,),
                                                                 "group_tol": (0.0,)}),
    ({"layer_barrier_ratio": [1]}, {"layer_barrier_ratio": (1.0,)}),
    ({"label_min_share": [1], "group_min_share": [1e-9, 1]}, {"label_min_share": (1.0,), "group_min_share": (1e-9, 1.0)}),
    ({"barrier_tol": [0.01, 0.001, 0.01]}, {"barrier_tol": (0.01, 0.001)}),  # repeats dropped, order kept
    ({"lucas_tol": 0}, {"lucas_tol": 0.0}),
    ({"lucas_tol": 1}, {"lucas_tol": 1.0}),
])
def test_the_edges_of_each_grid_range_are_accepted(sensitivity, grid):
    got = SensitivityGrid.from_config({"sensitivity": sensitivity})
    assert got == SensitivityGrid(**grid)
    assert all(type(v) is float for values in dataclasses.astuple(got)[:-1] for v in values)
    assert type(got.lucas_tol) is float
    assert SensitivityGrid.from_config(None) == SensitivityGrid() == SensitivityGrid.from_config({"sensitivity": None})


@pytest.mark.parametrize("sensitivity, message", [
    ({"plateau_alpha": [-0.01]}, "plateau_alpha must be a non-empty list of numbers in [0, 1], got [-0.01]"),
    ({"plateau_alpha": [1.01]}, "plateau_alpha must be"),
    ({"barrier_rel": [-1e-9]}, "barrier_rel must be a non-empty list of numbers in [0, inf), got"),
    ({"layer_barrier_ratio": [0.999]}, "layer_barrier_ratio must be"),
    ({"label_min_share": [1.001]}, "label_min_share must be a non-empty list of numbers in (0, 1], got [1.001]"),
    ({"group_min_share": [0]}, "group_min_share must be a non-empty list of numbers in (0, 1]"),
    ({"barrier_tol": [True]}, "barrier_tol must be"),  # a bool is no number here
    ({"barrier_tol": 0.01}, "barrier_tol must be a non-empty list"),
    ({"barrier_tol": ["0.01"]}, "barrier_tol must be"),
    ({"lucas_tol": -1e-9}, "lucas_tol must be a number >= 0, got -1e-09"),
    ({"lucas_tol": "small"}, "lucas_tol must be a number >= 0, got 'small'"),
    ({"zeta": [1], "alpha": [1]}, r"shapes.sensitivity.alpha: unknown setting \(known: barrier_rel, barrier_tol, "),
])
def test_just_outside_each_grid_range_is_refused(sensitivity, message):
    pattern = message if message.startswith("shapes.") else "shapes.sensitivity." + "".join(
        "\\" + c if c in "()[]." else c for c in message)
    with pytest.raises(SettingsError, match=pattern):
        SensitivityGrid.from_config({"sensitivity": sensitivity})


def test_the_group_grid_is_described_as_configured():
    assert SensitivityGrid().describe_groups() == (
        "rule monotonic at tol {0, 1e-05, 0.0001, 0.001, 0.01}; rule label at every barrier_rel x barrier_tol pair; "
        "the configured rule at min_share {0.25, 1}")


def lucas_rows(deltas, setting="s", **where) -> pd.DataFrame:
    row = {"setting": setting, "path": "full", "start": "init", "group": "all", "bn_mode": "interpolate",
           "split": "train", **where}
    return pd.DataFrame([{**row, "delta": d} for d in deltas])


def test_lucas_calls_a_path_non_monotonic_only_above_its_tolerance():
    tol = 1e-4
    shapes = pd.concat([lucas_rows([tol, tol + 1e-12, np.nan, np.inf]), lucas_rows([5.0], setting="other"),
                        lucas_rows([5.0], split="test"), lucas_rows([5.0], path="group", group="block1")])
    assert _lucas(shapes, ["s"], tol, 0.25) == ("NB/B/NaN", "NB 1/4, B 1/4, NaN 2/4"), "at the tolerance: NB"
    assert _lucas(shapes, ["s"], tol, 0.3) == ("NaN", "NB 1/4, B 1/4, NaN 2/4"), "the label share as in Table 1"
    assert _lucas(shapes, [], tol, 0.25) == ("n/a", "n/a"), "no trained run of the row"


def flip_grid(rows: list[tuple[int, bool, str, str]]) -> pd.DataFrame:
    """(steps, configured, shape, layer) per point; the point's thresholds in its own columns."""
    out = []
    for i, (steps, configured, shape, layer) in enumerate(rows):
        out.append({"steps": steps, "configured": configured, "shape": shape, "layer_barrier": layer,
                    "barrier_rel": 0.05 if configured else 0.01 * i, "barrier_tol": 0.01, "layer_barrier_floor": 0.01,
                    "plateau_alpha": 0.7, "layer_barrier_ratio": 1.25, "label_min_share": 0.25})
    return pd.DataFrame(out)


def test_the_nearest_flip_is_the_closest_point_and_names_every_flip_at_that_distance():
    g = flip_grid([(0, True, "NB", "none"), (2, False, "B", "none"), (1, False, "NB", "none"),
                   (1, False, "B", "H-LB"), (1, False, "P", "none"), (3, False, "B", "L-LB")])
    steps, text = _nearest_flip(g)
    assert steps == 1 and type(steps) is int
    assert text == "barrier_rel 0.03: shape NB → B, layer none → H-LB; barrier_rel 0.04: shape NB → P"
    layer_only = flip_grid([(0, True, "NB", "none"), (2, False, "NB", "H-LB")])
    assert _nearest_flip(layer_only) == (2, "barrier_rel 0.01: layer none → H-LB")
    assert _nearest_flip(flip_grid([(0, True, "NB", "none"), (1, False, "NB", "none")])) == (None, "none on the grid")


def test_a_point_is_named_by_the_thresholds_where_it_differs():
    conf = {"barrier_rel": 0.05, "barrier_tol": 0.01, "layer_barrier_floor": 0.01, "plateau_alpha": 0.7,
            "layer_barrier_ratio": 1.25, "label_min_share": 0.25}
    assert point_name(dict(conf), conf) == "configured"
    assert point_name({**conf, "barrier_tol": 0.001, "layer_barrier_floor": 0.001}, conf) == "barrier_tol 0.001", \
        "a floor that follows barrier_tol is not named again"
    assert point_name({**conf, "layer_barrier_floor": 0.02}, conf) == "layer_barrier_floor 0.02"
    product = {**conf, "varied": "barrier_rel x barrier_tol"}
    assert point_name(product) == "barrier_rel 0.05, barrier_tol 0.01"
    assert point_name({**product, "varied": "configured", "layer_barrier_floor": 0.02}) == \
        "barrier_rel 0.05, barrier_tol 0.01, layer_barrier_floor 0.02"
    assert point_name({**conf, "varied": "plateau_alpha", "plateau_alpha": 0.9}) == "plateau_alpha 0.9"


# --- the written tables, in process ---------------------------------------------------------------------


def test_the_group_part_of_the_markdown_has_one_line_per_rule_and_the_count(group_table, grid_table):
    lines = group_markdown(group_table)
    assert lines[:2] == ["## Barrier groups under other group rules", ""]
    assert lines[2].startswith("Grid: rule monotonic at tol {0, 1e-05, 0.0001, 0.001, 0.01}; rule label at every "
                               "barrier_rel x barrier_tol pair; the configured rule at min_share {0.25, 1}. Which layer")
    assert lines[4:6] == ["| setting | read by | rule | barrier groups | as used | readers whose runs would differ |",
                          "|---|---|---|---|---|---|"]
    rows = [line for line in lines if line.startswith("| ref |")]
    assert len(rows) == 5 + 15 + 2
    for row in ("| ref | lr_barrier, lr_other | monotonic, tol 0.0001, min_share 0.5 (configured) | block1, block2 | yes | – |",
                "| ref | lr_barrier, lr_other | monotonic, tol 0.001, min_share 0.5 | block2 | no | "
                "lr_barrier (other groups), lr_other (other groups) |",
                "| ref | lr_barrier, lr_other | label, barrier_rel 0.1, barrier_tol 0.01, min_share 0.5 | (none) | no | "
                "lr_barrier (skipped), lr_other (other groups) |",
                "| ref | lr_barrier, lr_other | monotonic, tol 0.0001, min_share 0.25 | block1, block2, block4 | no | "
                "lr_barrier (other groups), lr_other (other groups) |"):
        assert row in rows, row
    assert lines[-2:] == ["Groups the same under every rule: 0 of 1 settings (none).", ""]
    robust = group_table[group_table["varied"] == "group_tol"].iloc[:3].assign(groups_robust=True)
    assert group_markdown(robust)[-2] == "Groups the same under every rule: 1 of 1 settings (ref)."
    assert sensitivity_markdown(grid_table, group_table).endswith("\n".join(lines).rstrip() + "\n")


def test_a_group_list_that_was_not_measured_is_one_line_saying_why(groups_used):
    failed = group_sensitivity(plan(readers=True), measured_shapes(with_ref=True),
                               {"ref": {"with_barrier": [], "upstream_failed": True, "reason": "none of the 4 runs trained"}})
    lines = group_markdown(failed)
    assert lines[6] == "| ref | lr_barrier, lr_other | – | not measured: none of the 4 runs trained |  | – |"


def test_write_sensitivity_writes_the_tables_and_the_markdown_and_logs_their_size(tmp_path, groups_used):
    config = {**plan(readers=True).config, "results": str(tmp_path / "results")}
    runs().to_parquet(tmp_path / "runs.parquet", index=False)
    measured_shapes(with_ref=True).to_parquet(tmp_path / "shapes.parquet", index=False)
    (tmp_path / "ref.yaml").write_text(yaml.safe_dump(groups_used["ref"]))
    out, md, groups_out, log = (tmp_path / n for n in ("s.parquet", "s.md", "g.parquet", "s.log"))
    write_sensitivity(Plan(config), tmp_path / "runs.parquet", tmp_path / "shapes.parquet", out, md, groups_out,
                      {"ref": str(tmp_path / "ref.yaml")}, str(log))
    frame, groups = pd.read_parquet(out), pd.read_parquet(groups_out)
    assert len(frame) == 7 * 23 and len(groups) == 5 + 15 + 2
    assert md.read_text() == sensitivity_markdown(frame, groups)
    assert log.read_text() == (f"Table 1 sensitivity: 7 rows x 23 threshold points -> {out}, {md}; "
                               f"barrier groups of 1 settings -> {groups_out}\n")
    # Without the groups' output: Table 1's part alone, and the groups of the files only go to Table 1.
    plain = Plan({**plan().config, "results": str(tmp_path / "results")})
    write_sensitivity(plain, tmp_path / "runs.parquet", tmp_path / "shapes.parquet", out, md, log=str(log))
    assert "Barrier groups" not in md.read_text()
    assert log.read_text().splitlines()[-1] == f"Table 1 sensitivity: 7 rows x 23 threshold points -> {out}, {md}"


def test_the_robustness_line_goes_after_the_agreement_summary_or_at_the_end(grid_table):
    line = robustness_line(grid_table)
    with_summary = "# Table 1\n\n| a |\n\nAgreement with the paper: 3 of 5\n\nLegend\n"
    assert with_robustness_line(with_summary, grid_table) == (
        f"# Table 1\n\n| a |\n\nAgreement with the paper: 3 of 5\n\n{line}\n\nLegend\n")
    assert with_robustness_line("# Table 1\n\n| a |\n", grid_table) == f"# Table 1\n\n| a |\n\n{line}\n"
    assert robustness_line(grid_table.iloc[:0].assign(grid=pd.Series(dtype=str))).endswith(
        f"(grid: {SensitivityGrid().describe()}; see table1_sensitivity.md).")
