"""Tables computed from finished runs: runs / paths / shapes, Table 1 and the
per-experiment tables with the paper's numbers as labelled reference columns.

Everything here reads files written by `linpath train` and `linpath
interpolate`; no number is typed in except the paper's, which come from
config/reference.yaml and stay in columns named `paper_*`.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from ..foundations.io import note, write_parquet, write_text
from ..foundations.outcome import read_outcome
from ..study.plan import Plan

MAIN_PATH = {"path": "full", "start": "init", "bn_mode": "interpolate", "split": "train"}


# --- the long tables -----------------------------------------------------------


def run_columns(plan: Plan, run_id: str) -> dict:
    run = plan.runs[run_id]
    s = plan.settings[run.setting]
    return {"run_id": run_id, "experiment": s.experiment, "setting": s.name, "intervention": s.intervention or s.name,
            "seed": run.seed, "parent": run.parent, "spawn_epoch": run.spawn_epoch, "child": run.child}


def runs_table(plan: Plan, run_ids: list[str], skipped: dict[str, str] | None = None) -> pd.DataFrame:
    """One row per planned run: trained runs with their final metrics, and runs that were not trained
    (`status` skipped, with the reason) so that no planned run disappears silently."""
    rows = []
    for run_id in run_ids:
        outcome = read_outcome(plan.layout.run_dir(run_id))
        if outcome is None:
            raise FileNotFoundError(f"{plan.layout.run_file(run_id, 'outcome')}: run {run_id} has not finished")
        spec = yaml.safe_load(plan.layout.run_file(run_id, "settings").read_text())
        row = {**run_columns(plan, run_id), "status": outcome.status, "status_reason": outcome.reason,
               "failure": outcome.kind, "model": spec["model"]["arch"], "dataset": spec["data"]["dataset"],
               "settings": json.dumps(spec, sort_keys=True)}
        if outcome.trained:
            summary = yaml.safe_load(plan.layout.run_file(run_id, "summary").read_text())
            summary.pop("run", None)
            row.update(summary)
        rows.append(row)
    for run_id, reason in sorted((skipped or {}).items()):
        rows.append({**run_columns(plan, run_id), "status": "skipped", "status_reason": reason, "failure": "measured"})
    return pd.DataFrame(rows)


def trained(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs that were trained (tables without a status column hold only those)."""
    return runs if "status" not in runs.columns else runs[runs["status"] == "trained"]


def trained_of_planned(runs: pd.DataFrame, settings: list[str]) -> str:
    """'8/10': how many of the planned runs of these settings trained (runs.parquet lists every planned run)."""
    planned = runs[runs["setting"].isin(settings)]
    return f"{len(trained(planned))}/{len(planned)}"


def failed_runs_markdown(runs: pd.DataFrame) -> str:
    """The runs that did not train, each with why: the list under Table 1."""
    if "status" not in runs.columns:
        return ""
    out = runs[~runs["status"].isin(["trained", "pending"])].sort_values(["status", "setting", "seed"])
    if out.empty:
        return "Every planned run trained.\n"
    lines = [f"Runs that did not train ({len(out)} of {len(runs)}):"]
    for _, r in out.iterrows():
        lines.append(f"- `{r['run_id']}` ({r['setting']}, seed {r['seed']}): {r['status']}: {r['status_reason']}")
    return "\n".join(lines) + "\n"


def not_trained(runs: pd.DataFrame, settings: list[str]) -> str:
    """'barrier_at: 2 skipped (no barrier on ...)' for the runs of these settings that were not trained."""
    if "status" not in runs.columns:
        return ""
    sel = runs[runs["setting"].isin(settings) & (runs["status"] != "trained")]
    parts = []
    for (setting, status), group in sel.groupby(["setting", "status"], sort=False):
        reasons = "; ".join(dict.fromkeys(group["status_reason"]))
        parts.append(f"{setting}: {len(group)} {status} ({reasons})")
    return " | ".join(parts)


def collect(plan: Plan, run_ids: list[str], files: list[str]) -> pd.DataFrame:
    """Concatenate per-run parquet files, adding experiment / setting / seed columns."""
    frames = []
    for run_id, f in zip(run_ids, files):
        frame = pd.read_parquet(f)
        if frame.empty:  # a run that did not train (its outcome says why)
            continue
        meta = run_columns(plan, run_id)
        frame["run_id"] = run_id
        for key in ("experiment", "setting", "seed"):
            frame.insert(1, key, meta[key])
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["run_id", "experiment", "setting", "seed"])


