"""GDAS: searching for a robust neural architecture in four GPU hours (Dong & Yang, CVPR 2019).

Bilevel like DARTS (Sec. 3.3: weights on the training split, alpha on the validation split),
with the ``gumbel_st`` estimator: one op per edge, the argmax of a Gumbel sample, multiplied
by its straight-through weight h (tau annealed 10 -> 0.1). Derivation: argmax per edge on
NAS-Bench-201 (the official NAS-Bench-201 GDAS code); then retrain.
"""

from __future__ import annotations

from methods.alpha_search import AlphaSearch
from methods.base import METHODS


@METHODS.register("gdas")
class GDAS(AlphaSearch):
    name = "gdas"
    alpha_data = "valid"
