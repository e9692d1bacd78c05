"""What a config will cost before anything is submitted: runs, epochs and path sweeps per rule, and
hours from the throughput figures the config records (`resources.throughput`).

The estimate is arithmetic on the plan, not a measurement: training reads `epochs x training images`
at the training rate and evaluates both splits after every evaluated epoch; a path sweep evaluates
every path (counted by linpath.paths.sweeps.plan_requests on the real model) at every alpha on every split,
plus the BN-recompute subset where asked. Runs that exist only if a measurement says so (E5 barrier
points, E11/E13/E16 group lists) are counted as if all of them train, so the totals are upper bounds
there. The figures say which device they come from, and whether they were measured or assumed.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

from ..foundations.hparams import RunSpec, SettingsError
from .plan import TRAINING_ROLES as TRAINING_RULES
from .plan import Plan

# (training, test) images of the datasets whose size is fixed by their files.
TORCHVISION_SIZES = {"cifar10": (50_000, 10_000), "cifar100": (50_000, 10_000),
                     "mnist": (60_000, 10_000), "fashion_mnist": (60_000, 10_000)}
DIGITS_IMAGES = 1797  # scikit-learn's digits; linpath.engine.data splits off DIGITS_TEST_FRACTION as the test set


@dataclass
class RuleCost:
    rule: str
    jobs: int = 0
    epochs: int = 0
    paths: int = 0  # path sweeps only: paths summed over runs (each evaluated at every alpha)
    path_points: int = 0  # paths x alphas
    hours: float = 0.0
    longest: tuple[float, str] = (0.0, "")  # (hours, run id) of the longest job


@dataclass
class Estimate:
    config_files: list[str]
    device: str
    measured: bool
    rules: dict[str, RuleCost] = field(default_factory=dict)
    measured_runs: int = 0  # runs that only train if a measurement decides so
    limits: dict[str, int] = field(default_factory=dict)  # rule -> runtime limit (minutes) from the config

    @property
    def hours(self) -> float:
        return sum(r.hours for r in self.rules.values())


def split_sizes(data) -> tuple[int, int]:
    """(training images after `subset`, test images) of a run's data settings."""
    from ..engine.data import DIGITS_TEST_FRACTION, SPIRAL_DEFAULTS

    if data.dataset in TORCHVISION_SIZES:
        n_train, n_test = TORCHVISION_SIZES[data.dataset]
    elif data.dataset in ("digits", "digits_rot4"):
        n_test = round(DIGITS_TEST_FRACTION * DIGITS_IMAGES)
        n_train = DIGITS_IMAGES - n_test
        if data.dataset == "digits_rot4":  # every image in four rotations
            n_train, n_test = 4 * n_train, 4 * n_test
    elif data.dataset == "spiral":
        points = {**SPIRAL_DEFAULTS, **data.spiral}
        n_train, n_test = int(points["n_train"]), int(points["n_test"])
    else:
        raise SettingsError(f"data.dataset: no size known for {data.dataset!r} (add it to linpath.study.cost)")
    return max(1, round(data.subset * n_train)) if data.subset < 1 else n_train, n_test


def rate(figures: dict, spec: RunSpec, key: str) -> float:
    """Images per second for this run: the `arch/dataset` entry, else the `arch` entry."""
    for name in (f"{spec.model.arch}/{spec.data.dataset}", spec.model.arch):
        if name in figures:
            return float(figures[name])
    raise SettingsError(f"resources.throughput.{key}: no figure for {spec.model.arch!r} "
                        f"(nor {spec.model.arch}/{spec.data.dataset})")


