"""The gradient at a sampled op's dummy 1 (DSNAS's credit, Hu et al. 2020, Sec. 3.2), without
the multiply and, where the op allows it, without keeping the op's output.

The credit of decision i is r_i = <dL/dO, O> summed over the batch, where O = O_i(x) is the active
op's output. Multiplying O by a dummy 1 gives it by autograd, at the price of one full-size
multiply forward, two backward and a saved O. A candidate op declares how its credit can be had
more cheaply (``credit_kind``, an attribute of the op module):

- ``"output"`` (the default): an identity on O whose backward adds <g, O>; O is saved (a
  ShuffleNet block's output is saved anyway by the next block's first op).
- ``"linear"`` (a linear op: average pooling, identity): an identity on the op's input x whose
  backward adds <dL/dx through this op, x> = <A^T g, x> = <g, A x>. x is saved, which the pooling
  saves anyway.
- ``"batchnorm"`` (an op ending in an affine BatchNorm, ``op.credit_bn``): with O = gamma x_hat +
  beta, <g, O> = sum_c gamma_c dL/dgamma_c + beta_c dL/dbeta_c, read from hooks on gamma and beta
  during the backward: nothing is saved. Needs the full backward of a training step.
- ``"zero"``: the ``none`` op's output is 0, and so is its credit.

Held-out alpha steps backpropagate to the dummy only (``backward(inputs=...)``) and must use
``"output"`` or ``"linear"``: the selection says so with ``info["cheap_credit"] = False``.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch import Tensor, nn

CREDIT_KINDS = ("output", "linear", "batchnorm", "zero")


def inner_product(a: Tensor, b: Tensor) -> Tensor:
    """sum(a * b) over every element, accumulated in at least float32. Two float32 tensors laid
    out alike (channels_last or not) take one fused dot over their memory, without the
    temporary of ``a * b`` (about 2x faster on the CPU)."""
    if a.dtype == b.dtype == torch.float32 and a.shape == b.shape and a.stride() == b.stride():
        order = sorted(range(a.dim()), key=lambda d: -a.stride(d))
        flat_a, flat_b = a.permute(order), b.permute(order)
        if flat_a.is_contiguous() and flat_b.is_contiguous():
            return torch.dot(flat_a.reshape(-1), flat_b.reshape(-1))
    return (a * b).sum(dtype=torch.promote_types(a.dtype, torch.float32))


def add_credit(weights: Tensor, decision: int, op: int, value: Tensor) -> None:
    """weights.grad[decision, op] += value (the dummy is a leaf: its gradient is ours to fill)."""
    if weights.grad is None:
        weights.grad = torch.zeros_like(weights)
    weights.grad[decision, op] += value.to(weights.dtype)


class _Credit(torch.autograd.Function):
    """Identity on ``t``; the backward adds <dL/dt, t> to the dummy's gradient."""

    @staticmethod
    def forward(ctx: Any, t: Tensor, weights: Tensor, decision: int, op: int) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(t)
        ctx.weights, ctx.where = weights, (decision, op)
        return t.view_as(t)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        if ctx.needs_input_grad[1]:
            (t,) = ctx.saved_tensors
            add_credit(ctx.weights, *ctx.where, inner_product(grad, t))
        return grad, None, None, None


_ARMED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # BatchNorm -> [weights, d, k]
_HOOKED: weakref.WeakSet = weakref.WeakSet()


def _batchnorm_hook(bn_ref: weakref.ref, name: str):
    def hook(grad: Tensor) -> None:
        bn = bn_ref()
        target = _ARMED.get(bn) if bn is not None else None
        if target is not None:
            weights, decision, op, pending = target
            add_credit(weights, decision, op, inner_product(getattr(bn, name).detach(), grad))
            pending.discard(name)
            if not pending:  # both halves added: disarmed until the op is sampled again
                del _ARMED[bn]

    return hook


def _arm_batchnorm(bn: nn.BatchNorm2d, weights: Tensor, decision: int, op: int) -> None:
    if bn not in _HOOKED:
        ref = weakref.ref(bn)
        bn.weight.register_hook(_batchnorm_hook(ref, "weight"))
        bn.bias.register_hook(_batchnorm_hook(ref, "bias"))
        _HOOKED.add(bn)
    _ARMED[bn] = (weights, decision, op, {"weight", "bias"})


def run_with_credit(op_module: nn.Module, x: Tensor, weights: Tensor, decision: int, op: int, cheap: bool) -> Tensor:
    """Run the active op so that the backward adds its credit to ``weights.grad[decision, op]``."""
    kind = getattr(op_module, "credit_kind", "output") if cheap else "output"
    if kind == "batchnorm" and op_module.credit_bn.weight is None:  # a non-affine BatchNorm has no gamma
        kind = "output"
    if kind == "zero":
        return op_module(x)
    if kind == "linear":
        return op_module(_Credit.apply(x, weights, decision, op))
    if kind == "batchnorm":
        _arm_batchnorm(op_module.credit_bn, weights, decision, op)
        return op_module(x)
    return _Credit.apply(op_module(x), weights, decision, op)
