"""The method interface and registry.

A method is a small pipeline of phases over the shared trainer. ``run`` returns the searched
architecture, its search-stage accuracy and the deployable child; the entry point exports and
evaluates the child and writes the run record, identically for every method.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from nasbench.arch_params import ArchParameters
from nasbench.context import RunContext
from nasbench.errors import UserError
from nasbench.registry import Registry
from nasbench.spaces.base import Arch
from nasbench.supernet import Supernet

METHODS: Registry = Registry("method", package="methods")


@dataclass
class MethodResult:
    arch: Arch
    search_acc: float
    child: nn.Module
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class SearchOutcome:
    """The end of a method's search stage: the trained supernet and the architecture the method
    picks from it (argmax of alpha, or the winner of evolution / random search). It is what the
    run record's ``supernet.pt`` holds and what the consistency experiment scores."""

    supernet: Supernet
    arch: Arch
    alpha: ArchParameters | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Method:
    """Base class: subclasses set ``name`` and implement :meth:`search_stage` and :meth:`finish`.

    ``run`` is the whole pipeline: the search stage, the supernet saved into the run record
    (``supernet.pt``, so that a later consistency experiment can reuse it), then the finish
    (finetune of the inherited child, or retrain from scratch).
    """

    name: ClassVar[str] = ""
    #: one-stage methods deploy the searched child; two-stage ones retrain it
    one_stage: ClassVar[bool] = False
    #: "required": the pipeline learns alpha, so the estimator must give it a signal;
    #: "optional": either works (DSNAS with estimator=uniform is the uniform-prior ablation);
    #: "none": uniform paths only (SPOS, random search)
    alpha: ClassVar[str] = "required"
    #: whether the search fixes decisions on the way (DSNAS's early fix): a fixed decision runs
    #: one op even under an estimator that runs every candidate
    fixes_decisions: ClassVar[bool] = False

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

    @classmethod
    def supports(cls, space: type) -> bool:
        """Whether this pipeline runs on ``space`` (a SearchSpace class). True unless a method needs
        what only some spaces have (DSO-NAS: connections that carry scales); a refused pair is one
        line of error at the start of a run, and the tests, the bench and the GPU check skip it."""
        return True

    def search_stage(self) -> SearchOutcome:
        """Every counted phase up to the picked architecture (warm-up, search, select)."""
        raise NotImplementedError

    def finish(self, outcome: SearchOutcome) -> MethodResult:
        """From the picked architecture to the deployable child (finetune or retrain)."""
        raise NotImplementedError

    def run(self) -> MethodResult:
        outcome = self.search_stage()
        meta = {
            "method": self.name,
            "space": self.ctx.space.name,
            "data": self.ctx.data.name,
            "budget": self.ctx.budget.get("name"),
            "search_epochs": self.ctx.budget.get("search_epochs"),  # the supernet's training length
            "arch": self.ctx.space.encode(outcome.arch),
            "alpha": None if outcome.alpha is None else outcome.alpha.alpha.detach().cpu(),
            "fixed": {} if outcome.alpha is None else dict(outcome.alpha.fixed),
        }
        # a unit of its own: a resumed run does not write it again
        self.ctx.trainer.checkpoint.once("save_supernet", lambda: self.ctx.record.save_supernet(outcome.supernet, meta))
        return self.finish(outcome)

    # ----- shared helpers ------------------------------------------------------------------
    def alpha_lr(self) -> float:
        """The method's published alpha lr times the budget's ``arch_lr_multiplier``: short
        schedules compensate identically for every method that learns alpha."""
        return float(self.cfg["alpha_optimizer"]["lr"]) * float(self.ctx.budget.get("arch_lr_multiplier", 1.0))

    @classmethod
    def bind_estimator(cls, cfg: Mapping[str, Any], estimator: Any, space: Any, device: torch.device) -> None:
        """Give the estimator the run's space and device before anything samples (run.py, the
        bench). A method whose keys configure its estimator (EnTranNAS: the derivation, the
        engine cells) sets them here first."""
        estimator.bind(space, device)

    def arch_optimizer(self, arch: ArchParameters, weight_opt: torch.optim.Optimizer) -> torch.optim.Optimizer | None:
        """The update of the architecture parameters ``arch.alpha`` after each alpha gradient.

        Default: Adam with the method's published lr, betas and weight decay
        (``method.alpha_optimizer``), times the budget's ``arch_lr_multiplier``; None when the
        config has no ``alpha_optimizer``. A method that owns a different update (DSO-NAS: a
        proximal step on non-negative scales, whose lr follows ``weight_opt``'s) overrides this;
        every step function calls ``zero_grad``/``step`` on what it returns, as on any optimizer.
        """
        opt = self.cfg.get("alpha_optimizer")
        if opt is None:
            return None
        betas = tuple(opt["betas"])
        params = [arch.alpha, *self.ctx.estimator.arch_parameters()]  # an estimator's own (DST thresholds) too
        return torch.optim.Adam(params, lr=self.alpha_lr(), betas=betas, weight_decay=float(opt["weight_decay"]))

    def prepare_supernet(self, supernet: Supernet) -> None:
        """Change the freshly built supernet before its optimizer and any DistributedDataParallel
        wrapper see it (DSO-NAS: BatchNorm scales frozen at 1). Nothing by default."""

    def epochs(self, key: str, minimum: int = 0) -> int:
        value = int(self.ctx.budget[key])
        if value < minimum:
            raise UserError(f"{key}={value}: must be at least {minimum}")
        return value
