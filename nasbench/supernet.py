"""Supernet execution: what runs in a choice layer for one training step.

A :class:`Selection` is what an estimator decides for a step: which candidate ops run in every
decision and with which combination weights. A :class:`ChoiceBlock` runs exactly those ops and
sums their outputs scaled by the weights; it never knows which method is running. Decisions
whose ``weighted`` flag is off run their single op unscaled, exactly as the stand-alone child
would (fixed layers, SPOS, evaluation of a fixed path).

A decision with *probes* runs its one active op unscaled as well, but its backward also writes
the binary-gate gradients dL/dg_j = <dL/dm, O^j(x)> of the active op and of every probed
candidate into ``selection.weights.grad`` (ProxylessNAS, Cai et al., ICLR 2019, Sec. 3.2.1).
The probed ops are recomputed in the backward pass without autograd, as the official
ProxylessNAS ``ArchGradientFunction`` does: it costs compute, not stored activations.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from nasbench.credit import inner_product, run_with_credit


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
        probe: per decision, candidates whose gate gradient is wanted although they do not run
            in the forward, or None (for the whole selection or one decision): no gates. A weighted
            decision with a probe list (possibly empty) runs its single active op unscaled and,
            in the backward, adds <dL/dm, O^j(x)> to ``weights.grad[decision, j]`` for the active
            op and every probed j; several blocks sharing a decision add up. With empty lists
            and a leaf ``weights`` (DSNAS) the backward adds the active op's credit alone, as
            nasbench/credit.py computes it (``info["cheap_credit"]``: by the op's kind).
    """

    active: list[list[int]]
    weights: Tensor | None = None
    weighted: list[bool] | None = None
    info: dict[str, Any] = field(default_factory=dict)
    probe: list[list[int] | None] | None = None
    #: per decision, candidates whose weight is added to the output as a scalar although the op
    #: does not run (value 0 with a straight-through weight, gradient sum(dL/dm)): the official
    #: NAS-Bench-201 GDAS cell's ``forward_gdas``; None: no such terms
    constants: list[list[int]] | None = None
    #: per group of choice blocks (``ChoiceBlock.group``: a DARTS cell's index), the selection
    #: those blocks follow instead of this one (EnTranNAS: transit cells run the derived sub-graph
    #: while engine cells run the mixture); None, or a group not listed: this selection
    groups: dict[int, Selection] | None = None

    @classmethod
    def single_path(cls, arch: Sequence[int]) -> Selection:
        """Run one op per decision, unscaled: the forward of the stand-alone child."""
        return cls(active=[[int(k)] for k in arch])

    def is_weighted(self, decision: int) -> bool:
        if self.weights is None:
            return False
        return True if self.weighted is None else self.weighted[decision]

    def probes(self, decision: int) -> list[int] | None:
        """The probed candidates of a gated decision, or None when the decision has no gates."""
        return None if self.probe is None else self.probe[decision]


class _SelectionSlot:
    """Holds the current step's selection; shared by every choice block of one supernet."""

    def __init__(self) -> None:
        self.selection: Selection | None = None


