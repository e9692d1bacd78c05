"""Curvature along paths (linpath.paths.curvature): λ_max and the Hutchinson trace agree with an exact Hessian
(torch.autograd.functional.hessian) of a tiny MLP on the digits, a quadratic with a known spectrum gives it
back, the Hessian of a group-wise path is over that group's parameters at the path's state, BN statistics
are the sweep's in both modes, and the verb and the plan produce what the workflow reads.

Real data (the digits), real models (an MLP, a BN ResNet of width 4), states from real training.
"""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from torch.func import functional_call

from conftest import REPO, run_cli, run_spec_with
from linpath.engine import models
from linpath.foundations.hparams import CurvatureSpec, SettingsError
from linpath.foundations.io import load_state
from linpath.foundations.outcome import Outcome, write_outcome
from linpath.paths.curvature import (COLUMNS, LossHessian, curvature_at, hutchinson_trace, lanczos_top,
                                     path_curvature)
from linpath.paths.evaluator import EvalSplit, PathEvaluator


def exact_hessian(model, names, x, y, loss="ce") -> torch.Tensor:
    """The Hessian of the mean loss with respect to `names`, in float64, by torch.autograd.functional.hessian."""
    model = copy.deepcopy(model).double()  # the caller's model stays fp32
    fixed = {k: v.detach().double() for k, v in model.state_dict().items()}
    shapes = [fixed[k].shape for k in names]
    flat = torch.cat([fixed[k].reshape(-1) for k in names])

    def f(v):
        parts = {k: p.view(s) for k, p, s in zip(names, v.split([math.prod(s) for s in shapes]), shapes)}
        return torch.nn.functional.cross_entropy(functional_call(model, {**fixed, **parts}, (x.double(),)), y)

    return torch.autograd.functional.hessian(f, flat)


@pytest.fixture(scope="module")
def tiny_mlp(digits):
    """An MLP 64-8-10 on 300 digits, a few SGD steps from its init (not at a critical point)."""
    from linpath.engine.train import resolve

    spec = resolve(run_spec_with("mlp", {"hidden": [8]}), digits)
    torch.manual_seed(0)
    model = models.build(spec.model)
    x, y = digits.train_x[:300], digits.train_y[:300]
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(20):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return spec, model.eval(), x, y


def test_lambda_max_and_trace_match_the_exact_hessian_of_a_tiny_mlp(tiny_mlp):
    _, model, x, y = tiny_mlp
    names = [k for k, _ in model.named_parameters()]
    spec = CurvatureSpec(iterations=200, tol=1e-7, probes=40, seed=3)
    got = curvature_at(model, names, x, y, "ce", spec)
    exact = exact_hessian(model, names, x, y)
    eigenvalues = torch.linalg.eigvalsh(exact)
    assert got["parameters"] == exact.shape[0] == 64 * 8 + 8 + 8 * 10 + 10
    assert abs(got["lambda_max"] - eigenvalues[-1].item()) <= 1e-4 * abs(eigenvalues[-1].item())
    assert got["residual"] < 1e-4
    assert abs(got["trace"] - exact.trace().item()) <= 3 * got["trace_se"]
    assert got["trace_se"] > 0
    # The estimate is not the exact value by construction: another seed draws other probes.
    other = curvature_at(model, names, x, y, "ce", CurvatureSpec(iterations=200, tol=1e-7, probes=40, seed=4))
    assert other["trace"] != got["trace"]
    assert other["lambda_max"] == pytest.approx(got["lambda_max"], rel=1e-4)


