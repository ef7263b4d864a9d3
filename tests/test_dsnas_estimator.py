"""The DSNAS estimator's math: credit, alpha gradient, early fix, FLOPs penalty."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_space
from methods.dsnas import early_fix, flops_penalty_grad
from methods.estimators.dsnas import DSNASEstimator
from methods.estimators.uniform import UniformEstimator
from nasbench.arch_params import ArchParameters
from nasbench.supernet import ChoiceBlock, Selection, one_hot_rows

CPU = torch.device("cpu")


def _random_arch(space, seed: int = 0, std: float = 0.7) -> ArchParameters:
    return ArchParameters(space.candidate_mask(), 0.0, std, torch.Generator().manual_seed(seed))


def _capture(supernet):
    """Hooks recording every choice block's op output O_i(x_i) and its own output x_{i+1}."""
    op_out, block_out = {}, {}

    def on_block(module: ChoiceBlock, inputs, output):
        output.retain_grad()
        block_out[module.decision] = output

    def on_op(decision):
        def hook(module, inputs, output):
            op_out[decision] = output

        return hook

    for block in supernet.choice_blocks():
        block.register_forward_hook(on_block)
        for op in block.candidates:
            op.register_forward_hook(on_op(block.decision))
    return op_out, block_out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_alpha_gradient_is_credit_times_score(seed: int) -> None:
    """g_i = r_i (e_s - p_i), with r_i = <dL/dx_{i+1}, O_i(x_i)> computed by hand from hooks."""
    torch.manual_seed(seed)
    space = tiny_space()
    supernet = space.build_supernet().double()  # float64: the credit is a sum that cancels (float32
    arch = _random_arch(space, seed)  # differed from the hand-made one by 1e-7 on a 1e-5 entry)
    arch.fix(1, 2)  # one fixed layer: runs unscaled and gets no alpha gradient
    estimator = DSNASEstimator()
    op_out, block_out = _capture(supernet)
    x, y = torch.rand(8, 1, 28, 28, dtype=torch.float64), torch.randint(10, (8,))

    selection = estimator.sample(arch, torch.Generator().manual_seed(seed), CPU)
    F.cross_entropy(supernet(x, selection), y).backward()
    got = estimator.alpha_grad(arch, selection)

    probs = torch.softmax(arch.alpha.detach(), -1)
    sample = torch.tensor([ops[0] for ops in selection.active])
    assert sample[1] == 2
    credit = torch.stack([(block_out[i].grad * op_out[i]).sum() for i in range(space.num_decisions)])
    expected = credit[:, None] * (F.one_hot(sample, 4).float() - probs)
    expected[1] = 0.0
    torch.testing.assert_close(got, expected.to(got.dtype), rtol=1e-5, atol=1e-7)
    assert got.abs().sum() > 0


def test_credit_is_derivative_of_loss_in_the_dummy() -> None:
    """r_i = dL/dZ_i^{s_i}: compare with a central finite difference in float64."""
    torch.manual_seed(0)
    space = tiny_space()
    supernet = space.build_supernet().double().eval()  # eval: the loss is a smooth function of Z
    arch = _random_arch(space)
    estimator = DSNASEstimator()
    x, y = torch.rand(4, 1, 28, 28, dtype=torch.float64), torch.randint(10, (4,))
    selection = estimator.sample(arch, torch.Generator().manual_seed(3), CPU)
    selection.weights = selection.weights.double().detach().requires_grad_()
    F.cross_entropy(supernet(x, selection), y).backward()
    credit = estimator.credit(selection)
    eps = 1e-6
    for i, ops in enumerate(selection.active):
        losses = []
        for sign in (1, -1):
            w = selection.weights.detach().clone()
            w[i, ops[0]] += sign * eps
            with torch.no_grad():
                losses.append(F.cross_entropy(supernet(x, Selection(selection.active, w)), y))
        fd = (losses[0] - losses[1]) / (2 * eps)
        assert float(credit[i]) == pytest.approx(float(fd), rel=1e-5, abs=1e-9)


def test_expected_gradient_is_exact_when_the_loss_is_linear_in_z() -> None:
    """For L = sum_ik Z_ik C_ik the credit is C_{i,s_i}; summed over every sample, weighted by its
    probability, the DSNAS gradient equals the exact gradient of E[L] (enumerated: 3 x 3 samples)."""
    torch.manual_seed(0)
    mask = torch.ones(2, 3, dtype=torch.bool)
    arch = ArchParameters(mask, 0.0, 1.0, torch.Generator().manual_seed(1))
    cost = torch.randn(2, 3)
    probs = torch.softmax(arch.alpha.detach(), -1)
    estimator = DSNASEstimator()
    expected_grad = torch.zeros(2, 3)
    for s in itertools.product(range(3), repeat=2):
        z = F.one_hot(torch.tensor(s), 3).float().requires_grad_()
        selection = Selection([[k] for k in s], z, [True, True], {"probs": probs, "sample": torch.tensor(s)})
        (z * cost).sum().backward()
        weight = probs[0, s[0]] * probs[1, s[1]]
        expected_grad += weight * estimator.alpha_grad(arch, selection)
    alpha = arch.alpha.detach().clone().requires_grad_()
    (torch.softmax(alpha, -1) * cost).sum().backward()
    torch.testing.assert_close(expected_grad, alpha.grad, rtol=1e-5, atol=1e-6)