def write_core_tables(plan: Plan, run_ids: list[str], skipped: dict[str, str] | None = None,
                      log: str | None = None) -> None:
    """runs / paths / shapes over these runs (skipped runs are rows of runs.parquet with their reason)."""
    layout = plan.layout
    write_parquet(runs_table(plan, run_ids, skipped), layout.table("runs"))
    swept = [r for r in run_ids if plan.swept(r)]  # spawned children are measured in pairs (linpath.paths.lmc)
    write_parquet(collect(plan, swept, [str(layout.sweep(r)) for r in swept]), layout.table("paths"))
    write_parquet(collect(plan, swept, [str(layout.shapes(r)) for r in swept]), layout.table("shapes"))
    note(log, f"{len(run_ids)} runs ({len(skipped or {})} skipped) -> {layout.table('runs')} and beside it")


# --- summary rules ---------------------------------------------------------------

LABEL_ORDER = ["NB", "B", "P", "NaN"]
LAYER_TAGS = ["H-LB", "L-LB", "none"]


@dataclass(frozen=True)
class SummaryRules:
    """How per-run labels become a setting's label, layer tag and accuracy word (config `shapes:`)."""

    # A full-path label holds for a setting when at least this share of its seeds show it. With 10 seeds
    # that is 3 runs (more than a one-off); with 2 seeds any seed counts, so a split stays visible.
    label_min_share: float = 0.25
    # H-LB / L-LB: the mean group-wise Δ differs from the baseline's by more than this factor ...
    layer_barrier_ratio: float = 1.25
    # ... after raising both to this floor (loss units): a group Δ below it is no barrier, so a ratio of two
    # sub-floor values is noise, and barriers against a barrier-free baseline still count as higher.
    layer_barrier_floor: float = 0.01
    # better / worse when the confidence interval of the mean paired accuracy change excludes 0.
    acc_confidence: float = 0.95

    @classmethod
    def from_config(cls, shapes: dict | None) -> "SummaryRules":
        names = {f.name for f in fields(cls)}
        return cls(**{k: float(v) for k, v in (shapes or {}).items() if k in names})

    def layer_rule(self) -> str:
        return (f"H-LB / L-LB: mean group delta above / below the baseline's by a factor {self.layer_barrier_ratio:g}, "
                f"both raised to at least {self.layer_barrier_floor:g}")

    def acc_rule(self) -> str:
        return (f"better / worse: the {100 * self.acc_confidence:g}% Student-t interval of the mean paired change "
                "lies above / below 0; else same")

    def label_rule(self) -> str:
        return f"a label holds for a setting when at least {self.label_min_share:g} of its seeds show it"


# --- per-seed labels ------------------------------------------------------------------


def select(shapes: pd.DataFrame, **where) -> pd.DataFrame:
    mask = np.ones(len(shapes), dtype=bool)
    for k, v in where.items():
        mask &= shapes[k].to_numpy() == v
    return shapes[mask]


def label_counts(shapes: pd.DataFrame, settings: list[str]) -> Counter:
    """Full-path labels (θ₀ → θ_T, train split) of every run of these settings, one per seed."""
    sel = select(shapes, **MAIN_PATH)
    sel = sel[sel["setting"].isin(settings)]
    return Counter(str(label) for label in sel["label"].fillna("NaN"))


def _ordered(labels) -> list[str]:
    rank = {label: i for i, label in enumerate(LABEL_ORDER + LAYER_TAGS)}
    return sorted(set(labels), key=lambda label: (rank.get(label, len(rank)), label))


def label_fractions(counts: Counter) -> str:
    """'B 7/10, NB 3/10': each label with the number of runs that show it."""
    total = sum(counts.values())
    return ", ".join(f"{label} {counts[label]}/{total}" for label in _ordered(counts)) if total else "n/a"


def label_set(counts: Counter, min_share: float) -> list[str]:
    """Labels shown by at least `min_share` of the runs."""
    total = sum(counts.values())
    return [label for label in _ordered(counts) if total and counts[label] / total >= min_share]


