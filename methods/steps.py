"""The supernet training steps every method is built from (methods.md, "The one idea").

A method differs from another only in its estimator and its pipeline, so the steps are shared:

- :func:`weight_step`: the estimator samples, one forward and one backward train the weights;
  alpha stays (SPOS, random search, warm-up phases).
- :func:`estimator_step`: single-level. The same batch and the same backward also give alpha
  its gradient (DSNAS, SNAS).
- :func:`bilevel_step`: every ``alpha_every`` steps, an alpha step on a held-out batch first,
  then a weight step on the training batch (DARTS Sec. 2.3 first order, GDAS, ProxylessNAS with
  an alpha step every 5 weight steps, REINFORCE with the held-out accuracy as its reward).

The alpha gradient comes either from autograd (softmax, Gumbel-softmax, Gumbel straight-through:
it reaches ``arch.alpha.grad`` through the combination weights) or from the estimator after
the backward (``alpha_grad``: the DSNAS credit, the binary-gate formula, REINFORCE).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor

from nasbench import distributed
from nasbench.arch_params import ArchParameters
from nasbench.device import autocast
from nasbench.supernet import Selection, Supernet
from nasbench.train import NonFiniteLoss, StepFn, StepOutput, train_batch

LossFn = Callable[[Tensor, Tensor], Tensor]

ExtraGrad = Callable[[Selection], Tensor | None]
#: (held-out x, held-out y, training x, training y) -> metrics; the training batch is for
#: second-order DARTS, whose unrolled weight step needs it
AlphaStep = Callable[[Tensor, Tensor, Tensor, Tensor], dict[str, float]]

_PATHS = hashlib.sha256()
_PATH_COUNT = 0


def trace_path(selection: Selection) -> None:
    """Add a step's sampled ops to the run's path digest (a distributed run checks that every
    rank sampled the same paths; a few microseconds per step)."""
    global _PATH_COUNT
    _PATHS.update(repr(selection.active).encode())
    _PATH_COUNT += 1


def path_digest() -> dict[str, Any]:
    """How many paths this process sampled and a digest of them, in order."""
    return {"paths": _PATH_COUNT, "digest": _PATHS.hexdigest()[:16]}


def check_alpha(arch: ArchParameters) -> None:
    """Stop as soon as an alpha step leaves alpha non-finite (a diverged loss reaches alpha
    before the periodic loss check, and the next sample would fail with a bare error). alpha is a
    small CPU tensor: no device sync."""
    if not bool(torch.isfinite(arch.alpha).all()):
        raise NonFiniteLoss("alpha became non-finite (the loss diverged; lower the lr)")


def _signal_leaf(arch: ArchParameters, selection: Selection) -> Tensor:
    """What the backward must reach for alpha's signal: the sampled weights where the estimator
    reads their gradient (a dummy 1, binary gates), otherwise alpha itself (autograd)."""
    w = selection.weights
    if w is not None and w.is_leaf and w.requires_grad:
        return w
    return arch.alpha


def apply_alpha_update(
    estimator: Any,
    arch: ArchParameters,
    selection: Selection,
    alpha_opt: torch.optim.Optimizer,
    extra_alpha_grad: ExtraGrad | None = None,
) -> None:
    """Turn what the backward left into alpha's gradient, step alpha, keep fixed rows fixed."""
    grad = estimator.alpha_grad(arch, selection)
    if grad is not None:
        arch.alpha.grad = grad if arch.alpha.grad is None else arch.alpha.grad + grad
    extra = extra_alpha_grad(selection) if extra_alpha_grad is not None else None
    if extra is not None:
        arch.alpha.grad = extra if arch.alpha.grad is None else arch.alpha.grad + extra
    if arch.alpha.grad is not None:
        distributed.average_(arch.alpha.grad)  # every rank's batch part: alpha stays identical
        for i in arch.fixed:
            arch.alpha.grad[i] = 0.0
        alpha_opt.step()
        estimator.after_alpha_step(arch, selection)
    arch.restore_fixed()
    check_alpha(arch)


