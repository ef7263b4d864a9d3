"""Random search with weight sharing (Li & Talwalkar, UAI 2019; NAS-Bench-201's RSPS).

The supernet trains exactly as SPOS's (uniform paths); then ``budget.scored_archs`` distinct
architectures drawn uniformly (under the FLOPs limit) are scored with its weights after
BatchNorm recalibration, and the best is retrained. The random baseline of every comparison.
"""

from __future__ import annotations

from typing import Any

from methods.base import METHODS
from methods.evolution import FlopsLimit, SupernetScorer, sample_allowed
from methods.uniform_search import UniformSupernetSearch
from nasbench.spaces.base import Arch


@METHODS.register("random")
class RandomSearch(UniformSupernetSearch):
    name = "random"

    def select(self, scorer: SupernetScorer, limit: FlopsLimit, budget: int) -> tuple[Arch, dict[str, Any]]:
        space, gen = self.ctx.space, self.ctx.generator("random-search")
        budget = min(budget, space.size())
        seen: list[Arch] = []
        while len(seen) < budget:
            arch = sample_allowed(space, gen, lambda a: limit.allows(a) and a not in seen)
            seen.append(arch)
        best = max(seen, key=scorer)
        return best, {"scored": len(seen), "scores": {space.encode(a): scorer(a) for a in seen}}
