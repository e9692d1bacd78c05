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
from .io import atomic_path, note  # noqa: E402
from .layer_groups import setting_layer_groups  # noqa: E402
from .tables import (MAIN_PATH, select, accuracy_change, collect, full_delta, group_barrier,  # noqa: E402
                     row_comparisons, trained)


def _save(fig, out: Path, pdf: bool = False) -> None:
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=130, bbox_inches="tight")
    if pdf:
        with atomic_path(out.with_suffix(".pdf")) as tmp:
            fig.savefig(tmp, format="pdf", bbox_inches="tight")
    plt.close(fig)


def _frame(obj) -> pd.DataFrame:
    return obj if isinstance(obj, pd.DataFrame) else pd.read_parquet(obj)


def _title(plan: Plan, experiment: str, what: str) -> str:
    entry = plan.experiments.get(experiment, {})
    figures = sorted({plan.paper_figure(s) for s in plan.experiment_settings(experiment)
                      if plan.settings[s].experiment == experiment} | {str(entry.get("paper", ""))} - {""})
    return f"{experiment} ({', '.join(figures)}): {entry.get('title', '')}\n{what}"


def _train_paths(paths: pd.DataFrame, settings: list[str]) -> pd.DataFrame:
    return paths[paths["setting"].isin(settings) & (paths["split"] == "train") & (paths["bn_mode"] == "interpolate")]


def standard_figure(plan: Plan, experiment: str, paths: pd.DataFrame):
    """Full-model paths (left) and group-wise paths (right) of the experiment's settings beside their
    baselines, train split, mean ± sd over seeds."""
    settings = plan.experiment_settings(experiment)
    data = _train_paths(paths, settings)
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
    fig.suptitle(_title(plan, experiment, "loss along θ(α), mean ± sd over seeds"), fontsize=10, y=1.02)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    return fig


def starts_figure(plan: Plan, experiment: str, paths: pd.DataFrame):
    """One panel per setting: the full path from each start point (θ₀, another init θ₀′, an earlier epoch)
    to the same final state, train split, mean ± sd over seeds (Fig. 1A)."""
    settings = plan.experiment_settings(experiment)
    full = _train_paths(paths, settings)
    full = full[full["path"] == "full"]
    fig, axes = plt.subplots(1, max(1, len(settings)), figsize=(4.0 * max(1, len(settings)), 3.6), squeeze=False)
    for ax, setting in zip(axes[0], settings):
        sel = full[full["setting"] == setting]
        if sel.empty:
            ax.text(0.5, 0.5, "no full paths measured", ha="center")
        else:
            sns.lineplot(sel, x="alpha", y="loss", hue="start", errorbar="sd", ax=ax)
            ax.legend(fontsize=7, title="start")
        ax.set_title(plan.settings[setting].intervention or setting, fontsize=9)
        ax.set_xlabel("α")
        ax.set_ylabel("train loss")
    fig.suptitle(_title(plan, experiment, "loss from each start point to the final state, mean ± sd over seeds"),
                 fontsize=10, y=1.02)
    fig.tight_layout(rect=(0, 0, 1, 0.9))
    return fig


