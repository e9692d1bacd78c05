"""How a run ended: the one file every downstream job reads before it reads a run's states.

A study of hundreds of runs has some that fail for reasons that would repeat with the same
settings: the loss diverges, or a required target (`train.until_train_acc`) is not reached.
Those runs end with `outcome.yaml` (status `diverged` or `failed`) instead of a hole in the
workflow, and every job that reads them completes too: a sweep of a failed run is empty, a run
that starts from a failed run's state is `skipped` with the upstream's reason. Transient failures
(a killed job, a node failure, a time limit) write nothing here: the job fails, the workflow
manager retries it, and the run resumes from its checkpoint.

Pure Python (no torch): the Snakefile and the tables read it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from .io import write_yaml
from .layout import RunDir
STATUSES = ("trained", "skipped", "diverged", "failed")
FAILED_STATUSES = ("diverged", "failed")


@dataclass
class Outcome:
    """`status` one of STATUSES; `kind` says which failure (diverged, target_not_reached,
    upstream_failed, no_barrier, ...); `reason` is the one line a table prints."""

    status: str
    reason: str = ""
    kind: str = ""
    run: str = ""
    epoch: int | None = None
    metrics: dict = field(default_factory=dict)  # last metrics before the failure, where there were any
    settings_digest: str = ""

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"outcome status {self.status!r} is not one of {', '.join(STATUSES)}")

    @property
    def trained(self) -> bool:
        return self.status == "trained"

    @property
    def failed(self) -> bool:
        return self.status in FAILED_STATUSES

    def short(self) -> str:
        """`<status>: <reason>` or just the status of a trained run."""
        return self.status if self.trained else f"{self.status} ({self.kind}): {self.reason}"


def outcome_path(run_dir: str | Path) -> Path:
    return RunDir(run_dir).outcome


def write_outcome(outcome: Outcome, run_dir: str | Path) -> Path:
    path = outcome_path(run_dir)
    write_yaml({k: v for k, v in asdict(outcome).items() if v not in (None, "", {})} | {"status": outcome.status}, path)
    return path


def read_outcome(run_dir: str | Path) -> Outcome | None:
    """The outcome of the run in `run_dir`, or None while it has none (not run yet, or running)."""
    path = outcome_path(run_dir)
    if not path.is_file():
        return None
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict) or "status" not in raw:
        raise ValueError(f"{path}: not an outcome file (no 'status')")
    known = {k: raw[k] for k in Outcome.__dataclass_fields__ if k in raw}
    return Outcome(**known)


def upstream_failure(run_dirs: list[str | Path]) -> Outcome | None:
    """The first of these upstream runs that did not train, as the `skipped` outcome of a run that
    starts from it: "upstream <run> failed: <kind>". None when every one trained."""
    for run_dir in run_dirs:
        found = read_outcome(run_dir)
        if found is None:
            raise FileNotFoundError(f"{outcome_path(run_dir)}: the upstream run has not finished")
        if not found.trained:
            name = found.run or Path(run_dir).name
            word = "failed" if found.failed else "was skipped"
            return Outcome("skipped", kind="upstream_failed",
                           reason=f"upstream {name} {word}: {found.kind or found.status}")
    return None
