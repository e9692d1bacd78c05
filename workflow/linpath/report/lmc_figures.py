"""Figures of the instability analysis and of the loss planes (linpath.paths.lmc, linpath.paths.planes).

The drawing functions return the figure and the numbers they plotted, so that a test can read a
figure back against its table; `write_*` save them.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402
from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter  # noqa: E402

from ..foundations.hparams import ALIGNED, ALIGNED_REPAIR  # noqa: E402
from ..foundations.io import atomic_path, note  # noqa: E402
from ..paths.lmc import END_STATISTICS  # noqa: E402
from ..paths.planes import affine_note, log_range, random_note  # noqa: E402

BN_STYLE = {"interpolate": "-", "recompute": "--"}
# Independent pairs as measured (unaligned), after weight matching, and after weight matching and REPAIR
# (linpath.paths.align): their labels and colours in the instability figure.
PAIR_KINDS = {"independent": ("unaligned", "black"), ALIGNED: ("weight matching", "tab:red"),
              ALIGNED_REPAIR: ("matching + REPAIR", "tab:green")}
_BAR_TICKS = {"independent": "unaligned", ALIGNED: "weight\nmatching", ALIGNED_REPAIR: "matching\n+ REPAIR"}


def _save(fig, out: str | Path) -> None:
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=130, bbox_inches="tight")
    plt.close(fig)


def _k_axis(ax, ks) -> None:
    """Spawn epochs on a symmetric-log axis: k = 0 has a place, and early epochs are spread out."""
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xticks(ks)
    ax.set_xticklabels([str(int(k)) for k in ks])
    ax.set_xlabel("spawn epoch k (symlog)")


def _stable_words(table: pd.DataFrame, setting: str, split: str) -> str:
    parts = []
    for mode, rows in table[(table["setting"] == setting) & (table["split"] == split)
                            & (table["pair_kind"] == "spawn")].groupby("bn_mode", sort=False):
        k = rows["stable_from_k"].iloc[0]
        parts.append(f"{mode}: {'never' if pd.isna(k) else f'from k={int(k)}'}")
    return "; ".join(parts)


def instability_figure(table: pd.DataFrame, paths: pd.DataFrame):
    """Per spawning setting (one row of panels): the error barrier against the spawn epoch k for each
    split (mean ± sd over seeds, one line per BN mode; the independent pair and the threshold as
    horizontal lines), and beside it the error along the paths of each k (test split, or the first
    measured; mean over seeds and child pairs), one panel per BN mode, with the independent pairs'
    paths (unaligned dotted, aligned, aligned + REPAIR). Where independent pairs were aligned, a last
    panel shows their error barriers as bars: per pair kind, one bar per split and BN mode (mean over
    pairs, the value written on it; REPAIR of a BN network has recompute bars only).

    Returns (figure, plotted): plotted holds one row per plotted barrier point (setting, split,
    bn_mode, spawn_epoch, mean, sd, n)."""
    measured = table[table["status"] == "measured"]
    settings = list(dict.fromkeys(table["setting"]))
    splits = [s for s in ("test", "train") if s in set(table["split"])]
    modes = [m for m in BN_STYLE if m in set(table["bn_mode"])]
    path_split = splits[0] if splits else "test"
    kinds = [k for k in PAIR_KINDS if k in set(measured["pair_kind"])]
    bar_panel = len(kinds) > 1  # aligned pairs measured: their own panel
    ncols = len(splits) + len(modes) + bar_panel
    fig, axes = plt.subplots(max(1, len(settings)), max(1, ncols), figsize=(3.8 * max(1, ncols), 3.4 * max(1, len(settings))),
                             squeeze=False)
    plotted = []
    threshold = float(table["threshold"].iloc[0]) if len(table) else float("nan")
    for row, setting in enumerate(settings):
        own = measured[measured["setting"] == setting]
        spawn = own[own["pair_kind"] == "spawn"]
        ks = sorted(spawn["spawn_epoch"].dropna().unique())
        for col, split in enumerate(splits):
            ax = axes[row, col]
            for mode in modes:
                sel = spawn[(spawn["split"] == split) & (spawn["bn_mode"] == mode)]
                stats = sel.groupby("spawn_epoch")["error_barrier"].agg(["mean", "std", "count"]).reindex(ks)
                sd = stats["std"].fillna(0.0).to_numpy()
                bars = ax.errorbar(ks, stats["mean"].to_numpy(), yerr=sd, marker="o", capsize=3,
                                   linestyle=BN_STYLE[mode], label=f"BN {mode}")
                bars.lines[0].set_gid(f"barrier|{setting}|{split}|{mode}")
                plotted += [{"setting": setting, "split": split, "bn_mode": mode, "spawn_epoch": k,
                             "mean": m, "sd": s, "n": int(n) if pd.notna(n) else 0}
                            for k, m, s, n in zip(ks, stats["mean"], sd, stats["count"])]
                ind = own[(own["pair_kind"] == "independent") & (own["split"] == split) & (own["bn_mode"] == mode)]
                if len(ind):
                    ax.axhline(ind["error_barrier"].mean(), color=bars.lines[0].get_color(), linestyle=":",
                               linewidth=1, label=f"independent runs, BN {mode}")
            ax.axhline(threshold, color="grey", linestyle="--", linewidth=1,
                       label=f"stability threshold {threshold:g}")
            if ks:
                _k_axis(ax, ks)
            ax.set_ylabel("error barrier")
            words = _stable_words(table, setting, split) or ("no spawns: independent pairs only" if not ks else "n/a")
            ax.set_title(f"{setting}, {split} split\nstable: {words}", fontsize=8)
            ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=2, frameon=False)
        curves = paths[(paths["setting"] == setting) & (paths["status"] == "measured") & (paths["split"] == path_split)]
        palette = dict(zip(ks, sns.color_palette("viridis", len(ks))))
        for col, mode in enumerate(modes, start=len(splits)):
            ax = axes[row, col]
            sel = curves[curves["bn_mode"] == mode]
            for k in ks:
                mean = sel[sel["spawn_epoch"] == k].groupby("alpha")["error"].mean()
                ax.plot(mean.index, mean.to_numpy(), color=palette[k], label=f"k={int(k)}")
            for kind, (label, color) in PAIR_KINDS.items():
                ind = sel[sel["pair_kind"] == kind].groupby("alpha")["error"].mean()
                if len(ind):
                    ax.plot(ind.index, ind.to_numpy(), color=color, linestyle=":" if kind == "independent" else "-.",
                            label=f"independent, {label}" if kind != "independent" else "independent")
            ax.set_xlabel("α (child 1 → child 2)")
            ax.set_ylabel(f"{path_split} error")
            ax.set_title(f"{setting}: paths between {'children' if ks else 'independent runs'}, BN {mode}", fontsize=8)
            ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=2 if bar_panel else 3,
                      frameon=False)
        if bar_panel:
            _pair_bars(axes[row, -1], own, setting, kinds, splits, modes)
    if not settings:
        axes[0, 0].text(0.5, 0.5, "no spawned pairs measured", ha="center")
    ends = "; ".join(f"BN {m}: {END_STATISTICS[m]}" for m in modes)
    fig.suptitle("Instability: error barrier between two children spawned after epoch k "
                 f"(Frankle et al. 2020); mean ± sd over seeds\nends (α = 0, 1) scored with {ends}",
                 fontsize=9 if len(modes) < 2 else 7)
    fig.tight_layout()
    return fig, pd.DataFrame(plotted, columns=["setting", "split", "bn_mode", "spawn_epoch", "mean", "sd", "n"])


def _pair_bars(ax, own: pd.DataFrame, setting: str, kinds: list[str], splits: list[str], modes: list[str]) -> None:
    """Error barrier of each independent pair kind: one bar per (split, BN mode), mean over the pairs."""
    combos = [(split, mode) for split in splits for mode in modes]
    width = 0.8 / max(1, len(combos))
    palette = sns.color_palette("Paired", len(combos))
    for i, (split, mode) in enumerate(combos):
        labelled = False
        for x, kind in enumerate(kinds):
            sel = own[(own["pair_kind"] == kind) & (own["split"] == split) & (own["bn_mode"] == mode)]
            if not len(sel):
                continue
            value = float(sel["error_barrier"].mean())
            bar = ax.bar(x - 0.4 + width * (i + 0.5), value, width, color=palette[i],
                         hatch="//" if mode == "recompute" else None, edgecolor="white",
                         label=None if labelled else f"{split}, BN {mode}")
            labelled = True
            bar.patches[0].set_gid(f"pairs|{setting}|{split}|{mode}|{kind}")
            ax.annotate(f"{value:.2f}", (bar.patches[0].get_x() + width / 2, value), ha="center", va="bottom",
                        fontsize=5, rotation=90)
    ax.set_xticks(range(len(kinds)))
    ax.set_xticklabels([_BAR_TICKS[k] for k in kinds], fontsize=7)
    ax.set_ylabel("error barrier")
    iterations = own.loc[own["pair_kind"] == ALIGNED, "align_iterations"]
    matched = f"matching: {int(iterations.max())} passes at most" if len(iterations.dropna()) else ""
    ax.set_title(f"{setting}: independent pairs\n{matched}", fontsize=8)
    ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)


def write_instability_figure(table: str | Path, paths: str | Path, out: str | Path, log: str | None = None) -> None:
    fig, plotted = instability_figure(pd.read_parquet(table), pd.read_parquet(paths))
    _save(fig, out)
    note(log, f"{len(plotted)} barrier points -> {out}")


def plane_figure(frame: pd.DataFrame):
    """One row per seed: filled contours of the loss (log colour scale where it spans > 20×) and of the
    error for each split, with A, B, C marked, the run's projected trajectory, and a dashed line at the
    higher of the two ends of the path A → B (where β = 0 crosses inside it, that path has a barrier).
    A random plane (column `directions`) marks its centre only, has no trajectory and no dashed line, and
    adds two panels: loss and error along its line centre + a·d1, one curve per split.
    Returns (figure, grid)."""
    measured = frame[frame["status"] == "measured"]
    grid = measured[measured["kind"] == "grid"]
    seeds = sorted(measured["seed"].unique()) if len(measured) else []
    splits = [s for s in ("train", "test") if s in set(grid["split"])]
    random = "directions" in frame and bool((frame["directions"] == "random").any())
    contours = [(split, metric) for split in splits for metric in ("loss", "error")]
    panels = contours + ([("line", "loss"), ("line", "error")] if random else [])
    fig, axes = plt.subplots(max(1, len(seeds)), max(1, len(panels)),
                             figsize=(3.9 * max(1, len(panels)), 3.4 * max(1, len(seeds))), squeeze=False)
    for row, seed in enumerate(seeds):
        own = measured[measured["seed"] == seed]
        first = own.iloc[0]
        anchors = own[own["kind"] == "anchor"]
        path = own[own["kind"] == "trajectory"].sort_values("epoch")
        if random:
            _plane_lines(axes[row, len(contours):], own, splits, first, seed)
        for col, (split, metric) in enumerate(contours):
            ax = axes[row, col]
            table = own[(own["kind"] == "grid") & (own["split"] == split)].pivot_table(
                index="beta", columns="alpha", values=metric)
            values = table.to_numpy()
            log = metric == "loss" and log_range(values)
            top = np.nanmax(values)
            if log:  # the colours span the lower 95% of the values; the far corners share the top colour
                top = min(top, np.nanpercentile(values, 95))
                levels = np.geomspace(np.nanmin(values), top, 21)
                filled = ax.contourf(table.columns, table.index, np.minimum(values, top), levels=levels, norm=LogNorm(),
                                     cmap="viridis")
            else:
                filled = ax.contourf(table.columns, table.index, values, levels=15, cmap="viridis")
            bar = fig.colorbar(filled, ax=ax, label=f"{metric}{' (log; top 5% capped)' if log else ''}")
            if log:
                bar.ax.yaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
                bar.ax.yaxis.set_major_formatter(FormatStrFormatter("%.2g"))
                bar.ax.yaxis.set_minor_formatter(NullFormatter())
            if not random and metric == "loss" and 0.0 in table.index and {0.0, 1.0} <= set(table.columns):
                # The level of the higher end of the path A -> B: inside this line on β = 0 the path rises
                # above both of its ends (a barrier); elsewhere it marks where the plane is that high.
                level = max(table.loc[0.0, 0.0], table.loc[0.0, 1.0])
                if np.nanmin(values) < level < np.nanmax(values):
                    ax.contour(table.columns, table.index, values, levels=[level], colors="white", linestyles="--",
                               linewidths=0.8)
            if not random:
                ax.plot(path["alpha"], path["beta"], color="white", marker=".", linewidth=1,
                        label="trajectory (projected)")
            for _, anchor in anchors.iterrows():
                ax.plot(anchor["alpha"], anchor["beta"], marker="*", color="red", markersize=9,
                        label="centre" if random else None)
                ax.annotate(anchor["label"], (anchor["alpha"], anchor["beta"]), color="white", fontsize=7,
                            xytext=(3, 3), textcoords="offset points")
            if random:
                ax.set_xlabel(f"a (along {first['state_b']})")
                ax.set_ylabel(f"b (along {first['state_c']})")
            else:
                ax.set_xlabel(f"α ({first['state_a']} → {first['state_b']})")
                ax.set_ylabel(f"β ({first['state_a']} → {first['state_c']})")
            ax.set_title(f"seed {seed}, {split} {metric}", fontsize=8)
            ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.28), frameon=False)
    if seeds:
        first = measured.iloc[0]
        if random:
            fig.suptitle(f"random plane {first['plane']} ({first['setting']}, BN {first['bn_mode']}) around "
                         f"{first['state_a']}: {random_note()}\n|d1| = {first['norm_ba']:.3g}, "
                         f"|d2| = {first['norm_ca']:.3g}, cos(d1, d2) = {first['cos_ba_ca']:.2f}", fontsize=8)
        else:
            fig.suptitle(f"plane {first['plane']} ({first['setting']}, BN {first['bn_mode']}): {affine_note()}\n"
                         f"|B−A| = {first['norm_ba']:.3g}, |C−A| = {first['norm_ca']:.3g}, "
                         f"cos(B−A, C−A) = {first['cos_ba_ca']:.2f}", fontsize=8)
    else:
        reasons = "; ".join(dict.fromkeys(frame["status_reason"].astype(str))) or "nothing measured"
        axes[0, 0].text(0.5, 0.5, reasons, ha="center", wrap=True, fontsize=7)
    fig.tight_layout()
    return fig, grid


def _plane_lines(axes, own: pd.DataFrame, splits: list[str], first, seed) -> None:
    """Loss and error along a random plane's line centre + a·d1, one curve per split, the centre marked."""
    line = own[own["kind"] == "line"]
    for ax, metric in zip(axes, ("loss", "error")):
        for split in splits:
            curve = line[line["split"] == split].sort_values("alpha")
            ax.plot(curve["alpha"], curve[metric], marker=".", markersize=3, label=f"{split} split",
                    gid=f"line|{seed}|{split}|{metric}")
        ax.axvline(0.0, color="grey", linestyle=":", linewidth=1, label=f"centre ({first['state_a']})")
        if metric == "loss" and log_range(line["loss"]):
            ax.set_yscale("log")
        ax.set_xlabel(f"a (along {first['state_b']})")
        ax.set_ylabel(metric)
        ax.set_title(f"seed {seed}, line centre + a·d1: {metric}", fontsize=8)
        ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.28), ncol=3, frameon=False)


def write_plane_figure(files: list[str], out: str | Path, log: str | None = None) -> None:
    frame = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    fig, grid = plane_figure(frame)
    _save(fig, out)
    note(log, f"{len(grid)} grid points -> {out}")
