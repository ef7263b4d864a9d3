"""NAS-Bench-201's zero-training baselines: searches rewarded by the benchmark's table, not by a
supernet (Dong & Yang, ICLR 2020, Sec. 5; D-X-Y/AutoDL-Projects, exps/NAS-Bench-201-algos/).

Each algorithm queries ``reward(arch)``, in NAS-Bench-201 the validation accuracy after the
12-epoch schedule (``get_more_info(..., hp='12')``; the CSV's ``<data>_valid_acc_12``), and
returns the architecture with the best reward it saw; a reader then looks up that architecture's
200-epoch test accuracy. None of them shares weights or trains anything.

- :func:`regularized_evolution` (R-EA, Real et al., AAAI 2019; R_EA.py): a population of 10
  random cells; each cycle a tournament of ``sample_size`` picks a parent, its child changes one
  random edge to a different op, joins the population, and the oldest member leaves.
- :func:`reinforce_policy` (REINFORCE, Williams 1992; reinforce.py): one softmax policy per edge
  (logits 1e-3 * N(0, 1)), Adam, reward minus an exponential moving average (momentum 0.9) of
  the rewards; the result is the best sampled architecture (the official final version), not
  the policy's argmax. This is not the suite's ``method=reinforce``, which shares weights.
- :func:`random_search` (RANDOM.py): uniform cells, the best reward.

The official runs stop at a simulated time budget (12,000 s of 12-epoch training on CIFAR-10);
the CSV holds no training times, so here the budget is a number of queries (``queries``), and
rewards are the mean over the table's seeds, where the official ``is_random=True`` draws one seed.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

import torch

from nasbench.spaces.base import Arch, SearchSpace

Reward = Callable[[Arch], float]


def _randint(n: int, gen: torch.Generator) -> int:
    return int(torch.randint(n, (), generator=gen))


def random_search(space: SearchSpace, reward: Reward, queries: int, gen: torch.Generator) -> dict[str, Any]:
    """The best of ``queries`` uniformly drawn cells (RANDOM.py)."""
    trace = [(arch, reward(arch)) for arch in (space.sample(gen) for _ in range(queries))]
    return _result(trace)


def mutate_one_edge(space: SearchSpace, arch: Arch, gen: torch.Generator) -> Arch:
    """R_EA.py's ``mutate_arch_func``: one random edge takes a different op, drawn uniformly."""
    child = list(arch)
    edge = _randint(len(child), gen)
    others = [k for k in range(len(space.decisions[edge].candidates)) if k != child[edge]]
    child[edge] = others[_randint(len(others), gen)]
    return tuple(child)


def regularized_evolution(
    space: SearchSpace,
    reward: Reward,
    queries: int,
    gen: torch.Generator,
    population_size: int = 10,
    sample_size: int = 3,
) -> dict[str, Any]:
    """R-EA with at most ``queries`` rewards (the initial population included)."""
    population: collections.deque = collections.deque()
    trace: list[tuple[Arch, float]] = []
    while len(population) < min(population_size, queries):
        arch = space.sample(gen)
        trace.append((arch, reward(arch)))
        population.append(trace[-1])
    while len(trace) < queries:
        members = list(population)
        sample = [members[_randint(len(members), gen)] for _ in range(sample_size)]  # with replacement
        parent = max(sample, key=lambda item: item[1])
        child = mutate_one_edge(space, parent[0], gen)
        trace.append((child, reward(child)))
        population.append(trace[-1])
        population.popleft()
    return _result(trace)


def reinforce_policy(
    space: SearchSpace,
    reward: Reward,
    queries: int,
    gen: torch.Generator,
    lr: float = 1e-3,
    ema_momentum: float = 0.9,
) -> dict[str, Any]:
    """REINFORCE with ``queries`` sampled cells; the reward is in percent, as the official code's."""
    mask = space.candidate_mask()
    logits = torch.nn.Parameter(1e-3 * torch.randn(mask.shape, generator=gen))
    optimizer = torch.optim.Adam([logits], lr=lr)
    numerator = denominator = 0.0  # ExponentialMovingAverage of reinforce.py
    trace = []
    for _ in range(queries):
        probs = torch.softmax(logits.masked_fill(~mask, float("-inf")), -1)
        action = torch.multinomial(probs.detach(), 1, generator=gen).squeeze(1)
        arch = tuple(int(k) for k in action)
        value = reward(arch)
        trace.append((arch, value))
        numerator = ema_momentum * numerator + (1 - ema_momentum) * 100 * value
        denominator = ema_momentum * denominator + (1 - ema_momentum)
        log_prob = torch.log(probs[torch.arange(len(arch)), action]).sum()
        loss = -log_prob * (100 * value - numerator / denominator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return _result(trace)


def _result(trace: list[tuple[Arch, float]]) -> dict[str, Any]:
    best = max(trace, key=lambda item: item[1])  # the first of equal rewards
    return {"arch": best[0], "reward": best[1], "queries": len(trace), "distinct": len({a for a, _ in trace})}


ALGORITHMS: dict[str, Callable[..., dict[str, Any]]] = {
    "rea": regularized_evolution,
    "reinforce": reinforce_policy,
    "random": random_search,
}
