"""The supernet training steps every method is built from.

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

Two per-method choices follow each official code (:class:`StepOptions`): how many independent
paths one step's batch is cut into (``paths``; official DSNAS: one per GPU of 128 images), and
whether candidates that did not run get their weight decay and momentum step anyway
(``set_to_none=False``: zeroed gradients, as the official DSNAS, SPOS, GDAS and DARTS code's
``zero_grad`` of its PyTorch left them) or are left untouched (``set_to_none=True``: gradients
None, SGD skips them, as official ProxylessNAS does on purpose).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from nasbench import distributed
from nasbench.arch_params import ArchParameters
from nasbench.device import autocast
from nasbench.errors import UserError
from nasbench.supernet import Selection, Supernet
from nasbench.train import NonFiniteLoss, StepFn, StepOutput, train_batch

LossFn = Callable[[Tensor, Tensor], Tensor]

ExtraGrad = Callable[[Selection], Tensor | None]
#: (held-out x, held-out y, training x, training y) -> metrics; the training batch is for
#: second-order DARTS, whose unrolled weight step needs it
AlphaStep = Callable[[Tensor, Tensor, Tensor, Tensor], dict[str, float]]


class PathTrace:
    """A chained digest of every path the run sampled, in order (a distributed run checks that
    every rank sampled the same paths; a few microseconds per step). Part of a checkpoint."""

    def __init__(self) -> None:
        self.count, self.digest = 0, b""

    def add(self, selection: Selection) -> None:
        self.digest = hashlib.sha256(self.digest + repr(selection.active).encode()).digest()
        self.count += 1

    def state_dict(self) -> dict[str, Any]:
        return {"count": self.count, "digest": self.digest.hex()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.count, self.digest = int(state["count"]), bytes.fromhex(state["digest"])


PATHS = PathTrace()


def trace_path(selection: Selection) -> None:
    PATHS.add(selection)


def path_digest() -> dict[str, Any]:
    """How many paths this process sampled and a digest of them, in order."""
    return {"paths": PATHS.count, "digest": PATHS.digest.hex()[:16]}


def check_alpha(arch: ArchParameters) -> None:
    """Stop as soon as an alpha step leaves alpha non-finite (a diverged loss reaches alpha
    before the periodic loss check, and the next sample would fail with a bare error). alpha is a
    small CPU tensor: no device sync."""
    if not bool(torch.isfinite(arch.alpha).all()):
        raise NonFiniteLoss("alpha became non-finite (the loss diverged; lower the lr)")


def _signal_leaves(arch: ArchParameters, selection: Selection, estimator: Any) -> list[Tensor]:
    """What the backward must reach for alpha's signal: the sampled weights where the estimator
    reads their gradient (a dummy 1, binary gates), otherwise alpha itself (autograd); and the
    estimator's own architecture parameters (``Estimator.arch_parameters``)."""
    w = selection.weights
    leaf = w if w is not None and w.is_leaf and w.requires_grad else arch.alpha
    return [leaf, *getattr(estimator, "arch_parameters", list)()]


@dataclass(frozen=True)
class StepOptions:
    """How a supernet step treats its batch and the candidates that did not run.

    ``paths``: the batch (this step's, over every rank) is cut into this many sub-batches, each
    on its own independently sampled path; the weights get the gradient of the whole batch's mean
    loss and alpha the mean of the per-path estimates. ``set_to_none``: see the module docstring.
    """

    paths: int = 1
    set_to_none: bool = True
    #: the weights' gradient norm is clipped to this before each step (the budget's ``grad_clip``)
    grad_clip: float | None = None
    #: alpha's gradient norm is clipped to this before its step (``method.alpha_grad_clip``;
    #: official SNAS: 10)
    alpha_grad_clip: float | None = None