def param_groups_figure(plan: Plan, experiment: str, paths: pd.DataFrame):
    """Inside each group, only the weights, the BN affine or the BN running stats move (Fig. A18)."""
    sel = paths[paths["setting"].isin(plan.experiment_settings(experiment))
                & (paths["path"].isin(["group", "param_group"])) & (paths["split"] == "train")
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
    fig.suptitle(_title(plan, experiment, "parameter-group paths per group (all = the whole group moves)"),
                 y=1.06, fontsize=10)
    return fig


# A kind's function is named `<kind>_figure`: the workflow digests that function's code to redraw exactly
# the figures whose code changed.
FIGURE_KINDS = {"standard": standard_figure, "starts": starts_figure, "param_groups": param_groups_figure}


def experiment_figure(plan: Plan, experiment: str, paths, out: str | Path) -> None:
    """The figure of one experiment, drawn by the kind its catalogue entry names."""
    kind = plan.figure_kind(experiment)
    if kind not in FIGURE_KINDS:
        raise KeyError(f"experiments.{experiment}.figure: unknown kind {kind!r} (known: {', '.join(FIGURE_KINDS)})")
    _save(FIGURE_KINDS[kind](plan, experiment, _frame(paths)), Path(out))


def write_experiment_figure(plan: Plan, experiment: str, run_ids: list[str], out: str | Path,
                            log: str | None = None) -> None:
    """One experiment's figure from the sweeps of its (trained) runs."""
    paths = collect(plan, run_ids, [str(plan.layout.sweep(r)) for r in run_ids]) if run_ids else \
        pd.DataFrame(columns=["setting", "path", "start", "group", "param_group", "bn_mode", "split", "alpha", "loss"])
    experiment_figure(plan, experiment, paths, out)
    note(log, f"{experiment}: figure of {len(run_ids)} runs -> {out}")


def figure_a11(plan: Plan, paths, shapes, table1, runs, out: str | Path, log: str | None = None) -> None:
    _save(a11_figure(plan, paths, shapes, table1, runs), Path(out), pdf=True)
    note(log, f"wrote {out} and its PDF")


def a11_figure(plan: Plan, paths, shapes, table1, runs):
    """One panel per Table 1 row (its full paths against the baseline, with label and accuracy change),
    plus two panels of path-shape change vs accuracy change (full-path Δ, group Δ) with their rank
    correlations per architecture family. Returned unsaved, so its drawn data can be read back."""
    paths, shapes, table1, runs = _frame(paths), _frame(shapes), _frame(table1), trained(_frame(runs))
    rows = list(plan.config["table1"])
    n = len(rows) + len(SHAPE_METRICS)
    ncols = 4
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.0 * ncols, 3.0 * nrows), squeeze=False)
    main = select(paths, **MAIN_PATH)
    for ax, row, (_, t1) in zip(axes.flat, rows, table1.iterrows()):
        settings = row["settings"]
        baselines = sorted({b for _, b in row_comparisons(plan, row)} - {None})
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
        layer = "" if t1["layer_barrier"] == "n/a" else f", layers {t1['layer_barrier']}"
        ax.set_title(f"{row['intervention']}\nshape {t1['shape']} ({t1['shape_fractions']}){layer}\n"
                     f"acc {acc} ({t1['acc_word']})", fontsize=7)
        ax.set_xlabel("α")
        ax.set_ylabel("train loss")
        if ax.get_legend_handles_labels()[0]:  # a row whose runs were all skipped draws nothing
            ax.legend(fontsize=5)
    points = shape_vs_accuracy(plan, shapes, runs)
    for ax, metric in zip(axes.flat[len(rows):], SHAPE_METRICS):
        rho = rank_correlations(points, metric)
        sel = points.dropna(subset=[metric])
        if sel.empty:
            ax.set_title(f"no settings with {SHAPE_METRICS[metric]}", fontsize=8)
        else:
            sns.scatterplot(sel, x=metric, y="acc_change_pp", hue="family", style="family", ax=ax)
            ax.axhline(0, color="0.7", lw=0.8)
            ax.axvline(0, color="0.7", lw=0.8)
            lines = [f"{r.family}: ρ = {r.rho:.2f} (n = {r.n})" if np.isfinite(r.rho) else f"{r.family}: n = {r.n} (too few)"
                     for r in rho.itertuples()]
            ax.set_title("Spearman ρ within each family\n" + "; ".join(lines), fontsize=7)
            ax.legend(fontsize=6)
        ax.set_xlabel(SHAPE_METRICS[metric])
        ax.set_ylabel("test accuracy change (pp)")
    for extra in list(axes.flat)[n:]:
        extra.axis("off")
    fig.suptitle("Figure A11 (this pipeline): every intervention's linear paths and test-accuracy change", fontsize=11)
    fig.tight_layout()
    return fig


ARCH_FAMILY = {"resnet18": "resnet", "resnet34": "resnet", "resnet50": "resnet", "vgg11": "vgg", "mlp": "mlp"}
SHAPE_METRICS = {"full_delta_change": "full-path Δ − baseline's", "group_delta_change": "mean group Δ − baseline's"}


def shape_vs_accuracy(plan: Plan, shapes: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Per intervention setting of Table 1: the change of its path-shape metrics and of its test accuracy
    against its baseline, with its architecture family. The full-path Δ exists for every setting; the
    group Δ only where group-wise paths were measured (NaN elsewhere)."""
    runs = trained(runs)
    rows = []
    for row in plan.config["table1"]:
        for s in row["settings"]:
            base = row.get("baseline") or plan.settings[s].baseline
            if not base:
                continue
            d = accuracy_change(runs, s, base)
            mine, theirs = full_delta(shapes, s), full_delta(shapes, base)
            if not len(d) or mine is None or theirs is None:
                continue
            g_mine = group_barrier(shapes, s, setting_layer_groups(plan, s))
            g_theirs = group_barrier(shapes, base, setting_layer_groups(plan, base))
            archs = runs.loc[runs["setting"] == s, "model"].unique()
            rows.append({"setting": s, "experiment": plan.settings[s].experiment,
                         "family": ARCH_FAMILY.get(str(archs[0]), str(archs[0])),
                         "full_delta_change": mine - theirs,
                         "group_delta_change": (g_mine - g_theirs) if g_mine is not None and g_theirs is not None
                         else np.nan,
                         "acc_change_pp": float(np.mean(d))})
    return pd.DataFrame(rows, columns=["setting", "experiment", "family", *SHAPE_METRICS, "acc_change_pp"])


def rank_correlations(points: pd.DataFrame, metric: str, min_points: int = 3) -> pd.DataFrame:
    """Spearman's ρ between a shape metric's change and the accuracy change, within each architecture
    family (Δ scales of MLPs, VGGs and ResNets are not comparable). ρ is NaN below `min_points`."""
    rows = []
    for family, sel in points.dropna(subset=[metric, "acc_change_pp"]).groupby("family", sort=True):
        n = len(sel)
        rho = sel[metric].corr(sel["acc_change_pp"], method="spearman") if n >= min_points else np.nan
        rows.append({"family": family, "metric": metric, "n": n, "rho": float(rho)})
    return pd.DataFrame(rows, columns=["family", "metric", "n", "rho"])
