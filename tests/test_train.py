"""Training runs: learning, the run directory, schedules, sparse metrics, partial re-initialisation,
group LRs, step settings, divergence, a missed accuracy target and settings errors."""

from __future__ import annotations

import math
import pickle
import re

import pandas as pd
import pytest
import torch
import yaml

from conftest import assert_states_equal, load_tensors, run_dict, run_spec
from linpath.cli import commands as cli
from linpath.engine import data, models
from linpath.foundations.hparams import RunSpec, SettingsError
from linpath.foundations.io import save_torch
from linpath.engine.objective import strict_fp32
from linpath.engine.train import (StepSettings, TargetNotReached, TrainingDiverged, evaluate, failure_outcome,
                                  initial_state, make_optimizer, train)
from linpath.foundations.outcome import read_outcome

METRIC_COLUMNS = ["epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc"]


def read_metrics(out) -> pd.DataFrame:
    return pd.read_parquet(out / "metrics.parquet")


# --- a tiny run learns and leaves a complete run directory -------------------------


def test_mlp_run_directory(trained_mlp):
    out, spec, result = trained_mlp
    for name in ("run.yaml", "init.pt", "final.pt", "metrics.parquet", "epoch_1.pt", "epoch_2.pt"):
        assert (out / name).is_file(), name
    assert not (out / "epoch_3.pt").exists() and not (out / "checkpoint.pt").exists()
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")], "no temporary files left"

    metrics = read_metrics(out)
    assert set(METRIC_COLUMNS) <= set(metrics.columns)
    assert metrics["epoch"].tolist() == [0, 1, 2, 3]
    assert (metrics["run"] == spec.name).all()
    assert result.epochs == 3
    last = metrics.iloc[-1]
    assert (result.train_loss, result.test_acc) == (last["train_loss"], last["test_acc"])
    assert str(out) in result.summary() and "3 epochs" in result.summary()


def test_mlp_learns(trained_mlp):
    out, _, _ = trained_mlp
    metrics = read_metrics(out)
    first, last = metrics.iloc[0], metrics.iloc[-1]
    assert last["train_loss"] < 0.5 * first["train_loss"]
    assert last["test_loss"] < 0.5 * first["test_loss"]
    assert last["train_acc"] > 0.8 and last["test_acc"] > 0.7  # chance is 0.1
    assert first["test_acc"] < 0.3


def test_run_yaml_rebuilds_the_model_and_its_metrics(trained_mlp):
    out, _, _ = trained_mlp
    spec = RunSpec.from_yaml(out / "run.yaml")
    assert (spec.model.num_classes, spec.model.in_channels, spec.model.input_size) == (10, 1, 8)
    model = models.build(spec.model)
    model.load_state_dict(load_tensors(out / "final.pt"))  # strict: every key, right shapes
    prep = data.prepare(spec.data)
    test_loss, test_acc = evaluate(model, prep.test_x, prep.test_y, spec.train.loss)
    last = read_metrics(out).iloc[-1]
    assert math.isclose(test_loss, last["test_loss"], rel_tol=1e-6)
    assert test_acc == last["test_acc"]
    # θ₀ is re-derivable from the settings alone
    assert_states_equal(load_tensors(out / "init.pt"), initial_state(spec))


def test_saved_epochs_are_the_states_between(trained_mlp):
    out, _, _ = trained_mlp
    states = [load_tensors(out / f) for f in ("init.pt", "epoch_1.pt", "epoch_2.pt", "final.pt")]
    for a, b in zip(states, states[1:]):
        assert a.keys() == b.keys()
        assert not torch.equal(a["layers.0.weight"], b["layers.0.weight"])


def test_finished_run_is_not_retrained(trained_mlp):
    out, spec, result = trained_mlp
    stamp = (out / "final.pt").stat().st_mtime_ns, (out / "final.pt").stat().st_ino
    again = train(RunSpec.from_dict(spec.to_dict()), out, progress=False)
    assert ((out / "final.pt").stat().st_mtime_ns, (out / "final.pt").stat().st_ino) == stamp
    assert (again.epochs, again.train_loss, again.test_acc) == (result.epochs, result.train_loss, result.test_acc)


