"""How Table 1's labels, and the barrier groups that decide which runs exist, depend on the thresholds.

A path is B when Δ > max(barrier_tol, barrier_rel·|L(0) − L(1)|), P when it has no barrier and α_half ≥
plateau_alpha. shapes.parquet keeps every path's Δ, L(0), L(1) and α_half, so each grid point relabels the
stored paths with the same rule (`linpath.paths.shapes.shape_label`) and rebuilds Table 1 with the same
code (`linpath.report.tables.table1`): no new sweep, no training. The grid (config `shapes.sensitivity`):

- barrier_rel × barrier_tol, every pair, with the layer-barrier floor following barrier_tol (both say how
  small a Δ is no barrier);
- plateau_alpha (P vs NB), layer_barrier_ratio (H-LB / L-LB) and label_min_share (the share of seeds a
  label needs), each varied alone with every other threshold at its configured value (a star: the product
  of all five would be hundreds of Table 1s for one job).

The configured thresholds are always one of the points, so Table 1 itself is one row of this table. Per
Table 1 row: the labels seen over the whole grid and the nearest point (in grid steps from the configured
one) where a label flips. Beside ours, Lucas et al.'s criterion: a path is non-monotonic when Δ exceeds a
small tolerance (`lucas_tol`), with no scale-aware part and no plateau.

The barrier groups (E11, E13, E16; `linpath.study.barrier_groups`) are a threshold too: they decide which
dependent runs exist and what they change. For every setting whose groups other settings read, the groups
each group rule picks (rule monotonic at each `group_tol`, rule label at each barrier_rel × barrier_tol
pair, the configured rule at each `group_min_share`), the groups the workflow used
(results/derived/barrier_groups/<setting>.yaml) and which dependent settings' runs would differ
(`group_sensitivity`, table1_sensitivity_groups.parquet).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..foundations.hparams import GroupRule, SettingsError, ShapeThresholds
from ..foundations.convert import read_yaml
from ..foundations.io import note, write_parquet, write_text
from ..study.plan import Plan

NEEDED = ["delta", "loss_start", "loss_end", "alpha_half", "label"]  # what relabelling reads of a path
PRODUCT = "barrier_rel x barrier_tol"
STAR = ("plateau_alpha", "layer_barrier_ratio", "label_min_share")  # varied one at a time
AXES = ("barrier_rel", "barrier_tol", *STAR)
# Allowed values of each list: (lowest, highest, lowest allowed itself); as the schema says.
BOUNDS = {"barrier_rel": (0, np.inf, True), "barrier_tol": (0, np.inf, True), "plateau_alpha": (0, 1, True),
          "layer_barrier_ratio": (1, np.inf, True), "label_min_share": (0, 1, False), "group_tol": (0, np.inf, True),
          "group_min_share": (0, 1, False)}


@dataclass(frozen=True)
class SensitivityGrid:
    """Config `shapes.sensitivity`: the thresholds Table 1 and the barrier groups are recomputed at
    (config/config.yaml gives the reason for each value)."""

    barrier_rel: tuple[float, ...] = (0.0, 0.01, 0.02, 0.05, 0.1)
    barrier_tol: tuple[float, ...] = (1e-4, 1e-3, 1e-2)
    plateau_alpha: tuple[float, ...] = (0.6, 0.8, 0.9)
    layer_barrier_ratio: tuple[float, ...] = (1.1, 1.5, 2.0)
    label_min_share: tuple[float, ...] = (0.1, 0.5)
    group_tol: tuple[float, ...] = (0.0, 1e-5, 1e-4, 1e-3, 1e-2)
    group_min_share: tuple[float, ...] = (0.25, 1.0)
    # Lucas et al.: non-monotonic when Δ exceeds this (any rise above rounding).
    lucas_tol: float = 1e-4

    @classmethod
    def from_config(cls, shapes: dict | None) -> "SensitivityGrid":
        raw = dict((shapes or {}).get("sensitivity") or {})
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(raw) - set(names))
        if unknown:
            raise SettingsError(f"shapes.sensitivity.{unknown[0]}: unknown setting (known: {', '.join(names)})")
        out = {}
        for key, (low, high, closed) in BOUNDS.items():
            if key not in raw:
                continue
            values = raw[key]
            ok = isinstance(values, list) and values and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and (v >= low if closed else v > low) and v <= high
                for v in values)
            if not ok:
                span = f"{'[' if closed else '('}{low:g}, {high:g}]".replace("inf]", "inf)")
                raise SettingsError(f"shapes.sensitivity.{key} must be a non-empty list of numbers in {span}, got {values!r}")
            out[key] = tuple(dict.fromkeys(float(v) for v in values))
        if "lucas_tol" in raw:
            if not isinstance(raw["lucas_tol"], (int, float)) or raw["lucas_tol"] < 0:
                raise SettingsError(f"shapes.sensitivity.lucas_tol must be a number >= 0, got {raw['lucas_tol']!r}")
            out["lucas_tol"] = float(raw["lucas_tol"])
        return cls(**out)

    def describe(self) -> str:
        """The Table 1 part of the grid, for the line under Table 1."""
        star = ", ".join(f"{axis} {_values(getattr(self, axis))}" for axis in STAR)
        return (f"barrier_rel {_values(self.barrier_rel)} x barrier_tol {_values(self.barrier_tol)}, layer floor = "
                f"barrier_tol; one at a time: {star}")

    def describe_groups(self) -> str:
        return (f"rule monotonic at tol {_values(self.group_tol)}; rule label at every barrier_rel x barrier_tol "
                f"pair; the configured rule at min_share {_values(self.group_min_share)}")


def _values(values) -> str:
    return "{" + ", ".join(f"{v:g}" for v in values) + "}"


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
    the same table, many times over, at a fraction of the cost."""
    from .tables import MAIN_PATH

    keep = np.ones(len(shapes), dtype=bool)
    for key in ("start", "bn_mode", "split"):
        keep &= shapes[key].to_numpy() == MAIN_PATH[key]
    keep &= shapes["path"].isin(["full", "group"]).to_numpy()
    columns = [c for c in ["setting", "seed", "run_id", "path", "start", "group", "bn_mode", "split", "label_rule", *NEEDED]
               if c in shapes.columns]
    return _plain(shapes.loc[keep, columns].reset_index(drop=True))


