"""Which runs the curvature along paths is measured on, and with what: the plan the Snakefile reads
(workflow/rules/curvature.smk).

Config `curvature` (linpath.foundations.hparams.CurvatureSpec): `settings` names the settings and, for each,
the group-wise paths measured besides the full path θ₀ → θ_T; `seeds` the seeds (empty: all). Each run is one
job (`linpath curvature`, linpath.paths.curvature) in the BN modes and with the BN-recompute subset of the
setting's own sweep. A run that did not train gives rows that say so.

Pure Python (no torch): the Snakefile plans these at parse time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..foundations.hparams import CurvatureSpec, SettingsError


@dataclass(frozen=True)
class CurvatureJob:
    run_id: str
    setting: str
    seed: int
    groups: tuple[str, ...]  # group names, `all` or `barrier` (linpath.paths.curvature.resolve_groups)

    @property
    def barrier(self) -> bool:
        return "barrier" in self.groups


class CurvaturePlan:
    """The curvature jobs of a config, on top of its run plan (linpath.study.plan.Plan)."""

    def __init__(self, plan):
        self.plan = plan
        self.spec = CurvatureSpec.from_config(plan.config.get("curvature"))
        seeds = self.spec.seeds or plan.seeds
        for seed in seeds:
            if seed not in plan.seeds:
                raise SettingsError(f"curvature.seeds: {seed} is not a seed of the config ({plan.seeds})")
        self.jobs: dict[str, CurvatureJob] = {}
        for setting, groups in self.spec.settings.items():
            where = f"curvature.settings.{setting}"
            if setting not in plan.settings or plan.settings[setting].aux:
                raise SettingsError(f"{where}: {setting!r} is not a (non-helper) setting of the config")
            if "barrier" in groups and not plan.sweep_spec(setting).groups:
                raise SettingsError(f"{where}: `barrier` reads the setting's barrier groups, which need its "
                                    f"group-wise paths (settings.{setting}.paths.groups: true)")
            for seed in seeds:
                run_id = plan.run_of(setting, seed)
                if plan.measured(run_id) or not plan.swept(run_id):
                    raise SettingsError(f"{where}: its runs exist only where a measurement decides (or are measured "
                                        "in pairs); name a setting whose runs always train")
                self.jobs[run_id] = CurvatureJob(run_id, setting, seed, tuple(groups))

    # --- what the workflow asks for ---------------------------------------------------------

    def runs(self) -> list[str]:
        return list(self.jobs)

    def files(self) -> list[str]:
        return [str(self.plan.layout.curvature(r)) for r in self.jobs]

    def sweeps(self) -> list[str]:
        """The runs' sweeps: the loss paths the figure draws beside the curvature."""
        return [str(self.plan.layout.sweep(r)) for r in self.jobs]

    def targets(self) -> list[str]:
        if not self.jobs:
            return []
        layout = self.plan.layout
        return [str(layout.table("curvature")), str(layout.figure("curvature"))]

    def inputs(self, run_id: str) -> dict[str, str]:
        """What a job waits for: the run's outcome (and, for `barrier`, the setting's barrier-groups file)."""
        job, layout = self.jobs[run_id], self.plan.layout
        out = {"outcome": str(layout.run_file(run_id, "outcome"))}
        if job.barrier:
            out["groups"] = str(layout.groups_file(job.setting))
        return out

    def args(self, run_id: str) -> str:
        """`linpath curvature` arguments beyond the common ones: the group-wise paths."""
        job = self.jobs[run_id]
        out = f"--groups-json '{json.dumps(list(job.groups))}'"
        if job.barrier:
            out += f" --barrier-groups {self.plan.layout.groups_file(job.setting)}"
        return out

    def spec_json(self) -> str:
        return json.dumps(self.spec.measurement(), sort_keys=True)

    def sweep_json(self, run_id: str) -> str:
        """The parts of the setting's sweep the curvature follows: its BN modes and BN-recompute subset (the
        rest of `paths` changes nothing here, so a change to it reruns no curvature job)."""
        sweep = self.plan.sweep_spec(self.jobs[run_id].setting)
        return json.dumps({"bn_modes": sweep.bn_modes, "bn_subset": sweep.bn_subset}, sort_keys=True)

    def meta(self, run_id: str) -> str:
        job = self.jobs[run_id]
        return json.dumps({"run": run_id, "setting": job.setting, "seed": job.seed,
                           "experiment": self.plan.settings[job.setting].experiment}, sort_keys=True)
