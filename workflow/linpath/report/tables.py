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
from ..foundations.layout import RunDir
from ..foundations.outcome import read_outcome
from ..study.plan import Plan, row_comparisons

MAIN_PATH = {"path": "full", "start": "init", "bn_mode": "interpolate", "split": "train"}


# --- the long tables -----------------------------------------------------------


def run_columns(plan: Plan, run_id: str) -> dict:
    run = plan.runs[run_id]
    s = plan.settings[run.setting]
    return {"run_id": run_id, "experiment": s.experiment, "setting": s.name, "intervention": s.intervention or s.name,
            "seed": run.seed, "parent": run.parent, "spawn_epoch": run.spawn_epoch, "child": run.child}


def runs_table(plan: Plan, run_ids: list[str], skipped: dict[str, str] | None = None,
               files: dict[str, dict[str, str]] | None = None) -> pd.DataFrame:
    """One row per planned run: trained runs with their final metrics, and runs that were not trained
    (`status` skipped, with the reason) so that no planned run disappears silently. `files`: each run's
    handed outcome file (its folder holds the settings and summary); None: the layout's."""
    rows = []
    for run_id in run_ids:
        run_dir = RunDir(Path(files[run_id]["outcome"]).parent if files else plan.layout.run_dir(run_id))
        outcome = read_outcome(run_dir.path)
        if outcome is None:
            raise FileNotFoundError(f"{run_dir.outcome}: run {run_id} has not finished")
        spec = yaml.safe_load(run_dir.settings.read_text())
        row = {**run_columns(plan, run_id), "status": outcome.status, "status_reason": outcome.reason,
               "failure": outcome.kind, "model": spec["model"]["arch"], "dataset": spec["data"]["dataset"],
               "settings": json.dumps(spec, sort_keys=True)}
        if outcome.trained:
            summary = yaml.safe_load(run_dir.summary.read_text())
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


def run_file_list(plan: Plan, run_ids: list[str], role: str, files: dict[str, dict[str, str]] | None) -> list[str]:
    """Each run's sweep or shapes file: the handed one (`files`, Plan.handed_runs), else the layout's."""
    where = {"sweep": plan.layout.sweep, "shapes": plan.layout.shapes}[role]
    return [files[r][role] if files else str(where(r)) for r in run_ids]


def write_core_tables(plan: Plan, run_ids: list[str], skipped: dict[str, str] | None = None,
                      log: str | None = None, *, out: tuple | None = None,
                      files: dict[str, dict[str, str]] | None = None) -> None:
    """runs / paths / shapes over these runs (skipped runs are rows of runs.parquet with their reason), into
    `out` (three files; None: the layout's tables), from the handed `files` (None: the layout's)."""
    runs_out, paths_out, shapes_out = out or (plan.layout.table(t) for t in ("runs", "paths", "shapes"))
    write_parquet(runs_table(plan, run_ids, skipped, files), runs_out)
    swept = [r for r in run_ids if plan.swept(r)]  # spawned children are measured in pairs (linpath.paths.lmc)
    write_parquet(collect(plan, swept, run_file_list(plan, swept, "sweep", files)), paths_out)
    write_parquet(collect(plan, swept, run_file_list(plan, swept, "shapes", files)), shapes_out)
    note(log, f"{len(run_ids)} runs ({len(skipped or {})} skipped) -> {runs_out}, {paths_out}, {shapes_out}")


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
                "lies above / below 0; else same. A row of several comparisons: their common word, \"often X\" "
                "for a majority (at least 2 of 3), else mixed; the paper's \"often X\" is compared as X in a row "
                "of fewer than 3 comparisons")

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


# An interval of fewer paired seeds than this is marked unreliable where it is printed: with 2 seeds the
# Student-t interval has one degree of freedom and rests on the spread of two numbers, and two equal
# differences give an interval of zero width. The mark qualifies the interval; the word keeps its rule.
MIN_INTERVAL_SEEDS = 3


