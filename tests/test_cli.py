"""`linpath train`: end to end in-process and as the installed console script; settings errors."""

from __future__ import annotations

import argparse
import math
import re

import pandas as pd
import pytest
import torch
import yaml

from conftest import load_tensors, run_cli, run_dict
from linpath.cli import commands as cli
from linpath.engine import models
from linpath.engine.data import cache_key
from linpath.foundations.hparams import RunSpec

SUMMARY = re.compile(
    r"^(?P<dir>\S+): (?P<epochs>\d+) epochs in [\d.]+s; train loss [\d.]+ acc (?P<train_acc>[\d.]+); "
    r"test loss [\d.]+ acc (?P<test_acc>[\d.]+)$")


def _summary(stdout: str) -> re.Match:
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert lines, "nothing printed"
    match = SUMMARY.match(lines[-1])
    assert match, f"not a summary line: {lines[-1]!r}"
    return match


@pytest.mark.parametrize("model", ["mlp", "resnet18"])
def test_cli_train_end_to_end(model, tmp_path, write_config, capsys):
    config = write_config(run_dict(model, name="run", train={"epochs": 2}))
    out = tmp_path / "runs" / f"cli-{model}"
    code = cli.main(["train", "--config", str(config), "--out", str(out), "--no-progress"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    match = _summary(captured.out)
    assert match["dir"] == str(out) and match["epochs"] == "2"
    for name in ("run.yaml", "init.pt", "final.pt", "metrics.parquet"):
        assert (out / name).is_file(), name
    metrics = pd.read_parquet(out / "metrics.parquet")
    assert (metrics["run"] == f"cli-{model}").all(), "the default name is the directory name"
    assert float(match["test_acc"]) == pytest.approx(metrics["test_acc"].iloc[-1], abs=1e-4)
    assert float(match["test_acc"]) > 0.3  # chance is 0.1
    spec = RunSpec.from_yaml(out / "run.yaml")
    assert spec.name == f"cli-{model}" and spec.model.arch == model.split("_")[0]
    models.build(spec.model).load_state_dict(load_tensors(out / "final.pt"))


def test_cli_name_and_eval_cache(tmp_path, write_config, capsys):
    raw = run_dict(train={"epochs": 1}, data={"subset": 0.5, "seed": 2})
    config = write_config(raw)
    out, cache = tmp_path / "run", tmp_path / "cache"
    code = cli.main(["train", "--config", str(config), "--out", str(out), "--name", "E1-mlp",
                     "--eval-cache", str(cache), "--threads", "1", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    assert (pd.read_parquet(out / "metrics.parquet")["run"] == "E1-mlp").all()
    spec = RunSpec.from_dict(raw)
    for split, n in (("train", 719), ("test", 359)):
        blob = torch.load(cache / cache_key(spec.data, split) / f"{split}.pt", weights_only=True)
        assert blob["x"].shape == (n, 1, 8, 8) and blob["y"].dtype == torch.int64


BAD_CONFIGS = [
    ({"train": {"lrr": 0.1}}, "train.lrr"),
    ({"train": {"lr": "abc"}}, "train.lr"),
    ({"model": {"arch": "resnet19"}}, "model.arch"),
    ({"data": {"dataset": "cifar11"}}, "data.dataset"),
]


@pytest.mark.parametrize("bad,setting", BAD_CONFIGS, ids=[s for _, s in BAD_CONFIGS])
def test_cli_bad_config_names_the_setting(bad, setting, tmp_path, write_config, capsys):
    raw = run_dict()
    for section, values in bad.items():
        raw[section].update(values)
    config = write_config(raw, "bad.yaml")
    out = tmp_path / "d"
    code = cli.main(["train", "--config", str(config), "--out", str(out), "--no-progress"])
    captured = capsys.readouterr()
    assert code == 2
    assert setting in captured.err and "bad.yaml" in captured.err
    assert captured.err.startswith("linpath train: error:")
    assert captured.out == ""
    assert not out.exists(), "nothing is trained or written"


def test_cli_missing_config_and_missing_data(tmp_path, write_config, capsys):
    assert cli.main(["train", "--config", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "d")]) == 2
    assert "nope.yaml" in capsys.readouterr().err
    config = write_config(run_dict(data={"dataset": "cifar10", "root": str(tmp_path / "nodata")}))
    assert cli.main(["train", "--config", str(config), "--out", str(tmp_path / "d"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "data.root" in err and "cifar-10-batches-py" in err
    assert not (tmp_path / "d").exists()


def test_cli_usage_errors(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--out", "x"])
    assert exit_info.value.code == 2
    assert "--config" in capsys.readouterr().err


def test_cli_malformed_yaml_is_a_settings_error(tmp_path, capsys):
    config = tmp_path / "broken.yaml"
    config.write_text("train:\n  lr: [0.1\n")
    assert cli.main(["train", "--config", str(config), "--out", str(tmp_path / "d")]) == 2
    assert "broken.yaml" in capsys.readouterr().err


@pytest.mark.slow
def test_installed_console_script(tmp_path, write_config):
    config = write_config(run_dict(train={"epochs": 1}))
    out = tmp_path / "sub"
    proc = run_cli(["train", "--config", str(config), "--out", str(out), "--threads", "1", "--no-progress"])
    assert proc.returncode == 0, proc.stderr
    match = _summary(proc.stdout)
    assert match["dir"] == str(out) and match["epochs"] == "1"
    assert (out / "final.pt").is_file() and not (out / "checkpoint.pt").exists()
    assert proc.stderr == "", "--no-progress prints no progress bars"


# --- bad numbers, divergence and the empty file: one line each, no trained run left behind -----------


def _one_error_line(err: str, verb: str = "train") -> str:
    assert "Traceback" not in err, err
    lines = err.splitlines()
    # a verb with kinds (`report table1`, `lmc-report planes`) names the kind its usage error is about
    assert len(lines) == 1 and re.match(rf"linpath {verb}( [a-z0-9-]+)?: error: ", lines[0]), err
    return lines[0]


@pytest.mark.parametrize("train_yaml, status, message", [
    ("lr: .nan", 2, "bad.yaml: train.lr must be a finite number, got nan"),
    ("weight_decay: .inf", 2, "bad.yaml: train.weight_decay must be a finite number, got inf"),
    ("lr: 1.0e+12", 3, "run d diverged: training loss nan in epoch 1"),
], ids=["lr-nan", "weight_decay-inf", "lr-1e12-diverges"])
def test_bad_numbers_end_in_one_line_and_no_trained_run(train_yaml, status, message, tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("model: {arch: mlp, hidden: [16]}\ndata: {dataset: digits}\n"
                      f"train: {{{train_yaml}, epochs: 2, batch_size: 64, device: cpu}}\n")
    out = tmp_path / "d"
    code = cli.main(["train", "--config", str(config), "--out", str(out), "--no-progress"])
    captured = capsys.readouterr()
    assert code == status
    assert message in _one_error_line(captured.err)
    assert captured.out == ""
    assert not (out / "final.pt").exists() and not (out / "metrics.parquet").exists()
    if status == 2:
        assert not out.exists(), "refused before anything is written"


def test_an_empty_settings_file_is_an_error(tmp_path, capsys):
    config = tmp_path / "empty.yaml"
    config.write_text("")
    out = tmp_path / "d"
    assert cli.main(["train", "--config", str(config), "--out", str(out), "--no-progress"]) == 2
    assert f"{config}: file is empty" in _one_error_line(capsys.readouterr().err)
    assert not out.exists()


def test_a_partial_settings_file_trains_with_defaults_for_the_rest(tmp_path, capsys):
    config = tmp_path / "partial.yaml"
    config.write_text("model: {arch: mlp, hidden: [8]}\ntrain: {epochs: 1, batch_size: 256, device: cpu}\n")
    out = tmp_path / "d"
    assert cli.main(["train", "--config", str(config), "--out", str(out), "--no-progress"]) == 0, capsys.readouterr()
    spec = RunSpec.from_yaml(out / "run.yaml")
    defaults = RunSpec()
    assert (spec.train.epochs, spec.train.lr, spec.train.momentum) == (1, defaults.train.lr, defaults.train.momentum)
    assert spec.data == defaults.data and (out / "final.pt").is_file()


DIVERGES_IN_EPOCH_3 = {"lr": 0.05, "epochs": 4, "milestones": [2], "gamma": 1.0e12, "save_epochs": [1]}


def test_divergence_writes_failed_yaml_and_removes_the_states(tmp_path, write_config, capsys):
    config = write_config(run_dict(name="boom", train=DIVERGES_IN_EPOCH_3))
    out = tmp_path / "boom"
    assert cli.main(["train", "--config", str(config), "--out", str(out), "--no-progress"]) == 3
    line = _one_error_line(capsys.readouterr().err)
    assert "run boom diverged: training loss nan in epoch 3" in line and str(out / "failed.yaml") in line
    failed = yaml.safe_load((out / "failed.yaml").read_text())
    assert failed["kind"] == "diverged" and failed["run"] == "boom" and failed["epoch"] == 3
    assert math.isnan(failed["loss"]) and "train_acc" in failed["metrics"], "the last metrics before the failure"
    assert failed["settings_digest"] == RunSpec.from_yaml(out / "run.yaml").digest()
    outcome = yaml.safe_load((out / "outcome.yaml").read_text())
    assert outcome["status"] == "diverged" and "in epoch 3" in outcome["reason"]
    # no state that a rerun would resume from, or that looks like a (partly) trained run
    assert sorted(p.name for p in out.iterdir()) == ["failed.yaml", "outcome.yaml", "run.yaml"]

    # the same settings again: nothing to resume, so it starts from epoch 1 and fails the same way
    assert cli.main(["train", "--config", str(config), "--out", str(out), "--no-progress"]) == 3
    assert "in epoch 3" in _one_error_line(capsys.readouterr().err)
    assert yaml.safe_load((out / "failed.yaml").read_text())["epoch"] == 3


def test_a_later_success_removes_a_stale_failed_yaml(tmp_path, write_config, capsys):
    out = tmp_path / "run"
    diverging = write_config(run_dict(name="run", train={"lr": 1.0e12}), "diverging.yaml")
    assert cli.main(["train", "--config", str(diverging), "--out", str(out), "--no-progress"]) == 3
    capsys.readouterr()
    # as the workflow leaves it (Snakemake removes a failed job's outputs, run.yaml among them)
    (out / "run.yaml").unlink()
    good = write_config(run_dict(name="run", train={"epochs": 1}), "good.yaml")
    assert cli.main(["train", "--config", str(good), "--out", str(out), "--no-progress"]) == 0, capsys.readouterr()
    assert (out / "final.pt").is_file() and not (out / "failed.yaml").exists()
    assert yaml.safe_load((out / "outcome.yaml").read_text())["status"] == "trained"
    metrics = pd.read_parquet(out / "metrics.parquet")
    assert metrics["epoch"].tolist() == [0, 1], "trained from θ₀, not resumed"


def test_settings_json_errors_name_the_flag(tmp_path, capsys):
    for text, message in (("", "--settings-json: not valid JSON"), ("[1]", "--settings-json: expected a JSON object of run settings, got list"),
                          ('{"train": {"lr": NaN}}', "--settings-json: train.lr must be a finite number")):
        assert cli.main(["train", "--settings-json", text, "--out", str(tmp_path / "d")]) == 2
        assert message in _one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize("argv, message", [
    (["interpolate", "--run", "r", "--out", "o", "--alphas", "nan:1:5"], "argument --alphas: must hold finite numbers"),
    (["interpolate", "--run", "r", "--out", "o", "--alphas", "0:1:0"], "the count of '0:1:0' must be at least 1"),
    (["interpolate", "--run", "r", "--out", "o", "--batch-size", "0"], "argument --batch-size: must be >= 1"),
    (["interpolate", "--run", "r", "--out", "o", "--bn-subset", "-5"], "argument --bn-subset: must be >= 1"),
    (["interpolate", "--run", "r", "--out", "o", "--barrier-tol", "nan"], "argument --barrier-tol: must be a finite"),
    (["interpolate", "--run", "r", "--out", "o", "--plateau-alpha", "1.5"], "argument --plateau-alpha: must be >= 0 and <= 1"),
    (["interpolate", "--run", "r", "--out", "o", "--device", "gpu"], "argument --device: must be auto, cpu"),
    (["barrier-init", "--sweep", "p", "--out", "o", "--offset", "inf"], "argument --offset: must be a finite number"),
    (["barrier-init", "--sweep", "p", "--out", "o", "--offset", "0"], "argument --offset: must be > 0 and <= 1"),
    (["barrier-init", "--sweep", "p", "--out", "o", "--barrier-rel=-inf"], "argument --barrier-rel: must be a finite"),
    (["train", "--config", "c", "--out", "o", "--threads", "0"], "argument --threads: must be >= 1"),
    (["label", "--sweep", "s", "--out", "o", "--barrier-tol", "nan"], "argument --barrier-tol: must be a finite"),
    (["lmc-report", "instability", "--inputs", "x", "--threshold", "-1", "--out", "a", "b"],
     "argument --threshold: must be >= 0"),
    (["lmc-report", "instability", "--inputs", "x", "--threshold", "0.02", "--out", "a"], "argument --out: expected 2"),
    (["lmc-report", "planes", "--inputs", "x"], "the following arguments are required: --out"),
    (["lmc-report", "sideways", "--out", "x"], "invalid choice: 'sideways'"),
    (["report", "table1", "--configfile", "c", "--runs", "r", "--shapes", "s", "--out", "a"],
     "--out takes 2 or 3 file(s), got 1"),
    (["report", "core-tables", "--configfile", "c", "--out", "a", "b"], "argument --out: expected 3"),
])
def test_bad_flags_are_one_line_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    line = _one_error_line(capsys.readouterr().err, argv[0])
    assert message in line


def test_debug_shows_the_traceback_and_keeps_the_status(tmp_path, capsys):
    missing = str(tmp_path / "nope.yaml")
    for argv in (["--debug", "train", "--config", missing, "--out", "d"],
                 ["train", "--debug", "--config", missing, "--out", "d"]):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert "Traceback" in err and "SettingsError" in err
        assert err.splitlines()[-1].startswith("linpath train: error: run settings file not found")


def test_a_bug_is_not_turned_into_an_input_error():
    """Anything but input errors keeps its exception (Python prints the traceback, exit status 1)."""
    def buggy(args):
        return {}["missing"]

    for debug in (False, True):
        with pytest.raises(KeyError):
            cli.run_verb(argparse.Namespace(verb="train", func=buggy, debug=debug))


def test_an_output_path_that_cannot_be_a_directory(tmp_path, write_config, capsys):
    taken = tmp_path / "taken"
    taken.write_text("a file, not a run directory\n")
    config = write_config(run_dict(train={"epochs": 1}))
    assert cli.main(["train", "--config", str(config), "--out", str(taken), "--no-progress"]) == 2
    assert str(taken) in _one_error_line(capsys.readouterr().err)


def test_an_interruption_is_one_line_with_its_own_status(capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    assert cli.run_verb(argparse.Namespace(verb="train", func=interrupted, debug=False)) == 130
    assert _one_error_line(capsys.readouterr().err) == "linpath train: error: interrupted"


def test_a_target_accuracy_not_reached_is_one_line_with_status_2(tmp_path, write_config, capsys):
    config = write_config(run_dict(name="short", train={"epochs": 1, "until_train_acc": 1.0}))
    out = tmp_path / "short"
    assert cli.main(["train", "--config", str(config), "--out", str(out), "--no-progress"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "run short: train accuracy" in line and "train.until_train_acc=1.0" in line
    assert not (out / "final.pt").exists() and (out / "checkpoint.pt").exists(), "kept: a rerun fails at once"
    failed = yaml.safe_load((out / "failed.yaml").read_text())
    assert failed["kind"] == "target_not_reached" and failed["epoch"] == 1 and "train_acc" in failed["metrics"]
    assert yaml.safe_load((out / "outcome.yaml").read_text())["status"] == "failed"
