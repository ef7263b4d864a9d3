"""The two-stage gradient pipeline shared by SNAS, DARTS, GDAS, ProxylessNAS and REINFORCE.

Phases: an optional weight warm-up (paths sampled from the initial distribution, alpha frozen;
ProxylessNAS Sec. 4), the search (weights and alpha), the derivation of the argmax architecture
(every paper's rule on these spaces: the most likely op per choice layer or cell edge), its
search-stage accuracy with inherited weights, and the retrain from scratch. The methods differ
only in where alpha's data comes from (``alpha_data``) and how often alpha steps
(``method.alpha_every``); the estimator is the method config's default or ``estimator=...``.
"""

from __future__ import annotations

import math
from typing import ClassVar

from methods.base import Method, MethodResult, SearchOutcome
from methods.phases import (
    SupernetSearch,
    alpha_extra,
    estimator_schedule,
    run_search_phase,
    start_search,
    two_stage_finish,
)
from methods.steps import bilevel_step, estimator_step, held_out_alpha_step, weight_step
from nasbench.errors import UserError
from nasbench.train import StepFn


class AlphaSearch(Method):
    """Base class: subclasses set ``name`` and ``alpha_data`` ("train": single level; "valid":
    alpha steps on held-out batches, bilevel)."""

    one_stage = False
    alpha_data: ClassVar[str] = "valid"

    @classmethod
    def check_estimator(cls, cfg, estimator) -> None:
        super().check_estimator(cfg, estimator)
        if getattr(estimator, "needs_reward", False) and cls.alpha_data != "valid":
            raise UserError(
                f"estimator {estimator.name} learns from a reward on held-out batches, but method {cls.name}"
                " updates alpha from the training loss; use a method with held-out alpha steps"
                " (reinforce, darts, gdas, proxyless)"
            )
        if int(cfg.get("alpha_every", 1)) < 1:
            raise UserError(f"method.alpha_every={cfg['alpha_every']}: must be at least 1")

    def alpha_every(self) -> int:
        return int(self.cfg.get("alpha_every", 1))  # at least 1: check_estimator refused less

    def warmup_epochs(self, search_epochs: int) -> int:
        """Weight-only warm-up epochs inside the search budget (``method.weight_warmup_fraction``)."""
        fraction = float(self.cfg.get("weight_warmup_fraction", 0.0))
        if not 0.0 <= fraction < 1.0:
            raise UserError(f"method.weight_warmup_fraction={fraction}: must be at least 0 and less than 1")
        return math.floor(fraction * search_epochs)

    def search_step(self, s: SupernetSearch) -> StepFn:
        ctx = self.ctx
        rest = (ctx.estimator, s.arch, s.sampler, ctx.device, ctx.trainer.loss)
        if self.alpha_data == "train":
            return estimator_step(s.trained, *rest, s.weight_opt, s.alpha_opt, options=s.options)
        alpha_step = held_out_alpha_step(s.supernet, *rest, s.alpha_opt)
        valid = ctx.trainer.valid_stream()
        return bilevel_step(s.trained, *rest, s.weight_opt, alpha_step, valid, self.alpha_every(), s.options)

    def search_stage(self) -> SearchOutcome:
        ctx = self.ctx
        search_epochs = self.epochs("search_epochs", minimum=1)
        warmup = self.warmup_epochs(search_epochs)
        s = start_search(self, search_epochs)
        run_search_phase(
            ctx,
            "warmup",
            warmup,
            weight_step(
                s.trained, ctx.estimator, s.arch, s.sampler, ctx.device, ctx.trainer.loss, s.weight_opt, s.options
            ),
            s,
        )
        run_search_phase(
            ctx,
            "search",
            search_epochs - warmup,
            self.search_step(s),
            s,
            estimator_schedule(ctx, search_epochs - warmup),
        )
        arch = self.ctx.space.derive(s.arch.probs().detach(), s.arch.fixed)  # darts: DARTS's top-2 rule
        return SearchOutcome(s.supernet, arch, s.arch, alpha_extra(self, s.arch))

    def finish(self, outcome: SearchOutcome) -> MethodResult:
        return two_stage_finish(self.ctx, outcome.arch, outcome.supernet, outcome.extra)