def interval_caveat(n: int, low: float, high: float) -> str:
    """Why an interval of n paired differences is not to be trusted; '' when nothing speaks against it."""
    if n == 0:
        return ""
    if n == 1:
        return "1 seed: no interval"
    reasons = [f"{n} seeds < {MIN_INTERVAL_SEEDS}"] if n < MIN_INTERVAL_SEEDS else []
    if high - low == 0:
        reasons.append("zero width")
    return "unreliable: " + ", ".join(reasons) if reasons else ""


def interval_text(mean: float, low: float, high: float, n: int) -> str:
    """'-4.50 [-10.85, +1.85] (unreliable: 2 seeds < 3)': a mean change, its interval and any caveat."""
    if n == 0 or not np.isfinite(mean):
        return "n/a"
    if n == 1:
        return f"{mean:+.2f} ({interval_caveat(n, low, high)})"
    caveat = interval_caveat(n, low, high)
    return f"{mean:+.2f} [{low:+.2f}, {high:+.2f}]" + (f" ({caveat})" if caveat else "")


def combined_word(words: list[str]) -> str:
    """One word for a row of several settings: the common word, 'often <word>' for a majority, else mixed."""
    if not words:
        return "n/a"
    top = max(_ordered(words), key=words.count)
    if words.count(top) == len(words):
        return top
    return f"often {top}" if words.count(top) > len(words) / 2 else "mixed"


# --- the paper's labels ----------------------------------------------------------------

PAPER_TOKENS = ("NB", "B", "P", "H-LB", "L-LB")
ACC_WORDS = ("better", "worse", "same")
# combined_word says "often X" only for a majority that is not all: at least 2 of 3 comparisons.
OFTEN_MIN_COMPARISONS = 3


def paper_parts(paper_shape: str) -> tuple[set[str] | None, set[str] | None]:
    """The paper's Table 1 label split into (full-path shapes, layer-barrier tags); None = not stated."""
    tokens = {t.strip() for t in str(paper_shape).replace(",", "/").split("/") if t.strip()}
    full = tokens & set(LABEL_ORDER)
    layer = tokens & {"H-LB", "L-LB"}
    return (full or None), (layer or None)


def paper_acc_compared(paper_acc: str, n_words: int) -> str:
    """The word a row's accuracy word is compared with. A row of fewer than OFTEN_MIN_COMPARISONS
    comparisons can never say "often X"; the paper's "often X" (most of the settings it summarises show X)
    is read there as X, each compared setting taken to be one of that majority."""
    if paper_acc.startswith("often ") and n_words < OFTEN_MIN_COMPARISONS:
        return paper_acc[len("often "):]
    return paper_acc


@dataclass(frozen=True)
class PaperReading:
    """One reading of the paper's words for a row: its Table 1 (or `paper_source` text), or the other
    reading (`paper_shape_alt` / `paper_acc_alt`) where its own text says otherwise."""

    name: str  # main | alt
    full: set[str] | None
    layer: set[str] | None
    acc: str


def paper_readings(row: dict) -> list[PaperReading]:
    """The row's readings of the paper: the main one, and an alternative where the row carries one. The
    alternative replaces only the parts it states (a shape-only alternative keeps the main accuracy word)."""
    full, layer = paper_parts(row.get("paper_shape", ""))
    acc = str(row.get("paper_acc", "") or "")
    out = [PaperReading("main", full, layer, acc)]
    if row.get("paper_shape_alt") or row.get("paper_acc_alt"):
        alt_full, alt_layer = paper_parts(row.get("paper_shape_alt", ""))
        out.append(PaperReading("alt", alt_full or full, alt_layer or layer, str(row.get("paper_acc_alt") or acc)))
    return out


def _agrees(ours: set[str], theirs: set[str] | None):
    """Exact set agreement; pd.NA where the paper states nothing to compare with, or we measured nothing."""
    if theirs is None or not ours:
        return pd.NA
    return ours == theirs


