"""Where every file of a study lives: the one home of every file name.

The planner, the command line and the Snakemake rules all take their paths from here (rules pass
wildcard patterns such as "{run_id}" as the names). Pure Python: the Snakefile reads it at parse time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# Files inside a run directory (written by linpath.engine.train; read by the path evaluator and the tables).
RUN_FILES = {
    "settings": "run.yaml",          # the run's full settings (RunSpec)
    "init": "init.pt",               # θ₀
    "final": "final.pt",             # θ_T, written last: its presence marks a finished run
    "metrics": "metrics.parquet",    # per evaluated epoch: lr, train/test loss and accuracy
    "summary": "summary.yaml",       # final metrics and distance travelled
    "checkpoint": "checkpoint.pt",   # resume state, removed when the run ends
    "failed": "failed.yaml",         # why a run stopped without a final state (divergence)
    "outcome": "outcome.yaml",       # how the run ended (linpath.foundations.outcome): written last, always
}
BARRIER_POINTS = ("before", "at", "after")  # the states a barrier directory holds, besides barrier.yaml


def epoch_file(epoch: int | str) -> str:
    """θ after `epoch`, kept for "epoch t → final" paths."""
    return f"epoch_{epoch}.pt"


def spawn_file(epoch: int | str) -> str:
    """The training state after `epoch` (weights, optimiser, schedule) that children are spawned from."""
    return f"spawn_{epoch}.pt"


class RunDir:
    """The files of one run directory, by role: `RunDir(path).final`, `.epoch(k)`, `.spawn(k)`.

    Every module names a run's files through this (or Layout.run_file), never by typing the names."""

    __slots__ = ("path",)

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunDir) and other.path == self.path

    def __hash__(self) -> int:
        return hash(self.path)

    def file(self, what: str) -> Path:
        """A file by its role (a key of RUN_FILES)."""
        if what not in RUN_FILES:
            raise KeyError(f"{what!r} is not a run file; the roles are {sorted(RUN_FILES)}")
        return self.path / RUN_FILES[what]

    settings = property(lambda self: self.file("settings"), doc="run.yaml: the run's full settings")
    init = property(lambda self: self.file("init"), doc="θ₀")
    final = property(lambda self: self.file("final"), doc="θ_T; its presence marks a finished run")
    metrics = property(lambda self: self.file("metrics"), doc="metrics of the evaluated epochs")
    summary = property(lambda self: self.file("summary"), doc="final metrics and distance travelled")
    checkpoint = property(lambda self: self.file("checkpoint"), doc="resume state, removed when the run ends")
    failed = property(lambda self: self.file("failed"), doc="why a run stopped without a final state")
    outcome = property(lambda self: self.file("outcome"), doc="how the run ended, written last")

    def epoch(self, epoch: int) -> Path:
        return self.path / epoch_file(epoch)

    def spawn(self, epoch: int) -> Path:
        return self.path / spawn_file(epoch)

    def epoch_states(self) -> list[Path]:
        """Every θ after an epoch that the directory holds."""
        return sorted(self.path.glob(epoch_file("*")))

    def spawn_states(self) -> list[Path]:
        """Every spawn state that the directory holds."""
        return sorted(self.path.glob(spawn_file("*")))