def test_directory_of_another_run_is_refused(trained_mlp):
    out, spec, _ = trained_mlp
    other = RunSpec.from_dict(spec.to_dict())
    other.train.lr = 0.2
    with pytest.raises(SettingsError, match="already holds a run with other settings"):
        train(other, out, progress=False)


def test_resnet18_learns(tmp_path):
    out = tmp_path / "resnet"
    result = train(run_spec("resnet18", train={"epochs": 3, "save_epochs": [2]}), out, progress=False)
    metrics = read_metrics(out)
    assert metrics["epoch"].tolist() == [0, 1, 2, 3]
    first, last = metrics.iloc[0], metrics.iloc[-1]
    assert last["train_loss"] < 0.5 * first["train_loss"]
    assert last["train_acc"] > 0.6 and last["test_acc"] > 0.5  # chance is 0.1
    assert (out / "epoch_2.pt").is_file() and not (out / "epoch_1.pt").exists()
    spec = RunSpec.from_yaml(out / "run.yaml")
    model = models.build(spec.model)
    model.load_state_dict(load_tensors(out / "final.pt"))
    assert model.conv1.weight.shape == (8, 1, 3, 3)
    assert result.test_acc == last["test_acc"]


def test_step_schedule_and_early_stop(tmp_path):
    out = tmp_path / "sched"
    train(run_spec(train={"epochs": 3, "lr": 0.1, "milestones": [2], "gamma": 0.1}), out, progress=False)
    lrs = read_metrics(out)["lr"].tolist()
    assert lrs == pytest.approx([0.1, 0.1, 0.1, 0.01])

    out = tmp_path / "until"  # the stop rule needs every epoch's accuracy, whatever eval_every says
    train(run_spec(train={"epochs": 30, "lr": 0.1, "until_train_acc": 0.5, "eval_every": 5}), out, progress=False)
    metrics = read_metrics(out)
    assert metrics["train_acc"].iloc[-1] >= 0.5
    assert len(metrics) < 31 and (metrics["train_acc"].iloc[:-1] < 0.5).all()
    assert metrics["epoch"].tolist() == list(range(len(metrics)))


def test_metrics_every_few_epochs_keep_the_epochs_that_matter(tmp_path):
    out = tmp_path / "sparse"
    t = {"epochs": 7, "eval_every": 3, "milestones": [4], "save_epochs": [1], "lr": 0.1}
    train(run_spec(train=t), out, progress=False)
    metrics = read_metrics(out)
    assert metrics["epoch"].tolist() == [0, 1, 3, 4, 6, 7]  # start, save_epochs, every 3rd, milestone, last
    assert metrics["lr"].tolist() == pytest.approx([0.1] * 4 + [0.01] * 2), "lr is the one the epoch trained with"
    dense = tmp_path / "dense"
    train(run_spec(train={**t, "eval_every": 1}), dense, progress=False)
    assert_states_equal(load_tensors(out / "final.pt"), load_tensors(dense / "final.pt"))
    pd.testing.assert_frame_equal(metrics, read_metrics(dense).set_index("epoch").loc[[0, 1, 3, 4, 6, 7]].reset_index()
                                  [metrics.columns], check_exact=True)


def test_summary_records_how_the_steps_ran(trained_mlp):
    out, _, _ = trained_mlp
    summary = yaml.safe_load((out / "summary.yaml").read_text())
    assert (summary["step_device"], summary["step_precision"], summary["step_channels_last"]) == ("cpu", "fp32", False)
    assert "compile_seconds" not in summary
    spec = RunSpec.from_yaml(out / "run.yaml")
    assert (spec.train.precision, spec.train.channels_last, spec.train.compile) == ("bf16", True, False), \
        "the settings are recorded as given; they apply on CUDA only"


def test_step_settings_apply_on_cuda_only():
    t = run_spec(train={"precision": "bf16", "channels_last": True}).train
    cpu = StepSettings.of(t, torch.device("cpu"), "resnet18")
    assert (cpu.bf16, cpu.channels_last) == (False, False)
    cuda = StepSettings.of(t, torch.device("cuda"), "resnet18")
    assert (cuda.bf16, cuda.channels_last) == (True, True)
    assert cuda.record()["step_precision"] == "bf16"
    assert not StepSettings.of(t, torch.device("cuda"), "mlp").channels_last, "an MLP has no image layout"
    fp32 = run_spec(train={"precision": "fp32", "channels_last": False}).train
    with strict_fp32():  # where the steps run: TF32 off (outside it, the record follows the flags: below)
        assert StepSettings.of(fp32, torch.device("cuda"), "resnet18").record()["step_precision"] == "fp32"


