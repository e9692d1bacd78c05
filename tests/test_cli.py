"""`linpath train`: end to end in-process and as the installed console script; settings errors."""

from __future__ import annotations

import re

import pandas as pd
import pytest
import torch

from conftest import load_tensors, run_cli, run_dict
from linpath import cli, models
from linpath.data import cache_key
from linpath.hparams import RunSpec

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


def test_installed_console_script(tmp_path, write_config):
    config = write_config(run_dict(train={"epochs": 1}))
    out = tmp_path / "sub"
    proc = run_cli(["train", "--config", str(config), "--out", str(out), "--threads", "1", "--no-progress"])
    assert proc.returncode == 0, proc.stderr
    match = _summary(proc.stdout)
    assert match["dir"] == str(out) and match["epochs"] == "1"
    assert (out / "final.pt").is_file() and not (out / "checkpoint.pt").exists()
    assert proc.stderr == "", "--no-progress prints no progress bars"
