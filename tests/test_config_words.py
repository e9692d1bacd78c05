"""Config facts that the comments beside them state: where BN statistics are recomputed at paper scale,
and which device measured throughput figures."""

from __future__ import annotations

import re

import pytest

from linpath.foundations.hparams import InstabilitySpec, PlaneSpec
from linpath.study.plan import Plan
from conftest import load, merged


def test_paper_scale_recomputes_bn_statistics_in_the_instability_analysis_and_planes_not_the_paths():
    """config.yaml (settings.base) says so: every path interpolates BN statistics, as the paper does."""
    plan = Plan(merged("paper.yaml"))
    assert {m for s in plan.settings for m in plan.sweep_spec(s).bn_modes} == {"interpolate"}
    assert "recompute" in InstabilitySpec.from_config(plan.config["instability"]).bn_modes
    own = load("paper.yaml")["planes"]  # the BN ResNet's planes (the default's MLP planes have no BN)
    planes = [PlaneSpec.from_config(plan.config.get("plane"), plan.config["planes"][n], f"planes.{n}") for n in own]
    # Planes through states recompute; a random plane is zero in the BN tensors, so it is measured in both modes.
    assert planes and {p.bn_mode for p in planes if not p.random} == {"recompute"}
    assert sorted(p.bn_mode for p in planes if p.random) == ["interpolate", "recompute"]


@pytest.mark.parametrize("name", ["config.yaml", "throughput_cpu.yaml"])
def test_measured_throughput_names_the_processor(name):
    """A measured figure says which processor gave it (cores, instruction set, clock), not a machine only
    its author knew."""
    device = load(name)["resources"]["throughput"]["device"]
    assert load(name)["resources"]["throughput"]["measured"] is True
    assert "development" not in device
    assert re.search(r"\b\d+ cores\b", device) and "AVX2" in device and re.search(r"\d\.\d+ GHz", device), device
