"""ProxylessNAS-style search (Cai et al., ICLR 2019).

Weight warm-up first (Sec. 4: the weights train on paths sampled from the initial, uniform
distribution; alpha frozen), then weight steps on the training split with binary gates, and
every ``alpha_every`` (5) weight steps one alpha step on a held-out batch with the binary-gate
gradient (``binary_gate`` estimator; ``estimator.mode=two_path`` for the two-path variant).
alpha: Adam lr 1e-3 with beta1 = 0 (official code). Derive the argmax; retrain.
"""

from __future__ import annotations

from methods.alpha_search import AlphaSearch
from methods.base import METHODS


@METHODS.register("proxyless")
class ProxylessNAS(AlphaSearch):
    name = "proxyless"
    alpha_data = "valid"
