"""How Table 1's labels depend on the barrier thresholds: Table 1 recomputed over a grid of them.

A path is B when Δ > max(barrier_tol, barrier_rel·|L(0) − L(1)|). shapes.parquet keeps every path's Δ,
L(0), L(1) and α_half, so each grid point relabels the stored paths with the same rule
(`linpath.paths.shapes.shape_label`) and rebuilds Table 1 with the same code (`linpath.report.tables.table1`): no new
sweep, no training. The layer-barrier floor follows barrier_tol at each grid point (both say how small a
Δ is no barrier); the configured thresholds are always one of the points, so Table 1 itself is one column
of this table. Beside ours, Lucas et al.'s criterion: a path is non-monotonic when Δ exceeds a small
tolerance (config `shapes.sensitivity.lucas_tol`), with no scale-aware part and no plateau.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..foundations.hparams import SettingsError, ShapeThresholds
from ..foundations.io import note, write_parquet, write_text
from ..study.plan import Plan

NEEDED = ["delta", "loss_start", "loss_end", "alpha_half", "label"]  # what relabelling reads of a path


@dataclass(frozen=True)
class SensitivityGrid:
    """Config `shapes.sensitivity`: the thresholds Table 1 is recomputed at."""

    # 0 (no scale-aware part) up to twice the default 0.05.
    barrier_rel: tuple[float, ...] = (0.0, 0.01, 0.02, 0.05, 0.1)
    # From far below any visible rise to the default floor 0.01.
    barrier_tol: tuple[float, ...] = (1e-4, 1e-3, 1e-2)
    # Lucas et al.: non-monotonic when Δ exceeds this (any rise above rounding).
    lucas_tol: float = 1e-4

    @classmethod
    def from_config(cls, shapes: dict | None) -> "SensitivityGrid":
        raw = dict((shapes or {}).get("sensitivity") or {})
        unknown = sorted(set(raw) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise SettingsError(f"shapes.sensitivity.{unknown[0]}: unknown setting (known: barrier_rel, barrier_tol, lucas_tol)")
        out = {}
        for key in ("barrier_rel", "barrier_tol"):
            if key in raw:
                values = raw[key]
                if not isinstance(values, list) or not values or any(float(v) < 0 for v in values):
                    raise SettingsError(f"shapes.sensitivity.{key} must be a non-empty list of numbers >= 0, got {values!r}")
                out[key] = tuple(float(v) for v in values)
        if "lucas_tol" in raw:
            if float(raw["lucas_tol"]) < 0:
                raise SettingsError(f"shapes.sensitivity.lucas_tol must be >= 0, got {raw['lucas_tol']!r}")
            out["lucas_tol"] = float(raw["lucas_tol"])
        return cls(**out)

    def describe(self) -> str:
        return (f"barrier_rel {{{', '.join(f'{v:g}' for v in self.barrier_rel)}}} x "
                f"barrier_tol {{{', '.join(f'{v:g}' for v in self.barrier_tol)}}}, layer floor = barrier_tol")


def relabel(shapes: pd.DataFrame, thresholds: ShapeThresholds) -> pd.DataFrame:
    """The stored paths labelled under other thresholds (NaN paths stay NaN: their loss is not finite)."""
    from ..paths.shapes import shape_label

    missing = [c for c in NEEDED if c not in shapes.columns]
    if missing:
        raise SettingsError(f"shapes table lacks {', '.join(missing)}: rerun `linpath interpolate --shapes`")
    finite = (shapes["label"] != "NaN").to_numpy()
    labels = [shape_label(d, a, b, h, f, thresholds)
              for d, a, b, h, f in zip(shapes["delta"], shapes["loss_start"], shapes["loss_end"],
                                       shapes["alpha_half"], finite)]
    threshold = np.where(finite, np.maximum(thresholds.barrier_tol, thresholds.barrier_rel
                                            * np.abs(shapes["loss_start"] - shapes["loss_end"])), np.nan)
    return shapes.assign(label=labels, label_rule=thresholds.rule(), barrier_threshold=threshold,
                         monotonic=finite & (shapes["delta"].to_numpy() <= threshold))


def _what_table1_reads(shapes: pd.DataFrame) -> pd.DataFrame:
    """The paths (train split, from θ₀, BN interpolated: full and group-wise) and columns Table 1 reads:
    the same table, 15 times over, at a fraction of the cost."""
    from .tables import MAIN_PATH

    keep = np.ones(len(shapes), dtype=bool)
    for key in ("start", "bn_mode", "split"):
        keep &= shapes[key].to_numpy() == MAIN_PATH[key]
    keep &= shapes["path"].isin(["full", "group"]).to_numpy()
    columns = [c for c in ["setting", "seed", "path", "start", "group", "bn_mode", "split", "label_rule", *NEEDED]
               if c in shapes.columns]
    return _plain(shapes.loc[keep, columns].reset_index(drop=True))


def _plain(frame: pd.DataFrame) -> pd.DataFrame:
    """Text columns as numpy objects: parquet reads them Arrow-backed, slower to select from many times."""
    return frame.astype({c: object for c in frame.columns if pd.api.types.is_string_dtype(frame[c])})


def _what_table1_reads_of_runs(runs: pd.DataFrame) -> pd.DataFrame:
    columns = ["run_id", "setting", "seed", "test_acc", "status", "status_reason", "failure", "model"]
    return _plain(runs[[c for c in columns if c in runs.columns]])


def grid_points(plan: Plan, grid: SensitivityGrid) -> list[dict]:
    """Every (barrier_rel, barrier_tol, layer floor) of the grid, and the configured point (flagged)."""
    from .tables import SummaryRules

    thresholds, rules = plan.thresholds(), SummaryRules.from_config(plan.config.get("shapes"))
    configured = (thresholds.barrier_rel, thresholds.barrier_tol, rules.layer_barrier_floor)
    points = [(rel, tol, tol) for tol in grid.barrier_tol for rel in grid.barrier_rel]
    if configured not in points:
        points.append(configured)
    return [{"barrier_rel": rel, "barrier_tol": tol, "layer_barrier_floor": floor,
             "configured": (rel, tol, floor) == configured} for rel, tol, floor in points]


def _lucas(plan: Plan, shapes: pd.DataFrame, settings: list[str], tol: float, min_share: float) -> tuple[str, str]:
    from .tables import MAIN_PATH, label_fractions, label_set, select

    sel = select(shapes, **MAIN_PATH)
    delta = sel[sel["setting"].isin(settings)]["delta"]
    counts = Counter("NaN" if not np.isfinite(d) else "B" if d > tol else "NB" for d in delta)
    return "/".join(label_set(counts, min_share)) or "n/a", label_fractions(counts)


def sensitivity_table(plan: Plan, runs: pd.DataFrame, shapes: pd.DataFrame,
                      grid: SensitivityGrid | None = None) -> pd.DataFrame:
    """One row per (Table 1 row, grid point): its full-path and layer labels and their agreement with the
    paper, the row's robustness over the whole grid, and Lucas et al.'s criterion beside ours."""
    from .tables import SummaryRules, table1, trained

    grid = grid or SensitivityGrid.from_config(plan.config.get("shapes"))
    base_thresholds, rules = plan.thresholds(), SummaryRules.from_config(plan.config.get("shapes"))
    shapes, runs = _what_table1_reads(shapes), _what_table1_reads_of_runs(runs)
    frames = []
    for point in grid_points(plan, grid):
        thresholds = dataclasses.replace(base_thresholds, barrier_rel=point["barrier_rel"],
                                         barrier_tol=point["barrier_tol"])
        t1 = table1(plan, runs, _plain(relabel(shapes, thresholds)),
                    dataclasses.replace(rules, layer_barrier_floor=point["layer_barrier_floor"]))
        frames.append(t1.assign(row=range(len(t1)), **point))
    cols = ["row", "category", "intervention", "settings", "barrier_rel", "barrier_tol", "layer_barrier_floor",
            "configured", "shape", "shape_fractions", "layer_barrier", "acc_word", "paper_shape", "paper_acc",
            "agrees_shape", "agrees_layer", "agrees_acc", "agrees"]
    out = pd.concat(frames, ignore_index=True)[cols]

    def same(column: str) -> pd.Series:
        return out.groupby("row")[column].transform(lambda v: len(set(map(str, v))) == 1)  # NA is a value too

    out["shape_robust"], out["layer_robust"] = same("shape"), same("layer_barrier")
    out["labels_robust"] = out["shape_robust"] & out["layer_robust"]
    out["agreement_robust"] = same("agrees")
    trained_runs = trained(runs)
    lucas = {}
    for i, row in enumerate(plan.config["table1"]):
        settings = [s for s in row["settings"] if (trained_runs["setting"] == s).any()]
        lucas[i] = _lucas(plan, shapes, settings, grid.lucas_tol, rules.label_min_share)
    out["lucas_shape"] = out["row"].map(lambda i: lucas[i][0])
    out["lucas_fractions"] = out["row"].map(lambda i: lucas[i][1])
    out["lucas_rule"] = f"Lucas et al.: B (non-monotonic) when delta > {grid.lucas_tol:g}, else NB"
    out["grid"] = grid.describe()
    return out.sort_values(["row", "barrier_tol", "barrier_rel"], kind="stable").reset_index(drop=True)


def robust_counts(frame: pd.DataFrame) -> dict[str, int]:
    """Rows measured (a label at the configured point) and how many keep their labels; of the measured rows
    with a paper label (the others are never compared), how many keep their agreement."""
    rows = frame.groupby("row").first()
    configured = frame[frame["configured"]].set_index("row")
    measured = configured["shape"] != "n/a"
    compared = measured & ((rows["paper_shape"] != "") | (rows["paper_acc"] != ""))
    return {"measured": int(measured.sum()), "labels": int((rows["labels_robust"] & measured).sum()),
            "compared": int(compared.sum()), "agreement": int((rows["agreement_robust"] & compared).sum())}


def robustness_line(frame: pd.DataFrame) -> str:
    """The line table1.md states under the table."""
    c = robust_counts(frame)
    grid = frame["grid"].iloc[0] if len(frame) else SensitivityGrid().describe()
    return (f"Robust to the thresholds: {c['labels']} of {c['measured']} rows keep their labels (full path and "
            f"layer) at every grid point, {c['agreement']} of the {c['compared']} with a paper label their "
            f"agreement with it (grid: {grid}; table1_sensitivity.md).")


def _word(v) -> str:
    return "–" if pd.isna(v) else ("yes" if v else "no")


def _spread(values: pd.Series) -> str:
    counts = Counter(values.astype(str))
    return ", ".join(f"{k} ×{n}" for k, n in counts.most_common())


def sensitivity_markdown(frame: pd.DataFrame) -> str:
    lines = ["# Table 1 under other barrier thresholds", "",
             "Each Table 1 row relabelled at every grid point from the stored Δ, L(0), L(1) and α_half of its "
             "paths (no new sweep). B: delta > max(barrier_tol, barrier_rel·|L(0)−L(1)|); the layer-barrier "
             "floor follows barrier_tol. `×n`: at how many grid points a label holds. Rows without a paper "
             "label show – for agreement.", "", robustness_line(frame), ""]
    head = ["intervention", "shape (configured)", "shapes on the grid", "layer (configured)", "layers on the grid",
            "labels robust", "agrees (configured)", "agreement on the grid", "agreement robust", "Lucas et al."]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, g in frame.groupby("row", sort=True):
        conf = g[g["configured"]].iloc[0]
        cells = [conf["intervention"], conf["shape"], _spread(g["shape"]), conf["layer_barrier"],
                 _spread(g["layer_barrier"]), _word(conf["labels_robust"]), _word(conf["agrees"]),
                 _spread(g["agrees"].map(_word)), _word(conf["agreement_robust"]),
                 f"{conf['lucas_shape']} ({conf['lucas_fractions']})"]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    if len(frame):
        lines += ["", f"{frame['lucas_rule'].iloc[0]}; a label holds when enough seeds show it (as in Table 1).", ""]
        points = frame.drop_duplicates(["barrier_rel", "barrier_tol", "layer_barrier_floor"])
        keys = list(zip(points["barrier_rel"], points["barrier_tol"], points["layer_barrier_floor"]))
        names = [f"rel {r:g} tol {t:g}" + ("" if f == t else f" floor {f:g}") for r, t, f in keys]
        lines += ["## Full-path label / layer tag at each grid point", "",
                  "| intervention | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 1)]
        for _, g in frame.groupby("row", sort=True):
            at = {(r.barrier_rel, r.barrier_tol, r.layer_barrier_floor): f"{r.shape} / {r.layer_barrier}"
                  for r in g.itertuples()}
            lines.append(f"| {g['intervention'].iloc[0]} | " + " | ".join(at[k] for k in keys) + " |")
    return "\n".join(lines) + "\n"


def write_sensitivity(plan: Plan, runs: str | Path, shapes: str | Path, out: str | Path, markdown: str | Path,
                      log: str | None = None) -> None:
    frame = sensitivity_table(plan, pd.read_parquet(runs), pd.read_parquet(shapes))
    write_parquet(frame, out)
    write_text(sensitivity_markdown(frame), markdown)
    note(log, f"Table 1 sensitivity: {frame['row'].nunique() if len(frame) else 0} rows x "
              f"{len(frame) // max(1, frame['row'].nunique()) if len(frame) else 0} threshold points -> {out}, {markdown}")


def with_robustness_line(table1_md: str, frame: pd.DataFrame) -> str:
    """table1.md with the robustness line after its agreement summary (at the end if it has none)."""
    from .tables import with_line_after_agreement

    return with_line_after_agreement(table1_md, robustness_line(frame))
