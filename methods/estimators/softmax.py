"""The DARTS continuous relaxation (Liu et al., ICLR 2019, Sec. 2.2, Eq. 2).

Every candidate runs and the decision's output is the mixture sum_k p_k O^k(x) with
p = softmax(alpha). The weights tensor is p itself, built from alpha with autograd on, so the
step's one backward puts dL/dalpha into ``arch.alpha.grad`` directly:
dL/dalpha_k = p_k (c_k - sum_j p_j c_j), c_k = <dL/dm, O^k(x)>. ``alpha_grad`` returns None.
Bilevel (alpha on the validation split) or single level is the pipeline's choice; this is
the first-order gradient of whatever loss the pipeline backpropagates.
"""

from __future__ import annotations

import torch

from methods.estimators.base import ESTIMATORS, Estimator, free_candidates, free_flags
from nasbench.arch_params import ArchParameters
from nasbench.supernet import Selection


@ESTIMATORS.register("softmax")
class SoftmaxEstimator(Estimator):
    name = "softmax"
    single_path = False
    stochastic = False

    def sample(self, arch: ArchParameters, generator: torch.Generator, device: torch.device) -> Selection:
        probs = arch.probs()  # differentiable: the loss reaches alpha through these weights
        return Selection(
            active=free_candidates(arch),
            weights=probs.to(device),
            weighted=free_flags(arch),
            info={"probs": probs.detach()},
        )

    def relaxation(self) -> Estimator:
        """Its own (deterministic) gradient is the gradient of the mixture's loss L(sum_k p_k O^k)."""
        return self