def _plain(frame: pd.DataFrame) -> pd.DataFrame:
    """Text columns as numpy objects: parquet reads them Arrow-backed, slower to select from many times."""
    return frame.astype({c: object for c in frame.columns if pd.api.types.is_string_dtype(frame[c])})


def _what_table1_reads_of_runs(runs: pd.DataFrame) -> pd.DataFrame:
    columns = ["run_id", "setting", "seed", "test_acc", "status", "status_reason", "failure", "model"]
    return _plain(runs[[c for c in columns if c in runs.columns]])


# --- the grid of Table 1 ------------------------------------------------------------------------------


def configured_point(plan: Plan) -> dict:
    """The thresholds in force (config `shapes:`)."""
    from .tables import SummaryRules

    thresholds, rules = plan.thresholds(), SummaryRules.from_config(plan.config.get("shapes"))
    return {"barrier_rel": thresholds.barrier_rel, "barrier_tol": thresholds.barrier_tol,
            "layer_barrier_floor": rules.layer_barrier_floor, "plateau_alpha": thresholds.plateau_alpha,
            "layer_barrier_ratio": rules.layer_barrier_ratio, "label_min_share": rules.label_min_share}


def grid_points(plan: Plan, grid: SensitivityGrid) -> list[dict]:
    """Every barrier_rel × barrier_tol pair (layer floor = barrier_tol), the configured point where it is
    not one of them, then each of plateau_alpha, layer_barrier_ratio and label_min_share at its other values
    with the rest configured. `varied` names the part of the grid, `steps` the distance from the configured
    point in grid steps (summed over the thresholds that differ), `configured` flags Table 1's own point."""
    conf = configured_point(plan)
    points = [{**conf, "barrier_rel": rel, "barrier_tol": tol, "layer_barrier_floor": tol, "varied": PRODUCT}
              for tol in grid.barrier_tol for rel in grid.barrier_rel]
    if not any(_same(p, conf) for p in points):
        points.append({**conf, "varied": "configured"})
    points += [{**conf, axis: v, "varied": axis} for axis in STAR for v in getattr(grid, axis) if v != conf[axis]]
    axes = {axis: sorted({conf[axis], *(p[axis] for p in points)}) for axis in AXES}
    return [{**p, "configured": _same(p, conf),
             "steps": sum(abs(axes[a].index(p[a]) - axes[a].index(conf[a])) for a in AXES)} for p in points]


