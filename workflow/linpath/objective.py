"""Loss and accuracy of logits, shared by training and path evaluation."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F


def summed_loss_and_correct(logits: torch.Tensor, y: torch.Tensor, loss: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum (not mean) of the loss over the batch and the number of correct predictions.

    `loss` is "ce" (cross-entropy over classes) or "bce" (one logit, binary
    cross-entropy, used for the two-class spiral)."""
    logits = logits.float()
    if loss == "bce":
        z = logits.reshape(-1)
        total = F.binary_cross_entropy_with_logits(z, y.float(), reduction="sum")
        correct = ((z > 0).long() == y).sum()
    else:
        total = F.cross_entropy(logits, y, reduction="sum")
        correct = (logits.argmax(1) == y).sum()
    return total, correct


@contextmanager
def strict_fp32() -> Iterator[None]:
    """Full fp32 arithmetic on CUDA (TF32 off for matmul and cuDNN), restored afterwards:
    a reported loss must not depend on the speed settings used for training."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
