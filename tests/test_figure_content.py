"""What the figures draw equals the tables they are drawn from: the lines and ±sd bands of the
experiment figures (read back from the matplotlib Figure that `FIGURE_KINDS[kind]` returns), and the
points and rank correlations behind Figure A11's scatter panels (`shape_vs_accuracy`,
`rank_correlations`)."""

from __future__ import annotations

import math

import matplotlib
import numpy as np
import pandas as pd
import pytest
import seaborn as sns

from linpath.study.plan import Plan
from linpath.report import figures
from linpath.report.figures import FIGURE_KINDS, SHAPE_METRICS, rank_correlations, shape_vs_accuracy

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ALPHAS = [0.0, 0.5, 1.0]
SETTINGS = {
    "base": {"experiment": "E2"},
    "more_wd": {"experiment": "E9", "baseline": "base", "intervention": "more weight decay"},
    "mlp": {"experiment": "E1", "run": {"model": {"arch": "mlp"}}, "intervention": "MLP"},
}
EXPERIMENTS = {"E9": {"title": "weight decay", "paper": "Fig. 9"},
               "E1": {"title": "MLPs", "paper": "Fig. 1A", "figure": "starts"}}


def plan_of(settings=SETTINGS, table1=(), seeds=(0, 1)) -> Plan:
    return Plan({"seeds": list(seeds), "base": {"model": {"arch": "resnet18", "width": 4}}, "settings": settings,
                 "experiments": EXPERIMENTS, "table1": list(table1)})


def curves(setting, seed, losses, *, path="full", group="all", start="init", split="train", bn_mode="interpolate",
           param_group="all"):
    return [{"setting": setting, "seed": seed, "run_id": f"{setting}-s{seed}", "path": path, "group": group,
             "param_group": param_group, "start": start, "split": split, "bn_mode": bn_mode, "alpha": a, "loss": l}
            for a, l in zip(ALPHAS, losses)]


@pytest.fixture
def paths() -> pd.DataFrame:
    rows = []
    for seed, shift in ((0, 0.0), (1, 0.5)):
        rows += curves("base", seed, [2.0 + shift, 1.0 + shift, 0.5])
        rows += curves("more_wd", seed, [2.0 + shift, 2.5, 0.25 + shift])
        rows += curves("more_wd", seed, [3.0, 2.0 + shift, 0.25], start="other_init")
        rows += curves("base", seed, [1.0, 0.75, 0.5 + shift], path="group", group="block1")
        rows += curves("more_wd", seed, [1.0, 1.5 + shift, 0.5], path="group", group="block1")
        rows += curves("base", seed, [1.0, 0.5, 0.25], path="group", group="block2")
        rows += curves("more_wd", seed, [1.0, 1.25, 0.25 + shift], path="group", group="block2")
        rows += curves("mlp", seed, [2.0, 1.0 + shift, 0.0])
        rows += curves("mlp", seed, [4.0 + shift, 1.0, 0.0], start="other_init")
        # drawn nowhere: test split, recomputed BN statistics, group paths from another start
        for setting in ("base", "more_wd", "mlp"):
            rows += curves(setting, seed, [50.0, 60.0, 70.0], split="test")
            rows += curves(setting, seed, [50.0, 60.0, 70.0], bn_mode="recompute")
        rows += curves("more_wd", seed, [50.0, 60.0, 70.0], path="group", group="block1", start="other_init")
    return pd.DataFrame(rows)


def drawn_lines(ax) -> list:
    return [line for line in ax.get_lines() if len(line.get_xdata())]


def expected(paths: pd.DataFrame, **where) -> pd.DataFrame:
    sel = paths
    for k, v in {"split": "train", "bn_mode": "interpolate", **where}.items():
        sel = sel[sel[k] == v]
    return sel.groupby("alpha")["loss"].agg(["mean", "std"])


def check_line(line, want: pd.DataFrame) -> None:
    assert list(line.get_xdata()) == list(want.index)
    assert list(line.get_ydata()) == pytest.approx(list(want["mean"]))


