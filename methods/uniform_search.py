"""The two-stage pipeline of SPOS and random search: a uniformly trained supernet, a search
over architectures scored with its weights, then a retrain from scratch.

1. ``search``: every step trains one path drawn uniformly (SPOS Sec. 3.2; Li & Talwalkar 2019's
   random search with weight sharing); alpha does not exist. With ``method.flops_bins_mmacs``
   [low, high, step] the path is drawn uniformly over FLOPs bins instead (official SPOS
   src/Supernet/train.py: [290, 360, 10] at ImageNet scale; :class:`FlopsBinSampler`).
2. ``select`` (counted: it is part of the search cost): candidates scored on the held-out split
   with inherited weights after BatchNorm recalibration, at most ``budget.scored_archs`` of
   them, under ``method.flops_limit_mmacs`` (null: no limit).
3. The winner's search-stage accuracy (inherited weights, test set), then ``retrain``.
"""

from __future__ import annotations

from typing import Any

import torch

from methods.base import Method, MethodResult, SearchOutcome
from methods.evolution import FlopsLimit, SupernetScorer
from methods.phases import run_search_phase, start_search, two_stage_finish
from methods.steps import weight_step
from nasbench.arch_params import ArchParameters
from nasbench.errors import UserError
from nasbench.spaces.base import Arch
from nasbench.supernet import Selection


class FlopsBinSampler:
    """Official SPOS's ``get_uniform_sample_cand``: pick one of the FLOPs bins [l, l + step) from
    ``low`` to ``high`` (MMACs of the whole child) uniformly, then draw uniform paths until one
    falls in it, at most ``tries`` (500); after that, any uniform path. It stands in for the
    estimator in the weight steps (draws from the run's sampler: reproducible, checkpointed)."""

    learns_alpha = False

    def __init__(self, estimator: Any, limit: FlopsLimit, bins: list[float], tries: int = 500) -> None:
        low, high, step = (float(v) for v in bins)
        if not (0 < step and low < high):
            raise UserError(f"method.flops_bins_mmacs={bins}: give [low, high, step] with low < high and step > 0")
        self.estimator, self.limit, self.tries = estimator, limit, tries
        self.bins = [(lo, lo + step) for lo in torch.arange(low, high, step).tolist()]

    def sample(self, arch: ArchParameters, generator: torch.Generator, device: torch.device) -> Selection:
        lo, hi = self.bins[int(torch.randint(len(self.bins), (), generator=generator))]
        for _ in range(self.tries):
            selection = self.estimator.sample(arch, generator, device)
            if lo <= self.limit.mmacs(tuple(k for (k,) in selection.active)) <= hi:
                return selection
        return self.estimator.sample(arch, generator, device)


class UniformSupernetSearch(Method):
    one_stage = False
    alpha = "none"

    def select(self, scorer: SupernetScorer, limit: FlopsLimit, budget: int) -> tuple[Arch, dict[str, Any]]:
        raise NotImplementedError

    def search_stage(self) -> SearchOutcome:
        ctx = self.ctx
        search_epochs = self.epochs("search_epochs", minimum=1)
        budget = int(ctx.budget["scored_archs"])
        if budget < 1:
            raise UserError(f"scored_archs={budget}: must be at least 1")
        s = start_search(self, search_epochs)
        limit = FlopsLimit(ctx.space, self.cfg.get("flops_limit_mmacs"))
        bins = self.cfg.get("flops_bins_mmacs")
        sampler = FlopsBinSampler(ctx.estimator, limit, list(bins)) if bins else ctx.estimator
        args = (s.trained, sampler, s.arch, s.sampler, ctx.device, ctx.trainer.loss, s.weight_opt)
        step = weight_step(*args, s.options)
        run_search_phase(ctx, "search", search_epochs, step, s)
        scorer = SupernetScorer(ctx, s.supernet)

        def select() -> tuple[list[int], dict[str, Any]]:
            with ctx.meter.phase("select"):
                arch, log = self.select(scorer, limit, budget)
            log.update({"best_valid_acc": scorer(arch), "mmacs": limit.mmacs(arch)})
            ctx.trainer.log({"phase": "select", **log})
            return list(arch), log

        arch, log = ctx.trainer.checkpoint.once("select", select)  # a unit: a resumed run keeps its pick
        return SearchOutcome(s.supernet, arch, None, {"select": log})

    def finish(self, outcome: SearchOutcome) -> MethodResult:
        return two_stage_finish(self.ctx, outcome.arch, outcome.supernet, outcome.extra)
