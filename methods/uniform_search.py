"""The two-stage pipeline of SPOS and random search: a uniformly trained supernet, a search
over architectures scored with its weights, then a retrain from scratch.

1. ``search``: every step trains one path drawn uniformly (SPOS Sec. 3.2; Li & Talwalkar 2019's
   random search with weight sharing); alpha does not exist.
2. ``select`` (counted: it is part of the search cost): candidates scored on the held-out split
   with inherited weights after BatchNorm recalibration, at most ``budget.scored_archs`` of
   them, under ``method.flops_limit_mmacs`` (null: no limit).
3. The winner's search-stage accuracy (inherited weights, test set), then ``retrain``.
"""

from __future__ import annotations

from typing import Any

from methods.base import Method, MethodResult, SearchOutcome
from methods.evolution import FlopsLimit, SupernetScorer
from methods.phases import run_search_phase, start_search, two_stage_finish
from methods.steps import weight_step
from nasbench.errors import UserError
from nasbench.spaces.base import Arch


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
        args = (s.trained, ctx.estimator, s.arch, s.sampler, ctx.device, ctx.trainer.loss, s.weight_opt)
        step = weight_step(*args, s.options)
        run_search_phase(ctx, "search", search_epochs, step, s)
        limit = FlopsLimit(ctx.space, self.cfg.get("flops_limit_mmacs"))
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
