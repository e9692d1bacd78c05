"""Peak memory of a path sweep is bounded by the chunk (PathEvaluator.batch_size), not by the split.

The peak is read from torch's own allocator through the profiler's memory
events (every CPU allocation and free made while a sweep runs, in order), on
real ResNet-18 and ResNet-50 models. The evaluation tensors themselves are
placed on the device before the sweep, so they are not part of what is
measured: what is left is the activations and the interpolated tensors.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from linpath.engine import models
from linpath.foundations.hparams import ModelSpec
from linpath.paths.evaluator import EvalSplit, PathEvaluator

CHUNK = 16


def peak_allocated_bytes(run) -> int:
    """Largest number of CPU bytes held by tensors allocated while `run()` runs, above the start."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run()
    held = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        held += event.self_cpu_memory_usage  # allocations of the op itself; frees are negative [memory] events
        peak = max(peak, held)
    return peak


def largest_activation_bytes(model: nn.Module, x: torch.Tensor) -> int:
    """Bytes of the largest module output of one forward pass of `x`."""
    largest = 0

    def record(_module, _inputs, output):
        nonlocal largest
        if isinstance(output, torch.Tensor):
            largest = max(largest, output.numel() * output.element_size())

    hooks = [m.register_forward_hook(record) for m in model.modules()]
    with torch.inference_mode():
        model.eval()(x)
    for hook in hooks:
        hook.remove()
    return largest


def sweep_peak(spec: ModelSpec, n_samples: int, group: str, bn_mode: str) -> int:
    torch.manual_seed(0)
    start = models.build(spec).state_dict()
    torch.manual_seed(1)
    model = models.build(spec)
    end = model.state_dict()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n_samples, spec.in_channels, spec.input_size, spec.input_size, generator=g)
    y = torch.randint(spec.num_classes, (n_samples,), generator=g)
    bn_data = torch.randn(CHUNK, spec.in_channels, spec.input_size, spec.input_size, generator=g)
    evaluator = PathEvaluator(model, [EvalSplit("train", x, y)], "ce", batch_size=CHUNK, bn_data=bn_data,
                              bn_batch_size=CHUNK)
    return peak_allocated_bytes(lambda: evaluator.sweep(start, end, [0.3, 1.0], group=group, bn_mode=bn_mode))


@pytest.mark.parametrize("arch,width,size,group,bn_mode", [
    ("resnet18", 4, 16, "block2", "interpolate"),
    ("resnet18", 4, 16, "block2", "recompute"),
    ("resnet18", 4, 16, "all", "interpolate"),
    ("resnet50", 2, 8, "block2", "interpolate"),
    ("resnet50", 2, 8, "block3", "recompute"),
])
def test_peak_memory_does_not_grow_with_the_split(arch, width, size, group, bn_mode):
    """4× the samples, the same chunk: the same peak, and a few chunk-sized activations at most.
    (A cache of the prefix over the split, concatenated, would grow by twice its size.)"""
    spec = ModelSpec(arch=arch, width=width, num_classes=10, in_channels=3, input_size=size)
    small, large = (sweep_peak(spec, n, group, bn_mode) for n in (CHUNK, 4 * CHUNK))
    chunk_activation = largest_activation_bytes(models.build(spec), torch.randn(CHUNK, 3, size, size))
    assert large <= small * 1.02 + 16 * 1024, (small, large)
    assert small <= 6 * chunk_activation, (small, chunk_activation)