def test_strict_fp32_restores_the_tf32_flags():
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        with pytest.raises(ZeroDivisionError):
            with strict_fp32():
                assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
                1 / 0
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_missed_target_is_an_error_without_final_state(tmp_path, write_config, capsys):
    out = tmp_path / "short"
    spec = run_spec(name="too-short", train={"epochs": 2, "lr": 0.001, "until_train_acc": 0.99, "checkpoint_every": 5})
    with pytest.raises(TargetNotReached) as err:
        train(spec, out, progress=False)
    assert isinstance(err.value, SettingsError), "the CLI reports it as a one-line error"
    assert (err.value.run, err.value.target, err.value.epochs) == ("too-short", 0.99, 2) and err.value.reached < 0.99
    assert re.fullmatch(r"run too-short: train accuracy 0\.\d{4} \(\d+ of 1438 training images wrong\) < "
                        r"train\.until_train_acc=0\.99 after "
                        r"train\.epochs=2; no final\.pt written", str(err.value))
    for name in ("final.pt", "metrics.parquet", "summary.yaml"):
        assert not (out / name).exists(), name
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 2, "the last state is kept, although checkpoint_every is 5"
    stamp = (out / "checkpoint.pt").stat().st_mtime_ns
    with pytest.raises(TargetNotReached):  # a retry fails at once, without training again
        train(spec, out, progress=False)
    assert (out / "checkpoint.pt").stat().st_mtime_ns == stamp

    config = write_config(run_dict(name="too-short", train={"epochs": 1, "lr": 0.001, "until_train_acc": 0.99}))
    code = cli.main(["train", "--config", str(config), "--out", str(tmp_path / "cli"), "--no-progress"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1
    assert lines[0].startswith("linpath train: error: run too-short: train accuracy")
    assert not (tmp_path / "cli" / "final.pt").exists()


def test_binary_spiral_run(tmp_path):
    out = tmp_path / "spiral"
    raw = run_dict(
        data={"dataset": "spiral", "spiral": {"n_train": 1000, "n_test": 200}},
        train={"loss": "bce", "optimizer": "adam", "lr": 0.01, "weight_decay": 0.0, "batch_size": 100, "epochs": 4},
    )
    train(RunSpec.from_dict(raw), out, progress=False)
    spec = RunSpec.from_yaml(out / "run.yaml")
    assert spec.model.binary and spec.model.num_classes == 2 and spec.model.in_channels == 2
    final = load_tensors(out / "final.pt")
    assert final["layers.1.weight"].shape == (1, 16)
    metrics = read_metrics(out)
    assert metrics["train_loss"].iloc[-1] < metrics["train_loss"].iloc[0]
    assert metrics["train_loss"].iloc[0] == pytest.approx(math.log(2), abs=0.1)


# --- partial re-initialisation and per-group learning rates ------------------------


def distinct_state(spec: RunSpec, seed: int) -> dict[str, torch.Tensor]:
    """A state of the right shapes in which *every* tensor differs from any seeded init."""
    torch.manual_seed(seed)
    state = models.build(spec.model).state_dict()
    return {k: (v + 1.5 if v.is_floating_point() else v + 7) for k, v in state.items()}


def resolved(model: str = "resnet18_w4", **sections) -> RunSpec:
    spec = run_spec(model, **sections)
    spec.model.in_channels, spec.model.input_size = 1, 8  # what training resolves from the digits
    return spec


def test_init_group_from_another_state(tmp_path):
    base = resolved()
    donor_path = tmp_path / "donor.pt"
    donor = distinct_state(base, seed=11)
    save_torch(donor, donor_path)
    out = tmp_path / "partial"
    train(run_spec("resnet18_w4", train={"epochs": 1}, init={"groups": {"block2": str(donor_path)}}), out, progress=False)

    theta0 = load_tensors(out / "init.pt")
    plain = initial_state(base)
    block2 = set(models.groups(models.build(base.model))["block2"])
    assert block2 and len(block2) < len(theta0)
    for key, value in theta0.items():
        assert torch.equal(value, donor[key] if key in block2 else plain[key]), key


def test_init_group_random_inside_a_loaded_source(tmp_path):
    base = resolved()
    source_path = tmp_path / "source.pt"
    source = distinct_state(base, seed=12)
    torch.save({"state_dict": source}, source_path)  # the common wrapped layout is accepted too
    spec = resolved(init={"source": str(source_path), "groups": {"block3": "random"}})
    theta0 = initial_state(spec)
    seeded = initial_state(base)
    block3 = set(models.groups(models.build(base.model))["block3"])
    for key, value in theta0.items():
        assert torch.equal(value, seeded[key] if key in block3 else source[key]), key


def test_init_groups_errors_name_the_setting(tmp_path):
    with pytest.raises(SettingsError, match=r"init\.groups: unknown group 'layer3'.*stem, block1"):
        initial_state(resolved(init={"groups": {"layer3": "random"}}))
    with pytest.raises(SettingsError, match=r"init\.groups\.block2: state file not found"):
        initial_state(resolved(init={"groups": {"block2": str(tmp_path / "missing.pt")}}))
    wider = resolved("resnet18")  # width 8
    path = tmp_path / "wide.pt"
    save_torch(initial_state(wider), path)
    with pytest.raises(SettingsError, match=r"init\.groups\.block2: .*wide\.pt: tensor \S+ has shape"):
        initial_state(resolved(init={"groups": {"block2": str(path)}}))
    with pytest.raises(SettingsError, match=r"init\.source: .*wide\.pt"):
        initial_state(resolved(init={"source": str(path)}))


def test_group_with_zero_lr_does_not_move(tmp_path):
    out = tmp_path / "frozen"
    spec = run_spec("resnet18_w4", train={"epochs": 1, "group_overrides": {"block2": {"lr": 0.0}}})
    train(spec, out, progress=False)
    theta0, final = load_tensors(out / "init.pt"), load_tensors(out / "final.pt")
    model = models.build(RunSpec.from_yaml(out / "run.yaml").model)
    groups = models.groups(model)
    params = {name for name, _ in model.named_parameters()}
    for group, keys in groups.items():
        moved = [k for k in keys if k in params and not torch.equal(theta0[k], final[k])]
        if group == "block2":
            assert not moved, f"block2 parameters moved with lr 0: {moved}"
        else:
            assert moved, f"{group} did not train"
    stats = [k for k in groups["block2"] if k.endswith("running_mean")]
    assert stats and all(not torch.equal(theta0[k], final[k]) for k in stats), "BN statistics still update"


def test_group_overrides_reach_the_optimizer():
    spec = resolved(train={"lr": 0.1, "weight_decay": 5e-4, "optimizer": "adam",
                           "group_overrides": {"block1": {"lr": 0.001}, "head": {"weight_decay": 0.0}}})
    model = models.build(spec.model)
    opt = make_optimizer(spec, model)
    by_group = {name: g for g in opt.param_groups for name in g["groups"]}
    assert sorted(by_group) == ["block1", "block2", "block3", "block4", "head", "stem"]
    assert (by_group["block1"]["lr"], by_group["block1"]["weight_decay"]) == (0.001, 5e-4)
    assert (by_group["head"]["lr"], by_group["head"]["weight_decay"]) == (0.1, 0.0)
    assert (by_group["block4"]["lr"], by_group["block4"]["weight_decay"]) == (0.1, 5e-4)
    # groups with the same settings share one optimiser group; every parameter is in exactly one
    assert by_group["stem"] is by_group["block4"] and len(opt.param_groups) == 3
    owner = {id(p): g for g in opt.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    for group, keys in models.groups(model).items():
        for key in keys:
            if key in named:
                assert owner[id(named[key])] is by_group[group], key
    assert isinstance(opt, torch.optim.Adam)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))
    with pytest.raises(SettingsError, match=r"train\.group_overrides: unknown group 'block5'"):
        make_optimizer(resolved(train={"group_overrides": {"block5": {"lr": 0.1}}}), model)


# --- divergence and settings errors ---------------------------------------------


def test_huge_lr_raises_training_diverged(tmp_path):
    out = tmp_path / "boom"
    spec = run_spec(name="diverge-me", train={"lr": 1e10, "epochs": 3})
    with pytest.raises(TrainingDiverged) as err:
        train(spec, out, progress=False)
    assert re.fullmatch(r"run diverge-me: training loss became (nan|inf|-inf) in epoch \d", str(err.value))
    e = err.value
    assert e.run == "diverge-me" and type(e.epoch) is int and 1 <= e.epoch <= 3
    assert type(e.loss) is float and not math.isfinite(e.loss)
    assert str(e) == f"run diverge-me: training loss became {e.loss} in epoch {e.epoch}"
    again = pickle.loads(pickle.dumps(e))  # as it would cross from a worker process
    assert (again.run, again.epoch, str(again), again.metrics) == (e.run, e.epoch, str(e), e.metrics)
    assert failure_outcome(again, spec) == read_outcome(out), "the unpickled error is the failure the run recorded"
    assert not (out / "final.pt").exists() and not (out / "metrics.parquet").exists()
    if (out / "checkpoint.pt").exists():
        assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] < e.epoch, "no checkpoint of a diverged epoch"


