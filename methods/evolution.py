"""Scoring architectures with supernet weights, and the evolutionary search of SPOS.

Scoring (SPOS Sec. 3.3-3.4): a path's BatchNorm statistics are re-estimated from training
batches of the search split, then its accuracy is measured on the held-out split (never on the
test set). Scores are cached by architecture.

Evolution (SPOS Sec. 3.4 and the official src/Search/search.py): population 50, top-10 parents,
each generation 25 mutation children (each layer re-drawn with probability 0.1) and 25
crossover children (each layer taken from either of two parents), 20 generations. As in the
official ``is_legal``, a candidate already scored, or above the FLOPs limit, is rejected and
another is drawn; mutation and crossover give up after 10 draws per wanted child, and the
generation is filled with new uniformly drawn architectures. So every slot scores a distinct
architecture: the total is the budget's ``scored_archs`` (1000 = 50 x 20 at paper scale),
exactly as many distinct ones as random search scores.
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


#: draws per wanted child before mutation or crossover gives up (official: max_iters = 10 * num)
DRAWS_PER_CHILD = 10
#: uniform draws beyond the wanted number after which the random fill gives up (the space is used up)
FILL_DRAWS = 10_000


class Visited:
    """The official searcher's ``vis_dict``: a candidate is legal once, if under the FLOPs limit;
    a legal candidate is scored at once. Counts what was rejected and why."""

    def __init__(self, score: Callable[[Arch], float], limit: FlopsLimit) -> None:
        self.score, self.limit = score, limit
        self.seen: set[Arch] = set()
        self.rejected = {"visited": 0, "flops": 0}

    def admit(self, arch: Arch) -> bool:
        if arch in self.seen:
            self.rejected["visited"] += 1
            return False
        if not self.limit.allows(arch):
            self.rejected["flops"] += 1
            return False
        self.seen.add(arch)
        self.score(arch)
        return True

    def draw(self, make: Callable[[], Arch], wanted: int, max_draws: int) -> list[Arch]:
        """Up to ``wanted`` new legal candidates from ``make``, in at most ``max_draws`` draws."""
        found: list[Arch] = []
        for _ in range(max_draws):
            if len(found) == wanted:
                break
            arch = make()
            if self.admit(arch):
                found.append(arch)
        return found


def evolve(
    space: SearchSpace,
    score: Callable[[Arch], float],
    gen: torch.Generator,
    limit: FlopsLimit,
    cfg: dict[str, Any],
    budget: int,
) -> tuple[Arch, dict[str, Any]]:
    """SPOS's evolution with at most ``budget`` scored candidates, every one a distinct
    architecture; returns the best and a log (``scored``: distinct architectures scored)."""
    population = min(int(cfg["population"]), budget, space.size())
    ratio = population / int(cfg["population"])
    parents = max(1, round(int(cfg["parents"]) * ratio))
    mutations = max(1, round(int(cfg["mutations"]) * ratio))
    crossovers = max(0, population - mutations)
    generations = max(1, budget // population)
    prob = float(cfg["mutation_prob"])
    visited = Visited(score, limit)

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

    def fill(pop: list[Arch]) -> list[Arch]:
        """The official ``get_random``: new uniform candidates until the population is full."""
        more = visited.draw(lambda: space.sample(gen), population - len(pop), FILL_DRAWS + population)
        return pop + more

    filled = []  # uniform candidates per generation that mutation and crossover did not supply

    def next_generation(parents_now: list[Arch]) -> list[Arch]:
        mutants = visited.draw(lambda: mutate(pick(parents_now)), mutations, DRAWS_PER_CHILD * mutations)
        crossed = visited.draw(
            lambda: cross(pick(parents_now), pick(parents_now)), crossovers, DRAWS_PER_CHILD * crossovers
        )
        pop = fill(mutants + crossed)
        filled.append(len(pop) - len(mutants) - len(crossed))
        return pop

    pop = fill([])
    if not pop:
        raise UserError("no architecture found under the FLOPs limit in 10,000 draws; raise method.flops_limit_mmacs")
    top: list[Arch] = []
    history = []
    for g in range(generations):
        top = sorted(set(top) | set(pop), key=lambda a: -score(a))[:parents]
        history.append({"generation": g + 1, "best": score(top[0]), "arch": space.encode(top[0])})
        if g == generations - 1:
            break
        pop = next_generation(top)
        if not pop:  # every architecture under the limit is scored already
            break
    log = {
        "population": population,
        "parents": parents,
        "mutations": mutations,
        "crossovers": crossovers,
        "generations": len(history),
        "scored": len(visited.seen),
        "slots": population * generations,
        "random_fill": filled,
        "rejected": dict(visited.rejected),
        "history": history,
    }
    return top[0], log
