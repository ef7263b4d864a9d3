"""The method interface and registry (design.md, "Method").

A method is a small pipeline of phases over the shared trainer. ``run`` returns the searched
architecture, its search-stage accuracy and the deployable child; the entry point exports and
evaluates the child and writes the run record, identically for every method.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import nn

from nasbench.context import RunContext
from nasbench.errors import UserError
from nasbench.registry import Registry
from nasbench.spaces.base import Arch

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
    #: "required": the pipeline learns alpha, so the estimator must give it a signal;
    #: "optional": either works (DSNAS with estimator=uniform is the uniform-prior ablation);
    #: "none": uniform paths only (SPOS, random search)
    alpha: ClassVar[str] = "required"

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.cfg = ctx.method_cfg
        self.check_estimator(self.cfg, ctx.estimator)

    @classmethod
    def check_estimator(cls, cfg: Mapping[str, Any], estimator: Any) -> None:
        """Refuse, in one line, an estimator this pipeline cannot use."""
        if cls.alpha == "required" and not estimator.learns_alpha:
            raise UserError(
                f"method {cls.name} learns alpha, but estimator {estimator.name} gives alpha no signal;"
                " use an estimator that learns alpha (or method=spos / random for uniform sampling)"
            )
        if cls.alpha == "none" and estimator.learns_alpha:
            raise UserError(
                f"method {cls.name} trains its supernet without alpha (uniform paths), but estimator"
                f" {estimator.name} learns alpha; use estimator=uniform"
            )

    def run(self) -> MethodResult:
        raise NotImplementedError

    # ----- shared helpers ------------------------------------------------------------------
    def alpha_lr(self) -> float:
        """The method's published alpha lr times the budget's ``arch_lr_multiplier``: short
        schedules compensate identically for every method that learns alpha."""
        return float(self.cfg["alpha_optimizer"]["lr"]) * float(self.ctx.budget.get("arch_lr_multiplier", 1.0))

    def epochs(self, key: str, minimum: int = 0) -> int:
        value = int(self.ctx.budget[key])
        if value < minimum:
            raise UserError(f"{key}={value}: must be at least {minimum}")
        return value