def check_band(ax, want: pd.DataFrame) -> None:
    """Some ±sd band of the panel spans exactly mean − sd .. mean + sd at every α."""
    for band in ax.collections:
        vertices = band.get_paths()[0].vertices
        ranges = {a: (vertices[np.isclose(vertices[:, 0], a), 1].min(), vertices[np.isclose(vertices[:, 0], a), 1].max())
                  for a in want.index}
        if all(np.allclose(ranges[a], (m - s, m + s)) for a, (m, s) in want.iterrows()):
            return
    raise AssertionError(f"no ±sd band matches {want.to_dict()}")


LOSS_AXIS = "train loss (cross-entropy, nats)"


def legend_texts(fig) -> list[str]:
    return [t.get_text() for legend in fig.legends for t in legend.get_texts()]


def test_standard_figure_draws_the_train_paths_of_the_experiment(paths):
    plan = plan_of()
    fig = FIGURE_KINDS["standard"](plan, "E9", paths)
    try:
        full, other, block1, block2 = fig.axes
        assert [ax.get_title() for ax in fig.axes] == [
            r"full model: $\theta_0$ → $\theta_T$", r"full model: $\theta_0'$ (another init) → $\theta_T$",
            r"block1 alone: $\theta_0$ → $\theta_T$, rest at $\theta_T$",
            r"block2 alone: $\theta_0$ → $\theta_T$, rest at $\theta_T$"]
        palette = dict(zip(["base", "more_wd"], sns.color_palette("tab10", 2)))
        key = lambda line: (tuple(np.round(line.get_color(), 6)), line.get_linestyle())  # noqa: E731
        base, more_wd = (tuple(np.round(palette[s], 6)) for s in ("base", "more_wd"))
        solid, dashed = "-", "--"
        drawn = {key(line): line for line in drawn_lines(full)}
        assert set(drawn) == {(base, dashed), (more_wd, solid)}, "the baseline dashed, from θ₀ only"
        check_line(drawn[(base, dashed)], expected(paths, setting="base", path="full"))
        check_line(drawn[(more_wd, solid)], expected(paths, setting="more_wd", path="full", start="init"))
        check_band(full, expected(paths, setting="more_wd", path="full", start="init"))
        drawn = {key(line): line for line in drawn_lines(other)}
        assert set(drawn) == {(more_wd, solid)}, "another start point: a panel of its own"
        check_line(drawn[(more_wd, solid)], expected(paths, setting="more_wd", path="full", start="other_init"))
        check_band(other, expected(paths, setting="more_wd", path="full", start="other_init"))
        for ax, group in ((block1, "block1"), (block2, "block2")):
            drawn = {key(line): line for line in drawn_lines(ax)}
            assert set(drawn) == {(base, dashed), (more_wd, solid)}
            for setting, style in (("base", dashed), ("more_wd", solid)):
                want = expected(paths, setting=setting, path="group", group=group, start="init")
                check_line(drawn[(tuple(np.round(palette[setting], 6)), style)], want)
                check_band(ax, want)
        assert all(ax.get_ylabel() == LOSS_AXIS and ax.get_xlabel().startswith("α") for ax in fig.axes)
        assert all(ax.get_legend() is None for ax in fig.axes), "one legend, outside the panels"
        assert legend_texts(fig) == ["base, baseline", "more weight decay (more_wd)"]
        title = fig._suptitle.get_text().splitlines()
        assert title[0] == "E9 (Fig. 9): weight decay"
        assert title[1] == "what changed, against the baseline (dashed): more weight decay (more_wd) vs base"
        assert all(max(line.get_ydata()) < 50 for ax in fig.axes for line in drawn_lines(ax)), "no test-split curve"
    finally:
        plt.close(fig)


def test_a_panel_of_one_curve_names_the_settings_that_did_not_sweep_its_path(paths):
    """more_wd alone sweeps from another init: that panel says the baseline has no such path; panels with
    both curves say nothing."""
    fig = FIGURE_KINDS["standard"](plan_of(), "E9", paths)
    try:
        notes = [[t.get_text() for t in ax.texts] for ax in fig.axes]
        assert notes == [[], ["one curve: no such path in base"], [], []]
    finally:
        plt.close(fig)


