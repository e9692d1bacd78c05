"""`linpath report`, the verb the workflow's table and figure rules run, as a user (or a rule) meets it:
input errors end in one line "linpath report: error: ..." and exit status 2, like every other verb
(test_cli_errors.py); Table 1 is written from a config record (JSON) and hand-made runs/shapes tables
(the rows of test_tables.py, no training).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from conftest import run_cli
from conftest import SEEDS, config, run_row, shape_row

SETTINGS = {"base": {"experiment": "E2"},
            "less_data": {"experiment": "E8", "baseline": "base"},
            "nowd": {"experiment": "E9", "baseline": "base"}}
TABLE1 = [{"category": "data", "intervention": "less data", "settings": ["less_data"], "paper_shape": "NB",
           "paper_acc": "worse"},
          {"category": "regularisation", "intervention": "no weight decay", "settings": ["nowd"],
           "paper_shape": "B", "paper_acc": "same"}]


def write_record(tmp: Path) -> Path:
    """A config record as the workflow's config_record rule writes it: JSON, keys sorted."""
    path = tmp / "derived" / "config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config(SETTINGS, TABLE1), sort_keys=True) + "\n")
    return path


def write_inputs(tmp: Path) -> tuple[Path, Path]:
    """runs.parquet and shapes.parquet of every setting's four seeds (less_data: NB and 2 pp worse)."""
    runs = pd.DataFrame([run_row(n, s, 0.90 - (0.02 if n == "less_data" else 0.0) + 0.001 * s)
                         for n in SETTINGS for s in SEEDS])
    shapes = pd.DataFrame([shape_row(n, s, "B" if n == "nowd" else "NB", 0.3 if n == "nowd" else 0.0)
                           for n in SETTINGS for s in SEEDS])
    runs.to_parquet(tmp / "runs.parquet", index=False)
    shapes.to_parquet(tmp / "shapes.parquet", index=False)
    return tmp / "runs.parquet", tmp / "shapes.parquet"


# --- input errors --------------------------------------------------------------------------------


def _table_without_name(tmp: Path) -> list[str]:
    return ["report", "table", "--config", str(write_record(tmp)), "--out", str(tmp / "t.parquet")]


def _figure_without_name(tmp: Path) -> list[str]:
    return ["report", "figure", "--config", str(write_record(tmp)), "--out", str(tmp / "f.png")]


def _core_tables_without_out(tmp: Path) -> list[str]:
    return ["report", "core-tables", "--config", str(write_record(tmp))]


def _table1_with_one_out(tmp: Path) -> list[str]:
    runs, shapes = write_inputs(tmp)
    return ["report", "table1", "--config", str(write_record(tmp)), "--runs", str(runs), "--shapes", str(shapes),
            "--out", str(tmp / "table1.parquet")]


def _missing_config(tmp: Path) -> list[str]:
    runs, shapes = write_inputs(tmp)
    return ["report", "table1", "--config", str(tmp / "derived" / "nope.json"), "--runs", str(runs),
            "--shapes", str(shapes), "--out", str(tmp / "table1.parquet"), str(tmp / "table1.md")]


def _run_files_not_planned(tmp: Path) -> list[str]:
    """A file that exists but is no run file of the plan: the DAG and the command disagree."""
    runs, _ = write_inputs(tmp)
    return ["report", "core-tables", "--config", str(write_record(tmp)), "--run-files", str(runs),
            "--out", str(tmp / "r.parquet"), str(tmp / "p.parquet"), str(tmp / "s.parquet")]


def _unknown_table(tmp: Path) -> list[str]:
    return ["report", "table", "table_nope", "--config", str(write_record(tmp)), "--out", str(tmp / "t.parquet")]


def _missing_runs_parquet(tmp: Path) -> list[str]:
    _, shapes = write_inputs(tmp)
    return ["report", "table1", "--config", str(write_record(tmp)), "--runs", str(tmp / "gone.parquet"),
            "--shapes", str(shapes), "--out", str(tmp / "table1.parquet"), str(tmp / "table1.md")]


ERRORS = [  # (command, who speaks, part of the message)
    (_table_without_name, "linpath report table", "the following arguments are required: NAME"),
    (_figure_without_name, "linpath report figure", "the following arguments are required: EXPERIMENT"),
    (_core_tables_without_out, "linpath report core-tables", "the following arguments are required: --out"),
    (_table1_with_one_out, "linpath report table1", "--out takes 2 or 3 file(s), got 1"),
    (_missing_config, "linpath report", "--configfile: file not found: "),
    (_run_files_not_planned, "linpath report", "--run-files: not the files of the planned runs: "
                                               f"{len(SETTINGS) * len(SEEDS) * 3} planned file(s) not handed, e.g. "
                                               "results/runs/base-s0-"),
    (_unknown_table, "linpath report", "has no table 'table_nope'"),
    (_missing_runs_parquet, "linpath report", "--runs: file not found: "),
]