def test_a_quadratic_returns_its_spectrum():
    """H = Q diag(s) Qᵀ: Lanczos finds the largest eigenvalue, not the largest in magnitude (−9 here), and
    Rademacher probes of a diagonal H are exact (zᵀDz = trace D when every z_i² = 1)."""
    n = 60
    spectrum = torch.cat([torch.tensor([4.0, 2.5, -9.0], dtype=torch.float64), torch.linspace(-1, 1, n - 3,
                                                                                                dtype=torch.float64)])
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=torch.Generator().manual_seed(1), dtype=torch.float64))
    h = q @ torch.diag(spectrum) @ q.T
    top = lanczos_top(lambda v: h @ v, n, iterations=n, tol=1e-10, generator=torch.Generator().manual_seed(0),
                      dtype=torch.float64)
    assert top.value == pytest.approx(4.0, rel=1e-10)
    assert top.residual < 1e-8 and top.iterations <= n
    trace, se, samples = hutchinson_trace(lambda v: h @ v, n, probes=200, generator=torch.Generator().manual_seed(0),
                                          dtype=torch.float64)
    assert abs(trace - spectrum.sum().item()) <= 3 * se and se > 0
    diagonal = torch.diag(spectrum)
    trace, se, _ = hutchinson_trace(lambda v: diagonal @ v, n, probes=5, generator=torch.Generator().manual_seed(0),
                                    dtype=torch.float64)
    assert trace == pytest.approx(spectrum.sum().item(), abs=1e-12) and se == pytest.approx(0.0, abs=1e-12)


def test_a_group_path_takes_the_hessian_of_that_groups_parameters_at_the_paths_state(tiny_mlp, digits):
    spec, end_model, x, y = tiny_mlp
    torch.manual_seed(5)
    start = {k: v.clone() for k, v in models.build(spec.model).state_dict().items()}
    end = {k: v.detach().clone() for k, v in end_model.state_dict().items()}
    evaluator = PathEvaluator(models.build(spec.model), [EvalSplit("train", x, y)], "ce", fold_bn=False)
    group = list(evaluator.groups)[0]
    cspec = CurvatureSpec(iterations=200, tol=1e-7, probes=2)
    rows = path_curvature(evaluator, start, end, [0.0, 0.4], x, y, "ce", cspec, group=group, bn_mode="interpolate")
    keys = evaluator.moving_keys(group)
    state = {k: (torch.lerp(start[k], end[k], 0.4) if k in keys else end[k]) for k in end}
    model = models.build(spec.model)
    model.load_state_dict(state)
    exact = torch.linalg.eigvalsh(exact_hessian(model.eval(), keys, x, y))
    assert rows[1]["alpha"] == 0.4 and rows[1]["path"] == "group" and rows[1]["group"] == group
    assert rows[1]["parameters"] == sum(end[k].numel() for k in keys) < sum(v.numel() for v in end.values())
    assert rows[1]["lambda_max"] == pytest.approx(exact[-1].item(), rel=1e-4)
    assert rows[0]["lambda_max"] != pytest.approx(rows[1]["lambda_max"], rel=1e-3)  # another point, another Hessian


@pytest.mark.parametrize("mode", ["interpolate", "recompute"])
def test_the_loss_at_each_alpha_is_the_sweeps_in_its_bn_mode(mode, trained_resnet, digits):
    """BN runs in eval mode with the path's statistics as the sweep computes them: the loss the curvature is
    taken of equals the sweep's loss on the same subset, in both modes (which differ from each other)."""
    from linpath.engine.train import resolve

    run, spec, _ = trained_resnet
    spec = resolve(spec, digits)
    x, y = digits.train_x[:96], digits.train_y[:96]
    start, end = load_state(run / "init.pt"), load_state(run / "final.pt")

    def evaluator():
        return PathEvaluator(models.build(spec.model), [EvalSplit("train", x, y)], "ce", batch_size=64,
                             bn_data=digits.train_x[:128].clone(), bn_batch_size=64, fold_bn=False)

    alphas = [0.0, 0.5]
    rows = path_curvature(evaluator(), start, end, alphas, x, y, "ce", CurvatureSpec(iterations=3, probes=2, batch_size=64),
                          group="all", bn_mode=mode)
    sweep = evaluator().sweep(start, end, alphas, bn_mode=mode)
    assert [r["loss"] for r in rows] == pytest.approx(sweep["loss"].tolist(), rel=1e-5)
    other = "recompute" if mode == "interpolate" else "interpolate"
    assert rows[1]["loss"] != pytest.approx(evaluator().sweep(start, end, [0.5], bn_mode=other)["loss"][0], rel=1e-3)


