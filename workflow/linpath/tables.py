"""Tables computed from finished runs: runs / paths / shapes, Table 1 and the
per-experiment tables with the paper's numbers as labelled reference columns.

Everything here reads files written by `linpath train` and `linpath
interpolate`; no number is typed in except the paper's, which come from
config/reference.yaml and stay in columns named `paper_*`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from .experiments import Plan
from .io import note, write_parquet, write_text, write_yaml

MAIN_PATH = {"path": "full", "start": "init", "bn_mode": "interpolate", "split": "train"}


# --- settings and measured groups (used by the workflow before training) ----


def barrier_groups(shapes: pd.DataFrame, widenable: list[str]) -> dict:
    """Groups whose group-wise path (θ₀ → θ_T, train split) has a barrier in most seeds."""
    sel = shapes[(shapes["path"] == "group") & (shapes["start"] == "init") & (shapes["split"] == "train")
                 & (shapes["bn_mode"] == "interpolate")]
    if sel.empty:
        raise ValueError("no group-wise paths in these shapes: set paths.groups for the referenced setting")
    share = sel.assign(b=sel["label"] == "B").groupby("group", sort=False)["b"].mean()
    return {"with_barrier": [g for g, s in share.items() if s >= 0.5],
            "without_barrier": [g for g, s in share.items() if s < 0.5],
            "barrier_share": {g: float(s) for g, s in share.items()},
            "widenable": list(widenable), "rule": "label B (see shapes.label_rule) in at least half of the seeds",
            "label_rule": str(sel["label_rule"].iloc[0])}


def write_barrier_groups(shape_files: list[str], run_yaml: str, out: str | Path, log: str | None = None) -> None:
    from .hparams import RunSpec
    from .models import widenable_groups

    shapes = pd.concat([pd.read_parquet(f) for f in shape_files], ignore_index=True)
    found = barrier_groups(shapes, widenable_groups(RunSpec.from_yaml(run_yaml).model))
    write_yaml(found, out)
    note(log, f"groups with a barrier: {found['with_barrier']} -> {out}")


# --- the long tables -----------------------------------------------------------


def _meta(plan: Plan, run_id: str) -> dict:
    run = plan.runs[run_id]
    s = plan.settings[run.setting]
    return {"run_id": run_id, "experiment": s.experiment, "setting": s.name, "intervention": s.intervention or s.name,
            "seed": run.seed}


def runs_table(plan: Plan, run_ids: list[str]) -> pd.DataFrame:
    rows = []
    for run_id in run_ids:
        d = plan.run_dir(run_id)
        spec = yaml.safe_load((d / "run.yaml").read_text())
        summary = yaml.safe_load((d / "summary.yaml").read_text())
        summary.pop("run", None)
        rows.append({**_meta(plan, run_id), "model": spec["model"]["arch"], "dataset": spec["data"]["dataset"],
                     "settings": json.dumps(spec, sort_keys=True), **summary})
    return pd.DataFrame(rows)


def collect(plan: Plan, run_ids: list[str], files: list[str]) -> pd.DataFrame:
    """Concatenate per-run parquet files, adding experiment / setting / seed columns."""
    frames = []
    for run_id, f in zip(run_ids, files):
        frame = pd.read_parquet(f)
        meta = _meta(plan, run_id)
        frame["run_id"] = run_id
        for key in ("experiment", "setting", "seed"):
            frame.insert(1, key, meta[key])
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def write_core_tables(plan: Plan, run_ids: list[str], out_dir: str | Path, log: str | None = None) -> None:
    out_dir = Path(out_dir)
    write_parquet(runs_table(plan, run_ids), out_dir / "runs.parquet")
    write_parquet(collect(plan, run_ids, [str(plan.paths_file(r)) for r in run_ids]), out_dir / "paths.parquet")
    write_parquet(collect(plan, run_ids, [str(plan.shapes_file(r)) for r in run_ids]), out_dir / "shapes.parquet")
    note(log, f"{len(run_ids)} runs -> {out_dir}/runs.parquet, paths.parquet, shapes.parquet")


# --- Table 1 ---------------------------------------------------------------------


def _select(shapes: pd.DataFrame, **where) -> pd.DataFrame:
    mask = np.ones(len(shapes), dtype=bool)
    for k, v in where.items():
        mask &= shapes[k].to_numpy() == v
    return shapes[mask]


def full_label(shapes: pd.DataFrame, setting: str) -> str | None:
    """Majority label of the setting's full path θ₀ → θ_T over seeds."""
    sel = _select(shapes, setting=setting, **MAIN_PATH)
    if sel.empty:
        return None
    counts = sel["label"].value_counts()
    return str(counts.index[0])


