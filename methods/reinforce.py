"""REINFORCE over the architecture distribution (Williams, 1992; the policy-gradient baseline
of NAS-Bench-201 Sec. 5 and ENAS, Pham et al. 2018).

The weights train on the training split with paths sampled from p; after each weight step the
``reinforce`` estimator samples a path, scores it by its accuracy on a held-out batch (the
reward R; no backward) and moves alpha along (R - b) * sum_i (e_{s_i} - p_i) with an EMA
baseline b. Derive the argmax; retrain.
"""

from __future__ import annotations

from methods.alpha_search import AlphaSearch
from methods.base import METHODS
from nasbench.errors import UserError


@METHODS.register("reinforce")
class Reinforce(AlphaSearch):
    name = "reinforce"
    alpha_data = "valid"

    @classmethod
    def check_estimator(cls, cfg, estimator) -> None:
        super().check_estimator(cfg, estimator)
        if not getattr(estimator, "needs_reward", False):
            raise UserError(
                f"method reinforce scores paths with a reward; estimator {estimator.name} learns from gradients:"
                " use estimator=reinforce (or method=darts/gdas/proxyless for gradient estimators)"
            )