BAD_SETTINGS = [
    ({"train": {"lrr": 0.1}}, "train.lrr"),
    ({"train": {"lr": "abc"}}, "train.lr"),
    ({"train": {"lr": -1.0}}, "train.lr"),
    ({"model": {"arch": "resnet19"}}, "model.arch"),
    ({"data": {"dataset": "imagenet"}}, "data.dataset"),
    ({"data": {"augment": "heavy"}}, "data.augment"),
    ({"data": {"subset": 0.0}}, "data.subset"),
    ({"train": {"epochs": 2.5}}, "train.epochs"),
    ({"train": {"milestones": 3}}, "train.milestones"),
    ({"train": {"milestones": [2, "x"]}}, "train.milestones[1]"),
    ({"model": {"batchnorm": "yes"}}, "model.batchnorm"),
    ({"train": {"group_overrides": {"block2": {"lrr": 0.0}}}}, "train.group_overrides.block2.lrr"),
    ({"init": {"groups": {"block2": 3}}}, "init.groups.block2"),
    ({"trian": {"lr": 0.1}}, "trian"),
    ({"train": {"precision": "fp16"}}, "train.precision"),
    ({"train": {"channels_last": "yes"}}, "train.channels_last"),
    ({"train": {"checkpoint_every": 0}}, "train.checkpoint_every"),
    ({"train": {"eval_every": 0}}, "train.eval_every"),
    ({"train": {"fast_cuda": True}}, "train.fast_cuda"),  # replaced by precision and channels_last
]