def _either(values: list):
    """A part agrees when it agrees with either reading; pd.NA where no reading could be compared."""
    stated = [v for v in values if v is not pd.NA]
    return pd.NA if not stated else any(stated)


def unreachable_paper_labels(plan: Plan, row: dict, rules: SummaryRules | None = None) -> list[str]:
    """Why the row's rules could never produce the paper's labels (empty: every part is reachable), from the
    plan alone: the labels a row can hold (seeds × the share a label needs), the comparisons that measure
    group-wise paths on both sides (a layer tag each), and the words its comparisons can make."""
    rules = rules or SummaryRules.from_config(plan.config.get("shapes"))
    where = f"table1 row {row['intervention']!r}"
    problems = []
    for key in ("paper_shape", "paper_shape_alt"):
        unknown = [t.strip() for t in str(row.get(key, "")).replace(",", "/").split("/")
                   if t.strip() and t.strip() not in PAPER_TOKENS]
        if unknown:
            problems.append(f"{where}: {key} has unknown labels {unknown} (known: {', '.join(PAPER_TOKENS)})")
    for key in ("paper_acc", "paper_acc_alt"):
        word = str(row.get(key, "") or "")
        if word and word.removeprefix("often ") not in ACC_WORDS and word != "mixed":
            problems.append(f"{where}: {key} {word!r} is not an accuracy word (better, worse, same, often X, mixed)")
    per_setting = int(math.floor(1 / rules.label_min_share + 1e-9))  # labels one setting can hold at once
    if row.get("shape_from", "full") == "full":
        per_setting = min(per_setting, len(plan.seeds))
    capacity = per_setting * len(row["settings"])
    comparisons = [(s, b) for s, b in row_comparisons(plan, row) if b]
    layered = [(s, b) for s, b in comparisons if plan.sweep_spec(s).groups and plan.sweep_spec(b).groups]
    seeds = len(plan.seeds)
    for reading in paper_readings(row):
        if reading.full and len(reading.full) > capacity:
            problems.append(f"{where}: the paper's {'/'.join(_ordered(reading.full))} ({reading.name}) needs "
                            f"{len(reading.full)} labels; its settings hold at most {capacity}")
        if reading.layer and len(reading.layer) > len(layered):
            problems.append(f"{where}: the paper's layer tags {'/'.join(_ordered(reading.layer))} ({reading.name}) "
                            f"need {len(reading.layer)} comparisons with group-wise paths on both sides; "
                            f"the row has {len(layered)}")
        if reading.acc:
            n = len(comparisons)
            singles = set(ACC_WORDS) if seeds > 1 else {"same"}  # one seed: no interval, always same
            possible = (set() if n == 0 else singles if n == 1 else singles | {"mixed"} if n < OFTEN_MIN_COMPARISONS
                        else singles | {"mixed"} | {f"often {w}" for w in singles})
            word = paper_acc_compared(reading.acc, n)
            if word not in possible:
                problems.append(f"{where}: the paper's {reading.acc!r} ({reading.name}, compared as {word!r}) "
                                f"cannot come from {n} comparison(s) of {seeds} seed(s)")
    return problems


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
            "word": accuracy_word(low, high) if len(diffs) else None,
            "acc_text": interval_text(float(diffs.mean()) if len(diffs) else np.nan, low, high, len(diffs))}


# Why a comparison has no layer tag, as Table 1's layer_barrier says it where no comparison of a row has one.
LAYER_MISSING = {
    "no baseline": "the setting has no baseline to compare with",
    "not swept": "group-wise paths are not swept in the setting or its baseline (`paths: groups`)",
    "no layer groups": "the model has no group of the roles `shapes.layer_groups` names",
    "not trained": "no trained run with group-wise paths in the setting or its baseline",
    "not finite": "a mean group-wise delta is not finite",
}


