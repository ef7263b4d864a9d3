"""REINFORCE with a moving-average baseline (Williams, 1992; as in ENAS, Pham et al., ICML 2018,
Sec. 2.2). Its baseline decay follows NAS-Bench-201's REINFORCE (Dong & Yang, ICLR 2020), whose
reward is a table lookup rather than a weight-sharing score (methods/table_baselines.py).

Each step samples s_i ~ Categorical(p_i) for every decision and runs only s_i, unscaled: the
forward is the single-path child's. After the forward the pipeline puts a scalar reward R
(higher is better; validation-batch accuracy) into ``selection.info["reward"]``. The ascent
direction for E[R] is (R - b) * grad log p(s) = (R - b) * (e_{s_i} - p_i) for every decision i;
``alpha_grad`` returns its negative, the gradient of the loss a minimising optimizer wants.

Baseline b: an exponential moving average of the rewards, b <- d * b + (1 - d) * R, started at
the first reward. Default decay d = 0.9, NAS-Bench-201's REINFORCE script
(AutoDL-Projects ``scripts-search/algos/REINFORCE.sh``: ``--EMA_momentum 0.9``); ENAS's
controller uses 0.99 (``controller_bl_dec``). NAS-Bench-201's code folds the current reward into
its (bias-corrected) average before subtracting it; here b is updated after the advantage is
computed, so the baseline never contains the reward it is subtracted from and the gradient
estimate stays unbiased. The first step's advantage is 0 either way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from methods.estimators.base import ESTIMATORS, Estimator, zero_fixed_rows
from nasbench.arch_params import ArchParameters
from nasbench.errors import UserError
from nasbench.supernet import Selection, one_hot_rows


@ESTIMATORS.register("reinforce")
class ReinforceEstimator(Estimator):
    name = "reinforce"
    single_path = True
    needs_reward = True

    def __init__(self, baseline_decay: float = 0.9) -> None:
        if not 0.0 <= baseline_decay < 1.0:
            raise UserError(f"baseline_decay={baseline_decay}: must be in [0, 1)")
        super().__init__(baseline_decay=baseline_decay)
        self.decay = float(baseline_decay)
        self.baseline: float | None = None

    def sample(self, arch: ArchParameters, generator: torch.Generator, device: torch.device) -> Selection:
        probs = arch.probs().detach()
        sample = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        for i, k in arch.fixed.items():
            sample[i] = k
        return Selection(active=[[k] for k in sample.tolist()], info={"probs": probs, "sample": sample})

    def alpha_grad(self, arch: ArchParameters, selection: Selection) -> Tensor:
        if "reward" not in selection.info:
            raise KeyError('reinforce needs selection.info["reward"] before alpha_grad (needs_reward is True)')
        reward = float(selection.info["reward"])
        if self.baseline is None:
            self.baseline = reward
        advantage = reward - self.baseline
        probs, sample = selection.info["probs"], selection.info["sample"]
        grad = -advantage * (one_hot_rows(sample, probs.shape[1]) - probs)
        self.baseline = self.decay * self.baseline + (1.0 - self.decay) * reward
        selection.info["advantage"] = advantage
        return zero_fixed_rows(grad, arch)

    def state_dict(self) -> dict[str, Any]:
        return {"baseline": self.baseline}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        baseline = state.get("baseline")
        self.baseline = None if baseline is None else float(baseline)
