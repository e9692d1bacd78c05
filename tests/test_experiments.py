"""The run planner `linpath.study.plan.Plan` on small dict configs: run ids, references between
settings, measured group lists, roles and the `linpath interpolate` options of each run.

Pure Python (no torch, no Snakemake): the Snakefile calls the planner at parse time.
"""

from __future__ import annotations

import copy
import json
import re

import pytest

from linpath.study.plan import Plan, as_json
from linpath.foundations.hparams import SettingsError, ShapeThresholds, SweepSpec

RUN_ID = re.compile(r"^(?P<setting>[A-Za-z0-9_]+)-s(?P<seed>\d+)-(?P<hash>[0-9a-f]{8})$")

SETTINGS = {
    "base": {"experiment": "E2", "run": {"train": {"save_epochs": [1]}}},
    "t_all_but_ri1": {"experiment": "E6", "baseline": "base",
                      "run": {"init": {"source": "@base/final.pt", "groups": {"block1": "@base/init.pt"}}}},
    "base_nowd": {"experiment": "E9", "baseline": "base", "run": {"train": {"weight_decay": 0}}},
    "barrier_at": {"experiment": "E5", "baseline": "base_nowd",
                   "run": {"init": {"source": "@barrier:base_nowd/at"}, "train": {"weight_decay": 0}}},
    "small_lr": {"experiment": "E11", "baseline": "base",
                 "run": {"train": {"group_overrides": {"@barrier_groups:base": {"lr": 0.005}}}}},
    "wd_no_barrier": {"experiment": "E11", "baseline": "base",
                      "run": {"train": {"weight_decay": 0,
                                        "group_overrides": {"@no_barrier_groups:base": {"weight_decay": 5.0e-4}}}}},
    "source": {"experiment": "E3", "aux": True, "run": {"data": {"dataset": "digits_rot4"}},
               "paths": {"groups": False}},
    "pretrained": {"experiment": "E3", "baseline": "base",
                   "run": {"init": {"source": "@source/final.pt", "exclude": ["head"]}}},
    "rl_source": {"experiment": "E4", "aux": True, "run": {"data": {"random_labels": 1.0}}},
    "rl_block1": {"experiment": "E7", "baseline": "base",
                  "run": {"init": {"groups": {"block1": "@rl_source/final.pt"}}}},
    "mlp": {"experiment": "E13", "run": {"model": {"arch": "mlp", "hidden": [16, 16, 16]}},
            "paths": {"starts": ["init", "other"]}},
    "mlp_widen": {"experiment": "E13", "baseline": "mlp",
                  "run": {"model": {"arch": "mlp", "hidden": [16, 16, 16],
                                    "group_width": {"@barrier_groups:mlp": 2.0}}}},
}


def make_config(settings: dict | None = None, **top) -> dict:
    config = {
        "seeds": [0, 1],
        "base": {
            "model": {"arch": "resnet18", "width": 4},
            "data": {"dataset": "digits", "augment": "standard"},
            "train": {"optimizer": "sgd", "lr": 0.05, "weight_decay": 5.0e-4, "epochs": 2, "milestones": [1]},
        },
        "settings": copy.deepcopy(SETTINGS if settings is None else settings),
        "table1": [],
    }
    config.update(copy.deepcopy(top))
    return config


@pytest.fixture
def plan() -> Plan:
    return Plan(make_config())


def digest(run_id: str) -> str:
    return RUN_ID.match(run_id)["hash"]


# --- run ids -------------------------------------------------------------------------


def test_one_run_per_setting_and_seed_with_id_setting_seed_hash(plan):
    assert len(plan.runs) == len(SETTINGS) * 2
    for run_id, run in plan.runs.items():
        m = RUN_ID.match(run_id)
        assert m, run_id
        assert (m["setting"], int(m["seed"])) == (run.setting, run.seed)
        assert plan.by_setting[(run.setting, run.seed)] == run_id
    assert {(r.setting, r.seed) for r in plan.runs.values()} == {(s, k) for s in SETTINGS for k in (0, 1)}
    assert plan.runs_of("base") == [plan.by_setting[("base", 0)], plan.by_setting[("base", 1)]]


def test_run_ids_are_stable_across_constructions_and_key_order():
    first = Plan(make_config())
    second = Plan(make_config())
    assert list(first.runs) == list(second.runs)
    # The same settings written in another order (mapping keys, settings) give the same ids.
    reordered = {name: {k: v for k, v in reversed(list(raw.items()))} for name, raw in reversed(list(SETTINGS.items()))}
    reordered["base"] = {"run": {"train": {"save_epochs": [1]}}, "experiment": "E2"}
    third = Plan(make_config(reordered))
    assert set(third.runs) == set(first.runs)


