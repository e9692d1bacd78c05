"""The tables of a study from what has finished so far, while the rest still runs.

A study of hundreds of runs takes days; its researchers read Table 1 on the second day, not only at the
end. The workflow's own table rules wait for every run they aggregate, so this reads the run folders as
they are: each planned run is trained, skipped, diverged or failed (its outcome.yaml and, for runs that
measurements decide, the barrier files), or pending (nothing decided yet, or its sweep not written). The
tables are built from the finished runs alone, into their own folder (`results/so_far/`), beside a list
of what they do not rest on yet; the workflow's tables are left alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from ..foundations.io import note, write_parquet, write_text
from ..foundations.outcome import read_outcome
from ..study.plan import Plan
from .tables import collect, run_columns, runs_table, table1, table1_markdown


@dataclass
class Progress:
    """Where every planned run stands: `finished` have a sweep (trained, or completed without training);
    `skipped` were decided away by a measurement (run id -> why); `pending` are neither (run id -> what
    it waits for)."""

    finished: list[str]
    skipped: dict[str, str]
    pending: dict[str, str]


def _read_yaml(path: Path) -> dict | None:
    return yaml.safe_load(path.read_text()) if path.is_file() else None


def progress(plan: Plan) -> Progress:
    layout = plan.layout
    barriers = {r.barrier_from: _read_yaml(layout.barrier_yaml(r.barrier_from))
                for r in plan.runs.values() if r.barrier_from}
    groups = {s: _read_yaml(layout.groups_file(s)) for r in plan.runs.values() for s in r.groups_from}
    finished, skipped, pending = [], {}, {}
    for run_id, run in plan.runs.items():
        waiting = [f"barrier of {p}" for p in [run.barrier_from] if p and barriers[p] is None]
        waiting += [f"barrier groups of {s}" for s in run.groups_from if groups[s] is None]
        if not waiting and plan.measured(run_id):
            closure = plan.upstream_closure([run_id])
            if all(barriers.get(p) is not None for r in closure for p in [plan.runs[r].barrier_from] if p) and \
                    all(groups.get(s) is not None for r in closure for s in plan.runs[r].groups_from):
                why = plan.skip_reason(run_id, groups, barriers)
                if why:
                    skipped[run_id] = why
                    continue
            else:
                waiting.append("measurements upstream")
        if waiting:
            pending[run_id] = "waits for " + ", ".join(waiting)
            continue
        outcome = read_outcome(layout.run_dir(run_id))
        if outcome is None:
            pending[run_id] = "not finished training"
        elif plan.swept(run_id) and not (layout.sweep(run_id).is_file() and layout.shapes(run_id).is_file()):
            pending[run_id] = "trained; paths not measured yet" if outcome.trained else f"{outcome.status}; sweep not written"
        else:
            finished.append(run_id)
    return Progress(finished, skipped, pending)


def progress_markdown(p: Progress, plan: Plan) -> str:
    total = len(plan.runs)
    lines = [f"Runs finished so far: {len(p.finished)} of {total} ({len(p.skipped)} skipped, "
             f"{len(p.pending)} pending)."]
    if p.pending:
        lines += ["", "Pending runs (not in these tables yet):"]
        lines += [f"- `{r}` ({plan.runs[r].setting}, seed {plan.runs[r].seed}): {why}" for r, why in p.pending.items()]
    return "\n".join(lines) + "\n"


def write_so_far(plan: Plan, out_dir: str | Path, log: str | None = None) -> Progress:
    """runs / paths / shapes / Table 1 of the finished runs into `out_dir`, with the pending runs listed
    (runs.parquet holds them too, with status `pending`)."""
    out_dir = Path(out_dir)
    p = progress(plan)
    runs = runs_table(plan, p.finished, p.skipped)
    if p.pending:
        pending = pd.DataFrame([{**run_columns(plan, r), "status": "pending", "status_reason": why, "failure": ""}
                                for r, why in p.pending.items()])
        runs = pd.concat([runs, pending], ignore_index=True)
    swept = [r for r in p.finished if plan.swept(r)]  # spawned children are measured in pairs (linpath.paths.lmc)
    paths = collect(plan, swept, [str(plan.layout.sweep(r)) for r in swept])
    shapes = collect(plan, swept, [str(plan.layout.shapes(r)) for r in swept])
    write_parquet(runs, out_dir / "runs.parquet")
    write_parquet(paths, out_dir / "paths.parquet")
    write_parquet(shapes, out_dir / "shapes.parquet")
    t1 = table1(plan, runs, shapes)
    write_parquet(t1, out_dir / "table1.parquet")
    text = f"# Table 1 so far\n\n{progress_markdown(p, plan)}\n{table1_markdown(t1, runs)}"
    write_text(text, out_dir / "table1.md")
    note(log, f"{len(p.finished)} finished, {len(p.skipped)} skipped, {len(p.pending)} pending -> {out_dir}")
    return p