def group_barrier(shapes: pd.DataFrame, setting: str, groups: list[str] | None = None) -> float | None:
    """Mean Δ of the group-wise paths (train split, from init) over groups and seeds; only `groups` (the
    setting's layer groups, linpath.study.layer_groups) when given."""
    sel = select(shapes, setting=setting, path="group", start="init", bn_mode="interpolate", split="train")
    if groups is not None:
        sel = sel[sel["group"].isin(list(groups))]
    return None if sel.empty else float(sel["delta"].mean())


def full_delta(shapes: pd.DataFrame, setting: str) -> float | None:
    """Mean Δ of the full path θ₀ → θ_T (train split) over seeds."""
    sel = select(shapes, setting=setting, **MAIN_PATH)
    return None if sel.empty else float(sel["delta"].mean())


def layer_barrier_tag(mine: float | None, baseline: float | None, rules: SummaryRules) -> str | None:
    """H-LB / L-LB / none from two mean group Δs; None when either side has no group paths."""
    if mine is None or baseline is None or not (np.isfinite(mine) and np.isfinite(baseline)):
        return None
    m, b = max(mine, rules.layer_barrier_floor), max(baseline, rules.layer_barrier_floor)
    if m > rules.layer_barrier_ratio * b:
        return "H-LB"
    if b > rules.layer_barrier_ratio * m:
        return "L-LB"
    return "none"


# --- accuracy change ------------------------------------------------------------------


def accuracy_change(runs: pd.DataFrame, setting: str, baseline: str) -> np.ndarray:
    """Test-accuracy differences to the baseline, paired by seed, in percentage points."""
    a = runs[runs["setting"] == setting].set_index("seed")["test_acc"]
    b = runs[runs["setting"] == baseline].set_index("seed")["test_acc"]
    common = a.index.intersection(b.index)
    return 100 * (a[common] - b[common]).to_numpy()


def mean_interval(diffs: np.ndarray, confidence: float) -> tuple[float, float]:
    """Student-t confidence interval of the mean of paired differences; infinite with fewer than 2."""
    from scipy import stats

    diffs = np.asarray(diffs, dtype=float)
    n = len(diffs)
    if n < 2:
        return -math.inf, math.inf
    sem = diffs.std(ddof=1) / math.sqrt(n)
    if sem == 0:
        return float(diffs.mean()), float(diffs.mean())
    half = float(stats.t.ppf(0.5 + confidence / 2, df=n - 1)) * sem
    return float(diffs.mean() - half), float(diffs.mean() + half)


def accuracy_word(low: float, high: float) -> str:
    return "better" if low > 0 else "worse" if high < 0 else "same"


def combined_word(words: list[str]) -> str:
    """One word for a row of several settings: the common word, 'often <word>' for a majority, else mixed."""
    if not words:
        return "n/a"
    top = max(_ordered(words), key=words.count)
    if words.count(top) == len(words):
        return top
    return f"often {top}" if words.count(top) > len(words) / 2 else "mixed"


# --- the paper's labels ----------------------------------------------------------------


def paper_parts(paper_shape: str) -> tuple[set[str] | None, set[str] | None]:
    """The paper's Table 1 label split into (full-path shapes, layer-barrier tags); None = not stated."""
    tokens = {t.strip() for t in str(paper_shape).replace(",", "/").split("/") if t.strip()}
    full = tokens & set(LABEL_ORDER)
    layer = tokens & {"H-LB", "L-LB"}
    return (full or None), (layer or None)


def _agrees(ours: set[str], theirs: set[str] | None):
    """Exact set agreement; pd.NA where the paper states nothing to compare with, or we measured nothing."""
    if theirs is None or not ours:
        return pd.NA
    return ours == theirs


# --- Table 1 ---------------------------------------------------------------------


def setting_summary(plan: Plan, runs: pd.DataFrame, shapes: pd.DataFrame, setting: str, baseline: str | None,
                    rules: SummaryRules) -> dict:
    """Labels over seeds, layer tag and accuracy test of one setting against its baseline."""
    from ..study.layer_groups import setting_layer_groups

    counts = label_counts(shapes, [setting])
    mine = group_barrier(shapes, setting, setting_layer_groups(plan, setting))
    theirs = group_barrier(shapes, baseline, setting_layer_groups(plan, baseline)) if baseline else None
    diffs = accuracy_change(runs, setting, baseline) if baseline else np.array([])
    low, high = mean_interval(diffs, rules.acc_confidence)
    return {"setting": setting, "baseline": baseline, "label_counts": counts,
            "labels": label_set(counts, rules.label_min_share), "group_delta": mine, "baseline_group_delta": theirs,
            "layer_tag": layer_barrier_tag(mine, theirs, rules), "diffs": diffs, "ci": (low, high),
            "word": accuracy_word(low, high) if len(diffs) else None}