def test_a_title_without_a_paper_figure_has_no_empty_parentheses(paths):
    settings = {"base": {"experiment": "E2"}, "more_wd": {"experiment": "E18", "baseline": "base"}}
    plan = Plan({"seeds": [0, 1], "base": {"model": {"arch": "resnet18", "width": 4}}, "settings": settings,
                 "experiments": {"E18": {"title": "my experiment", "figure": "standard"}}, "table1": []})
    fig = FIGURE_KINDS["standard"](plan, "E18", paths[paths["setting"].isin(["base", "more_wd"])])
    try:
        assert fig._suptitle.get_text().splitlines()[0] == "E18: my experiment"
    finally:
        plt.close(fig)


def test_panels_wrap_at_four_per_row_and_groups_start_a_row():
    """Seven groups and two start points: the full paths fill the first row, the groups the rows below
    (4 + 3), and a setting drawn from fewer seeds than planned says so in the legend."""
    groups = [f"g{i}" for i in range(7)]
    rows = curves("base", 0, [2.0, 1.0, 0.5]) + curves("base", 0, [9.0, 25.0, 0.5], start="epoch_1")
    rows += [r for g in groups for r in curves("base", 0, [1.0, 1.5, 0.5], path="group", group=g)]
    fig = FIGURE_KINDS["standard"](plan_of(), "E9", pd.DataFrame(rows))
    try:
        spans = [(ax.get_subplotspec().rowspan.start, ax.get_subplotspec().colspan.start) for ax in fig.axes]
        assert spans == [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2), (1, 3), (2, 0), (2, 1), (2, 2)]
        assert fig.axes[1].get_title() == r"full model: $\theta$ after epoch 1 → $\theta_T$"
        assert legend_texts(fig) == ["base, baseline, n = 1 of 2 seeds", "more weight decay (more_wd), n = 0 of 2 seeds"]
    finally:
        plt.close(fig)


def test_starts_figure_draws_one_line_per_start_point(paths):
    plan = plan_of()
    fig = FIGURE_KINDS["starts"](plan, "E1", paths)
    try:
        assert len(fig.axes) == 1 and fig.axes[0].get_title() == "MLP (mlp)"
        lines = drawn_lines(fig.axes[0])
        assert len(lines) == 2
        drawn = sorted((tuple(line.get_ydata()) for line in lines), key=lambda y: y[0])
        want = [expected(paths, setting="mlp", path="full", start=s)["mean"] for s in ("init", "other_init")]
        assert [list(y) for y in drawn] == [pytest.approx(list(w)) for w in sorted(want, key=lambda w: w.iloc[0])]
        check_band(fig.axes[0], expected(paths, setting="mlp", path="full", start="other_init"))
        assert legend_texts(fig) == [r"from $\theta_0$", r"from $\theta_0'$ (another init)"]
        assert fig.axes[0].get_ylabel() == LOSS_AXIS and fig.axes[0].get_legend() is None
    finally:
        plt.close(fig)


def test_param_group_figure_draws_each_kind_of_tensor(paths):
    rows = []
    for seed in (0, 1):
        for kind, top in (("weights", 1.5), ("bn_stats", 3.0 + seed)):
            rows += curves("base", seed, [1.0, top, 0.5], path="param_group", group="block1", param_group=kind)
    data = pd.concat([paths, pd.DataFrame(rows)], ignore_index=True)
    settings = {**SETTINGS, "base": {"experiment": "E14"}}
    plan = Plan({"seeds": [0, 1], "base": {}, "settings": settings, "table1": [],
                 "experiments": {"E14": {"title": "parameter groups", "figure": "param_groups"}}})
    fig = FIGURE_KINDS["param_groups"](plan, "E14", data)
    try:
        axes = [ax for ax in fig.axes if drawn_lines(ax)]
        assert len(axes) == 1 and "block1" in axes[0].get_title(), "only groups with parameter-group paths"
        drawn = sorted(tuple(line.get_ydata()) for line in drawn_lines(axes[0]))
        want = sorted(tuple(expected(data, setting="base", group="block1", path=p, param_group=k)["mean"])
                      for p, k in (("group", "all"), ("param_group", "weights"), ("param_group", "bn_stats")))
        assert [pytest.approx(list(y)) for y in want] == [list(y) for y in drawn]
    finally:
        plt.close(fig)


