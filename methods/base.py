"""The method interface and registry (design.md, "Method").

A method is a small pipeline of phases over the shared trainer. ``run`` returns the searched
architecture, its search-stage accuracy and the deployable child; the entry point exports and
evaluates the child and writes the run record, identically for every method.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from nasbench.context import RunContext
from nasbench.errors import UserError
from nasbench.registry import Registry
from nasbench.spaces.base import Arch
from nasbench.supernet import Selection
from nasbench.train import StepOutput

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
    def epochs(self, key: str, minimum: int = 0) -> int:
        value = int(self.ctx.train_cfg[key])
        if value < minimum:
            raise UserError(f"{key}={value}: must be at least {minimum}")
        return value

    def child_step(self, child: nn.Module, optimizer: torch.optim.Optimizer):
        """A plain training step of a stand-alone network (finetune, retrain)."""
        trainer = self.ctx.trainer

        def step(x: torch.Tensor, y: torch.Tensor) -> StepOutput:
            logits = child(x)
            loss = trainer.loss(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            return StepOutput(loss.detach(), (logits.argmax(1) == y).sum(), y.shape[0])

        return step

    @staticmethod
    def sampled_arch(selection: Selection) -> list[int]:
        return [ops[0] for ops in selection.active]