def row_comparisons(plan: Plan, row: dict) -> list[tuple[str, str | None]]:
    """(setting, baseline) pairs of a Table 1 row. A setting named in the row's `compare` is set against each
    setting listed there (the middle fixed LR against each other fixed LR: the paper compares them with each
    other); any other setting against the row's `baseline`, else its own."""
    compare = row.get("compare") or {}
    return [(s, b) for s in row["settings"]
            for b in (compare.get(s) or [row.get("baseline") or getattr(plan.settings.get(s), "baseline", None)])]


def table1(plan: Plan, runs: pd.DataFrame, shapes: pd.DataFrame, rules: SummaryRules | None = None) -> pd.DataFrame:
    """One row per config `table1` entry. `rules` replaces the config's summary rules (linpath.report.sensitivity)."""
    from ..paths.shapes import ShapeThresholds

    rules = rules or SummaryRules.from_config(plan.config.get("shapes"))
    label_rule = str(shapes["label_rule"].iloc[0]) if len(shapes) else ShapeThresholds().rule()
    all_runs, runs = runs, trained(runs)
    rows = []
    for row in plan.config["table1"]:
        settings = [s for s in row["settings"] if (runs["setting"] == s).any()]
        parts = [setting_summary(plan, runs, shapes, s, b, rules) for s, b in row_comparisons(plan, row)
                 if s in settings]
        named = {p["setting"] + (f" vs {p['baseline']}" if p["setting"] in (row.get("compare") or {}) else ""): p
                 for p in parts}
        counts = sum(({p["setting"]: p for p in parts}[s]["label_counts"] for s in settings), Counter())
        labels = set().union(*(p["labels"] for p in parts)) if parts else set()
        tags = {p["layer_tag"] for p in parts if p["layer_tag"]}
        words = [p["word"] for p in parts if p["word"]]
        diffs = np.concatenate([p["diffs"] for p in parts]) if parts else np.array([])
        low, high = (parts[0]["ci"] if len(parts) == 1 else mean_interval(diffs, rules.acc_confidence))
        paper_full, paper_layer = paper_parts(row.get("paper_shape", ""))
        paper_acc = str(row.get("paper_acc", ""))
        word = combined_word(words)
        agrees = {
            "agrees_shape": _agrees(labels, paper_full),
            "agrees_layer": _agrees(tags, paper_layer),
            "agrees_acc": pd.NA if word == "n/a" or not paper_acc else word == paper_acc,
        }
        stated = [v for v in agrees.values() if v is not pd.NA]
        rows.append({
            "category": row.get("category", ""), "intervention": row["intervention"],
            "figure": ", ".join(dict.fromkeys(plan.paper_figure(s) for s in row["settings"] if s in plan.settings)),
            "settings": ", ".join(settings),
            "shape": "/".join(_ordered(labels)) if labels else "n/a",
            "shape_fractions": label_fractions(counts),
            "layer_barrier": "/".join(_ordered(tags)) if tags else "n/a",
            "group_delta": "; ".join(f"{k}: {p['group_delta']:.3g} vs {p['baseline_group_delta']:.3g}"
                                     for k, p in named.items() if p["layer_tag"]),
            "shape_rule": f"{label_rule}; {rules.label_rule()}", "layer_rule": rules.layer_rule(),
            "acc_change_pp_mean": float(diffs.mean()) if len(diffs) else np.nan,
            "acc_change_pp_std": float(diffs.std(ddof=1)) if len(diffs) > 1 else np.nan,
            "acc_ci_low": low if len(diffs) else np.nan, "acc_ci_high": high if len(diffs) else np.nan,
            "acc_word": word,
            "acc_words": "; ".join(f"{k}: {p['word']} [{_interval(p['ci'])}]" for k, p in named.items() if p["word"]),
            "acc_rule": rules.acc_rule(),
            "n_seeds": int(runs[runs["setting"].isin(settings)]["seed"].nunique()),
            "n": trained_of_planned(all_runs, row["settings"]),
            "not_trained": not_trained(all_runs, row["settings"]),
            "paper_shape": str(row.get("paper_shape", "")), "paper_acc": paper_acc,
            # Where the paper's labels of the row come from: its Table 1, or (rows it has no Table 1 row for)
            # the text the config names; empty = no paper labels (the row is this pipeline's own).
            "paper_source": str(row.get("paper_source", "Table 1" if row.get("paper_shape") or paper_acc else "")),
            **agrees,
            "agrees": pd.NA if not stated else all(stated),
        })
    frame = pd.DataFrame(rows)
    for col in ("agrees_shape", "agrees_layer", "agrees_acc", "agrees"):
        frame[col] = frame[col].astype("boolean")
    return frame


