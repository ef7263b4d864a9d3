"""SNAS: stochastic neural architecture search (Xie et al., ICLR 2019).

Single level (Sec. 2.3): alpha and the weights update from the same training batch and the same
backward; the default estimator is ``gumbel_softmax`` (every candidate runs, weighted by a
relaxed one-hot sample whose temperature anneals from 1 to 0.03). Two-stage: the argmax child
is retrained from scratch (Sec. 3.1).
"""

from __future__ import annotations

from methods.alpha_search import AlphaSearch
from methods.base import METHODS


@METHODS.register("snas")
class SNAS(AlphaSearch):
    name = "snas"
    alpha_data = "train"
