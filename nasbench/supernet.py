"""Supernet execution: what runs in a choice layer for one training step.

A :class:`Selection` is what an estimator decides for a step: which candidate ops run in every
decision and with which combination weights. A :class:`ChoiceBlock` runs exactly those ops and
sums their outputs scaled by the weights; it never knows which method is running. Decisions
whose ``weighted`` flag is off run their single op unscaled, exactly as the stand-alone child
would (fixed layers, SPOS, evaluation of a fixed path).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn


@dataclass
class Selection:
    """One step's choice of ops for every decision of a space.

    Attributes:
        active: per decision, the candidate indices to run (one index for single-path methods).
        weights: a (decisions x candidates) tensor of combination weights, or None when every
            decision runs one op unscaled. For DSNAS it is the one-hot sample with
            ``requires_grad`` (the "dummy 1"), so its gradient after the backward is the credit.
        weighted: per decision, whether the output is scaled by ``weights``.
        info: what the estimator needs again after the backward (probabilities, the sample).
    """

    active: list[list[int]]
    weights: Tensor | None = None
    weighted: list[bool] | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def single_path(cls, arch: Sequence[int]) -> Selection:
        """Run one op per decision, unscaled: the forward of the stand-alone child."""
        return cls(active=[[int(k)] for k in arch])

    def is_weighted(self, decision: int) -> bool:
        if self.weights is None:
            return False
        return True if self.weighted is None else self.weighted[decision]


class _SelectionSlot:
    """Holds the current step's selection; shared by every choice block of one supernet."""

    def __init__(self) -> None:
        self.selection: Selection | None = None


class ChoiceBlock(nn.Module):
    """One decision's candidate ops inside a supernet (a MixedOp in DARTS terms)."""

    def __init__(self, decision: int, candidates: Sequence[nn.Module], slot: _SelectionSlot) -> None:
        super().__init__()
        self.decision = decision
        self.candidates = nn.ModuleList(candidates)
        self._slot = slot

    def forward(self, x: Tensor) -> Tensor:
        selection = self._slot.selection
        if selection is None:
            raise RuntimeError("a supernet must be called with a Selection")
        ops = selection.active[self.decision]
        if not selection.is_weighted(self.decision):
            if len(ops) != 1:
                raise RuntimeError("an unweighted decision must run exactly one op")
            return self.candidates[ops[0]](x)
        weights = selection.weights
        out: Tensor | None = None
        for k in ops:
            y = self.candidates[k](x) * weights[self.decision, k]
            out = y if out is None else out + y
        return out


class Supernet(nn.Module):
    """Base class of every space's supernet: ``forward(x, selection)``.

    Subclasses build their body from :meth:`make_choice_block` and implement :meth:`body`.
    """

    def __init__(self) -> None:
        super().__init__()
        self._slot = _SelectionSlot()

    def make_choice_block(self, decision: int, candidates: Sequence[nn.Module]) -> ChoiceBlock:
        return ChoiceBlock(decision, candidates, self._slot)

    def choice_blocks(self) -> list[ChoiceBlock]:
        return [m for m in self.modules() if isinstance(m, ChoiceBlock)]

    def body(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor, selection: Selection) -> Tensor:
        self._slot.selection = selection
        try:
            return self.body(x)
        finally:
            self._slot.selection = None


def one_hot_rows(indices: Tensor, num_classes: int) -> Tensor:
    """(L,) long -> (L, K) float one-hot rows."""
    return torch.nn.functional.one_hot(indices, num_classes).to(torch.float32)