def estimate(config: dict, config_files: list[str] | None = None) -> Estimate:
    """Counts and hours per rule for every planned run of `config`."""
    from ..paths.sweeps import alpha_grid

    throughput = config.get("resources", {}).get("throughput")
    if not throughput:
        raise SettingsError("resources.throughput: missing; record the images/s of your device there "
                            "(see config/config.yaml)")
    plan = Plan(config)
    plan.check()
    placeholder = {s: {"with_barrier": [], "without_barrier": []} for s in plan.settings}
    out = Estimate(list(config_files or []), throughput["device"], bool(throughput["measured"]),
                   {rule: RuleCost(rule) for rule in [*TRAINING_RULES, "interpolate"]},
                   sum(plan.measured(r) for r in plan.runs),
                   {rule: int(size["runtime"]) for rule, size in config["resources"].items() if rule != "throughput"})
    path_counts: dict[tuple, int] = {}
    for run_id in plan.runs:
        spec = RunSpec.from_dict(plan.resolve(run_id, placeholder))
        n_train, n_test = split_sizes(spec.data)
        train_rate = rate(throughput["train_images_per_s"], spec, "train_images_per_s")
        eval_rate = rate(throughput["eval_images_per_s"], spec, "eval_images_per_s")
        t = spec.train
        epochs = t.epochs - (plan.runs[run_id].spawn_epoch or 0)  # a spawned child trains from epoch k on
        evaluations = math.ceil(epochs / t.eval_every) + 1
        hours = (epochs * n_train / train_rate + evaluations * (n_train + n_test) / eval_rate) / 3600
        _add(out.rules[plan.role(run_id)], run_id, hours, epochs=epochs)
        if not plan.swept(run_id):  # spawned children: measured in pairs (lmc_path, below)
            continue

        sweep = plan.sweep_spec(plan.runs[run_id].setting)
        key = (repr(spec.model), tuple(sweep.starts), sweep.full, sweep.groups, sweep.param_groups)
        if key not in path_counts:
            path_counts[key] = count_paths(spec.model, sweep)
        paths = path_counts[key] * len(sweep.bn_modes)
        alphas = len(alpha_grid(sweep.alphas))
        images = sum(n_train if split == "train" else n_test for split in sweep.splits)
        recompute = path_counts[key] * alphas * sweep.bn_subset if "recompute" in sweep.bn_modes else 0
        _add(out.rules["interpolate"], run_id, (paths * alphas * images + recompute) / eval_rate / 3600,
             paths=paths, path_points=paths * alphas)
    add_lmc_costs(plan, out, throughput)
    add_curvature_costs(plan, out, throughput)
    return out


def count_paths(model_spec, sweep) -> int:
    """Paths one sweep measures in one BN mode: what linpath.paths.sweeps.interpolate_run asks of the model."""
    from ..engine import models
    from ..paths.sweeps import plan_requests

    model = models.build(copy.deepcopy(model_spec))
    return sum(len(plan_requests(model, start, "", "", full=sweep.full or i > 0, groups=sweep.groups and i == 0,
                                 param_groups=sweep.param_groups and i == 0))
               for i, start in enumerate(sweep.starts))


def _add(rule: RuleCost, run_id: str, hours: float, **counts: int) -> None:
    rule.jobs += 1
    rule.hours += hours
    for name, value in counts.items():
        setattr(rule, name, getattr(rule, name) + value)
    rule.longest = max(rule.longest, (hours, run_id))


def format_estimate(est: Estimate) -> str:
    """The table `linpath plan` prints."""
    kind = "measured" if est.measured else "ASSUMED, not measured"
    lines = [f"config: {' + '.join(est.config_files) or '(given)'}",
             f"throughput ({kind}): {est.device}", "",
             f"{'rule':<24}{'jobs':>7}{'epochs':>9}{'paths':>8}{'paths x α':>11}{'hours':>10}  longest job"]
    for r in est.rules.values():
        if r.jobs:
            limit = est.limits.get("train" if r.rule in TRAINING_RULES else r.rule)
            over = f"  OVER the {limit} min limit" if limit and r.longest[0] * 60 > limit else ""
            lines.append(f"{r.rule:<24}{r.jobs:>7}{r.epochs or '':>9}{r.paths or '':>8}{r.path_points or '':>11}"
                         f"{r.hours:>10.1f}  {r.longest[0] * 60:.0f} min ({r.longest[1]}){over}")
    runs = sum(r.jobs for rule, r in est.rules.items() if rule in TRAINING_RULES)
    lines += [f"{'total':<24}{'':>7}{'':>9}{'':>8}{'':>11}{est.hours:>10.1f}", "",
              f"{runs} runs, {est.rules['interpolate'].jobs} path sweeps; on a cluster each run's training and "
              f"sweep are one job (group run_<run id>), {runs} jobs asking for one GPU each.",
              f"{est.measured_runs} of the runs train only where a measured barrier asks for them: counted as "
              "if all do (an upper bound).",
              f"Estimated hours on that device: {est.hours:.1f} (throughput {kind})."]
    if not est.measured:
        lines.append("Replace resources.throughput with your device's figures (python -m linpath.bench train "
                     "--device cuda prints images/s) and set measured: true.")
    return "\n".join(lines)


# --- instability pairs and planes ----------------------------------------------------------------------


