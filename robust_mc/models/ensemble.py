"""Several networks as one model, so that an attack sees (and differentiates) the whole."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Combine = Literal["logits", "probs"]


class Ensemble(nn.Module):
    """Maps [0, 1] images (B, C, H, W) to (B, classes): the mean of the members' logits, or with
    ``combine="probs"`` the log of the mean of their softmax probabilities (so that cross-entropy
    on the output is the loss of the averaged prediction)."""

    def __init__(self, members: Sequence[nn.Module], combine: Combine = "logits") -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        if combine not in ("logits", "probs"):
            raise ValueError(f"combine must be 'logits' or 'probs', not {combine!r}")
        self.members = nn.ModuleList(members)
        self.combine = combine

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = torch.stack([member(x) for member in self.members])  # (M, B, classes)
        if self.combine == "logits":
            return outputs.mean(0)
        log_probs = F.log_softmax(outputs.float(), dim=-1)
        return torch.logsumexp(log_probs, dim=0) - math.log(len(self.members))