@pytest.mark.parametrize("bad,setting", BAD_SETTINGS, ids=[s for _, s in BAD_SETTINGS])
def test_settings_errors_name_the_setting(bad, setting):
    with pytest.raises(SettingsError) as err:
        RunSpec.from_dict({**run_dict(), **{k: {**run_dict().get(k, {}), **v} for k, v in bad.items()}})
    assert setting in str(err.value)


def test_yaml_round_trip_and_digest(tmp_path, make_dict):
    raw = make_dict(train={"weight_decay": "5e-4", "group_overrides": {"head": {"lr": 0.01}}})
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  weight_decay: 5e-4\n  lr: 1e-2\n")  # YAML 1.1 reads these as strings
    assert RunSpec.from_yaml(path).train.weight_decay == 5e-4 and RunSpec.from_yaml(path).train.lr == 0.01
    spec = RunSpec.from_dict(raw)
    path.write_text(yaml.safe_dump(spec.to_dict()))
    again = RunSpec.from_yaml(path)
    assert again == spec and again.digest() == spec.digest()
    renamed = RunSpec.from_dict({**raw, "name": "other"})
    assert renamed.digest() == spec.digest(), "the free-text name is not a setting"
    assert RunSpec.from_dict(make_dict(train={"seed": 1})).digest() != spec.digest()
    with pytest.raises(SettingsError, match="not found"):
        RunSpec.from_yaml(tmp_path / "nope.yaml")


