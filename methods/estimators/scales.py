"""Non-negative scales, no distribution (DSO-NAS; Zhang, Huang and Wang, "You Only Search Once",
Sec. 3.1-3.2; official code XinbangZhang/DSO-NAS).

Every candidate that is not pruned runs, and the decision's output is sum_k lambda_k O^k(x) with
lambda = ``arch.alpha`` itself (raw, no softmax; non-negative because the method's proximal
update clamps it at 0). The weights tensor is alpha, so the step's one backward puts dL/dlambda
into ``arch.alpha.grad`` by autograd; ``alpha_grad`` returns None. A pruned candidate is a
masked one (``arch.mask`` False): it never runs again; a decision with every candidate pruned
runs nothing (an absent input). The L1 penalty and the pruning belong to the method (methods/dsonas.py).
"""

from __future__ import annotations

import torch

from methods.estimators.base import ESTIMATORS, Estimator, free_candidates, free_flags
from nasbench.arch_params import ArchParameters
from nasbench.supernet import Selection


@ESTIMATORS.register("scales")
class ScalesEstimator(Estimator):
    name = "scales"
    single_path = False
    distribution = False
    stochastic = False

    def sample(self, arch: ArchParameters, generator: torch.Generator, device: torch.device) -> Selection:
        scales = arch.alpha.masked_fill(~arch.mask, 0.0)  # differentiable in the live entries
        return Selection(active=free_candidates(arch), weights=scales.to(device), weighted=free_flags(arch))