def _same(point: dict, conf: dict) -> bool:
    return all(point[k] == conf[k] for k in conf)


def point_name(point, conf=None) -> str:
    """'barrier_rel 0.02, barrier_tol 0.001': the thresholds where the point differs from `conf` (all of
    the point's own part of the grid where no `conf` is given)."""
    get = point.get if isinstance(point, dict) else point.__getitem__
    keys = ["barrier_rel", "barrier_tol", "layer_barrier_floor", *STAR]
    if conf is None:
        varied = get("varied")
        keys = ["barrier_rel", "barrier_tol"] if varied in (PRODUCT, "configured") else [varied]
        if varied in (PRODUCT, "configured") and get("layer_barrier_floor") != get("barrier_tol"):
            keys.append("layer_barrier_floor")
        return ", ".join(f"{k} {get(k):g}" for k in keys)
    differ = [k for k in keys if get(k) != conf[k] and not (k == "layer_barrier_floor" and get(k) == get("barrier_tol"))]
    return ", ".join(f"{k} {get(k):g}" for k in differ) or "configured"


def sensitivity_table(plan: Plan, runs: pd.DataFrame, shapes: pd.DataFrame, grid: SensitivityGrid | None = None,
                      barrier_groups: dict[str, dict] | None = None) -> pd.DataFrame:
    """One row per (Table 1 row, grid point): its full-path and layer labels and their agreement with the
    paper; per Table 1 row, the labels over the whole grid, its robustness, the nearest point where a
    label flips, and Lucas et al.'s criterion beside ours. `barrier_groups` (setting -> the content of its
    barrier-groups file; None: Table 1 reads the files) goes to Table 1 for its rows whose shape comes from
    the barrier groups: the groups the existing runs changed, the same at every point."""
    from .tables import SummaryRules, table1, trained

    grid = grid or SensitivityGrid.from_config(plan.config.get("shapes"))
    base_thresholds, rules = plan.thresholds(), SummaryRules.from_config(plan.config.get("shapes"))
    shapes, runs = _what_table1_reads(shapes), _what_table1_reads_of_runs(runs)
    frames, labelled = [], {}
    for i, point in enumerate(grid_points(plan, grid)):
        key = (point["barrier_rel"], point["barrier_tol"], point["plateau_alpha"])
        if key not in labelled:  # the star points of the summary rules share the configured labels
            thresholds = dataclasses.replace(base_thresholds, barrier_rel=key[0], barrier_tol=key[1], plateau_alpha=key[2])
            labelled[key] = _plain(relabel(shapes, thresholds))
        point_rules = dataclasses.replace(rules, **{k: point[k] for k in ("layer_barrier_floor", "layer_barrier_ratio",
                                                                         "label_min_share")})
        t1 = table1(plan, runs, labelled[key], point_rules, barrier_groups=barrier_groups)
        frames.append(t1.assign(row=range(len(t1)), point=i, **point))
    cols = ["row", "category", "intervention", "settings", "point", "varied", *AXES[:2], "layer_barrier_floor",
            *STAR, "steps", "configured", "shape", "shape_fractions", "layer_barrier", "acc_word", "paper_shape",
            "paper_acc", "agrees_shape", "agrees_layer", "agrees_acc", "agrees"]
    out = pd.concat(frames, ignore_index=True)[cols]

    def same(column: str) -> pd.Series:
        return out.groupby("row")[column].transform(lambda v: len(set(map(str, v))) == 1)  # NA is a value too

    out["shape_robust"], out["layer_robust"] = same("shape"), same("layer_barrier")
    out["labels_robust"] = out["shape_robust"] & out["layer_robust"]
    out["agreement_robust"] = same("agrees")
    out["shapes_on_grid"] = out.groupby("row")["shape"].transform(_spread)
    out["layers_on_grid"] = out.groupby("row")["layer_barrier"].transform(_spread)
    flips = {row: _nearest_flip(g) for row, g in out.groupby("row")}
    out["flip_steps"] = pd.array([flips[r][0] for r in out["row"]], dtype="Int64")
    out["nearest_flip"] = [flips[r][1] for r in out["row"]]
    trained_runs = trained(runs)
    lucas = {}
    for i, row in enumerate(plan.config["table1"]):
        settings = [s for s in row["settings"] if (trained_runs["setting"] == s).any()]
        lucas[i] = _lucas(shapes, settings, grid.lucas_tol, rules.label_min_share)
    out["lucas_shape"] = out["row"].map(lambda i: lucas[i][0])
    out["lucas_fractions"] = out["row"].map(lambda i: lucas[i][1])
    out["lucas_rule"] = f"Lucas et al.: B (non-monotonic) when delta > {grid.lucas_tol:g}, else NB"
    out["grid"] = grid.describe()
    return out.sort_values(["row", "point"], kind="stable").reset_index(drop=True)


