"""`python -m linpath.bench paths` at toy sizes: its figures, its JSON and its exit code.

Speed is not asserted (timings live in the printed figures); what is asserted
is that every comparison the benchmark prints is a real one: the agreement it
reports is recomputed here, and a baseline that disagrees makes it fail.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from linpath import bench
from linpath.paths import evaluator

PATHS_PY = Path(evaluator.__file__)  # the evaluator's module, as --baseline takes another version of it
TINY = ["paths", "--width", "4", "--alphas", "3", "--train-samples", "96", "--threads", "1"]


def run_bench(args: list[str], tmp_path: Path, capsys) -> tuple[int, dict, str]:
    out = tmp_path / "figures.json"
    code = bench.main([*args, "--json", str(out)])
    return code, json.loads(out.read_text()), capsys.readouterr().out


def test_default_benchmark_agrees_with_the_reference_loop(tmp_path, capsys):
    code, figures, printed = run_bench(TINY, tmp_path, capsys)
    assert code == 0 and figures["ok"]
    assert figures["paths"] == 7 and figures["alphas"] == 3 and figures["samples"] == {"train": 96}
    assert 0 <= figures["max_abs_diff"] <= 1e-4
    assert figures["reference_s"] > 0 and figures["linpath_s"] > 0
    assert "agreement      : max |Δloss|" in printed and "OK at 1e-4" in printed


def test_baseline_and_alpha_batch_comparisons(tmp_path, capsys):
    """This evaluator against itself loaded from its file: no difference; vmap over α agrees to 1e-5."""
    args = [*TINY, "--test-samples", "40", "--no-reference", "--baseline", str(PATHS_PY), "--alpha-batch", "2"]
    code, figures, printed = run_bench(args, tmp_path, capsys)
    assert code == 0 and figures["ok"]
    assert figures["samples"] == {"train": 96, "test": 40} and "reference_s" not in figures
    assert figures["baseline_max_abs_diff"] == 0.0
    assert figures["alpha_batch"]["k"] == 2 and figures["alpha_batch"]["max_abs_diff"] <= 1e-5
    assert "vs baseline" in printed and "α at once (vmap)" in printed


def test_a_disagreeing_baseline_fails_the_benchmark(tmp_path, capsys):
    """A baseline whose losses are off by 1e-3 is reported and turns the exit code to 1."""
    broken = tmp_path / "paths_off.py"
    broken.write_text(
        "from linpath.paths.evaluator import PathEvaluator as Exact\n\n\n"
        "class PathEvaluator(Exact):\n"
        "    def sweep(self, *args, **kwargs):\n"
        "        frame = super().sweep(*args, **kwargs)\n"
        "        frame['loss'] += 1e-3\n"
        "        return frame\n")
    code, figures, printed = run_bench([*TINY, "--no-reference", "--baseline", str(broken)], tmp_path, capsys)
    assert code == 1 and not figures["ok"]
    assert figures["baseline_max_abs_diff"] == pytest.approx(1e-3, rel=1e-6)
    assert "FAIL at 1e-5" in printed


def test_cifar_benchmark_on_cpu_reports_time_memory_and_no_tf32_figure(tmp_path, capsys):
    args = ["paths", "--cifar", "--device", "cpu", "--width", "2", "--train-samples", "24", "--test-samples", "8",
            "--alphas", "2", "--batch-size", "16", "--threads", "1"]
    code, figures, printed = run_bench(args, tmp_path, capsys)
    assert code == 0 and figures["ok"]
    assert figures["samples"] == {"train": 24, "test": 8} and figures["paths"] == 7 and figures["alphas"] == 2
    assert figures["seconds"] > 0 and figures["peak_memory_bytes"] > 2**20
    assert figures["peak_memory_kind"] == "peak RSS of the process"
    assert figures["tf32_max_abs_diff"] is None
    assert "fp32 vs TF32   : not measured (TF32 exists only on CUDA devices" in printed