def test_one_chunk_and_several_give_the_same_products(tiny_mlp):
    _, model, x, y = tiny_mlp
    names = [k for k, _ in model.named_parameters()]
    v = torch.randn(sum(p.numel() for p in model.parameters()), generator=torch.Generator().manual_seed(0))
    whole = LossHessian(model, names, x, y, "ce", batch_size=1000)
    chunks = LossHessian(model, names, x, y, "ce", batch_size=64)
    assert whole.value == pytest.approx(chunks.value, rel=1e-6)
    torch.testing.assert_close(whole.hvp(v), chunks.hvp(v), rtol=1e-4, atol=1e-6)


# --- the verb, the plan ------------------------------------------------------------------------------------


SWEEP = json.dumps({"bn_modes": ["interpolate"], "bn_subset": 64})
SPEC = json.dumps({"alphas": "0:1:11", "subset": 128, "probes": 3, "iterations": 10})


def test_the_verb_writes_the_columns_for_the_full_and_group_paths(trained_mlp, tmp_path):
    run, _, _ = trained_mlp
    out = tmp_path / "deep" / "c.parquet"
    meta = json.dumps({"run": "r1", "setting": "mlp", "seed": 0, "experiment": "E1"})
    proc = run_cli(["curvature", "--run", str(run), "--eval-cache", str(tmp_path / "cache"), "--spec-json", SPEC,
                    "--sweep-json", SWEEP, "--groups-json", '["layer2"]', "--meta-json", meta, "--out", str(out),
                    "--threads", "1", "--no-progress"])
    assert proc.returncode == 0, proc.stderr
    frame = pd.read_parquet(out)
    assert list(frame.columns) == COLUMNS
    for column in ("run", "path", "group", "alpha", "lambda_max", "trace", "trace_se", "iterations", "residual",
                   "setting", "seed", "bn_mode"):
        assert column in frame.columns
    assert len(frame) == 2 * 11 and set(frame["group"]) == {"all", "layer2"} and set(frame["status"]) == {"ok"}
    assert frame["alpha"].round(12).tolist()[:11] == [round(a, 12) for a in np.linspace(0, 1, 11)]
    assert (frame["run"] == "r1").all() and (frame["subset"] == 128).all()
    assert frame["lambda_max"].notna().all() and (frame["iterations"] >= 1).all() and (frame["trace_se"] > 0).all()
    # At α = 1 both paths reach θ_T, and a group's Hessian is a block of the full one: its top eigenvalue is
    # no larger (Cauchy's interlacing theorem), up to the Lanczos tolerance.
    end = frame[frame["alpha"] == 1.0].set_index("group")["lambda_max"]
    assert end["layer2"] <= end["all"] * (1 + 1e-3)
    assert sorted(p.name for p in out.parent.iterdir()) == ["c.parquet"], "exactly the file it was told"
    assert "cpu seconds" in proc.stdout


def test_a_run_that_did_not_train_gives_rows_that_say_so(tmp_path):
    run = tmp_path / "runs" / "failed"
    write_outcome(Outcome("diverged", reason="loss nan at epoch 2", kind="diverged"), run)
    out = tmp_path / "c.parquet"
    proc = run_cli(["curvature", "--run", str(run), "--spec-json", SPEC, "--sweep-json", SWEEP,
                    "--meta-json", '{"run": "failed", "setting": "s", "seed": 0}', "--out", str(out), "--no-progress"])
    assert proc.returncode == 0, proc.stderr
    frame = pd.read_parquet(out)
    assert list(frame["status"]) == ["skipped"] and "diverged" in frame["status_reason"][0]
    assert frame["lambda_max"].isna().all()