# --- Figure A11's scatter data --------------------------------------------------------------------------


def shape_rows(setting, seeds, full_delta, group_delta=None):
    rows = [{"setting": setting, "seed": s, "path": "full", "start": "init", "group": "all", "bn_mode": "interpolate",
             "split": "train", "label": "B" if full_delta else "NB", "delta": full_delta} for s in seeds]
    if group_delta is not None:
        rows += [{**r, "path": "group", "group": "block1", "delta": group_delta} for r in rows]
    return rows


def run_rows(setting, seeds, acc, model="resnet18"):
    return [{"setting": setting, "seed": s, "test_acc": acc, "model": model, "status": "trained"} for s in seeds]


SCATTER_SETTINGS = {
    "base": {"experiment": "E2"},
    "other_base": {"experiment": "E2"},
    "no_parent": {"experiment": "E3"},
    "wd": {"experiment": "E9", "baseline": "base"},
    "lr": {"experiment": "E10", "baseline": "base"},
    "against_other": {"experiment": "E9", "baseline": "base"},
    "unmeasured_parent": {"experiment": "E9", "baseline": "ghost_parent"},
    "ghost_parent": {"experiment": "E2"},
    "late_seeds": {"experiment": "E9", "baseline": "base"},
    "vit": {"experiment": "E12", "baseline": "base"},
}


SCATTER_TABLE1 = [{"intervention": "a", "settings": ["no_parent", "wd", "lr"]},
                  {"intervention": "b", "settings": ["against_other"], "baseline": "other_base"},
                  {"intervention": "c", "settings": ["unmeasured_parent", "late_seeds", "vit"]}]


def scatter_plan() -> Plan:
    return Plan({"seeds": [0, 1, 2, 3], "base": {}, "settings": SCATTER_SETTINGS, "table1": SCATTER_TABLE1})


def test_scatter_points_are_changes_against_the_baseline():
    plan = scatter_plan()
    shapes = pd.DataFrame(shape_rows("base", [0, 1], 0.25, 0.5) + shape_rows("other_base", [0, 1], 1.0)
                          + shape_rows("no_parent", [0, 1], 0.0) + shape_rows("wd", [0, 1], 0.75, 0.25)
                          + shape_rows("lr", [0, 1], 0.5) + shape_rows("against_other", [0, 1], 0.5)
                          + shape_rows("unmeasured_parent", [0, 1], 0.5) + shape_rows("late_seeds", [2, 3], 0.5)
                          + shape_rows("vit", [0, 1], 1.0))
    runs = pd.DataFrame(run_rows("base", [0, 1], 0.90) + run_rows("other_base", [0, 1], 0.50)
                        + run_rows("no_parent", [0, 1], 0.95) + run_rows("wd", [0, 1], 0.92)
                        + run_rows("lr", [0, 1], 0.80) + run_rows("against_other", [0, 1], 0.60)
                        + run_rows("unmeasured_parent", [0, 1], 0.9) + run_rows("ghost_parent", [0, 1], 0.9)
                        + run_rows("late_seeds", [2, 3], 0.9) + run_rows("vit", [0, 1], 0.85, model="vit_tiny"))
    points = shape_vs_accuracy(plan, shapes, runs)
    assert list(points.columns) == ["setting", "baseline", "experiment", "family", *SHAPE_METRICS, "acc_change_pp"]
    assert list(points["setting"]) == ["wd", "lr", "against_other", "vit"], \
        "no baseline, an unmeasured baseline, or no seed in common: no point"
    p = points.set_index("setting")
    assert p.loc["wd", "full_delta_change"] == pytest.approx(0.75 - 0.25)
    assert p.loc["wd", "group_delta_change"] == pytest.approx(0.25 - 0.5)
    assert p.loc["wd", "acc_change_pp"] == pytest.approx(2.0) and p.loc["wd", "experiment"] == "E9"
    assert p.loc["lr", "full_delta_change"] == pytest.approx(0.25) and math.isnan(p.loc["lr", "group_delta_change"])
    assert p.loc["lr", "acc_change_pp"] == pytest.approx(-10.0)
    assert p.loc["against_other", "full_delta_change"] == pytest.approx(-0.5), "the row's baseline, not the setting's"
    assert p.loc["against_other", "acc_change_pp"] == pytest.approx(10.0)
    assert p.loc["vit", "family"] == "vit_tiny", "an architecture without a family is its own family"
    assert p.loc["wd", "family"] == "resnet"