def rank_paths(count: int) -> range:
    """Which of a step's ``count`` paths this rank runs: ``count / world`` consecutive ones when
    there are at least as many paths as ranks, else the one its group of ``world / count`` ranks
    shares. Every rank draws all ``count`` paths from the same sampler (so the run is the same
    for any world size, reproducible and checkpointed with the sampler) and runs its share."""
    env = distributed.current()
    world, rank = env.world_size, env.rank
    if count < 1 or (count % world and world % count):
        raise UserError(
            f"paths_per_step={count} with {world} processes: it must be a multiple or a divisor of the number of"
            " processes (each runs the same number of paths)"
        )
    per_rank = max(1, count // world)
    first = rank * count // world
    return range(first, first + per_rank)


def sample_paths(
    estimator: Any,
    arch: ArchParameters,
    sampler: torch.Generator,
    device: torch.device,
    count: int,
    weights_only: bool = False,
) -> Selection | list[Selection]:
    """One step's selections: every rank draws all ``count`` of them (traced in order), and keeps
    its share (:func:`rank_paths`); a single selection where one path serves the whole step.
    ``weights_only``: a step that trains the weights alone (``Estimator.sample_weights_only``)."""
    draw = estimator.sample
    if weights_only:
        draw = getattr(estimator, "sample_weights_only", estimator.sample)
    selections = []
    for _ in range(count):
        selection = draw(arch, sampler, device)
        trace_path(selection)
        selections.append(selection)
    mine = [selections[i] for i in rank_paths(count)]
    return mine[0] if count == 1 else mine


def as_list(selection: Selection | Sequence[Selection]) -> list[Selection]:
    return [selection] if isinstance(selection, Selection) else list(selection)


def apply_alpha_update(
    estimator: Any,
    arch: ArchParameters,
    selection: Selection | Sequence[Selection],
    alpha_opt: torch.optim.Optimizer,
    extra_alpha_grad: ExtraGrad | None = None,
    alpha_grad_clip: float | None = None,
) -> None:
    """Turn what the backward left into alpha's gradient, step alpha, keep fixed rows fixed.

    With several paths in one step (one backward of the whole batch's mean loss), each path's
    ``alpha_grad`` is already its share of the mean estimate, so they add up; the ``extra`` term
    (a resource penalty, one per path) is averaged over the paths. Then the ranks average.
    """
    selections = as_list(selection)
    for sel in selections:
        grad = estimator.alpha_grad(arch, sel)
        if grad is not None:
            arch.alpha.grad = grad if arch.alpha.grad is None else arch.alpha.grad + grad
    if extra_alpha_grad is not None:
        extras = [e for e in (extra_alpha_grad(sel) for sel in selections) if e is not None]
        if extras:
            extra = torch.stack(extras).sum(0) / len(selections)
            arch.alpha.grad = extra if arch.alpha.grad is None else arch.alpha.grad + extra
    if arch.alpha.grad is not None:
        distributed.average_(arch.alpha.grad)  # every rank's batch part: alpha stays identical
        for own in getattr(estimator, "arch_parameters", list)():
            if own.grad is not None:
                distributed.average_(own.grad)
        for i in arch.fixed:
            arch.alpha.grad[i] = 0.0
        if alpha_grad_clip is not None:
            torch.nn.utils.clip_grad_norm_([arch.alpha], float(alpha_grad_clip))
        alpha_opt.step()
        for sel in selections:
            estimator.after_alpha_step(arch, sel)
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
    options: StepOptions = StepOptions(),
) -> StepFn:
    """Train the weights on the paths the estimator samples; alpha does not move."""

    def step(x: Tensor, y: Tensor) -> StepOutput:
        with torch.no_grad():  # the combination weights need no graph to alpha here
            selection = sample_paths(estimator, arch, sampler, device, options.paths, weights_only=True)
        for sel in as_list(selection):
            if sel.weights is not None:
                sel.weights = sel.weights.detach()
        return train_batch(
            lambda inputs: supernet(inputs, selection),
            x,
            y,
            loss_fn,
            weight_opt,
            set_to_none=options.set_to_none,
            grad_clip=options.grad_clip,
        )

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
    options: StepOptions = StepOptions(),
) -> StepFn:
    """A single-level supernet step: the estimator samples, one forward, one backward, then the
    weights and (with ``alpha_opt``) alpha update from that same batch and that same backward.

    ``extra_alpha_grad(selection)`` adds a term to alpha's gradient (a resource penalty).
    With ``options.paths`` k > 1 the batch is cut into k sub-batches on k independent paths: the
    same as the mean of k single-path steps on the sub-batches (weights and alpha gradients).
    """
    if alpha_opt is None or not estimator.learns_alpha:
        return weight_step(supernet, estimator, arch, sampler, device, loss_fn, weight_opt, options)

    def step(x: Tensor, y: Tensor) -> StepOutput:
        selection = sample_paths(estimator, arch, sampler, device, options.paths)
        # the only backward: weight gradients and whatever alpha's signal needs
        out = train_batch(
            lambda inputs: supernet(inputs, selection),
            x,
            y,
            loss_fn,
            weight_opt,
            [alpha_opt],
            set_to_none=options.set_to_none,
            grad_clip=options.grad_clip,
        )
        apply_alpha_update(estimator, arch, selection, alpha_opt, extra_alpha_grad, options.alpha_grad_clip)
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
        loss.backward(inputs=_signal_leaves(arch, selection, estimator))
        apply_alpha_update(estimator, arch, selection, alpha_opt)
        return {"valid_loss": float(loss.detach())}

    return alpha_step


class BilevelStep:
    """Alpha on held-out data every ``alpha_every`` steps (before the weights, as DARTS's
    Algorithm 1), then the weights on the training batch with a freshly sampled path. Its step
    count and held-out stream position are part of a checkpoint."""

    def __init__(
        self, weights: StepFn, alpha_step: AlphaStep, valid: Iterator[tuple[Tensor, Tensor]], alpha_every: int
    ) -> None:
        self.weights, self.alpha_step, self.valid, self.alpha_every = weights, alpha_step, valid, alpha_every
        self.count = 0

    def __call__(self, x: Tensor, y: Tensor) -> StepOutput:
        if self.count % self.alpha_every == 0:
            xv, yv = next(self.valid)
            self.alpha_step(xv, yv, x, y)
        self.count += 1
        return self.weights(x, y)

    def state_dict(self) -> dict[str, Any]:
        valid = self.valid.state_dict() if hasattr(self.valid, "state_dict") else None
        return {"count": self.count, "valid": valid}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.count = int(state["count"])
        if state["valid"] is not None:
            self.valid.load_state_dict(state["valid"])


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
    options: StepOptions = StepOptions(),
) -> BilevelStep:
    """A :class:`BilevelStep` over :func:`weight_step`'s weight updates."""
    weights = weight_step(supernet, estimator, arch, sampler, device, loss_fn, weight_opt, options)
    return BilevelStep(weights, alpha_step, valid, alpha_every)