def test_equal_settings_share_the_hash_and_a_changed_setting_changes_it():
    settings = {
        "a": {"experiment": "E9", "run": {"train": {"weight_decay": 0}}},
        "b": {"experiment": "E9", "intervention": "other words, same run", "run": {"train": {"weight_decay": 0}}},
        "c": {"experiment": "E9", "run": {"train": {"weight_decay": 1.0e-3}}},
    }
    plan = Plan(make_config(settings))
    for seed in (0, 1):
        a, b, c = (plan.by_setting[(s, seed)] for s in "abc")
        assert a != b and digest(a) == digest(b)
        assert digest(a) != digest(c)
    # The seed is part of the run: the two seeds of one setting differ.
    assert digest(plan.by_setting[("a", 0)]) != digest(plan.by_setting[("a", 1)])


def test_a_change_upstream_changes_the_ids_of_the_runs_that_read_it_and_no_others():
    before = Plan(make_config())
    changed = copy.deepcopy(SETTINGS)
    changed["base"]["run"]["train"]["lr"] = 0.01
    after = Plan(make_config(changed))
    readers = {"base", "t_all_but_ri1", "small_lr", "wd_no_barrier"}  # @base/..., @barrier_groups:base
    for (setting, seed), run_id in before.by_setting.items():
        if setting in readers:
            assert after.by_setting[(setting, seed)] != run_id, setting
        else:
            assert after.by_setting[(setting, seed)] == run_id, setting


def test_a_change_of_the_base_recipe_changes_every_run_id():
    before = Plan(make_config())
    config = make_config()
    config["base"]["train"]["lr"] = 0.02
    after = Plan(config)
    assert not set(before.runs) & set(after.runs)


def test_measured_group_references_depend_on_every_seed_of_the_measured_setting():
    """A group list is measured over all seeds: another seed set changes the reader's id, not base's."""
    two, three = Plan(make_config()), Plan(make_config(seeds=[0, 1, 2]))
    assert two.by_setting[("base", 0)] == three.by_setting[("base", 0)]
    assert two.by_setting[("t_all_but_ri1", 0)] == three.by_setting[("t_all_but_ri1", 0)]
    assert two.by_setting[("small_lr", 0)] != three.by_setting[("small_lr", 0)]
    assert sorted(three.runs[three.by_setting[("small_lr", 0)]].upstream) == sorted(three.runs_of("base"))


# --- references ----------------------------------------------------------------------


def test_file_references_resolve_to_the_same_seed_run_directory(plan):
    for seed in (0, 1):
        run_id = plan.by_setting[("t_all_but_ri1", seed)]
        base = plan.by_setting[("base", seed)]
        resolved = plan.resolve(run_id)
        assert resolved["name"] == run_id
        assert resolved["init"]["source"] == f"results/runs/{base}/final.pt"
        assert resolved["init"]["groups"] == {"block1": f"results/runs/{base}/init.pt"}
        assert plan.runs[run_id].upstream == [base]
        assert plan.state_inputs(run_id) == [f"results/runs/{base}/outcome.yaml"], "its outcome, once"
        # The planned recipe keeps the reference; only resolve() makes it concrete.
        assert plan.runs[run_id].recipe["init"]["source"] == "@base/final.pt"


def test_references_follow_the_results_folder():
    plan = Plan(make_config(results="out/elsewhere"))
    run_id = plan.by_setting[("pretrained", 1)]
    source = plan.by_setting[("source", 1)]
    resolved = plan.resolve(run_id)
    assert resolved["init"]["source"] == f"out/elsewhere/runs/{source}/final.pt"
    assert resolved["init"]["exclude"] == ["head"]


def test_barrier_references_resolve_to_the_barrier_folder_of_the_parent_run(plan):
    for seed in (0, 1):
        run_id = plan.by_setting[("barrier_at", seed)]
        parent = plan.by_setting[("base_nowd", seed)]
        assert plan.resolve(run_id)["init"]["source"] == f"results/derived/barrier/{parent}/at.pt"
        assert plan.runs[run_id].barrier_from == parent
        assert plan.barrier_children(parent) == [run_id]
        # The job waits for the checkpoint's barrier.yaml, which says whether at.pt exists.
        assert plan.state_inputs(run_id) == [f"results/derived/barrier/{parent}/barrier.yaml"]
    assert all(r.barrier_from is None for r in plan.runs.values() if r.setting != "barrier_at")