def test_no_scatter_points():
    plan = Plan({"seeds": [0], "base": {}, "settings": {"base": {"experiment": "E2"}}, "table1": []})
    points = shape_vs_accuracy(plan, pd.DataFrame(shape_rows("base", [0], 0.0)), pd.DataFrame(run_rows("base", [0], 0.9)))
    assert points.empty and list(points.columns) == ["setting", "baseline", "experiment", "family", *SHAPE_METRICS,
                                                     "acc_change_pp"]
    rho = rank_correlations(points, "full_delta_change")
    assert rho.empty and list(rho.columns) == ["family", "metric", "n", "rho"]


def test_figure_a11_points_are_the_comparisons_of_table1():
    """Figure A11 pairs settings by Table 1's rule (row_comparisons): the middle fixed LR, whose row compares
    it with each other fixed LR, is a point against each of them (not against a baseline of its own), and
    each point's accuracy change is the one Table 1 states for that comparison."""
    from conftest import SEEDS, fixed_lr_plan, fixed_lr_runs, shape_row

    from linpath.report.tables import table1

    plan = fixed_lr_plan()
    plan.settings["mid"].baseline = "high"  # a baseline of its own that the row's `compare` overrides
    runs = fixed_lr_runs(0.88)
    shapes = pd.DataFrame([shape_row(n, s, "P" if n == "mid" else "NB", d)
                           for n, d in (("mid", 0.5), ("high", 0.0), ("low", 0.25)) for s in SEEDS])
    t1 = table1(plan, runs, shapes)
    points = shape_vs_accuracy(plan, shapes, runs)
    table_pairs = [c for row in t1["comparison"] for c in row.split("; ")]
    assert [f"{s} vs {b}" for s, b in zip(points["setting"], points["baseline"])] == table_pairs == [
        "mid vs high", "mid vs low", "high vs mid", "low vs mid"]
    words = dict(w.split(": ", 1) for w in t1.iloc[0]["acc_words"].split("; "))
    for p in points[points["setting"] == "mid"].itertuples():
        assert words[f"mid vs {p.baseline}"].startswith(f"{p.acc_change_pp:+.2f}"), p.baseline
    assert points.set_index(["setting", "baseline"]).loc[("mid", "low"), "full_delta_change"] == pytest.approx(0.25)


def test_rank_correlation_is_spearman_per_family_in_name_order():
    # monotone but far from linear: Spearman ρ = 1, Pearson r < 1
    x, y = [0.0, 0.1, 0.2, 10.0], [0.0, 1.0, 2.0, 2.1]
    points = pd.DataFrame({"family": ["vgg"] * 4 + ["mlp"] * 2 + ["resnet"] * 3,
                           "full_delta_change": x + [0.0, 1.0] + [0.0, 1.0, 2.0],
                           "acc_change_pp": y + [1.0, 0.0] + [3.0, 1.0, 2.0]})
    rho = rank_correlations(points, "full_delta_change")
    assert list(rho["family"]) == ["mlp", "resnet", "vgg"]
    assert list(rho["metric"]) == ["full_delta_change"] * 3 and list(rho["n"]) == [2, 3, 4]
    by = rho.set_index("family")["rho"]
    assert by["vgg"] == pytest.approx(1.0) and np.corrcoef(x, y)[0, 1] < 0.9
    assert by["resnet"] == pytest.approx(-0.5)
    assert math.isnan(by["mlp"]), "two points always correlate perfectly: below min_points, no ρ"
    assert rank_correlations(points, "full_delta_change", min_points=2).set_index("family").loc["mlp", "rho"] == \
           pytest.approx(-1.0)


