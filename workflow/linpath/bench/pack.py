"""Seed packing, as a step benchmark: K seeds of one architecture stepped together as one module.

Every parameter and BatchNorm buffer of the K models is stacked along a new leading dimension
inside one module built by `models.build`, and its forward runs once under `torch.func.vmap`: the
batching rules turn K convolutions into one grouped convolution (groups=K), K BatchNorms into one
over K·C channels and K linear heads into one batched matmul. That is the "wide network" without a
second definition of every architecture, and seed k's slice of every tensor keeps the key and shape
of its single run. Seed k steps on its own mean loss (the pack steps on the sum of the K means,
whose gradient in seed k's slice is that seed's own), so one packed step is K single steps up to
float rounding of the grouped kernels.

`python -m linpath.bench train` times packs of K seeds against the fastest single run
(`--packs`) and checks a packed step against single steps; the prepared GPU check
(benchmarks/gpu_check.sh) runs it on a GPU. No run of the workflow is trained in a pack: on a CPU
packing does not pay (docs/performance.md), and a training loop for packs is worth writing only
once a GPU shows that it does.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call, vmap

from ..engine import data as data_mod
from ..engine import models
from ..engine.objective import summed_loss
from ..engine.train import StepSettings


class StackedModel(nn.Module):
    """K models of one architecture as one module whose every tensor has a leading dimension K.

    `self(xb)` maps a (K, B, ...) batch to (K, B, outputs): slice k goes through model k.
    In training mode the BatchNorm buffers of slice k are updated from slice k's batch only."""

    def __init__(self, model_spec, states: list[dict[str, torch.Tensor]], device: torch.device | str = "cpu"):
        super().__init__()
        with torch.random.fork_rng(devices=[]):  # the constructor's init draws are replaced below
            self.module = models.build(model_spec)
        self.k = len(states)
        for name, _ in list(self.module.named_parameters()):
            _put(self.module, name, nn.Parameter(torch.stack([s[name] for s in states]).to(device)))
        for name, _ in list(self.module.named_buffers()):
            _put(self.module, name, torch.stack([s[name] for s in states]).to(device))
        self.tensors = {**dict(self.module.named_parameters()), **dict(self.module.named_buffers())}
        self._vmapped = vmap(self._one, randomness="error")

    def _one(self, tensors: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.module, tensors, (x,))

    def forward(self, xb: torch.Tensor) -> torch.Tensor:
        return self._vmapped(self.tensors, xb)

    def state(self, k: int) -> dict[str, torch.Tensor]:
        """Seed k's state_dict (keys in the single model's order) as CPU copies."""
        return {name: t[k].detach().to("cpu", copy=True) for name, t in self.module.state_dict().items()}


def _put(module: nn.Module, name: str, value: torch.Tensor) -> None:
    owner, _, attr = name.rpartition(".")
    setattr(module.get_submodule(owner), attr, value)


def packed_step(forward: StackedModel, optimizer: torch.optim.Optimizer, xb: torch.Tensor, yb: torch.Tensor,
                loss: str, how: StepSettings) -> torch.Tensor:
    """`train.train_step` for K seeds: xb (K, B, ...), yb (K, B); returns the K batch mean losses,
    detached and left on the device (no sync)."""
    with torch.autocast(how.device.type, dtype=torch.bfloat16, enabled=how.bf16):
        logits = forward(xb)
    means = torch.stack([summed_loss(logits[k], yb[k], loss) for k in range(len(yb))]) / yb.shape[1]
    optimizer.zero_grad(set_to_none=True)
    means.sum().backward()
    optimizer.step()
    return means.detach()


def packed_batches(loaders: list[data_mod.DeviceLoader], epoch: int):
    """Seed k's batches of `epoch`, exactly as its single run draws them, stacked along dim 0."""
    for batches in zip(*(loader.epoch(epoch) for loader in loaders)):
        yield torch.stack([x for x, _ in batches]), torch.stack([y for _, y in batches])