@pytest.mark.parametrize("command, who, message", ERRORS, ids=[c[0].__name__.strip("_") for c in ERRORS])
def test_report_input_errors_are_one_line_with_status_2(command, who, message, tmp_path):
    proc = run_cli(command(tmp_path))
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"{who}: error: ") and message in lines[0], lines[0]
    assert proc.stdout == ""
    assert not list(tmp_path.glob("*.parquet.*")) and not list(tmp_path.glob("table1.*")), "nothing is written"
    assert not {"t.parquet", "r.parquet", "f.png"} & {p.name for p in tmp_path.iterdir()}, "nothing is written"


def test_the_missing_paths_are_named_in_the_message(tmp_path):
    proc = run_cli(_missing_config(tmp_path))
    assert proc.stderr.strip().endswith(str(tmp_path / "derived" / "nope.json"))
    proc = run_cli(_missing_runs_parquet(tmp_path))
    assert proc.stderr.strip().endswith(str(tmp_path / "gone.parquet"))


# --- Table 1 from a config record ------------------------------------------------------------------


def test_report_table1_writes_the_rows_the_config_record_lists(tmp_path):
    runs, shapes = write_inputs(tmp_path)
    record = write_record(tmp_path)
    out, markdown = tmp_path / "tables" / "table1.parquet", tmp_path / "tables" / "table1.md"
    proc = run_cli(["report", "table1", "--config", str(record), "--runs", str(runs), "--shapes", str(shapes),
                    "--out", str(out), str(markdown)])
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    # io.note(None, ...) prints the job's one line on stdout: the row count and both outputs.
    assert proc.stdout.strip() == f"Table 1: {len(TABLE1)} rows -> {out}, {markdown}"

    t1 = pd.read_parquet(out)
    assert list(t1["intervention"]) == [row["intervention"] for row in TABLE1]
    assert list(t1["category"]) == [row["category"] for row in TABLE1]
    assert list(t1["settings"]) == ["less_data", "nowd"]
    assert list(t1["paper_shape"]) == ["NB", "B"] and list(t1["n_seeds"]) == [len(SEEDS)] * 2
    # The numbers come from the runs and shapes tables, against each row's baseline.
    less, nowd = t1.iloc[0], t1.iloc[1]
    assert less["shape"] == "NB" and less["shape_fractions"] == f"NB {len(SEEDS)}/{len(SEEDS)}"
    assert less["acc_change_pp_mean"] == pytest.approx(-2.0) and less["acc_word"] == "worse"
    assert bool(less["agrees_shape"]) and bool(less["agrees_acc"])
    assert nowd["shape"] == "B" and nowd["acc_word"] == "same" and bool(nowd["agrees"])

    text = markdown.read_text()
    assert text.startswith("| category | intervention |")
    assert "| data | less data |" in text and "| regularisation | no weight decay |" in text


@pytest.mark.slow
def test_report_takes_configfile_as_plan_does_and_keeps_config_as_an_alias(tmp_path):
    """One flag name for a workflow config across verbs (`linpath plan --configfile`, Snakemake's own);
    the older `--config` still works, and the third --out is Table 1's markdown as an HTML page."""
    runs, shapes = write_inputs(tmp_path)
    record = write_record(tmp_path)
    pages = {}
    for flag in ("--configfile", "--config"):
        out = tmp_path / flag.strip("-")
        proc = run_cli(["report", "table1", flag, str(record), "--runs", str(runs), "--shapes", str(shapes),
                        "--out", str(out / "table1.parquet"), str(out / "table1.md"), str(out / "table1.html")])
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip().endswith(f", {out / 'table1.md'}, {out / 'table1.html'}")
        pages[flag] = (out / "table1.html").read_text()
    assert pages["--configfile"] == pages["--config"]
    assert (tmp_path / "configfile" / "table1.md").read_text() == (tmp_path / "config" / "table1.md").read_text()
    page = pages["--configfile"]
    assert page.startswith("<!DOCTYPE html>") and "<title>Table 1</title>" in page
    # the header, then one table row per Table 1 row, each cell the markdown's
    table = page.split("<table>", 1)[1].split("</table>", 1)[0]
    assert table.count("<tr>") == 1 + len(TABLE1) and table.count("<th>") == 17
    assert "<td>less data</td>" in table and "<td>less_data vs base</td>" in table
    assert "θ0 → θT" in page and "<code>layer_barrier</code>" in page
    for verb in (["report", "table1"], ["report", "core-tables"], ["plan"]):
        help_text = run_cli([*verb, "--help"]).stdout
        assert "--configfile" in help_text, verb


def test_the_html_page_escapes_the_markdown_and_keeps_its_structure():
    from linpath.report.html import markdown_html

    page = markdown_html("# Title <1>\n\nintro with `a<b`\n\n| a | b |\n|---|---|\n| <x> | `c&d` |\n\n- one\n- two\n", "T & U")
    assert "<title>T &amp; U</title>" in page and "<h1>Title &lt;1&gt;</h1>" in page
    assert "<p>intro with <code>a&lt;b</code></p>" in page
    assert "<tr><th>a</th><th>b</th></tr>\n<tr><td>&lt;x&gt;</td><td><code>c&amp;d</code></td></tr>" in page
    assert "<ul>\n<li>one</li>\n<li>two</li>\n</ul>" in page
    assert "<x>" not in page
