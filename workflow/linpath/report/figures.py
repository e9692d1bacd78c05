"""Figures from the aggregated tables: one per experiment and the Figure A11 overview."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from ..foundations.io import atomic_path, note  # noqa: E402
from ..study.layer_groups import setting_layer_groups  # noqa: E402
from ..study.layer_groups import ARCH_FAMILY  # noqa: E402
from ..study.plan import Plan, row_comparisons  # noqa: E402
from .tables import (  # noqa: E402
    LAYER_TAGS,
    MAIN_PATH,
    accuracy_change,
    collect,
    full_delta,
    group_barrier,
    run_file_list,
    select,
    trained,
    trained_of_planned,
)


def _save(fig, out: Path, pdf: Path | None = None) -> None:
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=130, bbox_inches="tight")
    if pdf is not None:
        with atomic_path(pdf) as tmp:
            fig.savefig(tmp, format="pdf", bbox_inches="tight", metadata={"CreationDate": None})  # same bytes each time
    plt.close(fig)


def _frame(obj) -> pd.DataFrame:
    return obj if isinstance(obj, pd.DataFrame) else pd.read_parquet(obj)


def _title(plan: Plan, experiment: str, *lines: str) -> str:
    entry = plan.experiments.get(experiment, {})
    figures = sorted(({plan.paper_figure(s) for s in plan.experiment_settings(experiment)
                       if plan.settings[s].experiment == experiment} | {str(entry.get("paper", ""))}) - {""})
    head = experiment + (f" ({', '.join(figures)})" if figures else "") + (f": {entry['title']}" if entry.get("title") else "")
    return "\n".join([head, *(textwrap.fill(line, 150) for line in lines if line)])


def _train_paths(paths: pd.DataFrame, settings: list[str]) -> pd.DataFrame:
    return paths[paths["setting"].isin(settings) & (paths["split"] == "train") & (paths["bn_mode"] == "interpolate")]


# --- what every panel says the same way ---------------------------------------------------------------

MAX_COLUMNS = 4  # panels per row: a figure stays readable on a screen at any number of groups
LOSS_NAMES = {"ce": "cross-entropy", "bce": "binary cross-entropy"}
THETA_0, THETA_T = r"$\theta_0$", r"$\theta_T$"
ALPHA_LABEL = f"α (0: start, 1: {THETA_T})"
DRAWN = "mean ± sd over seeds"


def _grid(*sections: int, width: float = 3.4, height: float = 2.7):
    """A figure whose panels come in sections (full paths, group paths), each section starting on a row of
    its own, at most MAX_COLUMNS panels per row; the unused cells are removed. Returns it and its panels."""
    sections = [n for n in sections if n] or [1]
    ncols = min(MAX_COLUMNS, max(sections))
    starts, nrows = [], 0
    for n in sections:
        starts.append(nrows)
        nrows += math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows + 1.0), squeeze=False,
                             layout="constrained")
    used = [axes.flat[first * ncols + i] for first, n in zip(starts, sections) for i in range(n)]
    for ax in axes.flat:
        if not any(ax is u for u in used):
            ax.remove()
    return fig, used


def _planned(plan: Plan, setting: str) -> list:
    return [run for run in plan.runs.values() if run.setting == setting]


def _loss_kind(plan: Plan, setting: str) -> str:
    runs = _planned(plan, setting)
    return (runs[0].recipe if runs else plan.base).get("train", {}).get("loss", "ce")


def _loss_label(plan: Plan, settings, split: str = "train") -> str:
    """'train loss (cross-entropy, nats)': the objective the runs trained on (natural log, as torch's)."""
    kinds = sorted({LOSS_NAMES.get(_loss_kind(plan, s), _loss_kind(plan, s)) for s in settings}) or ["cross-entropy"]
    return f"{split} loss ({' / '.join(kinds)}, nats)"


def _label_axes(ax, y: str, x: str = ALPHA_LABEL) -> None:
    ax.set_xlabel(x, fontsize=8)
    ax.set_ylabel(y, fontsize=8)
    ax.tick_params(labelsize=7)


def _name(plan: Plan, setting: str) -> str:
    """The intervention and, for the tables, its setting: 'no weight decay (base_nowd)'."""
    text = plan.settings[setting].intervention if setting in plan.settings else ""
    return f"{text} ({setting})" if text and text != setting else setting


def _start_name(label: str) -> str:
    if label == "init":
        return THETA_0
    if label == "other_init":
        return r"$\theta_0'$ (another init)"
    if label.startswith("epoch_") and label[6:].isdigit():
        return rf"$\theta$ after epoch {label[6:]}"
    return label


def _start_order(label: str) -> tuple:
    if label.startswith("epoch_") and label[6:].isdigit():
        return (2, int(label[6:]), label)
    return ({"init": 0, "other_init": 1}.get(label, 3), 0, label)


def _baselines(plan: Plan, settings: list[str]) -> list[str]:
    """The shown settings another shown setting is compared against."""
    return [s for s in settings if any(plan.settings[o].baseline == s for o in settings)]


def _what_changed(plan: Plan, settings: list[str]) -> str:
    """'what changed, against the baseline (dashed): no weight decay (base_nowd) vs base ResNet-18 (base)'."""
    shown, pairs, alone = set(settings), {}, []
    for s in settings:
        b = plan.settings[s].baseline
        if b in shown:
            pairs.setdefault(b, []).append(s)
        elif not any(plan.settings[o].baseline == s for o in settings):
            alone.append(s)
    parts = [f"{', '.join(_name(plan, s) for s in changed)} vs {_name(plan, b)}" for b, changed in pairs.items()]
    if alone:
        names = ", ".join(_name(plan, s) for s in alone)
        parts.append(("no baseline shown: " if pairs else "without a baseline: ") + names)
    return ("what changed, against the baseline (dashed): " if pairs else "") + "; ".join(parts)


def _seed_counts(plan: Plan, data: pd.DataFrame, settings: list[str]) -> dict[str, str]:
    """', n = 1 of 2 seeds' for a setting drawn from fewer seeds than planned, else ''."""
    out = {}
    for s in settings:
        have, planned = data.loc[data["setting"] == s, "seed"].nunique(), len(_planned(plan, s))
        out[s] = f", n = {have} of {planned} seeds" if have < planned else ""
    return out


def _legend_below(fig, handles: list, title: str | None = None) -> None:
    """One legend for every panel, under them: the lines keep their place, the data stays uncovered."""
    if handles:
        ncol = min(3, len(handles))
        rows = math.ceil(len(handles) / ncol)  # matplotlib fills columns first: reordered to read by rows
        ordered = [handles[r * ncol + c] for c in range(ncol) for r in range(rows) if r * ncol + c < len(handles)]
        fig.legend(handles=ordered, loc="outside lower center", ncol=ncol, fontsize=8, title=title, title_fontsize=8,
                   frameon=False)


def _line(ax, sel: pd.DataFrame, color, dashed: bool = False) -> None:
    sns.lineplot(sel, x="alpha", y="loss", errorbar="sd", color=color, linestyle="--" if dashed else "-", ax=ax,
                 legend=False)


def _empty(ax, what: str) -> None:
    ax.text(0.5, 0.5, what, ha="center", va="center", fontsize=8, transform=ax.transAxes)


def _one_curve_note(plan: Plan, ax, sel: pd.DataFrame, data: pd.DataFrame, settings: list[str]) -> None:
    """A panel drawn from one setting while others of the figure have curves elsewhere says which ones are
    missing: their sweeps did not measure this path (another `paths:` than the baseline's, or another model)."""
    here = set(sel["setting"])
    missing = [s for s in settings if s not in here and (data["setting"] == s).any()]
    if len(here) == 1 and missing:
        ax.text(0.5, 0.02, textwrap.fill(f"one curve: no such path in {', '.join(_name(plan, s) for s in missing)}", 60),
                ha="center", va="bottom", fontsize=6, color="firebrick", transform=ax.transAxes)


# --- the figure kinds ---------------------------------------------------------------------------------


def standard_figure(plan: Plan, experiment: str, paths: pd.DataFrame):
    """The experiment's settings beside their baselines (dashed), train split, mean ± sd over seeds: the
    full-model path from θ₀ first, the full path from each other start point (another init, an earlier
    epoch) in a panel of its own (their scales differ by orders of magnitude), then one panel per group
    moved alone from θ₀ with the rest of the network at θ_T."""
    settings = plan.experiment_settings(experiment)
    data = _train_paths(paths, settings)
    full = data[data["path"] == "full"]
    starts = sorted(full["start"].unique(), key=_start_order)
    main = "init" if "init" in starts or not starts else starts[0]
    groups = data[(data["path"] == "group") & (data["start"] == main)]
    full_panels = [("full", main)] + [("full", s) for s in starts if s != main]
    group_panels = [("group", g) for g in dict.fromkeys(groups["group"])]
    panels = full_panels + group_panels
    fig, axes = _grid(len(full_panels), len(group_panels))
    palette = dict(zip(settings, sns.color_palette("tab10", len(settings))))
    baselines = set(_baselines(plan, settings))
    for ax, (kind, which) in zip(axes, panels):
        sel = full[full["start"] == which] if kind == "full" else groups[groups["group"] == which]
        for s in settings:
            if (sel["setting"] == s).any():
                _line(ax, sel[sel["setting"] == s], palette[s], dashed=s in baselines)
        if kind == "full":
            ax.set_title(f"full model: {_start_name(which)} → {THETA_T}", fontsize=9)
        else:
            ax.set_title(f"{which} alone: {_start_name(main)} → {THETA_T}, rest at {THETA_T}", fontsize=9)
        if sel.empty:
            _empty(ax, "no full paths measured" if kind == "full" else "not measured")
        else:
            _one_curve_note(plan, ax, sel, data, settings)
        _label_axes(ax, _loss_label(plan, settings))
    counts = _seed_counts(plan, data, settings)
    _legend_below(fig, [Line2D([], [], color=palette[s], linestyle="--" if s in baselines else "-",
                               label=_name(plan, s) + (", baseline" if s in baselines else "") + counts[s])
                        for s in settings])
    fig.suptitle(_title(plan, experiment, _what_changed(plan, settings),
                        rf"train loss along $\theta(\alpha) = (1 - \alpha)\,$start$ + \alpha\,\theta_T$, {DRAWN}; "
                        "y scales differ per panel"),
                 fontsize=10)
    return fig


def starts_figure(plan: Plan, experiment: str, paths: pd.DataFrame):
    """One panel per setting: the full path from each start point (θ₀, another init θ₀′, an earlier epoch)
    to the same final state, train split, mean ± sd over seeds (Fig. 1A)."""
    settings = plan.experiment_settings(experiment)
    full = _train_paths(paths, settings)
    full = full[full["path"] == "full"]
    starts = sorted(full["start"].unique(), key=_start_order)
    colors = dict(zip(starts, sns.color_palette("dark", len(starts))))
    fig, axes = _grid(len(settings))
    counts = _seed_counts(plan, full, settings)
    for ax, setting in zip(axes, settings):
        sel = full[full["setting"] == setting]
        for start in starts:
            if (sel["start"] == start).any():
                _line(ax, sel[sel["start"] == start], colors[start])
        if sel.empty:
            _empty(ax, "no full paths measured")
        ax.set_title(_name(plan, setting) + counts[setting], fontsize=9)
        _label_axes(ax, _loss_label(plan, [setting]))
    _legend_below(fig, [Line2D([], [], color=colors[s], label=f"from {_start_name(s)}") for s in starts],
                  title=f"start point of the path (end: the same trained {THETA_T})")
    fig.suptitle(_title(plan, experiment, "loss from each start point to the final state, " + DRAWN), fontsize=10)
    return fig


PARAM_GROUP_NAMES = {"all": "the whole group", "weights": "its weights only",
                     "bn_affine": "its BN scale and shift only", "bn_stats": "its BN running statistics only"}


def param_groups_figure(plan: Plan, experiment: str, paths: pd.DataFrame):
    """Inside each group, only the weights, the BN affine or the BN running stats move (Fig. A18): one panel
    per group (per setting and group where the figure shows several settings), the rest at θ_T."""
    settings = plan.experiment_settings(experiment)
    sel = paths[paths["setting"].isin(settings) & (paths["path"].isin(["group", "param_group"]))
                & (paths["split"] == "train") & (paths["bn_mode"] == "interpolate") & (paths["start"] == "init")]
    measured = sel[sel["path"] == "param_group"]
    panels = list(dict.fromkeys(zip(measured["setting"], measured["group"])))
    kinds = [k for k in PARAM_GROUP_NAMES if (sel["param_group"] == k).any()]
    colors = dict(zip(PARAM_GROUP_NAMES, sns.color_palette("dark", len(PARAM_GROUP_NAMES))))
    fig, axes = _grid(len(panels))
    if not panels:
        _empty(axes[0], "no parameter-group paths measured")
        _label_axes(axes[0], _loss_label(plan, settings))
    for ax, (setting, group) in zip(axes, panels):
        here = sel[(sel["setting"] == setting) & (sel["group"] == group)]
        for kind in kinds:
            if (here["param_group"] == kind).any():
                _line(ax, here[here["param_group"] == kind], colors[kind])
        ax.set_title(f"{group}: {THETA_0} → {THETA_T}, rest at {THETA_T}"
                     + (f"\n{_name(plan, setting)}" if len(settings) > 1 else ""),
                     fontsize=9)
        _label_axes(ax, _loss_label(plan, [setting]))
    _legend_below(fig, [Line2D([], [], color=colors[k], label=PARAM_GROUP_NAMES[k]) for k in kinds],
                  title="what moves inside the group")
    fig.suptitle(_title(plan, experiment, f"which tensors of a group carry its path's rise, {DRAWN}"), fontsize=10)
    return fig


# A kind's function is named `<kind>_figure`; this file is an input of every figure rule
# (workflow/rules/figures.smk), so a change here redraws every figure.
FIGURE_KINDS = {"standard": standard_figure, "starts": starts_figure, "param_groups": param_groups_figure}


def experiment_figure(plan: Plan, experiment: str, paths, out: str | Path) -> None:
    """The figure of one experiment, drawn by the kind its catalogue entry names."""
    kind = plan.figure_kind(experiment)
    if kind not in FIGURE_KINDS:
        raise KeyError(f"experiments.{experiment}.figure: unknown kind {kind!r} (known: {', '.join(FIGURE_KINDS)})")
    _save(FIGURE_KINDS[kind](plan, experiment, _frame(paths)), Path(out))


def write_experiment_figure(plan: Plan, experiment: str, run_ids: list[str], out: str | Path,
                            log: str | None = None, files: dict[str, dict[str, str]] | None = None) -> None:
    """One experiment's figure from the sweeps of its (trained) runs: the handed `files` (None: the layout's)."""
    run_ids = [r for r in run_ids if plan.swept(r)]
    paths = collect(plan, run_ids, run_file_list(plan, run_ids, "sweep", files)) if run_ids else \
        pd.DataFrame(columns=["setting", "seed", "path", "start", "group", "param_group", "bn_mode", "split", "alpha",
                              "loss"])
    experiment_figure(plan, experiment, paths, out)
    note(log, f"{experiment}: figure of {len(run_ids)} runs -> {out}")


def figure_a11(plan: Plan, paths, shapes, table1, runs, out: str | Path, pdf: str | Path | None = None,
               log: str | None = None) -> None:
    """Figure A11 as PNG (`out`) and, given `pdf`, as PDF (vector, for print)."""
    _save(a11_figure(plan, paths, shapes, table1, runs), Path(out), Path(pdf) if pdf is not None else None)
    note(log, f"wrote {out}" + (f" and {pdf}" if pdf is not None else ""))


def a11_figure(plan: Plan, paths, shapes, table1, runs):
    """One panel per Table 1 row (its full paths from θ₀ against the baseline's, dashed, titled with its
    label, accuracy change and, where fewer runs trained than were planned, n), plus two panels of
    path-shape change vs accuracy change (full-path Δ, group Δ) with their rank correlations per
    architecture family. Returned unsaved, so its drawn data can be read back."""
    paths, shapes, table1, all_runs = _frame(paths), _frame(shapes), _frame(table1), _frame(runs)
    runs = trained(all_runs)
    rows = list(plan.config["table1"])
    fig, axes = _grid(len(rows), len(SHAPE_METRICS), width=3.6, height=3.3)
    main = select(paths, **MAIN_PATH)
    for ax, row, (_, t1) in zip(axes, rows, table1.iterrows()):
        settings = row["settings"]
        baselines = sorted({b for _, b in row_comparisons(plan, row)} - {None})
        grays = dict(zip(baselines, ["0.35", "0.6", "0.75"] * len(baselines)))
        for b in baselines:
            sel = main[main["setting"] == b]
            if not sel.empty:
                sns.lineplot(sel, x="alpha", y="loss", color=grays[b], linestyle="--", errorbar="sd", ax=ax,
                             label=textwrap.fill(f"baseline {_name(plan, b)}", 48))
        for s, color in zip(settings, sns.color_palette("tab10", len(settings))):
            sel = main[main["setting"] == s]
            if not sel.empty:
                sns.lineplot(sel, x="alpha", y="loss", color=color, errorbar="sd", ax=ax,
                             label=textwrap.fill(_name(plan, s), 48))
        acc = "n/a" if pd.isna(t1["acc_change_pp_mean"]) else f"{t1['acc_change_pp_mean']:+.1f} pp"
        tagged = set(str(t1["layer_barrier"]).split("/")) & set(LAYER_TAGS)  # else it says why there is no tag
        layer = f", layers {t1['layer_barrier']}" if tagged else ""
        ax.set_title(f"{row['intervention']}{_trained_note(all_runs, settings)}\n"
                     f"shape {t1['shape']} ({t1['shape_fractions']}){layer}\n"
                     f"test acc. {acc} vs baseline ({t1['acc_word']})", fontsize=8)
        _label_axes(ax, _loss_label(plan, [*settings, *baselines]), f"α ({THETA_0} → {THETA_T})")
        if ax.get_legend_handles_labels()[0]:  # a row whose runs were all skipped draws nothing
            ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.22), frameon=False)
        else:
            _empty(ax, "no run of this row trained")
    points = shape_vs_accuracy(plan, shapes, runs)
    for ax, metric in zip(axes[len(rows):], SHAPE_METRICS):
        rho = rank_correlations(points, metric)
        sel = points.dropna(subset=[metric])
        if sel.empty:
            ax.set_title(f"no settings with {SHAPE_METRICS[metric]}", fontsize=8)
        else:
            sns.scatterplot(sel, x=metric, y="acc_change_pp", hue="family", style="family", ax=ax)
            ax.axhline(0, color="0.7", lw=0.8)
            ax.axvline(0, color="0.7", lw=0.8)
            ax.set_title("Spearman ρ within each family\n" + "\n".join(_rho_text(r) for r in rho.itertuples()),
                         fontsize=8)
            ax.legend(fontsize=6, title="architecture", title_fontsize=6, loc="upper center",
                      bbox_to_anchor=(0.5, -0.22), ncol=3, frameon=False)
        _label_axes(ax, "test accuracy change vs baseline (pp)", SHAPE_METRICS[metric])
    fig.suptitle(f"Figure A11 (this pipeline): every intervention of Table 1, its full path from {THETA_0} against "
                 f"its baseline's (dashed),\ntrain loss, {DRAWN}; titles: shape label (seed counts), layer tag and "
                 "test-accuracy change", fontsize=11)
    return fig