def test_late_settings_error_leaves_the_directory_usable(tmp_path):
    out = tmp_path / "late"
    with pytest.raises(SettingsError, match=r"train\.group_overrides: unknown group 'block2'"):
        train(run_spec(train={"epochs": 1, "group_overrides": {"block2": {"lr": 0.0}}}), out, progress=False)
    assert not (out / "run.yaml").exists()
    train(run_spec(train={"epochs": 1, "group_overrides": {"layer2": {"lr": 0.0}}}), out, progress=False)


@pytest.mark.parametrize("override,setting", [
    ({"lr": -1.0}, "train.group_overrides.layer1.lr"),
    ({"weight_decay": -0.1}, "train.group_overrides.layer1.weight_decay"),
], ids=["lr", "weight_decay"])
def test_negative_group_override_is_a_settings_error(override, setting):
    with pytest.raises(SettingsError, match=re.escape(setting)):
        run_spec(train={"group_overrides": {"layer1": override}})


@pytest.mark.slow  # torch.compile takes about half a minute on two CPU cores
def test_compiled_steps_report_compile_time(tmp_path):
    t = {"epochs": 2, "lr": 0.1, "compile": True}
    result = train(run_spec(train=t), tmp_path / "compiled", progress=False)
    eager = train(run_spec(train={**t, "compile": False}), tmp_path / "eager", progress=False)
    summary = yaml.safe_load((tmp_path / "compiled" / "summary.yaml").read_text())
    assert summary["compile_seconds"] == pytest.approx(result.compile_seconds) and result.compile_seconds > 0
    assert "torch.compile: first step" in result.summary() and eager.compile_seconds is None
    assert result.train_loss == pytest.approx(eager.train_loss, rel=1e-3), "the same training, compiled"


# --- the precision of the steps, read from the backend flags ---------------------------------------

_KNOBS = ("cuda.matmul", "cudnn.conv", "cudnn.rnn", "mkldnn.matmul", "mkldnn.conv")


@pytest.fixture
def precision_flags():
    """Set torch's public fp32_precision switches inside a test; every one is restored after."""
    b = torch.backends
    knob = {name: getattr(getattr(b, name.split(".")[0]), name.split(".")[1]) for name in _KNOBS}
    saved = b.fp32_precision, {name: k.fp32_precision for name, k in knob.items()}

    def set_(**values):
        for name, value in values.items():
            setattr(knob[name.replace("__", ".")], "fp32_precision", value)

    yield set_
    b.fp32_precision = saved[0]
    for name, value in saved[1].items():
        knob[name].fp32_precision = value


def test_the_recorded_precision_follows_the_backend_flags(precision_flags):
    """summary.yaml's step_precision is read from the flags, so TF32 on a GPU cannot be recorded as fp32
    (torch.device('cuda') names the device without needing one: the flags are process state)."""
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    fp32 = StepSettings(cuda, False, False, False)
    precision_flags(cuda__matmul="ieee", cudnn__conv="ieee", mkldnn__matmul="ieee", mkldnn__conv="ieee")
    assert fp32.record()["step_precision"] == "fp32"
    precision_flags(cudnn__conv="tf32")  # PyTorch's own default for cuDNN convolutions
    assert fp32.record()["step_precision"] == "tf32"
    assert StepSettings(cpu, False, False, False).record()["step_precision"] == "fp32", "CUDA flags leave the CPU alone"
    precision_flags(cudnn__conv="ieee", cuda__matmul="tf32")
    assert fp32.precision() == "tf32"
    precision_flags(cuda__matmul="ieee", mkldnn__conv="bf16")
    assert (fp32.precision(), StepSettings(cpu, False, False, False).precision()) == ("fp32", "bf16")
    assert StepSettings(cuda, True, False, False).precision() == "bf16", "bf16 autocast is recorded as such"
    with strict_fp32():  # switches the CUDA flags too, whatever device it is given
        assert fp32.precision() == "fp32" and StepSettings(cpu, False, False, False).precision() == "fp32"


