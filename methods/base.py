"""The method interface and registry (design.md, "Method").

A method is a small pipeline of phases over the shared trainer. ``run`` returns the searched
architecture, its search-stage accuracy and the deployable child; the entry point exports and
evaluates the child and writes the run record, identically for every method.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from nasbench.arch_params import ArchParameters
from nasbench.context import RunContext
from nasbench.errors import UserError
from nasbench.registry import Registry
from nasbench.spaces.base import Arch
from nasbench.supernet import Selection, Supernet
from nasbench.train import StepFn, StepOutput

METHODS: Registry = Registry("method", package="methods")


@dataclass
class MethodResult:
    arch: Arch
    search_acc: float
    child: nn.Module
    extra: dict[str, Any] = field(default_factory=dict)


class Method:
    """Base class: subclasses set ``name`` and implement :meth:`run`."""

    name: ClassVar[str] = ""
    #: one-stage methods deploy the searched child; two-stage ones retrain it
    one_stage: ClassVar[bool] = False

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.cfg = ctx.method_cfg

    def run(self) -> MethodResult:
        raise NotImplementedError

    # ----- shared helpers ------------------------------------------------------------------
    def alpha_lr(self) -> float:
        """The method's published alpha lr times the scale's ``arch_lr_multiplier``: short
        schedules compensate identically for every method that learns alpha."""
        return float(self.cfg["alpha_optimizer"]["lr"]) * float(self.ctx.train_cfg.get("arch_lr_multiplier", 1.0))

    def epochs(self, key: str, minimum: int = 0) -> int:
        value = int(self.ctx.train_cfg[key])
        if value < minimum:
            raise UserError(f"{key}={value}: must be at least {minimum}")
        return value


def estimator_step(
    supernet: Supernet,
    estimator: Any,
    arch: ArchParameters,
    sampler: torch.Generator,
    device: torch.device,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    weight_opt: torch.optim.Optimizer,
    alpha_opt: torch.optim.Optimizer | None = None,
    extra_alpha_grad: Callable[[Selection], Tensor | None] | None = None,
) -> StepFn:
    """A single-level supernet step: the estimator samples, one forward, one backward, then the
    weights and (with ``alpha_opt``) alpha update from that same batch and that same backward.

    ``extra_alpha_grad(selection)`` adds a term to alpha's gradient (a resource penalty).
    """

    def step(x: Tensor, y: Tensor) -> StepOutput:
        selection = estimator.sample(arch, sampler, device)
        logits = supernet(x, selection)
        loss = loss_fn(logits, y)
        weight_opt.zero_grad(set_to_none=True)
        loss.backward()  # the only backward: weight gradients and whatever alpha's signal needs
        weight_opt.step()
        if alpha_opt is not None and estimator.learns_alpha:
            grad = estimator.alpha_grad(arch, selection)
            extra = extra_alpha_grad(selection) if extra_alpha_grad is not None else None
            if extra is not None:
                grad = extra if grad is None else grad + extra
            if grad is not None:
                arch.alpha.grad = grad
            alpha_opt.step()
            arch.restore_fixed()
        return StepOutput(loss.detach(), (logits.argmax(1) == y).sum(), y.shape[0])

    return step
