"""The curvature figure (linpath.paths.curvature): per setting, the training loss along its paths, the top
Hessian eigenvalue λ_max and the Hutchinson trace (± 2 standard errors), all against α.

`curvature_figure` returns the figure and the numbers it plotted, so that a test can read the figure back
against its table; `write_curvature_figure` saves it.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from ..foundations.io import atomic_path  # noqa: E402

BN_STYLE = {"interpolate": "-", "recompute": "--"}
PANELS = ("loss", "lambda_max", "trace")
TITLES = {"loss": "training loss (sweep)", "lambda_max": "top Hessian eigenvalue λ_max", "trace": "Hessian trace (Hutchinson ± 2 SE)"}


def loss_paths(sweeps: pd.DataFrame, measured: pd.DataFrame) -> pd.DataFrame:
    """The sweep rows beside the curvature: training split, start θ₀, the whole group (no parameter-group
    path), of the runs, groups and BN modes the curvature table measured."""
    if sweeps.empty:
        return sweeps
    keys = measured[["run", "group", "bn_mode"]].drop_duplicates().rename(columns={"run": "run_id"})
    sel = sweeps[(sweeps["split"] == "train") & (sweeps["start"] == "init") & (sweeps["param_group"] == "all")]
    return sel.merge(keys, on=["run_id", "group", "bn_mode"])


def curvature_figure(table: pd.DataFrame, sweeps: pd.DataFrame):
    """One row of panels per setting: loss, λ_max and trace against α; one colour per path (the full path,
    each group), one line style per BN mode, one line per seed. Skipped runs are named in the title.

    Returns (figure, plotted): one row per plotted point (setting, run, group, bn_mode, panel, alpha, value)."""
    measured = table[table["status"] == "ok"]
    settings = list(dict.fromkeys(table["setting"]))
    fig, axes = plt.subplots(max(1, len(settings)), 3, figsize=(13, 3.4 * max(1, len(settings))), squeeze=False)
    lines = loss_paths(sweeps, measured)
    plotted = []
    for row, setting in zip(axes, settings):
        own = measured[measured["setting"] == setting]
        colours = {g: f"C{i}" for i, g in enumerate(dict.fromkeys(own["group"]))}
        for (run, group, mode), rows in own.groupby(["run", "group", "bn_mode"], sort=False):
            rows = rows.sort_values("alpha")
            label = f"{'full' if group == 'all' else group} ({mode})"
            style = dict(color=colours[group], linestyle=BN_STYLE.get(mode, ":"))
            loss = lines[(lines["run_id"] == run) & (lines["group"] == group) & (lines["bn_mode"] == mode)]
            loss = loss.sort_values("alpha")
            series = {"loss": (loss["alpha"], loss["loss"]), "lambda_max": (rows["alpha"], rows["lambda_max"]),
                      "trace": (rows["alpha"], rows["trace"])}
            for ax, panel in zip(row, PANELS):
                alphas, values = series[panel]
                ax.plot(alphas, values, label=label, **style)
                plotted += [{"setting": setting, "run": run, "group": group, "bn_mode": mode, "panel": panel,
                             "alpha": float(a), "value": float(v)} for a, v in zip(alphas, values)]
            row[2].fill_between(rows["alpha"], rows["trace"] - 2 * rows["trace_se"],
                                rows["trace"] + 2 * rows["trace_se"], color=colours[group], alpha=0.15)
        skipped = table[(table["setting"] == setting) & (table["status"] != "ok")]["run"].nunique()
        for ax, panel in zip(row, PANELS):
            ax.set_title(f"{setting}: {TITLES[panel]}" + (f" ({skipped} run(s) not trained)" if skipped else ""),
                         fontsize=9)
            ax.set_xlabel("α (θ₀ → θ_T)")
        if len(own):
            row[0].legend(fontsize=7)
    fig.tight_layout()
    return fig, pd.DataFrame(plotted, columns=["setting", "run", "group", "bn_mode", "panel", "alpha", "value"])


def write_curvature_figure(table: str | Path, sweeps: list[str | Path], out: str | Path) -> pd.DataFrame:
    frames = [pd.read_parquet(p) for p in sweeps]
    fig, plotted = curvature_figure(pd.read_parquet(table), pd.concat(frames, ignore_index=True) if frames
                                    else pd.DataFrame())
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=130, bbox_inches="tight")
    plt.close(fig)
    return plotted
