"""Table 1 as the paper defines it, through the resolved default and paper plans: each row holds the
settings of the figure it cites, the fixed LRs are compared with each other, rows that are not the
paper's carry no paper label, the paper's MLP row widens only, the weight-decay sweep has a "little"
point, the paper plan trains in fp32, and the Lucas et al. rows change only the optimiser. The
comparison rule itself is checked on hand-made runs."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from linpath.study.plan import Plan
from linpath.foundations.hparams import RunSpec
from linpath.report.tables import agreement_counts, row_comparisons, table1
from linpath.engine.train import StepSettings
from test_paper_config import merged, resolved
from test_tables import SEEDS, config, run_row, shape_row


@pytest.fixture(scope="module")
def paper() -> Plan:
    plan = Plan(merged("paper.yaml"))
    plan.check()
    return plan


@pytest.fixture(scope="module")
def default() -> Plan:
    plan = Plan(merged())
    plan.check()
    return plan


def rows_of(plan: Plan) -> dict[str, dict]:
    return {r["intervention"]: r for r in plan.config["table1"]}


# --- 1. the paper's MLP row widens; narrowing is its own row -----------------------------------


def test_the_mlp_row_widens_the_barrier_layers_and_narrowing_is_its_own_row(paper):
    rows = rows_of(paper)
    assert rows["MLPs overparameterised"]["settings"] == ["mlp_widen_barrier"]
    narrow = [r for r in rows.values() if "mlp_narrow_no_barrier" in r["settings"]]
    assert len(narrow) == 1 and narrow[0]["settings"] == ["mlp_narrow_no_barrier"]
    assert narrow[0]["paper_shape"] == "NB" and "paper_acc" not in narrow[0], "App. F states no accuracy"
    assert "App. F" in narrow[0]["paper_source"]


# --- 2. fixed learning rates against each other ---------------------------------------------------


@pytest.mark.parametrize("plan_name", ["default", "paper"])
def test_fixed_lrs_are_compared_with_each_other_not_with_the_scheduled_base(plan_name, request):
    plan = request.getfixturevalue(plan_name)
    fixed = [s for s, v in plan.settings.items() if v.experiment == "E10"]
    others = [s for s in fixed if s != "fixed_lr_mid"]
    assert {resolved(plan, s)["train"]["milestones"] == [] for s in fixed} == {True}
    for s in others:
        assert plan.settings[s].baseline == "fixed_lr_mid", s
    rows = rows_of(plan)
    mid = rows["fixed LR = 0.01"]
    assert row_comparisons(plan, mid) == [("fixed_lr_mid", s) for s in others]
    assert rows["fixed LR != 0.01"]["settings"] == others
    assert {b for _, b in row_comparisons(plan, rows["fixed LR != 0.01"])} == {"fixed_lr_mid"}


def fixed_lr_plan() -> Plan:
    settings = {"mid": {"experiment": "E10"}, "high": {"experiment": "E10", "baseline": "mid"},
                "low": {"experiment": "E10", "baseline": "mid"}}
    return Plan(config(settings, [
        {"intervention": "fixed LR = 0.01", "settings": ["mid"], "compare": {"mid": ["high", "low"]},
         "paper_shape": "P", "paper_acc": "better"},
        {"intervention": "fixed LR != 0.01", "settings": ["high", "low"], "paper_shape": "NB", "paper_acc": "worse"}]))


def fixed_lr_runs(low_acc: float) -> pd.DataFrame:
    acc = {"mid": 0.92, "high": 0.90, "low": low_acc}
    return pd.DataFrame([run_row(n, s, a + 0.001 * s * (1 if n == "mid" else -1)) for n, a in acc.items() for s in SEEDS])


def test_the_middle_lr_is_better_only_when_it_beats_each_other_lr():
    plan = fixed_lr_plan()
    shapes = pd.DataFrame([shape_row(n, s, "P" if n == "mid" else "NB", 0.0) for n in ("mid", "high", "low")
                           for s in SEEDS])
    t1 = table1(plan, fixed_lr_runs(0.88), shapes)
    mid, others = t1.iloc[0], t1.iloc[1]
    assert mid["acc_word"] == "better" and mid["agrees_acc"] == True  # noqa: E712
    assert "mid vs high: better" in mid["acc_words"] and "mid vs low: better" in mid["acc_words"]
    assert mid["shape_fractions"] == "P 4/4", "a setting compared twice counts its runs once"
    assert others["acc_word"] == "worse" and others["agrees"] == True  # noqa: E712
    # Equal to the low LR: no longer better than both.
    tied = table1(plan, fixed_lr_runs(0.92), shapes).iloc[0]
    assert tied["acc_word"] == "mixed" and tied["agrees_acc"] == False  # noqa: E712


def test_a_compare_entry_must_name_the_rows_settings():
    plan = fixed_lr_plan()
    plan.config["table1"][0]["compare"] = {"high": ["low"]}
    with pytest.raises(Exception, match="compare: 'high' is not one of the row's settings"):
        plan.check()
    plan.config["table1"][0]["compare"] = {"mid": ["lowest"]}
    with pytest.raises(Exception, match="unknown setting 'lowest'"):
        plan.check()


# --- 3. a row that is not the paper's is not compared ---------------------------------------------


def test_the_no_bn_row_at_another_lr_carries_no_paper_label_and_is_not_counted(paper):
    row = rows_of(paper)["no BatchNorm, LR 0.01 (not the paper's LR)"]
    assert "paper_shape" not in row and "paper_acc" not in row
    settings = {"base": {"experiment": "E2"}, "nobn": {"experiment": "E15", "baseline": "base"}}
    plan = Plan(config(settings, [{"intervention": "no BN", "settings": ["nobn"], "paper_shape": "NB",
                                   "paper_acc": "worse"},
                                  {"intervention": "no BN, other LR", "settings": ["nobn"]}]))
    shapes = pd.DataFrame([shape_row(n, s, "NB", 0.0) for n in settings for s in SEEDS])
    runs = pd.DataFrame([run_row(n, s, 0.9 - 0.01 * (n == "nobn") + 0.001 * s) for n in settings for s in SEEDS])
    t1 = table1(plan, runs, shapes)
    assert t1.loc[1, "paper_source"] == "" and t1.loc[1, ["agrees_shape", "agrees_acc", "agrees"]].isna().all()
    assert agreement_counts(t1) == {"shape": (1, 1), "layer": (0, 0), "acc": (1, 1)}


# --- 4. each row holds the settings of the figure it cites ---------------------------------------


@pytest.mark.parametrize("plan_name", ["default", "paper"])
def test_each_row_holds_the_settings_of_one_figure(plan_name, request):
    plan = request.getfixturevalue(plan_name)
    for row in plan.config["table1"]:
        figures = {plan.paper_figure(s) for s in row["settings"]}
        assert len(figures) == 1, (row["intervention"], figures)


def test_appendix_settings_have_their_own_rows(paper):
    rows = rows_of(paper)
    assert rows["less data"]["settings"] == ["less_data_10", "less_data", "less_data_50"]
    assert rows["less data and no augmentation"]["settings"] == ["less_data_no_aug"]
    assert paper.paper_figure("less_data_no_aug") == "Fig. A14"
    assert rows["partial random-label pre-training"]["settings"] == [f"rl_block{k}" for k in (1, 2, 3, 4)]
    assert rows["partial random-label pre-training (no WD)"]["settings"] == [f"rl_block{k}_nowd" for k in (1, 2, 3, 4)]
    assert rows["barrier-height init"]["settings"] == ["barrier_at"]
    assert rows["init before / after the barrier"]["settings"] == ["barrier_before", "barrier_after"]
    sources = {r["intervention"]: r.get("paper_source") for r in rows.values() if r.get("paper_source")}
    assert set(sources) == {"init before / after the barrier", "partial random-label pre-training (no WD)",
                            "less data and no augmentation", "MLP no-barrier layers narrowed"}


# --- 6. the weight-decay sweep has a "little" point -------------------------------------------------


def test_the_weight_decay_sweep_has_a_point_between_zero_and_1e4(paper):
    wd = {s: resolved(paper, s)["train"]["weight_decay"] for s, v in paper.settings.items()
          if v.experiment == "E9" or s == "base"}
    assert sorted(wd.values()) == [0, 1e-5, 1e-4, 5e-4, 5e-3]
    little = [s for s, v in wd.items() if 0 < v < 1e-4]
    assert little == ["wd_1e5"] and "wd_1e5" in rows_of(paper)["less weight decay"]["settings"]


# --- 7. the paper plan trains in fp32 ----------------------------------------------------------------


def test_every_paper_run_trains_in_fp32_even_on_cuda(paper, default):
    placeholder = {s: {"with_barrier": [], "without_barrier": [], "ranked": [], "widenable": []} for s in paper.settings}
    for run_id in paper.runs:
        spec = RunSpec.from_dict(paper.resolve(run_id, placeholder))
        assert spec.train.precision == "fp32", run_id
        assert not StepSettings.of(spec.train, torch.device("cuda"), spec.model.arch).bf16
    assert "precision" not in default.base["train"], "the CPU default does not set it (CPU trains in fp32)"


# --- 8. the Lucas et al. rows change only the optimiser ---------------------------------------------


def differences(a: dict, b: dict, where: str = "") -> set[str]:
    keys = set(a) | set(b)
    out = set()
    for k in keys:
        if isinstance(a.get(k), dict) and isinstance(b.get(k), dict):
            out |= differences(a[k], b[k], f"{where}{k}.")
        elif a.get(k) != b.get(k):
            out.add(f"{where}{k}")
    return out


@pytest.mark.parametrize("plan_name", ["default", "paper"])
def test_adam_rows_change_only_the_optimiser(plan_name, request):
    plan = request.getfixturevalue(plan_name)
    for adam, sgd in (("adam_bn", "base"), ("adam_nobn", "resnet_nobn")):
        assert plan.settings[adam].baseline == sgd
        a, b = resolved(plan, adam), resolved(plan, sgd)
        # save_epochs / spawn_epochs keep extra states of base (for its paths and spawned children); they
        # change no step of training
        assert differences(a, b) - {"train.save_epochs", "train.spawn_epochs"} == {
            "name", "train.optimizer", "train.lr"}, adam
        assert a["train"]["optimizer"] == "adam" and a["train"]["milestones"] == b["train"]["milestones"] != []
        assert a["train"]["weight_decay"] == b["train"]["weight_decay"] == 5e-4


def test_the_config_record_keeps_a_weight_decay_of_1e5_a_number(paper, tmp_path):
    """The report jobs read the JSON config record; 1e-05 (wd_1e5) is a number there, and the runs they
    name are the workflow's (YAML 1.1 would read it as text and give the run another id)."""
    import json

    import yaml

    from linpath.study.config import read_config_record

    record = tmp_path / "config.json"
    record.write_text(json.dumps(paper.config, sort_keys=True))
    assert "1e-05" in record.read_text()
    again = read_config_record(record)
    assert again["settings"]["wd_1e5"]["run"]["train"]["weight_decay"] == 1e-5
    assert Plan(again).runs.keys() == paper.runs.keys()
    assert yaml.safe_load(record.read_text())["settings"]["wd_1e5"]["run"]["train"]["weight_decay"] == "1e-05"
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"seeds": [0]}))
    assert read_config_record(tmp_path / "config.yaml") == {"seeds": [0]}
