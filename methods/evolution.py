"""Scoring architectures with supernet weights, and the evolutionary search of SPOS.

Scoring (SPOS Sec. 3.3-3.4): a path's BatchNorm statistics are re-estimated from training
batches of the search split, then its accuracy is measured on the held-out split (never on the
test set). Scores are cached by architecture.

Evolution (SPOS Sec. 3.4 and the official code): population 50, top-10 parents, each generation
25 mutation children (each layer re-drawn with probability 0.1) and 25 crossover children
(each layer taken from either of two parents), 20 generations, candidates above the FLOPs limit
rejected. The total number of scored candidates is the budget's ``scored_archs`` (1000 =
50 x 20 at paper scale), so random search and evolution score the same number.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import torch

from nasbench.context import RunContext
from nasbench.errors import UserError
from nasbench.evaluate import accuracy, recalibrate_bn
from nasbench.flops import count_macs
from nasbench.spaces.base import Arch, SearchSpace
from nasbench.supernet import Selection, Supernet


class SupernetScorer:
    """Held-out accuracy of an architecture with inherited supernet weights, cached."""

    def __init__(self, ctx: RunContext, supernet: Supernet) -> None:
        self.ctx, self.supernet = ctx, supernet
        batches = ctx.budget.get("score_batches")
        self.score_batches = None if batches is None else int(batches)
        self.cache: dict[Arch, float] = {}

    def __call__(self, arch: Arch) -> float:
        if arch not in self.cache:
            ctx, net = self.ctx, self.supernet
            selection = Selection.single_path(arch)

            def forward(x: torch.Tensor) -> torch.Tensor:
                return net(x, selection)

            recalibrate_bn(
                net,
                ctx.trainer.search_loader(augment=False),
                int(ctx.budget["bn_recal_batches"]),
                ctx.device,
                forward,
            )
            batches = itertools.islice(ctx.trainer.valid_loader(), self.score_batches)
            self.cache[arch], _ = accuracy(net, batches, ctx.device, forward)
        return self.cache[arch]


class FlopsLimit:
    """Multiply-accumulates of a child from the space's per-candidate table, and a limit."""

    def __init__(self, space: SearchSpace, limit_mmacs: float | None) -> None:
        self.table = space.candidate_macs()
        probe = tuple(0 for _ in space.decisions)
        self.fixed = count_macs(space.build_child(probe).eval(), torch.zeros(1, *space.inputs.shape)) - float(
            sum(self.table[i, k] for i, k in enumerate(probe))
        )
        self.limit = None if limit_mmacs is None else float(limit_mmacs) * 1e6

    def mmacs(self, arch: Arch) -> float:
        return (self.fixed + float(sum(self.table[i, k] for i, k in enumerate(arch)))) / 1e6

    def allows(self, arch: Arch) -> bool:
        return self.limit is None or self.mmacs(arch) * 1e6 <= self.limit


def sample_allowed(
    space: SearchSpace, gen: torch.Generator, ok: Callable[[Arch], bool], make: Callable[[], Arch] | None = None
) -> Arch:
    """Draw (``make`` or uniform) until ``ok``; a limit nothing meets is a clear error."""
    for _ in range(10_000):
        arch = make() if make is not None else space.sample(gen)
        if ok(arch):
            return arch
    raise UserError("no architecture found under the FLOPs limit in 10,000 draws; raise method.flops_limit_mmacs")


def evolve(
    space: SearchSpace,
    score: Callable[[Arch], float],
    gen: torch.Generator,
    limit: FlopsLimit,
    cfg: dict[str, Any],
    budget: int,
) -> tuple[Arch, dict[str, Any]]:
    """SPOS's evolution with at most ``budget`` scored candidates; returns the best and a log."""
    population = min(int(cfg["population"]), budget)
    ratio = population / int(cfg["population"])
    parents = max(1, round(int(cfg["parents"]) * ratio))
    mutations = max(1, round(int(cfg["mutations"]) * ratio))
    crossovers = max(0, population - mutations)
    generations = max(1, budget // population)
    prob = float(cfg["mutation_prob"])

    def rand() -> float:
        return float(torch.rand((), generator=gen))

    def pick(items: list[Arch]) -> Arch:
        return items[int(torch.randint(len(items), (), generator=gen))]

    def mutate(parent: Arch) -> Arch:
        return tuple(
            int(torch.randint(len(d.candidates), (), generator=gen)) if rand() < prob else k
            for d, k in zip(space.decisions, parent)
        )

    def cross(a: Arch, b: Arch) -> Arch:
        return tuple(x if rand() < 0.5 else y for x, y in zip(a, b))

    def next_generation(parents_now: list[Arch]) -> list[Arch]:
        def mutant() -> Arch:
            return mutate(pick(parents_now))

        def crossed() -> Arch:
            return cross(pick(parents_now), pick(parents_now))

        return [sample_allowed(space, gen, limit.allows, mutant) for _ in range(mutations)] + [
            sample_allowed(space, gen, limit.allows, crossed) for _ in range(crossovers)
        ]

    pop = [sample_allowed(space, gen, limit.allows) for _ in range(population)]
    top: list[Arch] = []
    history = []
    for g in range(generations):
        for arch in pop:
            score(arch)
        top = sorted(set(top) | set(pop), key=lambda a: -score(a))[:parents]
        history.append({"generation": g + 1, "best": score(top[0]), "arch": space.encode(top[0])})
        if g == generations - 1:
            break
        pop = next_generation(top)
    log = {
        "population": population,
        "parents": parents,
        "mutations": mutations,
        "crossovers": crossovers,
        "generations": generations,
        "scored": len(getattr(score, "cache", {})),
        "history": history,
    }
    return top[0], log