class ChoiceBlock(nn.Module):
    """One decision's candidate ops inside a supernet (a MixedOp in DARTS terms)."""

    def __init__(
        self, decision: int, candidates: Sequence[nn.Module], slot: _SelectionSlot, group: int | None = None
    ) -> None:
        super().__init__()
        self.decision = decision
        self.candidates = nn.ModuleList(candidates)
        self._slot = slot
        #: which group of blocks this one belongs to (a DARTS cell's index; ``Selection.groups``)
        self.group = group

    def forward(self, x: Tensor) -> Tensor | None:
        selection = self._slot.selection
        if selection is None:
            raise RuntimeError("a supernet must be called with a Selection")
        if selection.groups is not None and self.group in selection.groups:
            selection = selection.groups[self.group]
        ops = selection.active[self.decision]
        if not selection.is_weighted(self.decision):
            if len(ops) != 1:
                raise RuntimeError("an unweighted decision must run exactly one op")
            return self.candidates[ops[0]](x)
        probes = selection.probes(self.decision)
        if probes is not None:
            if len(ops) != 1:
                raise RuntimeError("a gated decision must run exactly one op")
            weights, active = selection.weights, self.candidates[ops[0]]
            if not (torch.is_grad_enabled() and weights.requires_grad):
                return active(x)  # no gate gradient wanted (a weight-only step): nothing to save
            if not probes and weights.is_leaf:  # the active op's gradient alone: DSNAS's credit
                cheap = bool(selection.info.get("cheap_credit", False))
                return run_with_credit(active, x, weights, self.decision, ops[0], cheap)
            return _GateGradient.apply(active(x), x, weights, self, ops[0], tuple(probes))
        weights = selection.weights
        out: Tensor | None = None  # no op runs (every candidate pruned, DSO-NAS): None, an absent input
        for k in ops:
            y = self.candidates[k](x) * weights[self.decision, k]
            out = y if out is None else out + y
        if selection.constants is not None and out is not None:
            for k in selection.constants[self.decision]:
                out = out + weights[self.decision, k].to(out.dtype)
        return out

    @torch.no_grad()
    def gate_gradients(self, x: Tensor, out: Tensor, grad_out: Tensor, active: int, probes: Sequence[int]) -> Tensor:
        """(candidates,) vector of <dL/dm, O^j(x)> for the active op and the probed ones (else 0).

        A probed op is recomputed in the mode the block is in (train: batch statistics, as its
        forward would have used had it been sampled, like the official code), but its buffers
        (BatchNorm running statistics) are restored afterwards: an op that did not run in the
        forward should not have its running statistics moved by the gate computation.
        """
        acc = torch.promote_types(grad_out.dtype, torch.float32)  # accumulate in at least float32
        grads = torch.zeros(len(self.candidates), dtype=acc, device=grad_out.device)
        grads[active] = inner_product(grad_out, out)
        for j in probes:
            op = self.candidates[j]
            buffers = [b.clone() for b in op.buffers()]
            y = op(x)
            for b, saved in zip(op.buffers(), buffers):
                b.copy_(saved)
            grads[j] = inner_product(grad_out, y)
        return grads


class _GateGradient(torch.autograd.Function):
    """Identity on the active op's output; its backward also yields the binary-gate gradients.

    Inputs: the active op's output, the block's input x (saved to recompute probed ops), the
    selection's (decisions x candidates) gate tensor, then non-tensor arguments. The gradient
    returned for the gate tensor is zero except on this block's row, so autograd sums the
    contributions of every block that shares the decision into ``weights.grad``.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, out: Tensor, x: Tensor, weights: Tensor, block: ChoiceBlock, active: int, probes: tuple[int, ...]
    ) -> Tensor:
        ctx.save_for_backward(out, x)
        ctx.block, ctx.active, ctx.probes = block, active, probes
        ctx.gate_meta = (weights.shape, weights.dtype, weights.device)
        kind = x.device.type  # the backward recomputes probed ops under the forward's autocast
        ctx.autocast = (kind, torch.is_autocast_enabled(kind), torch.get_autocast_dtype(kind))
        return out.view_as(out)

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        grad_weights = None
        if ctx.needs_input_grad[2]:
            out, x = ctx.saved_tensors
            block: ChoiceBlock = ctx.block
            kind, enabled, dtype = ctx.autocast
            with torch.autocast(kind, dtype=dtype, enabled=enabled):
                row = block.gate_gradients(x, out, grad_out, ctx.active, ctx.probes)
            shape, dtype, device = ctx.gate_meta
            grad_weights = torch.zeros(shape, dtype=dtype, device=device)
            grad_weights[block.decision, : row.numel()] = row.to(dtype=dtype, device=device)
        return grad_out, None, grad_weights, None, None, None


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

    def forward(self, x: Tensor, selection: Selection | Sequence[Selection]) -> Tensor:
        """The logits of ``x`` on ``selection``'s path; with a list of k selections, ``x`` is cut
        into k consecutive sub-batches (``tensor_split``), each runs its own path (its own
        BatchNorm batch statistics, as on one GPU of a data-parallel run) and the logits are
        concatenated in order: one forward, so that one backward serves every path (DSNAS's
        ``paths_per_step``)."""
        if isinstance(selection, Selection):
            return self._run(x, selection)
        if len(selection) > x.shape[0]:
            raise ValueError(f"{len(selection)} paths for a batch of {x.shape[0]}: at most one path per image")
        return torch.cat([self._run(part, s) for part, s in zip(x.tensor_split(len(selection)), selection)])

    def _run(self, x: Tensor, selection: Selection) -> Tensor:
        self._slot.selection = selection
        try:
            return self.body(x)
        finally:
            self._slot.selection = None


def one_hot_rows(indices: Tensor, num_classes: int) -> Tensor:
    """(L,) long -> (L, K) float one-hot rows."""
    return torch.nn.functional.one_hot(indices, num_classes).to(torch.float32)
