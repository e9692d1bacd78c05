"""Seed packing: K seeds of one setting trained in one process (linpath.bench.pack) write what K single
runs write: the same files, the same metrics and states up to float rounding, the same
checkpoints; a diverging seed stops alone; a killed pack resumes.

About the tolerance. A pack computes in grouped kernels (one convolution with groups=K) what a
single run computes one model at a time: the sums run in another order, ~1e-7 relative per
operation. An MLP then follows its single run to 1e-7 over whole runs. A BatchNorm ResNet does
only as long as no ReLU input lands within rounding of zero: where one does, its gradient
switches and the runs part. Measured with ResNet-18 width 4 on all the digits, lr 0.05, 3 epochs:
final states of pack and single run apart by up to 5.5 (max |Δ|), and so are two single runs
that differ only in the CPU threads (1 vs 2: 3.4) or in oneDNN on/off (5.9). The ResNet
comparison therefore trains 2 epochs of 3 steps at lr 0.005 on 10% of the digits, where pack and
single runs agree to ~5e-7 on this build (at 25% and lr 0.01, seed 1's single run already differs
from itself under 2 threads by 4e-4, and the pack by as much). Should that test alone fail after a
change of CPU, torch or the data path, compare the single run with itself under
`torch.set_num_threads(2)` before suspecting the pack.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from conftest import assert_states_equal, checkpoint_epoch, kill_when, load_tensors, run_dict, subprocess_env
from linpath.engine import models
from linpath.foundations.hparams import RunSpec, SettingsError
from linpath.foundations.io import load_checkpoint
from linpath.bench.pack import StackedModel, check_packable, train_pack
from linpath.engine.train import RunResult, TargetNotReached, TrainingDiverged, initial_state, train

TOL = 1e-5
RUN_FILES = {"run.yaml", "init.pt", "final.pt", "metrics.parquet", "summary.yaml", "outcome.yaml"}


def seed_specs(model: str, seeds=(0, 1), **sections) -> list[RunSpec]:
    """Runs of one setting that differ in their three seeds (init, data order/augmentation, data subset)."""
    specs = []
    for s in seeds:
        raw = run_dict(model, **sections)
        raw["name"] = f"seed{s}"
        raw["init"]["seed"], raw["train"]["seed"], raw["data"]["seed"] = s, 100 + s, s
        specs.append(RunSpec.from_dict(raw))
    return specs


def max_abs_diff(a: dict, b: dict) -> float:
    assert list(a) == list(b), "same keys in the same order"
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def assert_close_states(a: dict, b: dict, rel: bool = False) -> None:
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        if not a[k].is_floating_point():
            assert torch.equal(a[k], b[k]), k  # num_batches_tracked
            continue
        scale = float(a[k].abs().max()) if rel else 1.0
        assert float((a[k].double() - b[k].double()).abs().max()) <= TOL * max(scale, 1e-30), k


def assert_same_run(single: Path, packed: Path, rel: bool = False) -> None:
    """Two run directories hold the same files and the same run up to float rounding."""
    assert {p.name for p in single.iterdir()} == {p.name for p in packed.iterdir()}
    assert (single / "run.yaml").read_text() == (packed / "run.yaml").read_text()
    assert_states_equal(load_tensors(single / "init.pt"), load_tensors(packed / "init.pt"))
    for f in sorted(single.glob("*.pt")):
        assert_close_states(load_tensors(f), load_tensors(packed / f.name), rel)
    a, b = pd.read_parquet(single / "metrics.parquet"), pd.read_parquet(packed / "metrics.parquet")
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=TOL if rel else 0, atol=TOL)
    sa, sb = (yaml.safe_load((d / "summary.yaml").read_text()) for d in (single, packed))
    assert list(sa) == list(sb)
    for key, value in sa.items():
        if isinstance(value, float):
            assert sb[key] == pytest.approx(value, abs=TOL, rel=TOL if rel else 0), key
        else:
            assert sb[key] == value, key


# --- the stacked model ------------------------------------------------------------------------------


def test_stacked_resnet_is_k_models_with_their_own_batchnorm_statistics():
    specs = seed_specs("resnet18_w4")
    for s in specs:
        s.model.in_channels, s.model.input_size = 1, 8  # what training resolves from the digits
    spec = specs[0].model
    states = [initial_state(s) for s in specs]
    singles = []
    for state in states:
        model = models.build(spec)
        model.load_state_dict(state)
        singles.append(model.train())
    stacked = StackedModel(spec, states).train()
    x = torch.randn(2, 32, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    x[1] = 3 * x[1] + 1  # other statistics for seed 1
    logits = stacked(x)
    assert logits.shape == (2, 32, 10)
    for k, model in enumerate(singles):
        assert (logits[k] - model(x[k])).abs().max() <= TOL
        assert_close_states(model.state_dict(), stacked.state(k))
    assert not torch.allclose(stacked.state(0)["bn1.running_mean"], stacked.state(1)["bn1.running_mean"])
    assert int(stacked.state(1)["bn1.num_batches_tracked"]) == 1


# --- a pack of 2 equals two single runs ---------------------------------------------------------------

SETTINGS = {
    "mlp": dict(data={"subset": 0.9}, train={"epochs": 3, "lr": 0.1, "save_epochs": [1]}),
    "resnet18_w4": dict(data={"subset": 0.1, "augment": "standard"},
                        train={"epochs": 2, "lr": 0.005, "save_epochs": [1]}),
}


@pytest.mark.parametrize("model", list(SETTINGS))
def test_pack_of_two_equals_two_single_runs(tmp_path, model):
    specs = seed_specs(model, **SETTINGS[model])
    for s, spec in enumerate(specs):
        train(spec, tmp_path / f"single{s}", progress=False)
    outcomes = train_pack(seed_specs(model, **SETTINGS[model]), [tmp_path / "pack0", tmp_path / "pack1"],
                          progress=False)
    assert all(isinstance(o, RunResult) for o in outcomes)
    for s in range(2):
        assert_same_run(tmp_path / f"single{s}", tmp_path / f"pack{s}")
        assert RUN_FILES | {"epoch_1.pt"} == {p.name for p in (tmp_path / f"pack{s}").iterdir()}
        assert outcomes[s].run_dir == tmp_path / f"pack{s}" and outcomes[s].epochs == specs[s].train.epochs
    # control: the seeds are different runs, far apart at this tolerance (so the pack did not train one seed twice)
    finals = [load_tensors(tmp_path / f"pack{s}" / "final.pt") for s in range(2)]
    assert max_abs_diff(*finals) > 1e-2
    metrics = [pd.read_parquet(tmp_path / f"pack{s}" / "metrics.parquet") for s in range(2)]
    assert metrics[0]["train_loss"].iloc[-1] != pytest.approx(metrics[1]["train_loss"].iloc[-1], abs=1e-3)


def test_finished_seeds_are_not_trained_again(tmp_path):
    outs = [tmp_path / "a", tmp_path / "b"]
    train_pack(seed_specs("mlp", train={"epochs": 1}), outs, progress=False)
    stamps = [(o / "final.pt").stat().st_mtime_ns for o in outs]
    again = train_pack(seed_specs("mlp", train={"epochs": 1}), outs, progress=False)
    assert [(o / "final.pt").stat().st_mtime_ns for o in outs] == stamps
    assert [r.epochs for r in again] == [1, 1]


def test_seeds_leave_the_pack_at_their_own_target_epoch(tmp_path):
    t = {"epochs": 12, "lr": 0.02, "until_train_acc": 0.85}
    seeds = (0, 1)
    for s, spec in zip(seeds, seed_specs("mlp", seeds, train=t)):
        train(spec, tmp_path / f"single{s}", progress=False)
    lengths = [len(pd.read_parquet(tmp_path / f"single{s}" / "metrics.parquet")) for s in seeds]
    assert lengths[0] != lengths[1] and max(lengths) <= 12, "premise: the seeds reach the target at other epochs"
    train_pack(seed_specs("mlp", seeds, train=t), [tmp_path / f"pack{s}" for s in seeds], progress=False)
    for s in seeds:
        assert_same_run(tmp_path / f"single{s}", tmp_path / f"pack{s}")


@pytest.mark.xfail(strict=False, reason=(
    "on the 2-core VM with AVX-512 (2026-12-06) the packed seed's model after its second epoch differs from "
    "the single run's by up to 0.024 (after one epoch: 1.2e-6), also at 1a3c17f; bench.pack is used by no rule "
    "and the cause is not found yet"))
def test_checkpoint_of_a_packed_seed_is_the_single_runs_checkpoint(tmp_path):
    """A target that cannot be reached keeps checkpoint.pt of the last epoch: compare them key by key."""
    t = {"epochs": 2, "until_train_acc": 1.0, "checkpoint_every": 5}
    single = tmp_path / "single"
    with pytest.raises(TargetNotReached):
        train(seed_specs("resnet18_w4", data={"subset": 0.25}, train=t)[1], single, progress=False)
    outcomes = train_pack(seed_specs("resnet18_w4", data={"subset": 0.25}, train=t),
                          [tmp_path / "p0", tmp_path / "p1"], progress=False)
    assert all(isinstance(o, TargetNotReached) for o in outcomes)
    assert outcomes[1].run == "seed1" and outcomes[1].epochs == 2 and outcomes[1].target == 1.0
    a, b = load_checkpoint(single / "checkpoint.pt"), load_checkpoint(tmp_path / "p1" / "checkpoint.pt")
    assert list(a) == list(b)
    assert (a["epoch"], a["digest"], a["rng_cuda"]) == (b["epoch"], b["digest"], b["rng_cuda"]) == (2, a["digest"], None)
    assert torch.equal(a["rng_torch"], b["rng_torch"]), "the model stream, as the single run leaves it"
    assert a["scheduler"] == b["scheduler"]
    assert_close_states(a["model"], b["model"])
    assert a["optimizer"]["param_groups"] == b["optimizer"]["param_groups"]
    assert a["optimizer"]["state"].keys() == b["optimizer"]["state"].keys()
    for index, entry in a["optimizer"]["state"].items():
        assert_close_states(entry, b["optimizer"]["state"][index])
    pd.testing.assert_frame_equal(pd.DataFrame(a["metrics"]), pd.DataFrame(b["metrics"]), rtol=0, atol=TOL)
    assert {p.name for p in single.iterdir()} == {p.name for p in (tmp_path / "p1").iterdir()}
    stamp = (tmp_path / "p1" / "checkpoint.pt").stat().st_mtime_ns
    again = train_pack(seed_specs("resnet18_w4", data={"subset": 0.25}, train=t),
                       [tmp_path / "p0", tmp_path / "p1"], progress=False)
    assert all(isinstance(o, TargetNotReached) for o in again), "a retry fails at once"
    assert (tmp_path / "p1" / "checkpoint.pt").stat().st_mtime_ns == stamp


# --- a diverging seed ---------------------------------------------------------------------------------

DIVERGE = dict(data={"subset": 0.25}, train={"epochs": 4, "lr": 800.0})  # seed 0 overflows in epoch 4, seeds 1, 2 do not


def test_a_diverging_seed_stops_alone(tmp_path):
    seeds = (0, 1, 2)
    specs = seed_specs("mlp", seeds, **DIVERGE)
    with pytest.raises(TrainingDiverged) as single_error:  # premise: what seed 0 does on its own
        train(specs[0], tmp_path / "single0", progress=False)
    for s, spec in zip(seeds[1:], specs[1:]):
        train(spec, tmp_path / f"single{s}", progress=False)

    outs = [tmp_path / f"pack{s}" for s in seeds]
    outcomes = train_pack(seed_specs("mlp", seeds, **DIVERGE), outs, progress=False)
    err = outcomes[0]
    assert isinstance(err, TrainingDiverged) and not math.isfinite(err.loss)
    assert (err.run, err.epoch) == ("seed0", single_error.value.epoch)
    assert str(err) == f"run seed0: training loss became {err.loss} in epoch {err.epoch}"
    assert {p.name for p in outs[0].iterdir()} == {p.name for p in (tmp_path / "single0").iterdir()} \
        == {"run.yaml", "failed.yaml", "outcome.yaml"}  # the states of a diverged run are removed
    failed, single = (yaml.safe_load((d / "failed.yaml").read_text()) for d in (outs[0], tmp_path / "single0"))
    same = lambda record: {k: v for k, v in record.items() if k not in ("loss", "message", "metrics")}  # noqa: E731
    assert same(failed) == same(single) and failed["kind"] == "diverged" and failed["epoch"] == err.epoch
    assert failed["metrics"] == pytest.approx(single["metrics"], rel=TOL)  # the last epoch evaluated before it
    assert not math.isfinite(failed["loss"]) and not math.isfinite(single["loss"])
    for s, outcome in zip(seeds[1:], outcomes[1:]):  # weights of ~1e3 at this LR: compared relative to their size
        assert isinstance(outcome, RunResult) and outcome.epochs == 4
        assert_same_run(tmp_path / f"single{s}", tmp_path / f"pack{s}", rel=True)


# --- kill and resume ----------------------------------------------------------------------------------

KILLED = {
    "mlp": dict(train={"epochs": 30, "lr": 0.05, "save_epochs": [3]}),
    "resnet18_w4": dict(data={"subset": 0.25, "augment": "standard"},
                        train={"epochs": 6, "lr": 0.05, "milestones": [4], "save_epochs": [2]}),
}


PACK_PROCESS = """import sys
from linpath.bench.pack import train_pack
from linpath.foundations.hparams import RunSpec
train_pack([RunSpec.from_yaml(c) for c in sys.argv[1::2]], sys.argv[2::2], threads=1, progress=False)
"""


def _kill_pack_after_checkpoints(write_config, specs: list[RunSpec], outs: list[Path]) -> None:
    """Train a pack in a process of its own and SIGKILL it once every seed has checkpoint.pt of a finished epoch."""
    args = [sys.executable, "-c", PACK_PROCESS]
    for spec, out in zip(specs, outs):
        args += [str(write_config(spec.to_dict(), f"{out.name}.yaml")), str(out)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=subprocess_env())
    kill_when(proc, lambda: all(checkpoint_epoch(out / "checkpoint.pt") for out in outs), "the pack's process")


@pytest.mark.parametrize("model", list(KILLED))
def test_killed_pack_resumes_each_seed(tmp_path, write_config, model):
    """A: uninterrupted. B: killed and resumed, bit-identical to A. C: B's copy with seed 1's checkpoint
    removed, so seed 1 starts again while seed 0 waits at its epoch: seed 0 is still bit-identical
    (its slice of the pack computes the same), seed 1 trains alone until level, then joins.
    D: seed 0 of the killed pack finished as a single run from the pack's checkpoint."""
    specs = lambda: seed_specs(model, **KILLED[model])  # noqa: E731
    whole = [tmp_path / "A0", tmp_path / "A1"]
    train_pack(specs(), whole, progress=False)

    killed = [tmp_path / "B0", tmp_path / "B1"]
    _kill_pack_after_checkpoints(write_config, specs(), killed)
    epochs = [checkpoint_epoch(o / "checkpoint.pt") for o in killed]
    assert all(1 <= e < specs()[0].train.epochs for e in epochs) and not (killed[0] / "final.pt").exists()
    for name in ("C0", "C1", "D0"):
        shutil.copytree(killed[int(name[1])], tmp_path / name)
    (tmp_path / "C1" / "checkpoint.pt").unlink()
    init_stamp = (killed[0] / "init.pt").stat().st_mtime_ns

    train_pack(specs(), killed, progress=False)
    assert (killed[0] / "init.pt").stat().st_mtime_ns == init_stamp, "resumed, not started again"
    for a, b in zip(whole, killed):
        assert {p.name for p in a.iterdir()} == {p.name for p in b.iterdir()} == RUN_FILES | {
            f"epoch_{specs()[0].train.save_epochs[0]}.pt"}
        for f in a.glob("*.pt"):
            assert_states_equal(load_tensors(f), load_tensors(b / f.name))
        pd.testing.assert_frame_equal(pd.read_parquet(a / "metrics.parquet"), pd.read_parquet(b / "metrics.parquet"),
                                      check_exact=True)

    behind = [tmp_path / "C0", tmp_path / "C1"]
    train_pack(specs(), behind, progress=False)
    assert_states_equal(load_tensors(whole[0] / "final.pt"), load_tensors(behind[0] / "final.pt"))
    if model == "mlp":
        assert_same_run(whole[1], behind[1])
    else:  # chaotic at float rounding (see the module docstring): a finished run is what is asserted
        assert RUN_FILES <= {p.name for p in behind[1].iterdir()}

    result = train(specs()[0], tmp_path / "D0", progress=False)
    assert result.epochs == specs()[0].train.epochs
    if model == "mlp":
        assert_same_run(whole[0], tmp_path / "D0")


