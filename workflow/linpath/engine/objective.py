"""Loss and accuracy of logits, shared by training and path evaluation."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F


def summed_loss(logits: torch.Tensor, y: torch.Tensor, loss: str) -> torch.Tensor:
    """Sum (not mean) of the loss over the batch. `loss` is "ce" (cross-entropy over classes) or "bce"
    (one logit, binary cross-entropy, used for the two-class spiral). A training step needs only this."""
    logits = logits.float()
    if loss == "bce":
        return F.binary_cross_entropy_with_logits(logits.reshape(-1), y.float(), reduction="sum")
    return F.cross_entropy(logits, y, reduction="sum")


def summed_loss_and_correct(logits: torch.Tensor, y: torch.Tensor, loss: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of the loss over the batch (as `summed_loss`) and the number of correct predictions."""
    total = summed_loss(logits, y, loss)
    logits = logits.float()
    if loss == "bce":
        correct = ((logits.reshape(-1) > 0).long() == y).sum()
    else:
        correct = (logits.argmax(1) == y).sum()
    return total, correct


@contextmanager
def strict_fp32(device: torch.device | str = "cpu", *, allow_tf32: bool = False) -> Iterator[None]:
    """Matmuls and convolutions in IEEE fp32 (TF32 off unless `allow_tf32`), autocast off on `device`.

    Losses (per-epoch metrics, paths) are compared across α, runs and machines, and must not depend on
    the speed settings used for training; TF32 rounds the
    inputs of every product to 10 mantissa bits, enough to move a loss by
    ~1e-3. The legacy switches are set, so readers of `allow_tf32` see False,
    and the generic fp32_precision too, since a backend left at "none"
    inherits it. Everything is restored after, through both APIs (torch
    refuses to read a legacy switch that the new API set differently)."""
    b = torch.backends
    knobs = [b.cuda.matmul, b.cudnn.conv, b.cudnn.rnn, b.mkldnn.matmul, b.mkldnn.conv]
    generic, saved = b.fp32_precision, [k.fp32_precision for k in knobs]
    legacy_matmul = _read_or_none(torch.get_float32_matmul_precision)
    legacy_cudnn = _read_or_none(lambda: b.cudnn.allow_tf32)
    try:
        if allow_tf32:  # only to measure what TF32 would change (linpath.bench)
            for knob in knobs[:3]:
                knob.fp32_precision = "tf32"
        else:
            b.cuda.matmul.allow_tf32 = False
            b.cudnn.allow_tf32 = False
            b.fp32_precision = "ieee"
        b.mkldnn.matmul.fp32_precision = "ieee"
        b.mkldnn.conv.fp32_precision = "ieee"
        with torch.autocast(torch.device(device).type, enabled=False):
            yield
    finally:
        if legacy_matmul is not None:
            torch.set_float32_matmul_precision(legacy_matmul)
        if legacy_cudnn is not None:
            b.cudnn.allow_tf32 = legacy_cudnn
        b.fp32_precision = generic
        for knob, value in zip(knobs, saved):
            knob.fp32_precision = value


def _read_or_none(getter):
    try:
        return getter()
    except RuntimeError:  # a mix of the legacy and new precision APIs: only the new one can be restored
        return None
