"""The plan check that flags a Table 1 row whose setting sweeps paths the setting it is compared with does not
sweep (linpath.study.plan.path_set_mismatches): a warning from Plan.check, so that `linpath plan` and the
Snakefile print it, on the real configs and on hand-made ones."""

from __future__ import annotations

import copy
import warnings

import pytest

from linpath.study.plan import Plan, path_set_mismatches, swept_paths
from linpath.foundations.hparams import SweepSpec
from conftest import config, merged


def checked(cfg: dict) -> list[str]:
    """The warnings Plan.check gives for a config."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Plan(cfg).check()
    return [str(w.message) for w in caught if "table1[" in str(w.message)]


@pytest.mark.parametrize("overlays", [(), ("paper.yaml",)])
def test_the_shipped_configs_pass(overlays):
    assert checked(merged(*overlays)) == []


def test_fixed_lr_low_with_group_paths_is_flagged_at_paper_scale():
    cfg = merged("paper.yaml")
    cfg = copy.deepcopy(cfg)
    del cfg["settings"]["fixed_lr_low"]["paths"]
    found = checked(cfg)
    assert len(found) == 1, found
    assert "fixed LR != 0.01" in found[0] and "settings.fixed_lr_low sweeps group paths from init" in found[0]
    assert "settings.fixed_lr_mid" in found[0]


def rows_config(setting_paths: dict, baseline_paths: dict, compare: bool = False) -> dict:
    cfg = config({"mid": {"experiment": "E10", "paths": baseline_paths},
                  "low": {"experiment": "E10", "baseline": "mid", "paths": setting_paths}},
                 [{"intervention": "fixed", "settings": ["low"]}] if not compare else
                 [{"intervention": "fixed", "settings": ["mid"], "compare": {"mid": ["low"]}}])
    cfg["paths"] = {"alphas": "0:1:3"}
    return cfg


def test_only_paths_beyond_the_other_sides_are_flagged():
    assert path_set_mismatches(Plan(rows_config({"groups": True}, {"groups": False})))  # more than its baseline
    assert not path_set_mismatches(Plan(rows_config({"groups": False}, {"groups": True})))  # fewer: its own choice
    assert not path_set_mismatches(Plan(rows_config({"groups": True}, {"groups": True})))
    flagged = path_set_mismatches(Plan(rows_config({"bn_modes": ["interpolate", "recompute"]}, {})))
    assert len(flagged) == 1 and "recompute BN" in flagged[0]
    # a row's `compare` names what a setting is compared with
    assert path_set_mismatches(Plan(rows_config({}, {"starts": ["init", "other"]}, compare=True)))


def test_swept_paths_names_each_kind_start_mode_and_split():
    spec = SweepSpec(starts=["init", "other"], groups=True, bn_modes=["interpolate"], splits=["train"])
    assert swept_paths(spec) == {"full path from init (interpolate BN, train)", "full path from other (interpolate BN, train)",
                                 "group paths from init (interpolate BN, train)"}