def _nearest_flip(g: pd.DataFrame) -> tuple[int | None, str]:
    """Grid steps to the nearest point where the full-path label or the layer tag differs from the
    configured point's, and what flips there (every point at that distance)."""
    conf = g[g["configured"]].iloc[0]
    shape_flips = g["shape"].astype(str) != str(conf["shape"])
    layer_flips = g["layer_barrier"].astype(str) != str(conf["layer_barrier"])
    flipped = g[shape_flips | layer_flips]
    if flipped.empty:
        return None, "none on the grid"
    steps = int(flipped["steps"].min())
    texts = []
    for _, p in flipped[flipped["steps"] == steps].iterrows():
        what = [f"{name} {conf[col]} → {p[col]}" for name, col in (("shape", "shape"), ("layer", "layer_barrier"))
                if str(p[col]) != str(conf[col])]
        texts.append(f"{point_name(p, conf)}: {', '.join(what)}")
    return steps, "; ".join(texts)


def _lucas(shapes: pd.DataFrame, settings: list[str], tol: float, min_share: float) -> tuple[str, str]:
    from .tables import MAIN_PATH, label_fractions, label_set, select

    sel = select(shapes, **MAIN_PATH)
    delta = sel[sel["setting"].isin(settings)]["delta"]
    counts = Counter("NaN" if not np.isfinite(d) else "B" if d > tol else "NB" for d in delta)
    return "/".join(label_set(counts, min_share)) or "n/a", label_fractions(counts)


# --- the barrier groups that decide which runs exist ----------------------------------------------------


def group_references(plan: Plan) -> dict[str, list[str]]:
    """Each setting whose barrier groups other settings read (`@barrier_groups:` / `@no_barrier_groups:`),
    with the settings that read them."""
    out: dict[str, list[str]] = {}
    for run in plan.runs.values():
        for setting in run.groups_from:
            readers = out.setdefault(setting, [])
            if run.setting not in readers:
                readers.append(run.setting)
    return dict(sorted(out.items()))


def group_points(plan: Plan, grid: SensitivityGrid) -> list[dict]:
    """The group rules of the grid: monotonic at each group_tol, label at each barrier_rel × barrier_tol
    pair (both at the configured min_share), the configured rule at each group_min_share, and the
    configured rule (flagged; added where it is none of them). A threshold a rule does not read is NaN."""
    conf = GroupRule.from_config(plan.config.get("shapes"))
    thresholds = plan.thresholds()

    def point(rule: str, tol: float, rel: float, label_tol: float, share: float, varied: str) -> dict:
        monotonic = rule == "monotonic"
        return {"rule": rule, "tol": tol if monotonic else np.nan, "barrier_rel": np.nan if monotonic else rel,
                "barrier_tol": np.nan if monotonic else label_tol, "min_share": share, "varied": varied}

    configured = point(conf.rule, conf.tol, thresholds.barrier_rel, thresholds.barrier_tol, conf.min_share, "configured")
    points = [point("monotonic", t, np.nan, np.nan, conf.min_share, "group_tol") for t in grid.group_tol]
    points += [point("label", np.nan, rel, tol, conf.min_share, PRODUCT) for tol in grid.barrier_tol for rel in grid.barrier_rel]
    points += [{**configured, "min_share": s, "varied": "group_min_share"} for s in grid.group_min_share if s != conf.min_share]
    if not any(_same_rule(p, configured) for p in points):
        points.insert(0, configured)
    return [{**p, "configured": _same_rule(p, configured)} for p in points]