def test_resolve_fills_seed_data_root_and_keeps_base_settings():
    plan = Plan(make_config(data_root="/data/sets"))
    resolved = plan.resolve(plan.by_setting[("base_nowd", 1)])
    assert resolved["init"]["seed"] == 1 and resolved["train"]["seed"] == 1
    assert resolved["data"]["root"] == "/data/sets"
    assert resolved["train"]["weight_decay"] == 0
    assert resolved["train"]["lr"] == 0.05 and resolved["model"] == {"arch": "resnet18", "width": 4}


def test_barrier_group_keys_expand_into_the_measured_groups(plan):
    groups = {"base": {"with_barrier": ["stem", "block1"], "without_barrier": ["block2", "block3", "block4", "head"]}}
    run_id = plan.by_setting[("small_lr", 0)]
    assert plan.runs[run_id].groups_from == ["base"]
    assert [str(plan.layout.groups_file(g)) for g in plan.runs[run_id].groups_from] == ["results/derived/barrier_groups/base.yaml"]
    assert sorted(plan.runs[run_id].upstream) == sorted(plan.runs_of("base"))
    assert plan.resolve(run_id, groups)["train"]["group_overrides"] == {"stem": {"lr": 0.005},
                                                                        "block1": {"lr": 0.005}}
    other = plan.resolve(plan.by_setting[("wd_no_barrier", 0)], groups)["train"]["group_overrides"]
    assert other == {g: {"weight_decay": 5.0e-4} for g in ["block2", "block3", "block4", "head"]}
    # No measured barrier: the mapping becomes empty, the rest of the settings stay.
    none = {"base": {"with_barrier": [], "without_barrier": ["stem"]}}
    resolved = plan.resolve(run_id, none)
    assert resolved["train"]["group_overrides"] == {} and resolved["train"]["lr"] == 0.05


def test_resolving_a_group_reference_before_it_is_measured_names_the_setting(plan):
    run_id = plan.by_setting[("small_lr", 1)]
    with pytest.raises(SettingsError, match=r"barrier groups of base"):
        plan.resolve(run_id)
    with pytest.raises(SettingsError, match=r"barrier groups of base"):
        plan.resolve(run_id, {"mlp": {"with_barrier": [], "without_barrier": []}})


def test_group_width_keeps_only_widenable_groups(plan):
    run_id = plan.by_setting[("mlp_widen", 0)]
    measured = {"mlp": {"with_barrier": ["layer1", "layer3", "head"], "without_barrier": ["layer2"],
                        "widenable": ["layer1", "layer2", "layer3"]}}
    assert plan.resolve(run_id, measured)["model"]["group_width"] == {"layer1": 2.0, "layer3": 2.0}
    measured["mlp"]["widenable"] = ["layer2"]
    assert plan.resolve(run_id, measured)["model"]["group_width"] == {}


def test_check_accepts_the_planned_runs_and_names_a_bad_setting():
    Plan(make_config()).check()
    bad = copy.deepcopy(SETTINGS)
    bad["rl_block1"]["run"]["train"] = {"lr": "abc"}
    plan = Plan(make_config(bad))
    with pytest.raises(SettingsError, match=r"settings\.rl_block1 .*train\.lr"):
        plan.check()


# --- bad references ------------------------------------------------------------------


def _referring(ref: str) -> dict:
    """A setting's `run` that refers to `ref` where that kind of reference is written."""
    if "groups:" in ref:
        return {"train": {"group_overrides": {ref: {"lr": 0.1}}}}
    return {"init": {"source": ref}}


@pytest.mark.parametrize("ref", ["@b/final.pt", "@barrier:b/at", "@barrier_groups:b", "@no_barrier_groups:b"])
def test_circular_references_are_refused_naming_the_settings(ref):
    settings = {
        "a": {"experiment": "E2", "run": _referring(ref)},
        "b": {"experiment": "E2", "run": {"init": {"groups": {"block1": "@a/final.pt"}}}},
    }
    with pytest.raises(SettingsError, match=r"circular reference a -> b -> a"):
        Plan(make_config(settings))


def test_a_setting_referring_to_itself_is_refused():
    settings = {"a": {"experiment": "E2", "run": {"init": {"source": "@a/init.pt"}}}}
    with pytest.raises(SettingsError, match=r"circular reference a -> a"):
        Plan(make_config(settings))


@pytest.mark.parametrize("ref", ["@nonexistent/final.pt", "@barrier:nonexistent/at",
                                 "@barrier_groups:nonexistent"])