def add_lmc_costs(plan, estimate, throughput: dict) -> None:
    """Add the pair and plane sweeps of `plan` to an Estimate (rules lmc_path, plane)."""
    from ..foundations.hparams import alpha_values
    from .lmc_plan import ALIGNED, LmcPlan

    lmc = LmcPlan(plan)
    placeholder = {s: {"with_barrier": [], "without_barrier": []} for s in plan.settings}

    def sizes(run_id: str):
        spec = RunSpec.from_dict(plan.resolve(run_id, placeholder))
        return spec, split_sizes(spec.data), rate(throughput["eval_images_per_s"], spec, "eval_images_per_s")

    inst = lmc.instability
    alphas = len(alpha_values(inst.alphas))
    for pair in lmc.pairs.values():
        spec, (n_train, n_test), eval_rate = sizes(pair.ends[0])
        lines = math.comb(len(pair.ends), 2)
        images = sum(n_train if s == "train" else n_test for s in inst.splits)
        recompute = lines * alphas * inst.bn_subset if "recompute" in inst.bn_modes and spec.model.batchnorm else 0
        paths = lines * len(inst.bn_modes)
        if pair.kind == ALIGNED:  # linpath.paths.lmc.sweep_aligned (weight matching itself costs no images)
            if spec.model.batchnorm:  # REPAIR is the recompute sweep, measured whatever bn_modes says
                paths = len(set(inst.bn_modes) | {"recompute"})
                recompute = alphas * inst.bn_subset
            else:  # the REPAIRed line once, and its statistics: one pass over the subset per α
                paths = len(inst.bn_modes) + 1
                recompute = (alphas + 2) * inst.bn_subset
        rule = estimate.rules.setdefault("lmc_path", RuleCost("lmc_path"))
        _add(rule, f"{pair.run_id}/{pair.name}", (paths * alphas * images + recompute) / eval_rate / 3600,
             paths=paths, path_points=paths * alphas)
    for job in lmc.planes.values():
        spec, (n_train, n_test), eval_rate = sizes(job.run_id)
        points = job.spec.evaluations()  # the grid, and a random plane's line
        images = sum(n_train if s == "train" else n_test for s in job.spec.splits)
        recompute = points * job.spec.bn_subset if job.spec.bn_mode == "recompute" and spec.model.batchnorm else 0
        rule = estimate.rules.setdefault("plane", RuleCost("plane"))
        _add(rule, f"{job.plane}/{job.run_id}", (points * images + recompute) / eval_rate / 3600,
             paths=job.spec.points + (1 if job.spec.random else 0), path_points=points)


# --- curvature along paths -------------------------------------------------------------------------------

# A Hessian-vector product by double backward costs about this many forward passes of the same images:
# measured on the default's base ResNet-18 (width 8, 256 digits, 2-core CPU): 0.087 s per product against
# the evaluator's 14 000 images/s forward, a ratio of 4.8.
HVP_FORWARDS = 5


def add_curvature_costs(plan, estimate, throughput: dict) -> None:
    """Add the curvature jobs of `plan` (rule curvature): per run, at every α of every measured path and BN
    mode, `iterations` Lanczos products (the cap: an upper bound), one residual check and `probes` trace
    products, each HVP_FORWARDS forward passes of `subset` images, plus the BN-recompute subset per α."""
    from ..engine import models
    from ..foundations.hparams import alpha_values
    from .curvature_plan import CurvaturePlan

    curv = CurvaturePlan(plan)
    spec = curv.spec
    if "interpolate" in estimate.limits:  # the rule asks for interpolate's resources (workflow/rules/curvature.smk)
        estimate.limits.setdefault("curvature", estimate.limits["interpolate"])
    placeholder = {s: {"with_barrier": [], "without_barrier": []} for s in plan.settings}
    alphas = len(alpha_values(spec.alphas))
    for run_id, job in curv.jobs.items():
        run_spec = RunSpec.from_dict(plan.resolve(run_id, placeholder))
        sweep = plan.sweep_spec(job.setting)
        n_train, _ = split_sizes(run_spec.data)
        eval_rate = rate(throughput["eval_images_per_s"], run_spec, "eval_images_per_s")
        groups = len(models.groups(models.build(copy.deepcopy(run_spec.model))))
        # `barrier` counts as every group (an upper bound, as for the measured runs)
        n_groups = groups if {"all", "barrier"} & set(job.groups) else len(set(job.groups))
        paths = (1 + n_groups) * len(sweep.bn_modes)
        products = paths * alphas * (spec.iterations + 1 + spec.probes)
        recompute = paths * alphas * sweep.bn_subset if "recompute" in sweep.bn_modes and run_spec.model.batchnorm else 0
        images = products * HVP_FORWARDS * min(spec.subset, n_train) + recompute
        rule = estimate.rules.setdefault("curvature", RuleCost("curvature"))
        _add(rule, run_id, images / eval_rate / 3600, paths=paths, path_points=paths * alphas)