def layer_missing(plan: Plan, setting: str, baseline: str | None, part: dict | None) -> str | None:
    """Why the comparison of a setting with its baseline has no layer tag (a LAYER_MISSING key); None when it
    has one. `part`: the comparison's setting_summary, None when the setting has no trained run."""
    from ..study.layer_groups import setting_layer_groups

    if part is not None and part["layer_tag"]:
        return None
    if not baseline:
        return "no baseline"
    known = [s for s in (setting, baseline) if s in plan.settings]
    if any(not plan.sweep_spec(s).groups for s in known):
        return "not swept"
    if any(not setting_layer_groups(plan, s) for s in known):
        return "no layer groups"
    if part is None or part["group_delta"] is None or part["baseline_group_delta"] is None:
        return "not trained"
    return "not finite"


def comparison_name(setting: str, baseline: str | None) -> str:
    return f"{setting} vs {baseline}" if baseline else f"{setting} (no baseline)"


def read_barrier_groups(plan: Plan, files: dict[str, str] | None = None) -> dict[str, dict]:
    """The measured barrier-groups files of the settings whose groups decide a `shape_from: barrier_groups`
    row: `files` (setting -> the handed file), else the layout's; a file not there yet is left out (its row
    says so)."""
    out = {}
    for setting in plan.table1_group_references():
        path = Path(files[setting]) if files is not None else plan.layout.groups_file(setting)
        if path.is_file():
            out[setting] = yaml.safe_load(path.read_text()) or {}
    return out


def changed_groups(plan: Plan, setting: str, measured: dict[str, dict]) -> tuple[list[str] | None, str]:
    """The layer groups a setting's `@barrier_groups:` references name (the groups its intervention acts on),
    and where they come from; None when a reference's groups are not measured (the text says why)."""
    groups, sources = [], []
    for ref in (r for r in plan.settings[setting].references() if r.kind == "barrier_groups"):
        found = measured.get(ref.setting)
        if found is None:
            return None, f"barrier groups of {ref.setting} not measured"
        if found.get("upstream_failed"):
            return None, f"barrier groups of {ref.setting} not measured ({found.get('reason', 'upstream failed')})"
        groups += [g for g in ref.value(plan.layout, plan.run_of, plan.seeds[0], measured) if g not in groups]
        sources.append(ref.setting)
    return groups, ", ".join(dict.fromkeys(sources))


def group_label_counts(shapes: pd.DataFrame, setting: str, groups: list[str]) -> Counter:
    """Labels of the group-wise paths (θ₀ → θ_T, train split, BN interpolated) of these groups in the
    setting's runs: one per seed and group."""
    sel = select(shapes, setting=setting, path="group", start="init", bn_mode="interpolate", split="train")
    sel = sel[sel["group"].isin(list(groups))]
    return Counter(str(label) for label in sel["label"].fillna("NaN"))


def group_shape(plan: Plan, shapes: pd.DataFrame, settings: list[str], row: dict, measured: dict[str, dict],
                rules: SummaryRules) -> dict:
    """A `shape_from: barrier_groups` row's shape: the labels of its settings' own paths along the groups its
    intervention changed (the barrier groups of the setting its `@barrier_groups:` reference names), per seed
    and group. A setting whose reference has no barrier group contributes no label, and says so."""
    counts, labels, notes, empty = Counter(), set(), [], []
    for s in row["settings"]:
        groups, source = changed_groups(plan, s, measured)
        if groups is None:
            notes.append(f"{s}: {source}")
        elif not groups:
            notes.append(f"{s}: no barrier groups in {source}")
            empty.append(source)
        else:
            notes.append(f"{s}: {', '.join(groups)} of {source}")
            if s in settings:
                own = group_label_counts(shapes, s, groups)
                counts += own
                labels |= set(label_set(own, rules.label_min_share))
    if labels:
        shape = "/".join(_ordered(labels))
    elif empty and len(empty) == len(notes):
        shape = "no barrier groups in " + ", ".join(dict.fromkeys(empty))
    else:
        shape = "n/a"
    return {"counts": counts, "labels": labels, "shape": shape,
            "shape_from": "group-wise paths of the barrier groups (" + "; ".join(notes) + ")"}