def _same_rule(a: dict, b: dict) -> bool:
    return all(a[k] == b[k] or (pd.isna(a[k]) and pd.isna(b[k]))
               for k in ("rule", "tol", "barrier_rel", "barrier_tol", "min_share"))


def _rule_name(p) -> str:
    what = (f"monotonic, tol {p['tol']:g}" if p["rule"] == "monotonic"
            else f"label, barrier_rel {p['barrier_rel']:g}, barrier_tol {p['barrier_tol']:g}")
    return f"{what}, min_share {p['min_share']:g}"


def _groups_of_setting(shapes: pd.DataFrame, setting: str) -> pd.DataFrame:
    from ..study.barrier_groups import GROUP_PATH

    keep = shapes["setting"].to_numpy() == setting
    for key, value in GROUP_PATH.items():
        keep &= shapes[key].to_numpy() == value
    return _plain(shapes.loc[keep].reset_index(drop=True))


def _dependent_state(plan: Plan, run_id: str, groups: dict[str, dict]):
    """('skipped', why) or ('trained', its resolved settings) of a run under these group lists."""
    why = plan.skip_reason(run_id, groups, {})
    return ("skipped", why) if why else ("trained", plan.resolve(run_id, groups))


def _dependent_change(plan: Plan, reader: str, used: dict[str, dict], at_point: dict[str, dict]) -> str | None:
    """How the runs of `reader` would differ under `at_point` instead of the group lists used (None: the
    same). The lists are one choice for all seeds, so its first seed's run stands for all."""
    run_id = plan.runs_of(reader)[0]
    before, after = _dependent_state(plan, run_id, used), _dependent_state(plan, run_id, at_point)
    if before == after:
        return None
    if before[0] == after[0] == "trained":
        return "other groups"
    return "skipped" if after[0] == "skipped" else "trained (skipped as run)"


def group_sensitivity(plan: Plan, shapes: pd.DataFrame, used: dict[str, dict],
                      grid: SensitivityGrid | None = None) -> pd.DataFrame:
    """One row per (setting whose barrier groups others read, group rule of the grid): the groups it
    picks, the groups the workflow used (`used[setting]`: its barrier-groups file), and the settings whose
    runs would differ (other groups, or skipped / trained where the list becomes empty / non-empty)."""
    from ..foundations.convert import deep_merge
    from ..study.barrier_groups import barrier_groups
    from ..study.layer_groups import group_roles, setting_layer_groups

    grid = grid or SensitivityGrid.from_config(plan.config.get("shapes"))
    readers = group_references(plan)
    missing = [s for s in readers if s not in used]
    if missing:
        raise SettingsError(f"table1 sensitivity: no barrier-groups file for {', '.join(missing)} "
                            f"(their groups are read by {', '.join(readers[missing[0]])})")
    plateau, configured = plan.thresholds().plateau_alpha, GroupRule.from_config(plan.config.get("shapes"))
    points = group_points(plan, grid)
    rows = []
    for setting, reading in readers.items():
        found = used[setting]
        base = {"setting": setting, "readers": ", ".join(reading), "used": ", ".join(found.get("with_barrier", []))}
        paths = _groups_of_setting(shapes, setting) if "setting" in shapes.columns else pd.DataFrame()
        if found.get("upstream_failed") or paths.empty:
            why = found.get("reason") or f"no group-wise paths of {setting} in the shapes table"
            rows.append({**base, "note": f"not measured: {why}"})
            continue
        model = deep_merge(plan.base, plan.settings[setting].run).get("model") or {}
        candidates, every = setting_layer_groups(plan, setting), list(group_roles(model))
        widenable = list(found.get("widenable", []))
        labelled = {}
        for p in points:
            if p["rule"] == "label":
                key = (p["barrier_rel"], p["barrier_tol"])
                if key not in labelled:
                    labelled[key] = relabel(paths, ShapeThresholds(barrier_tol=key[1], barrier_rel=key[0],
                                                                   plateau_alpha=plateau))
                table = labelled[key]
            else:
                table = paths
            rule = GroupRule(p["rule"], p["tol"] if p["rule"] == "monotonic" else configured.tol, p["min_share"])
            picked = barrier_groups(table, widenable, rule, candidates, every)
            at_point = {**used, setting: {**found, **picked}}
            changes = {r: _dependent_change(plan, r, used, at_point) for r in reading}
            changed = {r: c for r, c in changes.items() if c}
            rows.append({**base, **p, "rule_text": rule.describe(), "candidates": ", ".join(candidates),
                         "with_barrier": ", ".join(picked["with_barrier"]),
                         "same_as_used": picked["with_barrier"] == list(found.get("with_barrier", [])),
                         "readers_changed": ", ".join(f"{r} ({c})" for r, c in changed.items()),
                         "runs_differ": bool(changed), "note": ""})
    cols = ["setting", "readers", "varied", "rule", "tol", "barrier_rel", "barrier_tol", "min_share", "configured",
            "rule_text", "candidates", "with_barrier", "used", "same_as_used", "readers_changed", "runs_differ", "note"]
    out = pd.DataFrame(rows, columns=cols)
    out["configured"] = out["configured"].astype("boolean")
    out["same_as_used"] = out["same_as_used"].astype("boolean")
    out["runs_differ"] = out["runs_differ"].astype("boolean")
    out["groups_robust"] = out.groupby("setting")["with_barrier"].transform(lambda v: v.notna().all() and v.nunique() == 1)
    out["groups_on_grid"] = out.groupby("setting")["with_barrier"].transform(
        lambda v: _spread(v.map(lambda g: g or "(none)")) if v.notna().all() else "")
    out["grid"] = grid.describe_groups()
    return out


