"""The DSNAS estimator (Hu et al., CVPR 2020, Sec. 3; official code SNAS-Series/DSNAS).

Each step samples one op per layer, s_i ~ Categorical(p_i), p_i = softmax(alpha_i), and runs
only that op. The op's output is multiplied by the sampled one-hot Z_i, whose entry at s_i is
a "dummy 1" with ``requires_grad``: the forward is numerically the single-path child's, and
after the one backward of the task loss the dummy's gradient is the layer's credit
r_i = dL/dZ_i^{s_i} = <dL/dx_{i+1}, O_i^{s_i}(x_i)> (summed over batch, channels and space).
The alpha gradient is then g_i = r_i * (e_{s_i} - p_i): the credit times grad log p(Z_i). It is
a score-function form with a per-layer first-order credit, the lambda -> 0 limit of SNAS; no
dZ/dalpha and no backward inside forward. Decisions already fixed run their op unscaled.

The multiply by 1 itself is not run: the selection asks the supernet for the active op's gate
gradient alone (empty ``probe`` lists), which nasbench/credit.py computes by the op's kind: one
fused dot product over the op's output or input, or, for an op ending in an affine BatchNorm,
from that BatchNorm's parameter gradients (docs/benchmarks.md).
"""

from __future__ import annotations

import torch
from torch import Tensor

from methods.estimators.base import ESTIMATORS, Estimator
from nasbench.arch_params import ArchParameters
from nasbench.supernet import Selection, one_hot_rows


@ESTIMATORS.register("dsnas")
class DSNASEstimator(Estimator):
    name = "dsnas"

    def sample(self, arch: ArchParameters, generator: torch.Generator, device: torch.device) -> Selection:
        probs = arch.probs().detach()
        sample = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        for i, k in arch.fixed.items():
            sample[i] = k
        dummy = one_hot_rows(sample, probs.shape[1]).to(device).requires_grad_()
        return Selection(
            active=[[k] for k in sample.tolist()],
            weights=dummy,
            weighted=[i not in arch.fixed for i in range(len(sample))],
            info={"probs": probs, "sample": sample, "cheap_credit": True},
            # the dummy multiply without the multiply: the forward is the op's output itself and
            # the backward adds <dL/dx_{i+1}, O_i(x_i)> to the dummy's gradient (no probed ops)
            probe=[[] for _ in range(len(sample))],
        )

    @staticmethod
    def credit(selection: Selection) -> Tensor:
        """r_i = dL/dZ_i^{s_i}: the gradient at each layer's dummy 1 (zero where it went unused)."""
        grad = selection.weights.grad
        sample = selection.info["sample"]
        if grad is None:
            return torch.zeros(len(sample))
        return grad.detach().cpu().gather(1, sample[:, None]).squeeze(1)

    def alpha_grad(self, arch: ArchParameters, selection: Selection) -> Tensor:
        probs, sample = selection.info["probs"], selection.info["sample"]
        grad = self.credit(selection)[:, None] * (one_hot_rows(sample, probs.shape[1]) - probs)
        for i in arch.fixed:
            grad[i] = 0.0
        return grad