def group_barrier(shapes: pd.DataFrame, setting: str) -> float | None:
    """Mean Δ of the group-wise paths (train split, from init) over groups and seeds."""
    sel = _select(shapes, setting=setting, path="group", start="init", bn_mode="interpolate", split="train")
    return None if sel.empty else float(sel["delta"].mean())


def accuracy_change(runs: pd.DataFrame, setting: str, baseline: str) -> np.ndarray:
    """Test-accuracy differences to the baseline, paired by seed, in percentage points."""
    a = runs[runs["setting"] == setting].set_index("seed")["test_acc"]
    b = runs[runs["setting"] == baseline].set_index("seed")["test_acc"]
    common = a.index.intersection(b.index)
    return 100 * (a[common] - b[common]).to_numpy()


def _word(diff: float, tol: float) -> str:
    return "better" if diff > tol else "worse" if diff < -tol else "same"


def table1(plan: Plan, runs: pd.DataFrame, shapes: pd.DataFrame) -> pd.DataFrame:
    cfg = plan.config.get("shapes", {})
    ratio = float(cfg.get("layer_barrier_ratio", 1.25))
    acc_tol = float(cfg.get("acc_tol_pp", 0.5))
    rows = []
    for row in plan.config["table1"]:
        settings = [s for s in row["settings"] if (runs["setting"] == s).any()]
        labels, lb, diffs, words = [], [], [], []
        for s in settings:
            base = row.get("baseline") or plan.settings[s].baseline
            label = full_label(shapes, s)
            if label:
                labels.append(label)
            mine, theirs = group_barrier(shapes, s), group_barrier(shapes, base) if base else None
            if mine is not None and theirs is not None and theirs > 0:
                r = mine / theirs
                lb.append("H-LB" if r > ratio else "L-LB" if r < 1 / ratio else None)
            if base:
                d = accuracy_change(runs, s, base)
                if len(d):
                    diffs.append(d)
                    words.append(_word(float(d.mean()), acc_tol))
        all_diffs = np.concatenate(diffs) if diffs else np.array([])
        shape = "/".join(sorted(set(labels), key=["NB", "B", "P"].index)) if labels else "n/a"
        lb_tags = sorted({t for t in lb if t})
        if lb_tags:
            shape += ", " + "/".join(lb_tags)
        if not words:
            word = "n/a"
        elif len(set(words)) == 1:
            word = words[0]
        else:
            top = max(set(words), key=words.count)
            word = f"often {top}" if words.count(top) > len(words) / 2 else "mixed"
        paper_shape, paper_acc = str(row.get("paper_shape", "")), str(row.get("paper_acc", ""))
        ours_tokens = set(shape.replace(",", "/").replace(" ", "").split("/"))
        paper_tokens = set(paper_shape.replace(",", "/").replace(" ", "").split("/"))
        agrees_shape = bool(ours_tokens & paper_tokens)
        agrees_acc = word.replace("often ", "") == paper_acc.replace("often ", "")
        rows.append({
            "category": row.get("category", ""), "intervention": row["intervention"], "figure": row.get("figure", ""),
            "settings": ", ".join(settings), "shape": shape,
            "shape_rule": f"{shapes['label_rule'].iloc[0] if len(shapes) else ''}; H-LB/L-LB: mean group delta "
                          f"ratio to baseline >{ratio:g} / <{1 / ratio:.2f}",
            "acc_change_pp_mean": float(all_diffs.mean()) if len(all_diffs) else np.nan,
            "acc_change_pp_std": float(all_diffs.std(ddof=1)) if len(all_diffs) > 1 else np.nan,
            "acc_word": word, "acc_rule": f"better/worse: mean change beyond ±{acc_tol:g} points",
            "n_seeds": int(runs[runs["setting"].isin(settings)]["seed"].nunique()),
            "paper_shape": paper_shape, "paper_acc": paper_acc,
            "agrees_shape": agrees_shape, "agrees_acc": agrees_acc, "agrees": agrees_shape and agrees_acc,
        })
    return pd.DataFrame(rows)