# --- the written tables ----------------------------------------------------------------------------------


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
            f"layer) at every grid point, and {c['agreement']} of the {c['compared']} rows with a paper label keep "
            f"their agreement with it (grid: {grid}; see table1_sensitivity.md).")


def _word(v) -> str:
    return "–" if pd.isna(v) else ("yes" if v else "no")


def _spread(values: pd.Series) -> str:
    counts = Counter(values.astype(str))
    return ", ".join(f"{k} ×{n}" for k, n in counts.most_common())


def _per_point(frame: pd.DataFrame, points: pd.DataFrame, title: str, what: str) -> list[str]:
    names = [point_name(p) + (" (configured)" if p["configured"] else "") for _, p in points.iterrows()]
    lines = [f"## {title}", "", what, "", "| intervention | " + " | ".join(names) + " |",
             "|" + "---|" * (len(names) + 1)]
    for _, g in frame.groupby("row", sort=True):
        at = {r.point: f"{r.shape} / {r.layer_barrier}" for r in g.itertuples()}
        lines.append(f"| {g['intervention'].iloc[0]} | " + " | ".join(at[k] for k in points["point"]) + " |")
    return lines + [""]


def sensitivity_markdown(frame: pd.DataFrame, groups: pd.DataFrame | None = None) -> str:
    lines = ["# Table 1 under other thresholds", "",
             "Each Table 1 row relabelled at every grid point from the stored Δ, L(0), L(1) and α_half of its "
             "paths (no new sweep). B: delta > max(barrier_tol, barrier_rel·|L(0)−L(1)|), every pair of the "
             "two lists, with the layer-barrier floor following barrier_tol; plateau_alpha, layer_barrier_ratio "
             "and label_min_share one at a time, the rest as configured. `×n`: at how many grid points a "
             "label holds. Nearest flip: the closest point (in grid steps from the configured one) where the "
             "full-path label or the layer tag differs. Rows without a paper label show – for agreement.", "",
             robustness_line(frame), ""]
    head = ["intervention", "shape (configured)", "shapes on the grid", "layer (configured)", "layers on the grid",
            "labels robust", "nearest flip", "agrees (configured)", "agreement on the grid", "agreement robust",
            "Lucas et al."]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, g in frame.groupby("row", sort=True):
        conf = g[g["configured"]].iloc[0]
        steps = conf["flip_steps"]
        flip = conf["nearest_flip"] if pd.isna(steps) else f"{conf['nearest_flip']} ({steps} step{'' if steps == 1 else 's'})"
        cells = [conf["intervention"], conf["shape"], conf["shapes_on_grid"], conf["layer_barrier"],
                 conf["layers_on_grid"], _word(conf["labels_robust"]), flip, _word(conf["agrees"]),
                 _spread(g["agrees"].map(_word)), _word(conf["agreement_robust"]),
                 f"{conf['lucas_shape']} ({conf['lucas_fractions']})"]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    if len(frame):
        lines += ["", f"{frame['lucas_rule'].iloc[0]}; a label holds when enough seeds show it (as in Table 1).", ""]
        points = frame.drop_duplicates("point")
        product = points[points["varied"].isin([PRODUCT, "configured"])]
        star = points[points["varied"].isin(STAR) | points["configured"]]
        lines += _per_point(frame, product, "Full-path label / layer tag at each barrier_rel × barrier_tol pair",
                            "The layer-barrier floor is barrier_tol at each pair.")
        lines += _per_point(frame, star, "Full-path label / layer tag with one summary threshold changed",
                            "Every other threshold as configured.")
    if groups is not None and len(groups):
        lines += group_markdown(groups)
    return "\n".join(lines).rstrip() + "\n"


