"""Figures from the aggregated tables: one per experiment and the Figure A11 overview."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from .experiments import Plan  # noqa: E402
from .io import note  # noqa: E402
from .tables import MAIN_PATH, _select, group_barrier  # noqa: E402


def _save(fig, out: Path, pdf: bool = False) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp, dpi=130, bbox_inches="tight")
    tmp.replace(out)
    if pdf:
        tmp = out.with_name(f".{out.stem}.tmp.pdf")
        fig.savefig(tmp, bbox_inches="tight")
        tmp.replace(out.with_suffix(".pdf"))
    plt.close(fig)


def experiment_settings(plan: Plan, experiment: str) -> list[str]:
    own = [s.name for s in plan.settings.values() if s.experiment == experiment and not s.aux]
    baselines = [plan.settings[s].baseline for s in own if plan.settings[s].baseline]
    return list(dict.fromkeys([*baselines, *own]))


def _frame(obj) -> pd.DataFrame:
    return obj if isinstance(obj, pd.DataFrame) else pd.read_parquet(obj)


def experiment_figure(plan: Plan, experiment: str, paths, out: str | Path) -> None:
    """Full-model paths (left) and group-wise paths (right) of an experiment's settings, train split,
    mean ± sd over seeds. E14 shows the parameter-group paths instead."""
    paths = _frame(paths)
    if experiment == "E14":
        return param_group_figure(paths, out)
    settings = experiment_settings(plan, experiment)
    data = paths[paths["setting"].isin(settings) & (paths["split"] == "train") & (paths["bn_mode"] == "interpolate")]
    full = data[data["path"] == "full"]
    groups = data[(data["path"] == "group") & (data["start"] == "init")]
    group_names = list(dict.fromkeys(groups["group"]))
    ncols = 1 + len(group_names)
    fig, axes = plt.subplots(1, ncols, figsize=(3.2 * ncols, 3.6), squeeze=False, sharey=False)
    palette = dict(zip(settings, sns.color_palette("tab10", len(settings))))
    if full.empty:
        axes[0, 0].text(0.5, 0.5, "no full paths measured", ha="center")
    else:
        sns.lineplot(full, x="alpha", y="loss", hue="setting", style="start", errorbar="sd", palette=palette,
                     ax=axes[0, 0])
        axes[0, 0].set_title("full model")
        axes[0, 0].legend(fontsize=6)
    for ax, g in zip(axes[0, 1:], group_names):
        sns.lineplot(groups[groups["group"] == g], x="alpha", y="loss", hue="setting", errorbar="sd",
                     palette=palette, ax=ax, legend=False)
        ax.set_title(f"group {g}")
    for ax in axes[0]:
        ax.set_xlabel("α")
        ax.set_ylabel("train loss")
    figures = sorted({plan.settings[s].figure for s in settings if plan.settings[s].experiment == experiment} - {""})
    fig.suptitle(f"{experiment} ({', '.join(figures)}): loss along θ(α), mean ± sd over seeds", fontsize=11, y=1.0)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    _save(fig, Path(out))


def write_experiment_figures(plan: Plan, experiments: list[str], paths_file: str, outputs: list[str],
                             log: str | None = None) -> None:
    paths = pd.read_parquet(paths_file)
    for experiment, out in zip(experiments, outputs):
        experiment_figure(plan, experiment, paths, out)
    note(log, f"wrote {len(outputs)} experiment figures")


def param_group_figure(paths: pd.DataFrame, out: str | Path) -> None:
    """E14 (Fig. A18): inside each group, only the weights, the BN affine or the BN running stats move."""
    sel = paths[(paths["path"].isin(["group", "param_group"])) & (paths["split"] == "train")
                & (paths["bn_mode"] == "interpolate") & (paths["start"] == "init")]
    sel = sel[sel["group"].isin(sel[sel["path"] == "param_group"]["group"].unique())]
    if sel.empty:
        fig, ax = plt.subplots(figsize=(4, 3))
        ax.text(0.5, 0.5, "no parameter-group paths measured", ha="center")
    else:
        grid = sns.relplot(sel, x="alpha", y="loss", hue="param_group", col="group", kind="line", errorbar="sd",
                           height=2.6, aspect=1.0, facet_kws={"sharey": False})
        grid.set_axis_labels("α", "train loss")
        fig = grid.figure
    fig.suptitle("E14 (Fig. A18): parameter-group paths per group (all = the whole group moves)", y=1.03, fontsize=10)
    _save(fig, Path(out))


def figure_a11(plan: Plan, paths, shapes, table1, runs, out: str | Path, log: str | None = None) -> None:
    """One panel per Table 1 row (its full paths against the baseline, with label and accuracy change),
    plus the path-shape vs accuracy-change panel with its rank correlation."""
    paths, shapes, table1, runs = _frame(paths), _frame(shapes), _frame(table1), _frame(runs)
    rows = list(plan.config["table1"])
    n = len(rows) + 1
    ncols = 4
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.0 * ncols, 3.0 * nrows), squeeze=False)
    main = _select(paths, **MAIN_PATH)
    for ax, row, (_, t1) in zip(axes.flat, rows, table1.iterrows()):
        settings = row["settings"]
        baselines = sorted({row.get("baseline") or plan.settings[s].baseline for s in settings} - {None})
        for b in baselines:
            sel = main[main["setting"] == b]
            if not sel.empty:
                sns.lineplot(sel, x="alpha", y="loss", color="0.5", linestyle="--", errorbar="sd", ax=ax,
                             label=f"baseline {b}")
        for s, color in zip(settings, sns.color_palette("tab10", len(settings))):
            sel = main[main["setting"] == s]
            if not sel.empty:
                sns.lineplot(sel, x="alpha", y="loss", color=color, errorbar="sd", ax=ax, label=s)
        acc = "n/a" if pd.isna(t1["acc_change_pp_mean"]) else f"{t1['acc_change_pp_mean']:+.1f} pp"
        ax.set_title(f"{row['intervention']}\nshape {t1['shape']} | acc {acc} ({t1['acc_word']})", fontsize=8)
        ax.set_xlabel("α")
        ax.set_ylabel("train loss")
        ax.legend(fontsize=5)
    ax = axes.flat[len(rows)]
    points = shape_vs_accuracy(plan, shapes, runs)
    if len(points) >= 3:
        rho = points["shape_change"].corr(points["acc_change_pp"], method="spearman")
        sns.scatterplot(points, x="shape_change", y="acc_change_pp", ax=ax)
        ax.set_title(f"group barrier change vs accuracy change\nSpearman ρ = {rho:.2f} (n = {len(points)})", fontsize=8)
    else:
        ax.set_title("too few settings for a rank correlation", fontsize=8)
    ax.set_xlabel("mean group Δ − baseline's")
    ax.set_ylabel("test accuracy change (pp)")
    for extra in list(axes.flat)[n:]:
        extra.axis("off")
    fig.suptitle("Figure A11 (this pipeline): every intervention's linear paths and test-accuracy change", fontsize=11)
    fig.tight_layout()
    _save(fig, Path(out), pdf=True)
    note(log, f"wrote {out} and its PDF")


def shape_vs_accuracy(plan: Plan, shapes: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Per intervention setting: change of mean group-wise Δ and of test accuracy vs its baseline."""
    from .tables import accuracy_change

    rows = []
    for row in plan.config["table1"]:
        for s in row["settings"]:
            base = row.get("baseline") or plan.settings[s].baseline
            if not base:
                continue
            mine, theirs = group_barrier(shapes, s), group_barrier(shapes, base)
            d = accuracy_change(runs, s, base)
            if mine is None or theirs is None or not len(d):
                continue
            rows.append({"setting": s, "shape_change": mine - theirs, "acc_change_pp": float(np.mean(d))})
    return pd.DataFrame(rows, columns=["setting", "shape_change", "acc_change_pp"])