def table1_markdown(t1: pd.DataFrame) -> str:
    cols = ["category", "intervention", "figure", "shape", "acc", "acc_word", "n_seeds", "paper_shape", "paper_acc",
            "agrees"]
    t = t1.assign(acc=[f"{m:+.2f} ± {s:.2f}" if pd.notna(m) else "n/a"
                       for m, s in zip(t1["acc_change_pp_mean"], t1["acc_change_pp_std"].fillna(0))])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in t.iterrows():
        lines.append("| " + " | ".join(str(r[c]) for c in cols) + " |")
    rule = t1["shape_rule"].iloc[0] if len(t1) else ""
    notes = [
        "", "Table 1 as measured by this pipeline. `acc`: test-accuracy change against the row's baseline, "
        "percentage points, mean ± std over seeds (paired by seed). `paper_*`: the paper's own labels (reference).",
        f"Shape labels: {rule}.", f"Accuracy words: {t1['acc_rule'].iloc[0] if len(t1) else ''}.",
    ]
    return "\n".join(lines + notes) + "\n"


def write_table1(plan: Plan, tables_dir: str | Path) -> None:
    tables_dir = Path(tables_dir)
    t1 = table1(plan, pd.read_parquet(tables_dir / "runs.parquet"), pd.read_parquet(tables_dir / "shapes.parquet"))
    write_parquet(t1, tables_dir / "table1.parquet")
    write_text(table1_markdown(t1), tables_dir / "table1.md")


# --- per-experiment tables with the paper's numbers ------------------------------


def experiment_table(name: str, spec: dict, runs: pd.DataFrame) -> pd.DataFrame:
    """Our train/test accuracy (%) per row setting, mean ± std over seeds, beside the paper's."""
    rows = []
    for row in spec["rows"]:
        sel = runs[runs["setting"] == row["setting"]]
        out = {"table": name, "row": row["label"], "setting": row["setting"], "n_seeds": len(sel)}
        for split in ("train", "test"):
            acc = 100 * sel[f"{split}_acc"]
            out[f"{split}_acc_mean"] = float(acc.mean()) if len(acc) else np.nan
            out[f"{split}_acc_std"] = float(acc.std(ddof=1)) if len(acc) > 1 else np.nan
        for key, value in row.items():
            if key.startswith("paper_"):
                out[key] = value
        rows.append(out)
    return pd.DataFrame(rows)


def write_experiment_table(plan: Plan, name: str, reference: dict, tables_dir: str | Path) -> None:
    tables_dir = Path(tables_dir)
    if name not in reference.get("tables", {}):
        raise KeyError(f"config/reference.yaml has no table {name!r}")
    frame = experiment_table(name, reference["tables"][name], pd.read_parquet(tables_dir / "runs.parquet"))
    write_parquet(frame, tables_dir / f"{name}.parquet")


def write_summary_tables(plan: Plan, reference: dict, tables_dir: str | Path, log: str | None = None) -> None:
    """Table 1 and every per-experiment table of config/reference.yaml."""
    write_table1(plan, tables_dir)
    for name in sorted(reference.get("tables", {})):
        write_experiment_table(plan, name, reference, tables_dir)
    note(log, f"wrote table1 and {len(reference.get('tables', {}))} experiment tables under {tables_dir}")