def table1(plan: Plan, runs: pd.DataFrame, shapes: pd.DataFrame, rules: SummaryRules | None = None,
           barrier_groups: dict[str, dict] | None = None) -> pd.DataFrame:
    """One row per config `table1` entry. `rules` replaces the config's summary rules (linpath.report.sensitivity).
    `barrier_groups`: setting -> its barrier-groups file, for the rows whose shape comes from the barrier
    groups (`shape_from: barrier_groups`); None reads the measured files (read_barrier_groups)."""
    from ..paths.shapes import ShapeThresholds

    rules = rules or SummaryRules.from_config(plan.config.get("shapes"))
    label_rule = str(shapes["label_rule"].iloc[0]) if len(shapes) else ShapeThresholds().rule()
    if barrier_groups is None and plan.table1_group_references():
        barrier_groups = read_barrier_groups(plan)
    all_runs, runs = runs, trained(runs)
    rows = []
    for row in plan.config["table1"]:
        settings = [s for s in row["settings"] if (runs["setting"] == s).any()]
        parts = [setting_summary(plan, runs, shapes, s, b, rules) for s, b in row_comparisons(plan, row)
                 if s in settings]
        named = {p["setting"] + (f" vs {p['baseline']}" if p["setting"] in (row.get("compare") or {}) else ""): p
                 for p in parts}
        if row.get("shape_from") == "barrier_groups":
            found = group_shape(plan, shapes, settings, row, barrier_groups or {}, rules)
            counts, labels, shape, shape_from = found["counts"], found["labels"], found["shape"], found["shape_from"]
            shape_rule = (f"{label_rule}; one label per seed and barrier group, and a label holds for a setting "
                          f"when at least {rules.label_min_share:g} of them show it")
            baseline_counts = {b: group_label_counts(shapes, b, changed_groups(plan, s, barrier_groups or {})[0] or [])
                               for s, b in row_comparisons(plan, row) if b}
        else:
            counts = sum(({p["setting"]: p for p in parts}[s]["label_counts"] for s in settings), Counter())
            labels = set().union(*(p["labels"] for p in parts)) if parts else set()
            shape, shape_from = ("/".join(_ordered(labels)) if labels else "n/a"), "full path"
            shape_rule = f"{label_rule}; {rules.label_rule()}"
            baseline_counts = {b: label_counts(shapes, [b]) for _, b in row_comparisons(plan, row) if b}
        tags = {p["layer_tag"] for p in parts if p["layer_tag"]}
        comparisons = row_comparisons(plan, row)
        of_pair = {(p["setting"], p["baseline"]): p for p in parts}
        missing = {comparison_name(s, b): why for s, b in comparisons
                   if (why := layer_missing(plan, s, b, of_pair.get((s, b))))}
        words = [p["word"] for p in parts if p["word"]]
        diffs = np.concatenate([p["diffs"] for p in parts]) if parts else np.array([])
        # A row of one comparison shows the interval its word comes from; a row of several pools their
        # differences into acc_ci_* (acc_pooled) while its word comes from each one's own interval (acc_words).
        pooled = len(parts) > 1
        low, high = (parts[0]["ci"] if len(parts) == 1 else mean_interval(diffs, rules.acc_confidence))
        acc_words = "; ".join(f"{k}: {p['acc_text']} {p['word']}" for k, p in named.items() if p["word"])
        readings = paper_readings(row)
        alt_full, alt_layer = paper_parts(row.get("paper_shape_alt", ""))
        word = combined_word(words)
        compared_words = [paper_acc_compared(r.acc, len(words)) if r.acc else None for r in readings]
        by_reading = {
            "shape": [_agrees(labels, r.full) for r in readings],
            "layer": [_agrees(tags, r.layer) for r in readings],
            "acc": [pd.NA if word == "n/a" or not w else word == w for w in compared_words],
        }
        agrees = {f"agrees_{part}": _either(values) for part, values in by_reading.items()}
        stated = [v for v in agrees.values() if v is not pd.NA]
        paper_acc = readings[0].acc
        rows.append({
            "category": row.get("category", ""), "intervention": row["intervention"],
            "figure": ", ".join(dict.fromkeys(plan.paper_figure(s) for s in row["settings"] if s in plan.settings)),
            "settings": ", ".join(settings),
            # What the row's measured columns compare: each setting against its baseline (or `compare`'s settings).
            "comparison": "; ".join(comparison_name(s, b) for s, b in comparisons),
            "shape": shape, "shape_from": shape_from,
            "shape_fractions": label_fractions(counts),
            "baseline_shape": "; ".join(f"{b}: {'/'.join(label_set(c, rules.label_min_share)) or 'n/a'}"
                                        for b, c in baseline_counts.items()),
            # The tags of the comparisons that have one; else why none has (LAYER_MISSING), e.g. "not swept".
            "layer_barrier": "/".join(_ordered(tags)) if tags else ", ".join(dict.fromkeys(missing.values())),
            "layer_missing": "; ".join(f"{k}: {why}" for k, why in missing.items()),
            "group_delta": "; ".join(f"{k}: {p['group_delta']:.3g} vs {p['baseline_group_delta']:.3g}"
                                     for k, p in named.items() if p["layer_tag"]),
            "shape_rule": shape_rule, "layer_rule": rules.layer_rule(),
            "acc_change_pp_mean": float(diffs.mean()) if len(diffs) else np.nan,
            "acc_change_pp_std": float(diffs.std(ddof=1)) if len(diffs) > 1 else np.nan,
            "acc_ci_low": low if len(diffs) else np.nan, "acc_ci_high": high if len(diffs) else np.nan,
            "acc_pooled": pooled,
            "acc_ci_caveat": interval_caveat(len(diffs), low, high),
            # What table1.md prints: the interval the word comes from (one comparison), or each comparison's.
            "acc_interval": acc_words if pooled else parts[0]["acc_text"] if parts else "n/a",
            "acc_word": word,
            "acc_words": acc_words,
            "acc_rule": rules.acc_rule(),
            "n_seeds": int(runs[runs["setting"].isin(settings)]["seed"].nunique()),
            "n": trained_of_planned(all_runs, row["settings"]),
            "not_trained": not_trained(all_runs, row["settings"]),
            # The paper's label split as it is compared: full-path labels (agrees_shape), layer tags (agrees_layer).
            "paper_shape": "/".join(_ordered(readings[0].full or [])),
            "paper_layer": "/".join(_ordered(readings[0].layer or [])), "paper_acc": paper_acc,
            "paper_shape_alt": "/".join(_ordered(alt_full or [])), "paper_layer_alt": "/".join(_ordered(alt_layer or [])),
            "paper_acc_alt": str(row.get("paper_acc_alt", "")),
            # The word the row's word is compared with ("often X" read as X where the row cannot say "often").
            "paper_acc_compared": " or ".join(dict.fromkeys(w for w in compared_words if w)),
            # Where the paper's labels of the row come from: its Table 1, or (rows it has no Table 1 row for)
            # the text the config names; empty = no paper labels (the row is this pipeline's own). A row with
            # two readings quotes the text behind the second.
            "paper_source": str(row.get("paper_source", "Table 1" if row.get("paper_shape") or paper_acc else "")),
            **agrees,
            "agrees": pd.NA if not stated else all(stated),
            # Rows with two readings: per part, the readings that agree (main, alt).
            "agrees_by_reading": "; ".join(
                f"{part}: {', '.join(r.name for r, v in zip(readings, values) if v is True) or 'neither'}"
                for part, values in by_reading.items() if any(v is not pd.NA for v in values))
            if len(readings) > 1 else "",
        })
    frame = pd.DataFrame(rows)
    for col in ("agrees_shape", "agrees_layer", "agrees_acc", "agrees"):
        frame[col] = frame[col].astype("boolean")
    return frame


