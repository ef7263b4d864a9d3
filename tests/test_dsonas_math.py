"""DSO-NAS's update and its scaled mixture: the accelerated proximal gradient step (official
optimizer_split.py ``APGNAG``) against its formula on hand-made numbers, and the ``scales``
estimator's output and gradient against an explicit sum_k lambda_k O^k(x)."""

from __future__ import annotations

import pytest
import torch

from methods.estimators.scales import ScalesEstimator
from methods.proximal import ProximalAPG, soft_threshold
from nasbench.arch_params import ArchParameters
from nasbench.supernet import Supernet


def apg(lam, grads, lr=0.1, gamma=0.2, momentum=0.9, clip=2.0):
    p = torch.nn.Parameter(torch.tensor(lam, dtype=torch.float64))
    opt = ProximalAPG([p], lr=lr, gamma=gamma, momentum=momentum, grad_clip=clip)
    out = []
    for g in grads:
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
        out.append(p.detach().clone())
    return out


def test_soft_threshold() -> None:
    z = torch.tensor([0.5, -0.5, 0.01, -0.01, 0.0])
    torch.testing.assert_close(soft_threshold(z, 0.02), torch.tensor([0.48, -0.48, 0.0, 0.0, 0.0]))


def test_apg_step_against_hand_computed_numbers() -> None:
    """lambda (1, 0.05, 0.3), lr 0.1, gamma 0.2 (threshold 0.02), mu 0.9, clip 2.
    Step 1, g = (0.5, 0, 5 -> clipped to 2): z = soft((0.95, 0.05, 0.1), 0.02) = (0.93, 0.03, 0.08);
    v = z - lambda = (-0.07, -0.02, -0.22); lambda = max(z + 0.9 v, 0) = (0.867, 0.012, 0).
    Step 2, g = 0: z = soft((0.867, 0.012, 0), 0.02) = (0.847, 0, 0);
    v = 0.9 v + z - lambda = (-0.083, -0.03, -0.198); lambda = max(z + 0.9 v, 0) = (0.7723, 0, 0)."""
    first, second = apg([1.0, 0.05, 0.3], [[0.5, 0.0, 5.0], [0.0, 0.0, 0.0]])
    torch.testing.assert_close(first, torch.tensor([0.867, 0.012, 0.0], dtype=torch.float64))
    torch.testing.assert_close(second, torch.tensor([0.7723, 0.0, 0.0], dtype=torch.float64))


def test_l1_alone_moves_lambda_by_lr_times_gamma_and_zero_stays_zero() -> None:
    steps = apg([1.0, 0.03, 0.0], [[0.0, 0.0, 0.0]] * 3, momentum=0.0)
    torch.testing.assert_close(steps[0], torch.tensor([0.98, 0.01, 0.0], dtype=torch.float64))
    torch.testing.assert_close(steps[2], torch.tensor([0.94, 0.0, 0.0], dtype=torch.float64))
    # a small gradient cannot revive a zero lambda (soft threshold, then the clamp at 0)
    (revived,) = apg([0.0], [[-0.1]], lr=0.1, gamma=0.2, momentum=0.0)
    assert float(revived) == 0.0
    (pushed,) = apg([0.0], [[1.0]], momentum=0.0)  # a positive gradient: clamped at 0
    assert float(pushed) == 0.0


def test_apg_lr_follows_a_callable_and_gamma_per_element() -> None:
    p = torch.nn.Parameter(torch.ones(2))
    lr = [0.1]
    opt = ProximalAPG([p], lr=lambda: lr[0], gamma=0.0, momentum=0.0)
    opt.set_gamma(p, torch.tensor([0.1, 0.3]))
    p.grad = torch.zeros(2)
    opt.step()
    torch.testing.assert_close(p.detach(), torch.tensor([0.99, 0.97]))
    lr[0] = 0.2
    opt.step()
    torch.testing.assert_close(p.detach(), torch.tensor([0.97, 0.91]))


def test_apg_state_round_trips() -> None:
    p = torch.nn.Parameter(torch.tensor([1.0, 0.5]))
    opt = ProximalAPG([p], lr=0.1, gamma=0.1)
    p.grad = torch.tensor([0.3, -0.2])
    opt.step()
    twin_p = torch.nn.Parameter(p.detach().clone())
    twin = ProximalAPG([twin_p], lr=0.1, gamma=0.1)
    twin.load_state_dict(opt.state_dict())
    for q in (p, twin_p):
        q.grad = torch.tensor([0.1, 0.1])
    opt.step()
    twin.step()
    torch.testing.assert_close(p.detach(), twin_p.detach())


def test_bad_apg_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="gamma"):
        ProximalAPG([torch.nn.Parameter(torch.ones(1))], lr=0.1, gamma=-1.0)


class _TwoDecisions(Supernet):
    def __init__(self) -> None:
        super().__init__()
        self.a = self.make_choice_block(
            0, [torch.nn.Conv2d(2, 2, 1), torch.nn.Identity(), torch.nn.Conv2d(2, 2, 3, padding=1)]
        )
        self.b = self.make_choice_block(1, [torch.nn.Conv2d(2, 2, 1), torch.nn.Tanh(), torch.nn.Identity()])

    def body(self, x):
        h = self.a(x)
        out = self.b(h)
        return out if out is not None else h


def test_scales_output_and_gradient_equal_the_explicit_weighted_sum() -> None:
    torch.manual_seed(0)
    net = _TwoDecisions()
    mask = torch.ones(2, 3, dtype=torch.bool)
    mask[0, 0] = False  # pruned: never runs, no gradient
    arch = ArchParameters(mask)
    with torch.no_grad():
        arch.alpha.copy_(torch.tensor([[5.0, 0.7, 0.2], [0.3, 0.0, 1.5]]))
    x = torch.randn(3, 2, 4, 4)
    sel = ScalesEstimator().sample(arch, torch.Generator(), torch.device("cpu"))
    assert sel.active == [[1, 2], [0, 1, 2]]
    out = net(x, sel)
    lam = arch.alpha.detach().clone().requires_grad_(True)
    a, b = net.a.candidates, net.b.candidates
    h = lam[0, 1] * a[1](x) + lam[0, 2] * a[2](x)
    expected = lam[1, 0] * b[0](h) + lam[1, 1] * b[1](h) + lam[1, 2] * b[2](h)
    torch.testing.assert_close(out, expected)
    out.square().sum().backward()
    expected.square().sum().backward()
    torch.testing.assert_close(arch.alpha.grad, lam.grad.masked_fill(~mask, 0.0))
    assert arch.alpha.grad[0, 0] == 0


def test_a_decision_with_every_candidate_pruned_runs_nothing() -> None:
    net = _TwoDecisions()
    mask = torch.ones(2, 3, dtype=torch.bool)
    mask[1] = False
    arch = ArchParameters(mask)
    with torch.no_grad():
        arch.alpha.fill_(1.0)
    calls = []
    for op in net.b.candidates:
        op.register_forward_hook(lambda *_: calls.append(1))
    x = torch.randn(1, 2, 4, 4)
    sel = ScalesEstimator().sample(arch, torch.Generator(), torch.device("cpu"))
    out = net(x, sel)
    assert not calls
    torch.testing.assert_close(out, net.a.candidates[0](x) + x + net.a.candidates[2](x))
