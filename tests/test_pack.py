"""Seed packing as a step benchmark (linpath.bench.pack): a stacked model is K models, each with its own
BatchNorm statistics, and an epoch of packed steps is K single runs' epochs, each seed on its own
batches, up to float rounding of the grouped kernels.

About the tolerance. A pack computes in grouped kernels (one convolution with groups=K, one batched
matmul) what a single run computes one model at a time: the sums run in another order, ~1e-7
relative per operation. An MLP follows its single run to that over whole epochs; a BatchNorm ResNet
only until a ReLU input lands within rounding of zero, so the epoch comparison uses the MLP and the
ResNet is compared on one forward pass.
"""

from __future__ import annotations

import torch

from conftest import run_spec
from linpath.bench.pack import StackedModel, packed_batches, packed_step
from linpath.engine import data, models
from linpath.engine.train import StepSettings, initial_state, make_optimizer, resolve, train_step
from linpath.foundations.hparams import RunSpec

TOL = 1e-5
CPU_FP32 = StepSettings(torch.device("cpu"), False, False, False)


def seed_specs(model: str, seeds=(0, 1), data_settings: dict | None = None, train: dict | None = None) -> list[RunSpec]:
    """Runs of one setting that differ in their initialisation and data-order seeds, resolved against the digits."""
    specs = [run_spec(model, name=f"seed{s}", init={"seed": s}, data=dict(data_settings or {}),
                      train={**(train or {}), "seed": 100 + s}) for s in seeds]
    prep = data.prepare(specs[0].data)
    return [resolve(spec, prep) for spec in specs]


def max_abs_diff(a: dict, b: dict) -> float:
    assert list(a) == list(b), "same keys in the same order"
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def assert_close_states(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        if not a[k].is_floating_point():
            assert torch.equal(a[k], b[k]), k  # num_batches_tracked
            continue
        assert float((a[k].double() - b[k].double()).abs().max()) <= TOL, k


def test_stacked_resnet_is_k_models_with_their_own_batchnorm_statistics():
    specs = seed_specs("resnet18_w4")
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


def test_an_epoch_of_packed_steps_is_each_seeds_single_epoch():
    specs = seed_specs("mlp", seeds=(0, 1, 2), data_settings={"subset": 0.5}, train={"lr": 0.1})
    prep = data.prepare(specs[0].data)
    loaders = [data.DeviceLoader(prep.train_x, prep.train_y, s.train.batch_size, s.train.seed, prep.augment)
               for s in specs]
    starts = [initial_state(s) for s in specs]

    singles, single_losses = [], []
    for spec, start, loader in zip(specs, starts, loaders):
        model = models.build(spec.model)
        model.load_state_dict(start)
        optimizer = make_optimizer(spec, model)
        single_losses.append(torch.stack([train_step(model, optimizer, xb, yb, "ce", CPU_FP32)
                                          for xb, yb in loader.epoch(1)]))
        singles.append({k: v.detach().clone() for k, v in model.state_dict().items()})

    batches = list(packed_batches(loaders, 1))
    assert len(batches) == len(loaders[0]) and batches[0][0].shape[:2] == (3, specs[0].train.batch_size)
    for k, loader in enumerate(loaders):  # seed k's batches, exactly as its single run draws them
        first_x, first_y = next(iter(loader.epoch(1)))
        assert torch.equal(batches[0][0][k], first_x) and torch.equal(batches[0][1][k], first_y)

    stacked = StackedModel(specs[0].model, starts)
    optimizer = make_optimizer(specs[0], stacked.module)  # the single run's groups, over stacked tensors
    packed_losses = torch.stack([packed_step(stacked, optimizer, xb, yb, "ce", CPU_FP32) for xb, yb in batches])

    assert packed_losses.shape == (len(batches), 3)
    for k in range(3):
        assert float((packed_losses[:, k] - single_losses[k]).abs().max()) <= TOL
        assert max_abs_diff(stacked.state(k), singles[k]) <= TOL
        assert max_abs_diff(stacked.state(k), starts[k]) > 100 * TOL, "the epoch moved the weights"
    assert max_abs_diff(singles[0], singles[1]) > 100 * TOL, "the seeds' runs differ, so the match is per seed"