def agreement_counts(t1: pd.DataFrame) -> dict[str, tuple[int, int]]:
    """Per part: (rows that agree, rows compared)."""
    return {part: (int(t1[f"agrees_{part}"].fillna(False).sum()), int(t1[f"agrees_{part}"].notna().sum()))
            for part in ("shape", "layer", "acc")}


def _column(t1: pd.DataFrame, name: str) -> pd.Series:
    return t1[name].fillna("").astype(str) if name in t1.columns else pd.Series([""] * len(t1), index=t1.index)


def table1_markdown(t1: pd.DataFrame, runs: pd.DataFrame | None = None) -> str:
    cols = ["category", "intervention", "comparison", "figure", "shape", "shape_fractions", "layer_barrier", "acc",
            "acc_word", "n", "paper_shape", "paper_layer", "paper_acc", "paper_source", "agrees_shape", "agrees_layer",
            "agrees_acc"]
    alt_shape, alt_layer = _column(t1, "paper_shape_alt"), _column(t1, "paper_layer_alt")
    alt_acc, compared, shape_from = _column(t1, "paper_acc_alt"), _column(t1, "paper_acc_compared"), _column(t1, "shape_from")
    two = (alt_shape != "") | (alt_layer != "") | (alt_acc != "")
    groups = shape_from.str.startswith("group-wise")
    # `acc_interval`: the interval each word comes from, with its caveat (tables written before it: the mean [CI]).
    fallback = [f"{m:+.2f} [{lo:+.2f}, {hi:+.2f}]" if pd.notna(m) else "n/a"
                for m, lo, hi in zip(t1["acc_change_pp_mean"], t1["acc_ci_low"], t1["acc_ci_high"])]
    shown = _column(t1, "acc_interval")
    t = t1.assign(acc=[s or f for s, f in zip(shown, fallback)],
                  comparison=_column(t1, "comparison"), paper_layer=_column(t1, "paper_layer"))
    t = t.assign(**{c: t[c].map(lambda v: "–" if v is pd.NA else ("yes" if v else "no"))
                    for c in ("agrees_shape", "agrees_layer", "agrees_acc")})
    # Marks: † two readings of the paper (either counts); * shape from the barrier groups' own paths.
    t = t.assign(intervention=[f"{i}{' †' if a else ''}{' *' if g else ''}"
                               for i, a, g in zip(t["intervention"], two, groups)],
                 paper_shape=[f"{p} (alt: {a})" if a else p for p, a in zip(t["paper_shape"].astype(str), alt_shape)],
                 paper_layer=[f"{p} (alt: {a})" if a else p for p, a in zip(t["paper_layer"].astype(str), alt_layer)],
                 paper_acc=[p + (f" (alt: {a})" if a else "") + (f" → {c}" if c and c not in (p, a, f"{p} or {a}") else "")
                            for p, a, c in zip(t["paper_acc"].astype(str), alt_acc, compared)])
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
        "`comparison`: what the row's measured columns compare, each setting against its baseline (or the "
        "settings its `compare` names), paired by seed. `shape`: full-path labels (θ0 → θT, train split) that "
        "hold in the row's settings: NB no barrier, B barrier, P plateau, NaN a loss that is not finite; "
        "`shape_fractions`: the label of every run (one per seed). `layer_barrier`: group-wise barriers against "
        "the baseline, H-LB higher, L-LB lower, none within the factor; where no comparison of the row has a tag, "
        "why: " + "; ".join(f"{k} ({v})" for k, v in LAYER_MISSING.items()) + ". `acc`: test-accuracy change "
        "against the baseline in percentage points, mean [confidence interval], paired by seed: the interval "
        "the word in `acc_word` comes from; a row of several comparisons shows each one's (its word: their "
        f"common word, often X or mixed). An interval from fewer than {MIN_INTERVAL_SEEDS} seeds, or of zero "
        "width, is marked unreliable; one seed gives none. `n`: runs trained / runs planned for the row. n/a in "
        "`shape`, `shape_fractions`, `acc` or `acc_word`: nothing to show, as no run of the row (or of its "
        "baseline) trained; the reason is listed below. `paper_shape` / `paper_layer` / `paper_acc`: the "
        "paper's own full-path labels, layer tags and accuracy word (reference; compared in `agrees_shape`, "
        "`agrees_layer`, `agrees_acc`); `paper_source`: where they come from (its Table 1, or the text the row "
        "names where Table 1 has no such row; empty: this pipeline's own row, not compared). `often X → X`: a "
        "row of fewer than 3 comparisons cannot say \"often\", so the paper's \"often X\" is compared as X.",
    ]
    if two.any():
        by_reading = _column(t1, "agrees_by_reading")
        notes += ["", "† The paper's own text reads this row otherwise than its Table 1 (the quote is in "
                  "`paper_source`): both readings are shown (alt: the text's) and a part agrees when it agrees "
                  "with either. " + "; ".join(f"{i}: {b}" for i, b, a in zip(t1["intervention"], by_reading, two)
                                             if a and b) + "."]
    if groups.any():
        notes += ["", "* `shape` from the group-wise paths of the groups the intervention changed, one label per "
                  "seed and group (not the full path): " + "; ".join(
                      f"{i}: {s}" for i, s, g in zip(t1["intervention"], shape_from, groups) if g) + "."]
    if first is not None:
        notes += [f"Shape labels: {first['shape_rule']}.", f"Layer barriers: {first['layer_rule']}.",
                  f"Accuracy words: {first['acc_rule']}."]
    if runs is not None:
        notes += ["", failed_runs_markdown(runs).rstrip("\n")]
    return "\n".join(lines + notes) + "\n"