def test_a_reference_to_an_unknown_setting_names_the_setting_and_the_reference(ref):
    settings = {"base": {"experiment": "E2"}, "x": {"experiment": "E2", "run": _referring(ref)}}
    with pytest.raises(SettingsError, match=r"settings\.x: reference to unknown setting 'nonexistent'"):
        Plan(make_config(settings))


def test_an_unknown_baseline_and_a_malformed_reference_are_refused():
    with pytest.raises(SettingsError, match=r"settings\.x\.baseline: unknown setting 'nope'"):
        Plan(make_config({"x": {"experiment": "E2", "baseline": "nope"}}))
    with pytest.raises(SettingsError, match=r"settings\.x: malformed reference '@base final'"):
        Plan(make_config({"base": {"experiment": "E2"},
                          "x": {"experiment": "E2", "run": {"init": {"source": "@base final"}}}}))


# --- roles and what to measure -----------------------------------------------------------


def test_role_names_the_training_rule_of_each_run(plan):
    expected = {
        "source": "pretrain", "rl_source": "pretrain_random_labels",
        "t_all_but_ri1": "retrain", "barrier_at": "retrain", "pretrained": "retrain", "rl_block1": "retrain",
        "base": "train", "base_nowd": "train", "small_lr": "train", "wd_no_barrier": "train", "mlp": "train",
        "mlp_widen": "train",
    }
    assert {plan.runs[r].setting: plan.role(r) for r in plan.runs} == expected


def test_a_run_from_another_runs_state_is_a_retrain_even_when_it_also_reads_group_lists():
    settings = copy.deepcopy(SETTINGS)
    settings["t_small_lr"] = {"experiment": "E11", "baseline": "base",
                              "run": {"init": {"source": "@base/final.pt"},
                                      "train": {"group_overrides": {"@barrier_groups:base": {"lr": 0.005}}}}}
    plan = Plan(make_config(settings))
    assert plan.role(plan.by_setting[("t_small_lr", 0)]) == "retrain"


def test_sweep_defaults_live_in_the_dataclass():
    plan = Plan(make_config({"base": {"experiment": "E2"}}))
    assert plan.sweep_spec("base") == SweepSpec()
    assert plan.thresholds() == ShapeThresholds(), "no `shapes` section: ShapeThresholds' own defaults"
    assert json.loads(as_json(plan.sweep_spec("base")))["alphas"] == SweepSpec.alphas


def test_a_settings_own_paths_override_the_config_defaults():
    config = make_config(
        paths={"alphas": "0:1:5", "starts": ["init"], "groups": True, "param_groups": False,
               "bn_modes": ["interpolate"], "bn_subset": 256, "batch_size": 512},
        shapes={"barrier_tol": 0.05, "plateau_alpha": 0.6, "label_min_share": 0.3},
    )
    config["settings"]["base"]["paths"] = {"starts": ["init", "other", "epoch:1"], "param_groups": True,
                                           "bn_modes": ["interpolate", "recompute"]}
    plan = Plan(config)
    assert plan.sweep_spec("base") == SweepSpec(alphas="0:1:5", starts=["init", "other", "epoch:1"], groups=True,
                                                param_groups=True, bn_modes=["interpolate", "recompute"],
                                                bn_subset=256, batch_size=512)
    assert plan.sweep_spec("source") == SweepSpec(alphas="0:1:5", groups=False, bn_subset=256, batch_size=512)
    assert plan.thresholds() == ShapeThresholds(barrier_tol=0.05, plateau_alpha=0.6), "table rules are not thresholds"


@pytest.mark.parametrize("paths,where", [
    ({"starts": ["init", "somewhere"]}, "settings.base.paths.starts[1]"),
    ({"bn_modes": ["fold"]}, "settings.base.paths.bn_modes[0]"),
    ({"alphas": "0:1:x"}, "settings.base.paths.alphas"),
    ({"bn_subset": 0}, "settings.base.paths.bn_subset"),
    ({"bogus": 1}, "settings.base.paths.bogus"),
])
def test_a_bad_sweep_setting_names_its_key(paths, where):
    config = make_config()
    config["settings"]["base"]["paths"] = paths
    with pytest.raises(SettingsError, match=re.escape(where)):
        Plan(config).check()


def test_helper_runs_are_planned_only_where_a_run_reads_them():
    settings = copy.deepcopy(SETTINGS)
    plan = Plan(make_config(settings))
    assert {plan.runs[r].setting for r in plan.runs} >= {"source", "rl_source"}
    del settings["pretrained"], settings["rl_block1"]
    plan = Plan(make_config(settings))
    assert not {plan.runs[r].setting for r in plan.runs} & {"source", "rl_source"}