def test_an_unknown_group_is_an_error_naming_it(trained_mlp, tmp_path):
    run, _, _ = trained_mlp
    proc = run_cli(["curvature", "--run", str(run), "--eval-cache", str(tmp_path / "cache"), "--spec-json", SPEC,
                    "--sweep-json", SWEEP, "--groups-json", '["block9"]', "--out", str(tmp_path / "c.parquet")])
    assert proc.returncode == 2 and "block9" in proc.stderr, proc.stderr
    assert not (tmp_path / "c.parquet").exists()


def repo_config(*names) -> dict:
    from linpath.foundations.convert import deep_merge

    config = {}
    for name in names:
        config = deep_merge(config, yaml.safe_load((REPO / "config" / name).read_text()))
    return config


def test_the_default_config_plans_curvature_on_base_and_the_spiral():
    from linpath.study.curvature_plan import CurvaturePlan
    from linpath.study.plan import Plan
    from linpath.foundations.hparams import alpha_values

    plan = Plan(repo_config("config.yaml"))
    curv = CurvaturePlan(plan)
    assert {job.setting for job in curv.jobs.values()} == {"base", "mlp_spiral"}
    assert len(alpha_values(curv.spec.alphas)) >= 11
    assert all(plan.runs[r].setting == job.setting for r, job in curv.jobs.items())
    assert curv.targets() == [str(plan.layout.table("curvature")), str(plan.layout.figure("curvature"))]
    assert set(json.loads(curv.spec_json())) == set(CurvatureSpec.MEASUREMENT)
    paper = CurvaturePlan(Plan(repo_config("config.yaml", "paper.yaml")))
    assert {"base", "mlp_spiral"} <= {job.setting for job in paper.jobs.values()} and len(paper.jobs) > len(curv.jobs)


def test_the_plan_prices_the_curvature_jobs():
    from linpath.study.cost import estimate

    rule = estimate(repo_config("config.yaml")).rules["curvature"]
    assert rule.jobs == 2 and rule.hours > 0 and rule.path_points == 11 * (1 + 1 + 3)  # base full; spiral full + 3 layers


@pytest.mark.parametrize("change, words", [
    ({"settings": {"no_such": []}}, "curvature.settings.no_such"),
    ({"settings": {"mlp_spiral": ["barrier"]}}, "paths.groups"),
    ({"seeds": [7]}, "curvature.seeds"),
    ({"tol": 2.0}, "curvature.tol"),
])
def test_a_bad_curvature_config_is_an_error_naming_the_setting(change, words):
    from linpath.study.curvature_plan import CurvaturePlan
    from linpath.study.plan import Plan

    config = repo_config("config.yaml")
    config["curvature"] = {**config["curvature"], **change}
    with pytest.raises(SettingsError, match=words.replace(".", r"\.")):
        CurvaturePlan(Plan(config))


def test_the_figure_draws_the_tables_values_beside_the_sweeps_loss(trained_mlp, tmp_path):
    from linpath.foundations.hparams import SweepSpec
    from linpath.paths.curvature import curvature_job
    from linpath.paths.sweeps import interpolate_run
    from linpath.report.curvature_figures import curvature_figure

    run, _, _ = trained_mlp
    cache = tmp_path / "cache"
    sweep = SweepSpec(alphas="0:1:6")
    table, _ = curvature_job(run, cache, CurvatureSpec(alphas="0:1:6", subset=64, probes=2, iterations=5), sweep, [],
                             {"run": "r1", "setting": "mlp", "seed": 0, "experiment": "E1"})
    sweeps = interpolate_run(run, cache, sweep, run_id="r1", progress=False)
    fig, plotted = curvature_figure(table, sweeps)
    lam = plotted[plotted["panel"] == "lambda_max"]
    assert lam["value"].tolist() == table.sort_values("alpha")["lambda_max"].tolist()
    loss = plotted[plotted["panel"] == "loss"]
    train = sweeps[(sweeps["split"] == "train") & (sweeps["path"] == "full") & (sweeps["start"] == "init")]
    assert loss["value"].tolist() == train.sort_values("alpha")["loss"].tolist() and len(loss) == 6