def write_table1(plan: Plan, runs: str | Path, shapes: str | Path, out: str | Path, markdown: str | Path,
                 log: str | None = None, robustness: str | None = None, html: str | Path | None = None,
                 group_files: dict[str, str] | None = None) -> None:
    """`robustness`: the line (linpath.report.sensitivity.robustness_line) that table1.md states after its agreement;
    `html`: where the markdown goes as a page of its own (the workflow's report shows it); `group_files`: the
    barrier-groups files of the `shape_from: barrier_groups` rows (read_barrier_groups)."""
    from .html import markdown_html

    runs_frame = pd.read_parquet(runs)
    t1 = table1(plan, runs_frame, pd.read_parquet(shapes), barrier_groups=read_barrier_groups(plan, group_files))
    write_parquet(t1, out)
    text = table1_markdown(t1, runs_frame)
    if robustness is not None:
        text = with_line_after_agreement(text, robustness)
    write_text(text, markdown)
    if html is not None:
        write_text(markdown_html(text, "Table 1"), html)
    note(log, f"Table 1: {len(t1)} rows -> {out}, {markdown}" + (f", {html}" if html is not None else ""))


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
                           log: str | None = None, files: dict[str, dict[str, str]] | None = None) -> None:
    """One per-experiment table of the reference file, from the runs of its rows alone."""
    reference = plan.reference()
    if name not in reference.get("tables", {}):
        raise KeyError(f"{plan.config.get('reference')} has no table {name!r}")
    spec = dict(reference["tables"][name])
    rows = [{**row, "setting": plan.row_setting(row, name)} for row in spec["rows"]]
    spec["rows"] = [row for row in rows if row["setting"] in plan.settings]  # what this config plans
    swept = [r for r in run_ids if plan.swept(r)]
    shapes = collect(plan, swept, run_file_list(plan, swept, "shapes", files)) if swept else None
    frame = experiment_table(name, spec, runs_table(plan, run_ids, skipped, files), shapes,
                             SummaryRules.from_config(plan.config.get("shapes")))
    write_parquet(frame, out)
    note(log, f"{name}: {len(frame)} rows from {len(run_ids)} runs -> {out}")