def weight_step(
    supernet: Supernet,
    estimator: Any,
    arch: ArchParameters,
    sampler: torch.Generator,
    device: torch.device,
    loss_fn: LossFn,
    weight_opt: torch.optim.Optimizer,
) -> StepFn:
    """Train the weights on the paths the estimator samples; alpha does not move."""

    def step(x: Tensor, y: Tensor) -> StepOutput:
        with torch.no_grad():  # the combination weights need no graph to alpha here
            selection = estimator.sample(arch, sampler, device)
        trace_path(selection)
        if selection.weights is not None:
            selection.weights = selection.weights.detach()
        return train_batch(lambda inputs: supernet(inputs, selection), x, y, loss_fn, weight_opt)

    return step


def estimator_step(
    supernet: Supernet,
    estimator: Any,
    arch: ArchParameters,
    sampler: torch.Generator,
    device: torch.device,
    loss_fn: LossFn,
    weight_opt: torch.optim.Optimizer,
    alpha_opt: torch.optim.Optimizer | None = None,
    extra_alpha_grad: ExtraGrad | None = None,
) -> StepFn:
    """A single-level supernet step: the estimator samples, one forward, one backward, then the
    weights and (with ``alpha_opt``) alpha update from that same batch and that same backward.

    ``extra_alpha_grad(selection)`` adds a term to alpha's gradient (a resource penalty).
    """
    if alpha_opt is None or not estimator.learns_alpha:
        return weight_step(supernet, estimator, arch, sampler, device, loss_fn, weight_opt)

    def step(x: Tensor, y: Tensor) -> StepOutput:
        selection = estimator.sample(arch, sampler, device)
        trace_path(selection)
        # the only backward: weight gradients and whatever alpha's signal needs
        out = train_batch(lambda inputs: supernet(inputs, selection), x, y, loss_fn, weight_opt, [alpha_opt])
        apply_alpha_update(estimator, arch, selection, alpha_opt, extra_alpha_grad)
        return out

    return step


def held_out_alpha_step(
    supernet: Supernet,
    estimator: Any,
    arch: ArchParameters,
    sampler: torch.Generator,
    device: torch.device,
    loss_fn: LossFn,
    alpha_opt: torch.optim.Optimizer,
) -> AlphaStep:
    """One alpha step on a held-out batch; the weights get no gradient from it.

    A reward estimator (REINFORCE) scores the sampled path by its accuracy on the batch, with no
    backward at all; a gradient estimator backpropagates the held-out loss to alpha's signal only
    (``backward(inputs=...)``: no weight gradients are computed).
    """

    def alpha_step(xv: Tensor, yv: Tensor, x: Tensor, y: Tensor) -> dict[str, float]:
        alpha_opt.zero_grad(set_to_none=True)
        if getattr(estimator, "needs_reward", False):
            with torch.no_grad():
                selection = estimator.sample(arch, sampler, device)
                trace_path(selection)
                with autocast(xv.device.type):
                    logits = supernet(xv, selection)
            reward = distributed.mean_float(float((logits.argmax(1) == yv).float().mean()))
            selection.info["reward"] = reward
            apply_alpha_update(estimator, arch, selection, alpha_opt)
            return {"reward": reward}
        selection = estimator.sample(arch, sampler, device)
        trace_path(selection)
        selection.info["cheap_credit"] = False  # the backward reaches alpha's signal only
        with autocast(xv.device.type):
            loss = loss_fn(supernet(xv, selection), yv)
        loss.backward(inputs=[_signal_leaf(arch, selection)])
        apply_alpha_update(estimator, arch, selection, alpha_opt)
        return {"valid_loss": float(loss.detach())}

    return alpha_step


def bilevel_step(
    supernet: Supernet,
    estimator: Any,
    arch: ArchParameters,
    sampler: torch.Generator,
    device: torch.device,
    loss_fn: LossFn,
    weight_opt: torch.optim.Optimizer,
    alpha_step: AlphaStep,
    valid: Iterator[tuple[Tensor, Tensor]],
    alpha_every: int = 1,
) -> StepFn:
    """Alpha on held-out data every ``alpha_every`` steps (before the weights, as DARTS's
    Algorithm 1), then the weights on the training batch with a freshly sampled path."""
    weights = weight_step(supernet, estimator, arch, sampler, device, loss_fn, weight_opt)
    count = 0

    def step(x: Tensor, y: Tensor) -> StepOutput:
        nonlocal count
        if count % alpha_every == 0:
            xv, yv = next(valid)
            alpha_step(xv, yv, x, y)
        count += 1
        return weights(x, y)

    return step
