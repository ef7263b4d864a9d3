"""The shared method parts: second-order DARTS against the exact unrolled gradient, evolution,
the FLOPs limit, the held-out split and the budget/estimator rules a method must follow."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from conftest import tiny_space
from methods.darts import second_order_alpha_step
from methods.estimators.softmax import SoftmaxEstimator
from methods.evolution import FlopsLimit, evolve
from methods.phases import SupernetSearch
from nasbench.arch_params import ArchParameters
from nasbench.data import TensorImages, split
from nasbench.supernet import Supernet
from nasbench.train import WarmupCosine

CPU = torch.device("cpu")


class ToyNet(Supernet):
    """Two decisions of three linear candidates each (a problem small enough to do by hand)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = self.make_choice_block(0, [nn.Linear(4, 4) for _ in range(3)])
        self.b = self.make_choice_block(1, [nn.Sequential(nn.Tanh(), nn.Linear(4, 3)) for _ in range(3)])

    def body(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.a(x))


def _functional_loss(net: ToyNet, params: dict, alpha: torch.Tensor, x: torch.Tensor, y: torch.Tensor):
    p = torch.softmax(alpha, -1)
    h = sum(
        p[0, k] * F.linear(x, params[f"a.candidates.{k}.weight"], params[f"a.candidates.{k}.bias"]) for k in range(3)
    )
    out = sum(
        p[1, k] * F.linear(torch.tanh(h), params[f"b.candidates.{k}.1.weight"], params[f"b.candidates.{k}.1.bias"])
        for k in range(3)
    )
    return F.cross_entropy(out, y)


def test_second_order_darts_matches_the_exact_unrolled_gradient() -> None:
    """DARTS Eq. 7: d/dalpha L_val(w - xi dL_train/dw(w, alpha), alpha), exactly by autograd
    through the unrolled step, against the Eq. 8 finite-difference step of methods/darts.py."""
    torch.manual_seed(0)
    net = ToyNet()
    arch = ArchParameters(torch.ones(2, 3, dtype=torch.bool), 0.0, 0.5, torch.Generator().manual_seed(1))
    x, y = torch.randn(16, 4), torch.randint(3, (16,))
    xv, yv = torch.randn(16, 4), torch.randint(3, (16,))
    xi = 0.1
    weight_opt = torch.optim.SGD(net.parameters(), lr=xi)

    params = {n: p.detach().clone().requires_grad_() for n, p in net.named_parameters()}
    alpha = arch.alpha.detach().clone().requires_grad_()
    grads = torch.autograd.grad(_functional_loss(net, params, alpha, x, y), list(params.values()), create_graph=True)
    unrolled = {n: p - xi * g for (n, p), g in zip(params.items(), grads)}
    (exact,) = torch.autograd.grad(_functional_loss(net, unrolled, alpha, xv, yv), alpha)

    captured = {}

    class Capture(torch.optim.SGD):  # read alpha's gradient at the step, do not move alpha
        def step(self, closure=None):
            captured["grad"] = arch.alpha.grad.clone()

    s = SupernetSearch(net, arch, weight_opt, WarmupCosine(weight_opt, xi, 10), Capture([arch.alpha], lr=0.0), None)
    before = [p.detach().clone() for p in net.parameters()]
    second_order_alpha_step(s, SoftmaxEstimator(), CPU, F.cross_entropy)(xv, yv, x, y)
    torch.testing.assert_close(captured["grad"], exact, rtol=2e-3, atol=1e-5)
    for p, b in zip(net.parameters(), before):  # the weights are restored exactly
        assert torch.equal(p, b)


def test_evolution_finds_the_best_architecture_under_the_limit() -> None:
    """Score = the sum of op indices; a FLOPs limit forbids the most expensive candidates."""
    space = tiny_space()
    limit = FlopsLimit(space, None)
    cheap = space.candidate_macs().argmin(1)
    calls = []

    def score(arch):
        calls.append(arch)
        return float(sum(arch))

    score.cache = {}
    best, log = evolve(
        space,
        score,
        torch.Generator().manual_seed(0),
        limit,
        {"population": 16, "parents": 4, "mutations": 8, "crossovers": 8, "mutation_prob": 0.3},
        budget=128,
    )
    assert log["generations"] == 8 and log["population"] == 16
    assert sum(best) == 3 * space.num_decisions, best  # 4 candidates per layer: index 3 is the best
    history = [h["best"] for h in log["history"]]
    assert history == sorted(history), "the best score never gets worse (top-k kept over generations)"

    total = limit.mmacs(tuple(cheap.tolist())) + 0.01
    capped = FlopsLimit(space, total)
    best, _ = evolve(
        space,
        lambda a: float(sum(a)),
        torch.Generator().manual_seed(0),
        capped,
        {"population": 8, "parents": 2, "mutations": 4, "crossovers": 4, "mutation_prob": 0.3},
        budget=16,
    )
    assert capped.allows(best) and limit.mmacs(best) <= total


def test_flops_limit_counts_the_whole_child() -> None:
    from nasbench.flops import count_macs

    space = tiny_space()
    limit = FlopsLimit(space, None)
    for arch in [(0, 1, 2, 3), (3, 3, 3, 3), (2, 0, 1, 1)]:
        macs = count_macs(space.build_child(arch).eval(), torch.zeros(1, *space.inputs.shape))
        assert abs(limit.mmacs(arch) * 1e6 - macs) < 1.0


def test_held_out_split_is_disjoint_seeded_and_complete() -> None:
    data = TensorImages(torch.arange(100, dtype=torch.uint8).view(100, 1, 1, 1), torch.arange(100))
    keep, held = split(data, 0.2, seed=0)
    assert len(keep) == 80 and len(held) == 20
    ids = set(keep.labels.tolist()) | set(held.labels.tolist())
    assert ids == set(range(100)) and not set(keep.labels.tolist()) & set(held.labels.tolist())
    again, _ = split(data, 0.2, seed=0)
    assert torch.equal(again.labels, keep.labels)
    other, _ = split(data, 0.2, seed=1)
    assert not torch.equal(other.labels, keep.labels)
