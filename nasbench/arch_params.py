"""The architecture parameters alpha and the decisions already fixed.

alpha is one (decisions x candidates) tensor of logits, kept on the CPU: it is tiny, and
sampling from it on the CPU with a seeded generator makes every sampled path reproducible (and
identical on every rank of a distributed run). Entries that are not real candidates (spaces
whose decisions have fewer candidates than the widest) are masked out of the softmax.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from nasbench.spaces.base import Arch


class ArchParameters(nn.Module):
    def __init__(
        self, mask: Tensor, init_mean: float = 0.0, init_std: float = 0.0, generator: torch.Generator | None = None
    ) -> None:
        super().__init__()
        alpha = torch.full(mask.shape, float(init_mean))
        if init_std > 0:
            alpha += init_std * torch.randn(mask.shape, generator=generator)
        self.alpha = nn.Parameter(alpha)
        self.register_buffer("mask", mask.clone())
        self.fixed: dict[int, int] = {}
        self._fixed_rows: dict[int, Tensor] = {}

    def get_extra_state(self) -> dict:
        """The fixed decisions travel with alpha in a state dict (checkpoints)."""
        return {"fixed": [[i, k] for i, k in self.fixed.items()], "rows": [[i, r] for i, r in self._fixed_rows.items()]}

    def set_extra_state(self, state: dict) -> None:
        self.fixed = {int(i): int(k) for i, k in state["fixed"]}
        self._fixed_rows = {int(i): r.clone() for i, r in state["rows"]}

    def logits(self) -> Tensor:
        return self.alpha.masked_fill(~self.mask, float("-inf"))

    def probs(self) -> Tensor:
        """p = softmax(alpha) per decision (differentiable; ``.detach()`` where no grad is wanted)."""
        return torch.softmax(self.logits(), dim=-1)

    def entropy(self) -> float:
        """Mean entropy of p over the decisions still free, in nats (log K at uniform)."""
        with torch.no_grad():
            p = self.probs()
            h = -(p * torch.log(p.clamp_min(1e-30))).sum(-1)
            free = [i for i in range(len(h)) if i not in self.fixed]
            return float(h[free].mean()) if free else 0.0

    def derive(self) -> Arch:
        """The argmax architecture, with fixed decisions at their fixed op."""
        arch = self.probs().detach().argmax(-1).tolist()
        for i, k in self.fixed.items():
            arch[i] = k
        return tuple(int(k) for k in arch)

    def fix(self, decision: int, op: int) -> None:
        """Freeze a decision at ``op``; its row of alpha stops changing."""
        self.fixed[decision] = op
        self._fixed_rows[decision] = self.alpha.detach()[decision].clone()

    def restore_fixed(self) -> None:
        """Undo optimizer drift (Adam momentum) on fixed rows, as the official DSNAS code does."""
        with torch.no_grad():
            for i, row in self._fixed_rows.items():
                self.alpha[i] = row
