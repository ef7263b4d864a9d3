"""Weight-sharing REINFORCE over a factorised architecture distribution (Williams, 1992; ENAS,
Pham et al., ICML 2018, without its LSTM controller: one independent softmax per decision).

The weights train on the training split with paths sampled from p; after each weight step the
``reinforce`` estimator samples a path, scores it by its accuracy on a held-out batch with the
shared weights (the reward R; no backward) and moves alpha along (R - b) * sum_i (e_{s_i} - p_i)
with an EMA baseline b. Derive the argmax; retrain.

This is not NAS-Bench-201's REINFORCE baseline: that one shares no weights and is rewarded by
the benchmark's 12-epoch accuracy of each sampled cell; it runs, with R-EA and random search, as
``experiments/nb201_baselines.py`` (methods/table_baselines.py).
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
