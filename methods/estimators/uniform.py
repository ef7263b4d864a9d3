"""Uniform sampling: one op per layer, uniformly at random; alpha is not learned.

This is SPOS's supernet training (Guo et al., ECCV 2020, Sec. 3.2) and, under the DSNAS
pipeline, the uniform-prior ablation: the same one-stage pipeline with an architecture
distribution that never moves.
"""

from __future__ import annotations

import torch

from methods.estimators.base import ESTIMATORS, Estimator
from nasbench.arch_params import ArchParameters
from nasbench.supernet import Selection


@ESTIMATORS.register("uniform")
class UniformEstimator(Estimator):
    name = "uniform"
    learns_alpha = False

    def sample(self, arch: ArchParameters, generator: torch.Generator, device: torch.device) -> Selection:
        sample = torch.multinomial(arch.mask.float(), 1, generator=generator).squeeze(1)
        for i, k in arch.fixed.items():
            sample[i] = k
        return Selection(active=[[k] for k in sample.tolist()], info={"sample": sample})