def _interval(ci: tuple[float, float]) -> str:
    return f"{ci[0]:+.2f}, {ci[1]:+.2f}"


def agreement_counts(t1: pd.DataFrame) -> dict[str, tuple[int, int]]:
    """Per part: (rows that agree, rows compared)."""
    return {part: (int(t1[f"agrees_{part}"].fillna(False).sum()), int(t1[f"agrees_{part}"].notna().sum()))
            for part in ("shape", "layer", "acc")}


def table1_markdown(t1: pd.DataFrame, runs: pd.DataFrame | None = None) -> str:
    cols = ["category", "intervention", "figure", "shape", "shape_fractions", "layer_barrier", "acc", "acc_word",
            "n", "paper_shape", "paper_acc", "paper_source", "agrees_shape", "agrees_layer", "agrees_acc"]
    t = t1.assign(acc=[f"{m:+.2f} [{lo:+.2f}, {hi:+.2f}]" if pd.notna(m) else "n/a"
                       for m, lo, hi in zip(t1["acc_change_pp_mean"], t1["acc_ci_low"], t1["acc_ci_high"])])
    t = t.assign(**{c: t[c].map(lambda v: "–" if v is pd.NA else ("yes" if v else "no"))
                    for c in ("agrees_shape", "agrees_layer", "agrees_acc")})
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in t.iterrows():
        lines.append("| " + " | ".join(str(r[c]) for c in cols) + " |")
    counts = agreement_counts(t1)
    first = t1.iloc[0] if len(t1) else None
    notes = [
        "",
        "Agreement with the paper, each part on its own (a part agrees only when the label sets are equal; "
        "– = the paper states nothing for that part, or nothing was measured): "
        + "; ".join(f"{part} {ok}/{n} rows" for part, (ok, n) in counts.items()) + ".",
        "",
        "`shape`: full-path labels (θ0 → θT, train split) that hold in the row's settings; `shape_fractions`: the "
        "label of every run (one per seed). `layer_barrier`: group-wise barriers against the baseline. `acc`: "
        "test-accuracy change against the row's baseline in percentage points, mean [confidence interval], paired "
        "by seed. `n`: runs trained / runs planned for the row (a row with none trained stays, with n/a and the "
        "reason below). `paper_*`: the paper's own labels (reference); `paper_source`: where "
        "they come from (its Table 1, or the text the row names where Table 1 has no such row; empty: this "
        "pipeline's own row, not compared).",
    ]
    if first is not None:
        notes += [f"Shape labels: {first['shape_rule']}.", f"Layer barriers: {first['layer_rule']}.",
                  f"Accuracy words: {first['acc_rule']}."]
    if runs is not None:
        notes += ["", failed_runs_markdown(runs).rstrip("\n")]
    return "\n".join(lines + notes) + "\n"


def write_table1(plan: Plan, runs: str | Path, shapes: str | Path, out: str | Path, markdown: str | Path,
                 log: str | None = None, robustness: str | None = None) -> None:
    """`robustness`: the line (linpath.report.sensitivity.robustness_line) that table1.md states after its agreement."""
    runs_frame = pd.read_parquet(runs)
    t1 = table1(plan, runs_frame, pd.read_parquet(shapes))
    write_parquet(t1, out)
    text = table1_markdown(t1, runs_frame)
    if robustness is not None:
        text = with_line_after_agreement(text, robustness)
    write_text(text, markdown)
    note(log, f"Table 1: {len(t1)} rows -> {out}, {markdown}")