def group_markdown(groups: pd.DataFrame) -> list[str]:
    lines = ["## Barrier groups under other group rules", "",
             f"Grid: {groups['grid'].iloc[0]}. Which layer groups each rule picks in the settings whose barrier "
             "groups other settings read, against the groups the workflow used; a reader's runs differ when "
             "they would act on other groups, or be skipped (no group picked) or trained where they were skipped.", "",
             "| setting | read by | rule | barrier groups | as used | readers whose runs would differ |",
             "|---|---|---|---|---|---|"]
    for _, r in groups.iterrows():
        if r["note"]:
            lines.append(f"| {r['setting']} | {r['readers']} | – | {r['note']} | {r['used']} | – |")
            continue
        rule = _rule_name(r) + (" (configured)" if r["configured"] else "")
        lines.append(f"| {r['setting']} | {r['readers']} | {rule} | {r['with_barrier'] or '(none)'} | "
                     f"{_word(r['same_as_used'])} | {r['readers_changed'] or '–'} |")
    robust = groups.drop_duplicates("setting")
    lines += ["", f"Groups the same under every rule: {int(robust['groups_robust'].sum())} of {len(robust)} settings "
                  f"({', '.join(robust.loc[robust['groups_robust'], 'setting']) or 'none'}).", ""]
    return lines


def write_sensitivity(plan: Plan, runs: str | Path, shapes: str | Path, out: str | Path, markdown: str | Path,
                      groups_out: str | Path | None = None, group_files: dict[str, str] | None = None,
                      log: str | None = None) -> None:
    """table1_sensitivity (.parquet, .md) and, with `groups_out`, table1_sensitivity_groups.parquet from the
    barrier-groups files the workflow used (`group_files`: setting -> results/derived/barrier_groups/<s>.yaml)."""
    shapes_frame = pd.read_parquet(shapes)
    used = {s: read_yaml(Path(f), f"barrier-groups file of {s}") or {} for s, f in (group_files or {}).items()}
    frame = sensitivity_table(plan, pd.read_parquet(runs), shapes_frame, barrier_groups=used)
    groups = None
    if groups_out is not None:
        groups = group_sensitivity(plan, shapes_frame, used)
        write_parquet(groups, groups_out)
    write_parquet(frame, out)
    write_text(sensitivity_markdown(frame, groups), markdown)
    n = frame["row"].nunique() if len(frame) else 0
    note(log, f"Table 1 sensitivity: {n} rows x {len(frame) // max(1, n)} threshold points -> {out}, {markdown}"
              + (f"; barrier groups of {groups['setting'].nunique()} settings -> {groups_out}" if groups is not None else ""))


def with_robustness_line(table1_md: str, frame: pd.DataFrame) -> str:
    """table1.md with the robustness line after its agreement summary (at the end if it has none)."""
    from .tables import with_line_after_agreement

    return with_line_after_agreement(table1_md, robustness_line(frame))