def test_sampling_follows_p_and_runs_one_op_per_layer() -> None:
    mask = torch.ones(3, 4, dtype=torch.bool)
    arch = ArchParameters(mask)
    with torch.no_grad():
        arch.alpha.copy_(torch.log(torch.tensor([[0.7, 0.1, 0.1, 0.1], [0.25] * 4, [0.0, 0.0, 0.5, 0.5]]) + 1e-12))
    gen = torch.Generator().manual_seed(0)
    counts = torch.zeros(3, 4)
    estimator = DSNASEstimator()
    for _ in range(4000):
        selection = estimator.sample(arch, gen, CPU)
        assert all(len(ops) == 1 for ops in selection.active)
        counts[torch.arange(3), torch.tensor([ops[0] for ops in selection.active])] += 1
    freq = counts / 4000
    torch.testing.assert_close(freq, arch.probs().detach(), atol=0.03, rtol=0)


def test_early_fix_freezes_the_argmax_not_candidate_zero() -> None:
    mask = torch.ones(3, 4, dtype=torch.bool)
    arch = ArchParameters(mask)
    with torch.no_grad():
        arch.alpha.copy_(torch.tensor([[0.0, 0.0, 3.0, 0.0], [0.0, 0.1, 0.0, 0.0], [2.0, 0.0, 0.0, 2.0]]))
    # row 0: p = [.0431, .0431, .8707, .0431]: gap .83 >= .3 -> fixed at 2
    # row 1: nearly uniform; row 2: a tie between 0 and 3 -> gap 0
    assert early_fix(arch, 0.3) == [0]
    assert arch.fixed == {0: 2}
    assert arch.derive()[0] == 2

    # Adam's momentum would move the fixed row; restore_fixed undoes it
    opt = torch.optim.Adam([arch.alpha], lr=0.1)
    for _ in range(3):
        arch.alpha.grad = torch.ones(3, 4)
        opt.step()
        arch.restore_fixed()
    torch.testing.assert_close(arch.alpha.detach()[0], torch.tensor([0.0, 0.0, 3.0, 0.0]))
    assert not torch.equal(arch.alpha.detach()[1], torch.tensor([0.0, 0.1, 0.0, 0.0]))

    sample = DSNASEstimator().sample(arch, torch.Generator().manual_seed(0), CPU)
    assert sample.active[0] == [2] and sample.weighted[0] is False


def test_flops_penalty_gradient_matches_its_formula() -> None:
    """d/dalpha_i [eta p_i(s_i) F_i(s_i)] = eta F_i(s_i) p_i(s_i) (e_{s_i} - p_i), above the threshold only."""
    mask = torch.ones(3, 4, dtype=torch.bool)
    arch = ArchParameters(mask, 0.0, 0.5, torch.Generator().manual_seed(0))
    mflops = torch.tensor([[10.0, 20, 30, 40], [5, 6, 7, 8], [1, 2, 3, 4]], dtype=torch.float64)
    sample = torch.tensor([3, 0, 2])  # 40 + 5 + 3 = 48 MFLOPs
    probs = arch.probs().detach()
    rows = torch.arange(3)
    expected = (
        1e-2 * (mflops[rows, sample] * probs[rows, sample]).float()[:, None] * (F.one_hot(sample, 4).float() - probs)
    )
    torch.testing.assert_close(flops_penalty_grad(arch, sample, mflops, 1e-2, 48.0), expected)
    assert flops_penalty_grad(arch, sample, mflops, 1e-2, 48.5) is None


def test_uniform_estimator_samples_uniformly_and_learns_nothing() -> None:
    arch = ArchParameters(torch.ones(2, 4, dtype=torch.bool))
    gen = torch.Generator().manual_seed(0)
    estimator = UniformEstimator()
    counts = torch.zeros(2, 4)
    for _ in range(4000):
        selection = estimator.sample(arch, gen, CPU)
        assert selection.weights is None
        counts[torch.arange(2), torch.tensor([ops[0] for ops in selection.active])] += 1
        assert estimator.alpha_grad(arch, selection) is None
    torch.testing.assert_close(counts / 4000, torch.full((2, 4), 0.25), atol=0.03, rtol=0)


@pytest.mark.parametrize("arch", [(0, 1, 2, 3, 4, 2), (4, 3, 1, 0, 2, 4), (2, 2, 3, 3, 1, 1)])
def test_cheap_credits_equal_the_dummy_multiply_on_every_nb201_op(arch: tuple[int, ...]) -> None:
    """The credit of every NAS-Bench-201 op kind (zero, linear skip and pooling, BatchNorm-ended
    convs; nasbench/credit.py) equals dL/dZ of an explicit multiply by the dummy one-hot Z."""
    space = tiny_space("nb201")
    torch.manual_seed(0)
    net = space.build_supernet()
    x, y = torch.rand(8, *space.inputs.shape), torch.randint(10, (8,))
    sample = torch.tensor(arch)
    credits = {}
    for how in ("multiply", "cheap"):
        dummy = one_hot_rows(sample, space.max_candidates).requires_grad_()
        active = [[k] for k in arch]
        if how == "multiply":  # the paper's formulation: the output times the dummy 1
            selection = Selection(active=active, weights=dummy)
        else:
            selection = Selection(active=active, weights=dummy, probe=[[] for _ in arch], info={"cheap_credit": True})
        torch.nn.functional.cross_entropy(net(x, selection), y).backward()
        credits[how] = dummy.grad.gather(1, sample[:, None]).squeeze(1)
        net.zero_grad(set_to_none=True)
    for d, k in enumerate(arch):
        if k == 0:  # the none op: its output, and so its credit, is 0
            assert credits["cheap"][d] == 0 and credits["multiply"][d] == 0
    assert torch.allclose(credits["cheap"], credits["multiply"], rtol=1e-4, atol=1e-7), credits
    assert credits["multiply"].abs().max() > 1e-4  # not a comparison of zeros