def with_line_after_agreement(table1_md: str, line: str) -> str:
    """table1.md with `line` after its agreement summary (at the end if it has none)."""
    lines = table1_md.rstrip("\n").split("\n")
    at = next((i + 1 for i, text in enumerate(lines) if text.startswith("Agreement with the paper")), len(lines))
    return "\n".join([*lines[:at], "", line, *lines[at:]]) + "\n"


# --- per-experiment tables with the paper's numbers ------------------------------


def _percent(column: str):
    return lambda runs, shapes: 100 * runs[column]


def _nonmonotonic(runs: pd.DataFrame, shapes: pd.DataFrame) -> pd.Series:
    return 100 * (~select(shapes, **MAIN_PATH)["monotonic"].astype(bool)).astype(float)


# Per-run values a table column can show (mean ± std over the row setting's runs).
METRICS = {
    "train_acc": _percent("train_acc"),
    "test_acc": _percent("test_acc"),
    "relative_distance_mean": lambda runs, shapes: runs["relative_distance_mean"],
    "relative_distance_global": lambda runs, shapes: runs["relative_distance_global"],
    "delta": lambda runs, shapes: select(shapes, **MAIN_PATH)["delta"],
    "nonmonotonic_pct": _nonmonotonic,
}
DEFAULT_COLUMNS = ["train_acc", "test_acc"]


def experiment_table(name: str, spec: dict, runs: pd.DataFrame, shapes: pd.DataFrame | None = None,
                     rules: SummaryRules = SummaryRules()) -> pd.DataFrame:
    """Per row setting: the table's metrics (mean ± std over seeds), the full-path labels over seeds,
    and the paper's numbers in `paper_*` columns."""
    shapes = shapes if shapes is not None else pd.DataFrame(columns=[*MAIN_PATH, "setting", "label", "delta",
                                                                     "monotonic"])
    columns = spec.get("columns", DEFAULT_COLUMNS)
    unknown = [c for c in columns if c not in METRICS]
    if unknown:
        raise KeyError(f"table {name}: unknown column {unknown[0]!r} (known: {', '.join(METRICS)})")
    rows = []
    for row in spec["rows"]:
        setting = row["setting"]
        sel = trained(runs)[trained(runs)["setting"] == setting]
        own_shapes = shapes[shapes["setting"] == setting]
        counts = label_counts(shapes, [setting])
        out = {"table": name, "row": row["label"], "column": row.get("column", ""), "setting": setting,
               "n_seeds": len(sel), "n": trained_of_planned(runs, [setting]), "not_trained": not_trained(runs, [setting])}
        for metric in columns:
            # no trained run (all skipped): the runs table may lack the metric's column altogether
            values = METRICS[metric](sel, own_shapes).astype(float) if len(sel) else pd.Series(dtype=float)
            out[f"{metric}_mean"] = float(values.mean()) if len(values) else np.nan
            out[f"{metric}_std"] = float(values.std(ddof=1)) if len(values) > 1 else np.nan
        out["shape"] = "/".join(label_set(counts, rules.label_min_share)) or "n/a"
        out["shape_fractions"] = label_fractions(counts)
        for key, value in row.items():
            if key.startswith("paper_"):
                out[key] = value
        rows.append(out)
    return pd.DataFrame(rows)


def write_experiment_table(plan: Plan, name: str, run_ids: list[str], skipped: dict[str, str], out: str | Path,
                           log: str | None = None) -> None:
    """One per-experiment table of the reference file, from the runs of its rows alone."""
    reference = plan.reference()
    if name not in reference.get("tables", {}):
        raise KeyError(f"{plan.config.get('reference')} has no table {name!r}")
    spec = dict(reference["tables"][name])
    rows = [{**row, "setting": plan.row_setting(row, name)} for row in spec["rows"]]
    spec["rows"] = [row for row in rows if row["setting"] in plan.settings]  # what this config plans
    shapes = collect(plan, run_ids, [str(plan.layout.shapes(r)) for r in run_ids]) if run_ids else None
    frame = experiment_table(name, spec, runs_table(plan, run_ids, skipped), shapes,
                             SummaryRules.from_config(plan.config.get("shapes")))
    write_parquet(frame, out)
    note(log, f"{name}: {len(frame)} rows from {len(run_ids)} runs -> {out}")
