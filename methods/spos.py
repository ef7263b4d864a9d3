"""SPOS: single path one-shot NAS with uniform sampling (Guo et al., ECCV 2020).

Supernet training with one uniformly sampled path per step (Sec. 3.2), then an evolutionary
search over architectures scored with the supernet's weights after BatchNorm recalibration,
under a FLOPs limit (Sec. 3.4; see methods/evolution.py), then the winner is retrained from
scratch (Sec. 4). The shared pipeline is methods/uniform_search.py.
"""

from __future__ import annotations

from typing import Any

from methods.base import METHODS
from methods.evolution import FlopsLimit, SupernetScorer, evolve
from methods.uniform_search import UniformSupernetSearch
from nasbench.spaces.base import Arch


@METHODS.register("spos")
class SPOS(UniformSupernetSearch):
    name = "spos"

    def select(self, scorer: SupernetScorer, limit: FlopsLimit, budget: int) -> tuple[Arch, dict[str, Any]]:
        return evolve(self.ctx.space, scorer, self.ctx.generator("evolution"), limit, self.cfg["evolution"], budget)
