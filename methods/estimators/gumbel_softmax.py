"""SNAS's relaxed architecture sample (Xie et al., ICLR 2019, Sec. 2.2-2.3, Eq. 3).

Z_i = softmax((log p_i + G_i) / lambda), G = -log(-log U): a Concrete / Gumbel-softmax sample
of the one-hot Z. Every candidate runs, weighted by Z, and the loss reaches alpha through Z by
autograd (the reparameterisation gradient of Sec. 2.3); ``alpha_grad`` returns None. As in the
official code (``RelaxedOneHotCategorical(temp, logits=log_alpha).rsample()``) the logits are
normalised to log p first; softmax((alpha + G)/lambda) is the same sample, since log p and alpha
differ by a per-decision constant. lambda anneals linearly from ``tau_start`` = 1.0 to
``tau_end`` = 0.03 over the search epochs (first epoch 1.0, last 0.03; the official
``Temp_Scheduler`` is the same line, counted in steps of 1/150). Single level: alpha and the
weights update from the same training batch.
"""

from __future__ import annotations

import torch

from methods.estimators.base import (
    ESTIMATORS,
    TemperatureEstimator,
    free_candidates,
    free_flags,
    sample_gumbel,
)
from nasbench.arch_params import ArchParameters
from nasbench.supernet import Selection


def relaxed_sample(log_probs: torch.Tensor, gumbel: torch.Tensor, temperature: float) -> torch.Tensor:
    """Z = softmax((log p + G) / lambda), row-wise; masked entries (log p = -inf) get 0."""
    return torch.softmax((log_probs + gumbel) / temperature, dim=-1)


@ESTIMATORS.register("gumbel_softmax")
class GumbelSoftmaxEstimator(TemperatureEstimator):
    name = "gumbel_softmax"
    single_path = False

    def __init__(self, tau_start: float = 1.0, tau_end: float = 0.03) -> None:
        super().__init__(tau_start, tau_end)

    def sample(self, arch: ArchParameters, generator: torch.Generator, device: torch.device) -> Selection:
        log_probs = torch.log_softmax(arch.logits(), dim=-1)
        gumbel = sample_gumbel(log_probs.shape, generator)
        z = relaxed_sample(log_probs, gumbel, self.temperature)
        return Selection(
            active=free_candidates(arch),
            weights=z.to(device),
            weighted=free_flags(arch),
            info={
                "probs": log_probs.detach().exp(),
                "gumbel": gumbel,
                "z": z.detach(),
                "temperature": self.temperature,
            },
        )

    def relaxation(self) -> GumbelSoftmaxEstimator:
        """The reparameterisation gradient is unbiased for the relaxed objective
        E_G[L(softmax((log p + G) / lambda))] at the current lambda: its own mean."""
        return self
