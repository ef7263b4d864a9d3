"""EnTranNAS: engine cells search, transit cells carry the derived sub-graph (Yang et al.,
"Towards Improving the Consistency, Efficiency, and Flexibility of Differentiable Neural
Architecture Search", CVPR 2021, arXiv 2101.11342). No official code exists: the reading is a
survey's account (Heuillet et al., arXiv 2304.05405, Sec. 4.1; docs/fidelity.md, "EnTranNAS"),
its assumptions [A] labelled in the estimator (methods/estimators/entrannas.py) and in
experiments/conf/method/entrannas.yaml.

DARTS's first-order bilevel search [A: DARTS's recipe and alpha optimizer] on the DARTS cell
space, with three differences:

- only ``method.engine_cells`` are mixtures; every other cell (transit) runs the sub-graph
  derived from the current alpha, re-derived at every step;
- ``method.derivation``: ``top2`` (DARTS's rule) or ``dst`` (EnTranNAS-DST's learned per-node
  thresholds; any number of inputs per node);
- feature sharing (``method.space_options.darts.feature_sharing``, default true): each op on
  each cell input is computed once, with one set of weights, for every node that reads it.

The searched architecture is exactly what the transit cells run at the end of the search; it is
retrained from scratch, as every two-stage method's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from methods.alpha_search import AlphaSearch
from methods.base import METHODS, SearchOutcome
from methods.estimators.entrannas import EnTranNASEstimator
from nasbench.errors import UserError


@METHODS.register("entrannas")
class EnTranNAS(AlphaSearch):
    name = "entrannas"
    alpha_data = "valid"
    fixes_decisions = True  # transit cells leave ops unused: DistributedDataParallel must expect unused weights

    @classmethod
    def supports(cls, space: type) -> bool:
        return hasattr(space, "search_cell_kinds")

    @classmethod
    def check_estimator(cls, cfg, estimator) -> None:
        super().check_estimator(cfg, estimator)
        if not isinstance(estimator, EnTranNASEstimator):
            raise UserError(
                f"method entrannas runs engine and transit cells; estimator {estimator.name} has no transit cells:"
                " use estimator=entrannas (the default)"
            )

    @classmethod
    def bind_estimator(cls, cfg: Mapping[str, Any], estimator: Any, space: Any, device: torch.device) -> None:
        if not cls.supports(type(space)):
            raise UserError(
                f"method entrannas splits a cell search network into engine and transit cells; space"
                f" {space.name} has no cells: use space=darts"
            )
        if isinstance(estimator, EnTranNASEstimator):
            estimator.configure(str(cfg["derivation"]), cfg.get("engine_cells"), float(cfg.get("beta_init", 0.0)))
        super().bind_estimator(cfg, estimator, space, device)

    def search_stage(self) -> SearchOutcome:
        """DARTS's search; the architecture is the transit cells' sub-graph at its end."""
        outcome = super().search_stage()
        estimator: EnTranNASEstimator = self.ctx.estimator
        outcome.arch = estimator.derived_arch(outcome.alpha)
        extra = dict(outcome.extra)
        extra.update(
            derivation=estimator.derivation,
            engine_cells=estimator.engines,
            transit_cells=estimator.transit,
        )
        if estimator.beta is not None:
            extra["dst_thresholds"] = [round(float(t), 5) for t in torch.sigmoid(estimator.beta.detach())]
        outcome.extra = extra
        return outcome