def test_moving_the_data_folder_keeps_the_run_ids_but_not_the_resolved_root():
    here, there = Plan(make_config()), Plan(make_config(data_root="/elsewhere/data"))
    assert list(here.runs) == list(there.runs)
    run_id = next(iter(there.runs))
    assert there.resolve(run_id)["data"]["root"] == "/elsewhere/data"


# --- recipes from another setting (`like`) and dropped settings (`enabled: false`) -------------


def test_like_starts_the_recipe_from_another_settings_and_merges_its_own_over_it():
    settings = copy.deepcopy(SETTINGS)
    settings["mlp_widen"] = {"experiment": "E13", "baseline": "mlp", "like": "mlp",
                             "run": {"model": {"group_width": {"@barrier_groups:mlp": 2.0}}, "train": {"lr": 0.2}}}
    plan = Plan(make_config(settings))
    groups = {"mlp": {"with_barrier": ["layer1"], "without_barrier": ["layer2"], "widenable": ["layer1", "layer2"]}}
    widen = plan.resolve(plan.by_setting[("mlp_widen", 0)], groups)
    mlp = plan.resolve(plan.by_setting[("mlp", 0)], groups)
    assert widen["model"]["hidden"] == mlp["model"]["hidden"] == [16, 16, 16]
    assert widen["model"]["group_width"] == {"layer1": 2.0} and widen["train"]["lr"] == 0.2
    assert mlp["train"]["lr"] == 0.05, "the parent's recipe is not changed"
    # A chain of two `like`s, and a cycle.
    settings["mlp_wider"] = {"experiment": "E13", "like": "mlp_widen", "run": {"train": {"epochs": 5}}}
    wider = Plan(make_config(settings)).settings["mlp_wider"].run
    assert wider["model"]["hidden"] == [16, 16, 16] and wider["train"] == {"lr": 0.2, "epochs": 5}
    settings["mlp"]["like"] = "mlp_wider"
    with pytest.raises(SettingsError, match="circular 'like'"):
        Plan(make_config(settings))


def test_a_disabled_setting_is_not_planned_and_cannot_be_referred_to():
    settings = copy.deepcopy(SETTINGS)
    settings["rl_block1"]["enabled"] = False
    plan = Plan(make_config(settings))
    assert "rl_block1" not in plan.settings and not any(r.setting == "rl_block1" for r in plan.runs.values())
    settings["base"]["enabled"] = False
    with pytest.raises(SettingsError, match="disabled"):
        Plan(make_config(settings))


# --- runs the measurements skip ------------------------------------------------------------


def measured(with_barrier: list[str], without: list[str], has_barrier: bool):
    groups = {s: {"with_barrier": with_barrier, "without_barrier": without, "ranked": with_barrier,
                  "widenable": ["layer1", "layer2", "layer3"]} for s in ("base", "mlp")}
    return groups, lambda plan: {r.barrier_from: {"has_barrier": has_barrier, "reason": "no barrier: delta=0"}
                                 for r in plan.runs.values() if r.barrier_from}


def test_runs_decided_by_measurements_are_known_before_they_are_measured(plan):
    measured_settings = {plan.runs[r].setting for r in plan.runs if plan.measured(r)}
    assert measured_settings == {"barrier_at", "small_lr", "wd_no_barrier", "mlp_widen"}


def test_an_empty_measured_group_list_skips_the_run_instead_of_training_a_copy(plan):
    groups, barriers = measured([], ["stem", "block1", "layer1"], has_barrier=False)
    skipped = {r: plan.skip_reason(r, groups, barriers(plan)) for r in plan.runs if plan.measured(r)}
    by_setting = {plan.runs[r].setting: why for r, why in skipped.items()}
    assert by_setting["small_lr"] == "no barrier groups measured in base (@barrier_groups:base)"
    assert by_setting["mlp_widen"] == "no barrier groups measured in mlp (@barrier_groups:mlp)"
    assert by_setting["barrier_at"].startswith("no barrier on the path of base_nowd-s")
    assert by_setting["wd_no_barrier"] is None, "its own list (groups without barriers) is not empty"

    groups, barriers = measured(["block2", "layer2"], ["stem"], has_barrier=True)
    assert all(plan.skip_reason(r, groups, barriers(plan)) is None for r in plan.runs if plan.measured(r))


def test_a_group_width_on_groups_that_cannot_change_width_is_skipped(plan):
    groups, barriers = measured(["head"], [], has_barrier=True)  # a barrier only in a group without width
    mlp_widen = plan.by_setting[("mlp_widen", 0)]
    assert plan.skip_reason(mlp_widen, groups, barriers(plan)) == "none of the measured groups can change width"