@dataclass(frozen=True)
class Layout:
    """The folders of one study, under its results folder and its working directory."""

    results: Path = Path("results")

    def __post_init__(self) -> None:
        object.__setattr__(self, "results", Path(self.results))

    # --- per run ---------------------------------------------------------------------
    def run_dir(self, run_id: str) -> Path:
        return self.results / "runs" / run_id

    def run(self, run_id: str) -> RunDir:
        """A run directory's files by role."""
        return RunDir(self.run_dir(run_id))

    def run_file(self, run_id: str, what: str) -> Path:
        """A file of a run directory by its role (a key of RUN_FILES)."""
        return self.run(run_id).file(what)

    def sweep(self, run_id: str) -> Path:
        """Loss and accuracy along every measured path of a run (long format)."""
        return self.results / "sweeps" / f"{run_id}.parquet"

    def shapes(self, run_id: str) -> Path:
        """One shape row (Δ, label, ...) per path and split of a run."""
        return self.results / "shapes" / f"{run_id}.parquet"

    def barrier_dir(self, run_id: str) -> Path:
        """E5: the states at and around the barrier of a run's full path."""
        return self.results / "derived" / "barrier" / run_id

    def barrier_yaml(self, run_id: str) -> Path:
        return self.barrier_dir(run_id) / "barrier.yaml"

    def barrier_state(self, run_id: str, point: str) -> Path:
        return self.barrier_dir(run_id) / f"{point}.pt"

    def lmc_sweep(self, run_id: str, pair: str) -> Path:
        """Loss and error on the straight line between two trained states: children spawned from the
        run (`pair` k<k>) or the run and another seed's (`pair` independent); linpath.paths.lmc."""
        return self.results / "lmc" / run_id / f"{pair}.parquet"

    def plane_sweep(self, plane: str, run_id: str) -> Path:
        """A loss plane through three states of a run, and the run's trajectory projected on it."""
        return self.results / "planes" / plane / f"{run_id}.parquet"

    def curvature(self, run_id: str) -> Path:
        """The top Hessian eigenvalue and the Hessian trace along a run's paths (linpath.paths.curvature)."""
        return self.results / "curvature" / f"{run_id}.parquet"

    # --- per setting, table, figure --------------------------------------------------
    def groups_file(self, setting: str) -> Path:
        """E11/E13/E16: which groups of a setting's runs have barriers."""
        return self.results / "derived" / "barrier_groups" / f"{setting}.yaml"

    def table(self, name: str, suffix: str = ".parquet") -> Path:
        return self.results / "tables" / f"{name}{suffix}"

    def figure(self, name: str, suffix: str = ".png") -> Path:
        return self.results / "figures" / f"{name}{suffix}"

    def config_record(self) -> Path:
        """The workflow config (files and --config merged) that the tables and figures are built from."""
        return self.results / "derived" / "config.json"

    def job_config(self, job: str) -> Path:
        """The config as one table or figure job reads it: rewritten when the parts it reads change
        (linpath.study.config.job_reads), not for the rest."""
        return self.results / "derived" / "job_config" / f"{job}.json"

    def eval_cache(self) -> Path:
        """Cached evaluation splits (training set without augmentation, test set)."""
        return self.results / "cache" / "eval"

    def scratch(self) -> Path:
        """Files a sweep makes for itself (other random inits)."""
        return self.results / "sweeps"

    # --- job records (relative to the working directory, beside results/) ----------------
    @staticmethod
    def log(rule: str, name: str) -> str:
        return f"logs/{rule}/{name}.log"

    @staticmethod
    def benchmark(rule: str, name: str) -> str:
        return f"benchmarks/{rule}/{name}.tsv"


# --- what a job's command finds in its environment ---------------------------------------------------

JOB_VARIABLES = ("PYTHONPATH", "LINPATH_CHECKPOINT_MINUTES")


def job_environment(package_root: str | Path, python: str | None, checkpoint_minutes: float,
                    current: dict[str, str] | None = None) -> dict[str, str]:
    """The variables under which a job's `python -m linpath` finds this checkout's package (PYTHONPATH)
    and, unless `python` is None (conda: the environment's own python comes first), this interpreter
    (PATH). They live in the environment rather than in the command because Snakemake compares a rule's
    command and params to decide a rerun: a path of this machine there would rerun a study that was
    moved, cloned elsewhere or given a new virtualenv."""
    import os

    current = dict(os.environ) if current is None else current
    out = {"PYTHONPATH": os.pathsep.join([str(package_root), *filter(None, [current.get("PYTHONPATH")])]),
           "LINPATH_CHECKPOINT_MINUTES": str(checkpoint_minutes)}
    if python is not None:
        out["PATH"] = os.pathsep.join([str(Path(python).parent), current.get("PATH", "")])
    return out