# --- settings ---------------------------------------------------------------------------------------


def test_runs_that_differ_in_more_than_seeds_are_refused(tmp_path):
    a, b = seed_specs("mlp")
    check_packable([a, b], [tmp_path / "a", tmp_path / "b"])
    b.train.lr = 0.2
    with pytest.raises(SettingsError, match=r"differ only in init\.seed, train\.seed, data\.seed: train\.lr is 0\.05 "
                                            r"in run seed0 and 0\.2 in run seed1"):
        train_pack([a, b], [tmp_path / "a", tmp_path / "b"], progress=False)
    a, b = seed_specs("mlp")
    b.model.hidden = [32]
    with pytest.raises(SettingsError, match=r"model\.hidden is \[16\]"):
        check_packable([a, b], [tmp_path / "a", tmp_path / "b"])
    with pytest.raises(SettingsError, match="distinct output directories"):
        check_packable(seed_specs("mlp"), [tmp_path / "a", tmp_path / "x" / ".." / "a"])
    with pytest.raises(SettingsError, match="one output directory per run"):
        check_packable(seed_specs("mlp"), [tmp_path / "a"])
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists(), "nothing written"


def test_a_pack_writes_the_evaluation_cache_of_each_data_seed(tmp_path):
    outs = [tmp_path / "a", tmp_path / "b"]
    outcomes = train_pack(seed_specs("mlp", train={"epochs": 1}), outs, progress=False, eval_cache=tmp_path / "cache")
    assert [o.run_dir for o in outcomes] == outs and RunSpec.from_yaml(outs[1] / "run.yaml").init.seed == 1
    assert len(list((tmp_path / "cache").glob("*/train.pt"))) == 2, "one training split per data.seed"


@pytest.mark.slow  # torch.compile takes about half a minute on two CPU cores
def test_compiled_pack_reports_compile_time(tmp_path):
    t = {"epochs": 2, "lr": 0.1, "compile": True}
    outs = [tmp_path / "c0", tmp_path / "c1"]
    compiled = train_pack(seed_specs("mlp", train=t), outs, progress=False)
    eager = train_pack(seed_specs("mlp", train={**t, "compile": False}), [tmp_path / "e0", tmp_path / "e1"],
                       progress=False)
    for c, e, out in zip(compiled, eager, outs):
        assert c.compile_seconds > 0 and e.compile_seconds is None
        assert yaml.safe_load((out / "summary.yaml").read_text())["compile_seconds"] == pytest.approx(c.compile_seconds)
        assert c.train_loss == pytest.approx(e.train_loss, rel=1e-3), "the same training, compiled"