def a11_tables():
    """Shapes, runs, paths and Table 1 of SCATTER_TABLE1's rows: every planned run trained."""
    shapes = pd.DataFrame(shape_rows("base", [0, 1], 0.25, 0.5) + shape_rows("other_base", [0, 1], 1.0)
                          + shape_rows("wd", [0, 1], 0.75, 0.25) + shape_rows("lr", [0, 1], 0.5)
                          + shape_rows("against_other", [0, 1], 0.5) + shape_rows("vit", [0, 1], 1.0))
    runs = pd.DataFrame(run_rows("base", [0, 1], 0.90) + run_rows("other_base", [0, 1], 0.50)
                        + run_rows("wd", [0, 1], 0.92) + run_rows("lr", [0, 1], 0.80)
                        + run_rows("against_other", [0, 1], 0.60) + run_rows("vit", [0, 1], 0.85, model="vit_tiny"))
    paths = pd.DataFrame([r for s in ("base", "wd", "lr") for seed in (0, 1) for r in curves(s, seed, [1.0, 0.5, 0.1])])
    t1 = pd.DataFrame([{"intervention": row["intervention"], "acc_change_pp_mean": 1.0, "layer_barrier": "n/a",
                        "shape": "NB", "shape_fractions": "NB 2/2", "acc_word": "same"} for row in SCATTER_TABLE1])
    return shapes, runs, paths, t1


def test_figure_a11_scatters_exactly_the_points_of_its_table():
    table1, plan = SCATTER_TABLE1, scatter_plan()
    shapes, runs, paths, t1 = a11_tables()
    fig = figures.a11_figure(plan, paths, shapes, t1, runs)
    points = shape_vs_accuracy(plan, shapes, runs)
    scatter_axes = fig.axes[len(table1):len(table1) + len(SHAPE_METRICS)]
    for ax, metric in zip(scatter_axes, SHAPE_METRICS):
        drawn = np.concatenate([c.get_offsets() for c in ax.collections if len(c.get_offsets())])
        want = points.dropna(subset=[metric])[[metric, "acc_change_pp"]].to_numpy()
        assert sorted(map(tuple, np.round(drawn, 9))) == sorted(map(tuple, np.round(want, 9))), metric
        assert ax.get_xlabel() == SHAPE_METRICS[metric]
        assert ax.get_ylabel() == "test accuracy change vs baseline (pp)"
    # The first panel draws the row's settings with a full path, and its baseline dashed.
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["baseline base", "wd", "lr"]
    assert fig.axes[0].get_ylabel() == LOSS_AXIS
    assert [ax.get_title().splitlines()[0] for ax in fig.axes[:len(table1)]] == ["a", "b", "c"], "all runs trained"
    plt.close(fig)


def test_figure_a11_titles_say_how_many_runs_trained_where_fewer_than_planned():
    plan = scatter_plan()
    shapes, runs, paths, t1 = a11_tables()
    runs.loc[(runs["setting"] == "wd") & (runs["seed"] == 1), "status"] = "diverged"
    skipped = {"setting": "late_seeds", "seed": 2, "test_acc": np.nan, "model": "resnet18", "status": "skipped"}
    runs = pd.concat([runs, pd.DataFrame([skipped])], ignore_index=True)
    fig = figures.a11_figure(plan, paths, shapes, t1, runs)
    try:
        assert [ax.get_title().splitlines()[0] for ax in fig.axes[:3]] == ["a, n = 3/4 runs trained", "b",
                                                                          "c, n = 2/3 runs trained"]
    finally:
        plt.close(fig)
    fig = figures.a11_figure(plan, paths, shapes, t1, runs.drop(columns="status"))  # no status: all rows trained
    try:
        assert [ax.get_title().splitlines()[0] for ax in fig.axes[:3]] == ["a", "b", "c"]
    finally:
        plt.close(fig)


def test_figure_a11_titles_show_a_layer_tag_and_leave_out_why_a_row_has_none():
    plan = scatter_plan()
    shapes, runs, paths, t1 = a11_tables()
    t1["layer_barrier"] = ["H-LB/none", "not swept", "not trained"]
    fig = figures.a11_figure(plan, paths, shapes, t1, runs)
    try:
        assert [ax.get_title().splitlines()[1] for ax in fig.axes[:3]] == [
            "shape NB (NB 2/2), layers H-LB/none", "shape NB (NB 2/2)", "shape NB (NB 2/2)"]
    finally:
        plt.close(fig)