def test_training_steps_run_in_ieee_fp32_whatever_flags_are_set_outside(tmp_path, precision_flags):
    """With reduced-precision matmuls and convolutions switched on around it (oneDNN bf16 on the CPU, TF32 on
    CUDA), a run trains bit for bit as without them, records fp32, and leaves the flags as it found them."""
    spec = run_dict(train={"epochs": 2, "lr": 0.1})
    train(RunSpec.from_dict(spec), tmp_path / "plain", progress=False)
    precision_flags(mkldnn__matmul="bf16", mkldnn__conv="bf16", cuda__matmul="tf32", cudnn__conv="tf32")
    x = torch.randn(64, 64, generator=torch.Generator().manual_seed(0))
    reduced = x @ x  # what the switched flags make of an fp32 product here (bf16 where oneDNN has it)
    train(RunSpec.from_dict(spec), tmp_path / "flags_set", progress=False)
    assert torch.backends.mkldnn.matmul.fp32_precision == "bf16" and torch.backends.cudnn.conv.fp32_precision == "tf32"
    assert yaml.safe_load((tmp_path / "flags_set" / "summary.yaml").read_text())["step_precision"] == "fp32"
    assert_states_equal(load_tensors(tmp_path / "plain" / "final.pt"), load_tensors(tmp_path / "flags_set" / "final.pt"))
    with strict_fp32():
        exact = x @ x
    if not torch.equal(reduced, exact):  # this CPU honours oneDNN bf16: the equality above is not trivial
        assert (reduced - exact).abs().max() > 1e-3


# --- the random-label target: how many images stayed wrong -----------------------------------------


def wrong_in_eval_mode(run_dir, spec: RunSpec) -> tuple[int, int]:
    """Training images the checkpointed model gets wrong in eval mode, counted from torch alone."""
    resolved = RunSpec.from_yaml(run_dir / "run.yaml")
    prep = data.prepare(resolved.data)
    model = models.build(resolved.model)
    model.load_state_dict(torch.load(run_dir / "checkpoint.pt", weights_only=True)["model"])
    model.eval()
    with torch.no_grad(), strict_fp32():
        predicted = model(prep.train_x).argmax(1)
    return int((predicted != prep.train_y).sum()), len(prep.train_y)


def test_a_missed_random_label_target_records_how_many_images_were_wrong(tmp_path):
    out = tmp_path / "random-labels"
    spec = run_spec(name="rl", data={"random_labels": 1.0, "subset": 0.2},
                    train={"epochs": 2, "lr": 0.05, "until_train_acc": 1.0})
    with pytest.raises(TargetNotReached) as err:
        train(spec, out, progress=False)
    wrong, images = wrong_in_eval_mode(out, spec)
    assert 0 < wrong < images and (err.value.wrong, err.value.images) == (wrong, images)
    assert f"({wrong} of {images} training images wrong)" in str(err.value)
    outcome = yaml.safe_load((out / "outcome.yaml").read_text())
    assert outcome["status"] == "failed" and outcome["kind"] == "target_not_reached"
    assert (outcome["metrics"]["train_wrong"], outcome["metrics"]["train_images"]) == (wrong, images)
    assert outcome["metrics"]["train_wrong_allowed"] == 0, "until_train_acc 1.0 allows no wrong image"
    assert f"{wrong} of {images}" in outcome["reason"]
    again = pickle.loads(pickle.dumps(err.value))
    assert again.wrong == wrong and failure_outcome(again, spec) == read_outcome(out)


def test_a_reached_target_records_the_wrong_images_it_allowed(tmp_path):
    out = tmp_path / "half"
    train(run_spec(train={"epochs": 30, "lr": 0.1, "until_train_acc": 0.5}), out, progress=False)
    outcome = yaml.safe_load((out / "outcome.yaml").read_text())
    counts, last = outcome["metrics"], read_metrics(out).iloc[-1]
    assert outcome["status"] == "trained"
    assert counts["train_wrong"] == round((1 - last["train_acc"]) * counts["train_images"])
    assert counts["train_wrong_allowed"] == counts["train_images"] // 2
    assert counts["train_wrong"] <= counts["train_wrong_allowed"]


def test_a_run_without_a_target_records_no_counts(trained_mlp):
    out, _, _ = trained_mlp
    assert "metrics" not in yaml.safe_load((out / "outcome.yaml").read_text())