def _trained_note(runs: pd.DataFrame, settings: list[str]) -> str:
    """', n = 3/4 runs trained' where fewer runs of the row trained than were planned, else ''."""
    counts = trained_of_planned(runs, settings)
    done, planned = (int(v) for v in counts.split("/"))
    return f", n = {counts} runs trained" if done < planned else ""


def _rho_text(r) -> str:
    if np.isfinite(r.rho):
        return f"{r.family}: ρ = {r.rho:.2f} (n = {r.n})"
    if r.n < RHO_MIN_POINTS:
        return f"{r.family}: n = {r.n} (too few)"
    return f"{r.family}: ρ undefined (no spread, n = {r.n})"


SHAPE_METRICS = {"full_delta_change": "full-path Δ − baseline's (loss, nats)",
                 "group_delta_change": "mean group Δ − baseline's (loss, nats)"}
RHO_MIN_POINTS = 3  # fewer points always correlate (two perfectly): no ρ


def shape_vs_accuracy(plan: Plan, shapes: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Per comparison of Table 1 (row_comparisons: a row's `compare`, else its or the setting's baseline): the
    change of the setting's path-shape metrics and of its test accuracy against what it is compared with, with
    its architecture family. The full-path Δ exists for every setting; the group Δ only where group-wise paths
    were measured (NaN elsewhere)."""
    runs = trained(runs)
    rows = []
    for row in plan.config["table1"]:
        for s, base in row_comparisons(plan, row):
            if not base:
                continue
            d = accuracy_change(runs, s, base)
            mine, theirs = full_delta(shapes, s), full_delta(shapes, base)
            if not len(d) or mine is None or theirs is None:
                continue
            g_mine = group_barrier(shapes, s, setting_layer_groups(plan, s))
            g_theirs = group_barrier(shapes, base, setting_layer_groups(plan, base))
            archs = runs.loc[runs["setting"] == s, "model"].unique()
            rows.append({"setting": s, "baseline": base, "experiment": plan.settings[s].experiment,
                         "family": ARCH_FAMILY.get(str(archs[0]), str(archs[0])),
                         "full_delta_change": mine - theirs,
                         "group_delta_change": (g_mine - g_theirs) if g_mine is not None and g_theirs is not None
                         else np.nan,
                         "acc_change_pp": float(np.mean(d))})
    return pd.DataFrame(rows, columns=["setting", "baseline", "experiment", "family", *SHAPE_METRICS, "acc_change_pp"])


def rank_correlations(points: pd.DataFrame, metric: str, min_points: int = RHO_MIN_POINTS) -> pd.DataFrame:
    """Spearman's ρ between a shape metric's change and the accuracy change, within each architecture
    family (Δ scales of MLPs, VGGs and ResNets are not comparable). ρ is NaN below `min_points`."""
    rows = []
    for family, sel in points.dropna(subset=[metric, "acc_change_pp"]).groupby("family", sort=True):
        n = len(sel)
        rho = sel[metric].corr(sel["acc_change_pp"], method="spearman") if n >= min_points else np.nan
        rows.append({"family": family, "metric": metric, "n": n, "rho": float(rho)})
    return pd.DataFrame(rows, columns=["family", "metric", "n", "rho"])
