"""Every estimator's alpha gradient against its formula, computed independently on a toy supernet.

The toy supernet (Linear candidates, one with BatchNorm) is run by hand for the reference values:
an explicit all-ops forward sum_k w_k O^k(x) with a leaf weight tensor w gives, by exact
autograd, c_k = dL/dw_k = <dL/dm, O^k(x)> for every candidate, from which each paper's formula
follows. Then: masks, fixed decisions and op counts for every registered estimator, and two
steps of every registered estimator on the tiny ShuffleNet space.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from conftest import tiny_space
from methods.estimators.base import ESTIMATORS, Estimator, linear_schedule, sample_gumbel
from methods.estimators.binary_gate import BinaryGateEstimator
from methods.estimators.gumbel_softmax import GumbelSoftmaxEstimator
from methods.estimators.gumbel_st import GumbelSTEstimator
from methods.estimators.reinforce import ReinforceEstimator
from methods.estimators.softmax import SoftmaxEstimator
from nasbench.arch_params import ArchParameters
from nasbench.supernet import Selection, Supernet

CPU = torch.device("cpu")
WIDTH, K = 6, 4


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These networks are tiny: one intra-op thread is fastest and immune to a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _candidates() -> list[nn.Module]:
    return [
        nn.Linear(WIDTH, WIDTH),
        nn.Sequential(nn.Linear(WIDTH, WIDTH), nn.Tanh()),
        nn.Sequential(nn.Linear(WIDTH, WIDTH, bias=False), nn.BatchNorm1d(WIDTH)),
        nn.Sequential(nn.Linear(WIDTH, WIDTH), nn.Sigmoid()),
    ]


class ToySupernet(Supernet):
    """stem -> one choice block per entry of ``uses`` (its decision index) -> head."""

    def __init__(self, uses: tuple[int, ...] = (0, 1, 2)) -> None:
        super().__init__()
        self.stem = nn.Linear(5, WIDTH)
        self.blocks = nn.ModuleList(self.make_choice_block(d, _candidates()) for d in uses)
        self.head = nn.Linear(WIDTH, 3)

    def body(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def _setup(seed: int = 0, uses: tuple[int, ...] = (0, 1, 2), double: bool = True):
    torch.manual_seed(seed)
    net = ToySupernet(uses)
    decisions = max(uses) + 1
    arch = ArchParameters(torch.ones(decisions, K, dtype=torch.bool), 0.0, 0.8, torch.Generator().manual_seed(seed))
    x, y = torch.randn(8, 5), torch.randint(3, (8,))
    if double:
        net, arch, x = net.double(), arch.double(), x.double()
    return net, arch, x, y


def _explicit(net: ToySupernet, x: Tensor, y: Tensor, weights: Tensor, active, fixed=None) -> tuple[Tensor, Tensor]:
    """Loss and dL/dw of the hand-written forward sum_{k in active[d]} w[d, k] O^k(x) (fixed: unscaled)."""
    fixed = fixed or {}
    w = weights.detach().clone().requires_grad_()
    h = net.stem(x)
    for block in net.blocks:
        d = block.decision
        if d in fixed:
            h = block.candidates[fixed[d]](h)
        else:
            h = sum(w[d, k] * block.candidates[k](h) for k in active[d])
    loss = F.cross_entropy(net.head(h), y)
    loss.backward()
    return loss.detach(), w.grad


def _loss(net: Supernet, x: Tensor, y: Tensor, selection: Selection) -> Tensor:
    return F.cross_entropy(net(x, selection), y)


def _all(arch: ArchParameters) -> list[list[int]]:
    return [torch.nonzero(row).flatten().tolist() for row in arch.mask]


# ----- softmax (DARTS) --------------------------------------------------------------------------
def test_softmax_gradient_is_exact_gradient_of_the_mixture() -> None:
    net, arch, x, y = _setup()
    selection = SoftmaxEstimator().sample(arch, torch.Generator().manual_seed(0), CPU)
    _loss(net, x, y, selection).backward()
    assert SoftmaxEstimator().alpha_grad(arch, selection) is None
    got = arch.alpha.grad

    alpha = arch.alpha.detach().clone().requires_grad_()  # independent: autograd through p by hand
    p = torch.softmax(alpha, -1)
    h = net.stem(x)
    for block in net.blocks:
        h = sum(p[block.decision, k] * op(h) for k, op in enumerate(block.candidates))
    F.cross_entropy(net.head(h), y).backward()
    torch.testing.assert_close(got, alpha.grad, rtol=1e-6, atol=1e-10)

    p = p.detach()  # closed form: p_k (c_k - sum_j p_j c_j)
    _, c = _explicit(net, x, y, p, _all(arch))
    torch.testing.assert_close(got, p * (c - (p * c).sum(-1, keepdim=True)), rtol=1e-6, atol=1e-10)


# ----- gumbel_softmax (SNAS) --------------------------------------------------------------------
def test_gumbel_softmax_sample_and_gradient() -> None:
    net, arch, x, y = _setup(1)
    est = GumbelSoftmaxEstimator()
    est.on_epoch_start(3, 10)
    lam = est.temperature
    selection = est.sample(arch, torch.Generator().manual_seed(7), CPU)
    _loss(net, x, y, selection).backward()
    assert est.alpha_grad(arch, selection) is None

    u = torch.rand(arch.alpha.shape, generator=torch.Generator().manual_seed(7))  # same draw, by hand
    g = -torch.log(-torch.log(u))
    logits = arch.alpha.detach()
    z = torch.softmax((torch.log_softmax(logits, -1) + g) / lam, -1)
    torch.testing.assert_close(selection.weights.detach(), z)
    torch.testing.assert_close(z, torch.softmax((logits + g) / lam, -1))  # (alpha + G)/lambda: same sample
    _, c = _explicit(net, x, y, z, _all(arch))
    expected = z * (c - (z * c).sum(-1, keepdim=True)) / lam  # dZ/dalpha^T dL/dZ
    torch.testing.assert_close(arch.alpha.grad, expected, rtol=1e-6, atol=1e-10)


@pytest.mark.parametrize(("cls", "start", "end"), [(GumbelSoftmaxEstimator, 1.0, 0.03), (GumbelSTEstimator, 10.0, 0.1)])
def test_temperature_schedules(cls: type[Estimator], start: float, end: float) -> None:
    est = cls()
    assert est.temperature == start
    assert est.on_epoch_start(0, 5) == {"temperature": pytest.approx(start)}
    assert est.on_epoch_start(2, 5)["temperature"] == pytest.approx((start + end) / 2)
    assert est.on_epoch_start(4, 5)["temperature"] == pytest.approx(end)
    other = cls()
    other.load_state_dict(est.state_dict())
    assert other.temperature == pytest.approx(end)
    assert linear_schedule(start, end, 0, 1) == start


# ----- gumbel_st (GDAS) -------------------------------------------------------------------------
def test_gumbel_st_forward_is_the_chosen_op_and_gradient_matches() -> None:
    net, arch, x, y = _setup(2)
    est = GumbelSTEstimator()
    est.on_epoch_start(1, 4)
    tau = est.temperature
    selection = est.sample(arch, torch.Generator().manual_seed(3), CPU)
    idx = torch.tensor([ops[0] for ops in selection.active])
    net.eval()  # the same BN statistics for both forwards
    out = net(x, selection)
    assert torch.equal(out, net(x, Selection.single_path(idx.tolist())))  # h[idx] is exactly 1
    assert torch.equal(selection.weights.detach(), F.one_hot(idx, K).float())
    F.cross_entropy(out, y).backward()
    assert est.alpha_grad(arch, selection) is None

    g = sample_gumbel(arch.alpha.shape, torch.Generator().manual_seed(3))
    probs = torch.softmax((torch.log_softmax(arch.alpha.detach(), -1) + g) / tau, -1)
    assert torch.equal(probs.argmax(-1), idx)
    _, c = _explicit(net, x, y, F.one_hot(idx, K).double(), [[k] for k in idx.tolist()])
    c_idx = c.gather(1, idx[:, None])
    p_idx = probs.gather(1, idx[:, None])
    expected = c_idx * p_idx * (F.one_hot(idx, K) - probs) / tau  # <dL/dm, O_idx> * d probs[idx]/d alpha
    torch.testing.assert_close(arch.alpha.grad, expected, rtol=1e-6, atol=1e-10)


# ----- binary_gate (ProxylessNAS) ---------------------------------------------------------------
@pytest.mark.parametrize("uses", [(0, 1, 2), (0, 1, 0, 1)])  # the second: blocks sharing a decision
def test_binary_gate_full_gate_gradients_are_exact(uses: tuple[int, ...]) -> None:
    net, arch, x, y = _setup(3, uses)
    arch.fix(1, 3)
    est = BinaryGateEstimator("full")
    selection = est.sample(arch, torch.Generator().manual_seed(4), CPU)
    sample = selection.info["sample"]
    assert selection.probe[1] is None and selection.weighted[1] is False and sample[1] == 3
    out = net(x, selection)
    assert torch.equal(out, net(x, Selection.single_path(sample.tolist())))  # train mode: same batch stats
    F.cross_entropy(out, y).backward()
    got = est.gate_grads(selection)

    gates = F.one_hot(sample, K).double()
    _, exact = _explicit(net, x, y, gates, _all(arch), fixed={1: 3})  # sum_j g_j O^j(x), g one-hot
    exact[1] = 0.0
    torch.testing.assert_close(got.double(), exact, rtol=1e-5, atol=1e-7)
    assert (got[0] != 0).all()

    p = arch.probs().detach()
    expected = torch.zeros_like(p)
    for i in range(p.shape[0]):
        for j in range(K):
            expected[i] += exact[i, j] * p[i, j] * ((torch.arange(K) == j).double() - p[i])
    expected[1] = 0.0
    torch.testing.assert_close(est.alpha_grad(arch, selection), expected, rtol=1e-5, atol=1e-7)


def test_gated_decision_forward_weights_and_batchnorm() -> None:
    """The gate path (supernet mechanism): forward and weight gradients of the single path, BN
    running statistics of probed ops untouched by their recomputation."""
    net, _, x, y = _setup(4, (0,))
    ref = ToySupernet((0,)).double()
    ref.load_state_dict(net.state_dict())
    gates = F.one_hot(torch.tensor([0]), K).double().requires_grad_()
    selection = Selection([[0]], gates, [True], probe=[[1, 2, 3]])
    bn = net.blocks[0].candidates[2][1]
    before = (bn.running_mean.clone(), bn.running_var.clone(), int(bn.num_batches_tracked))
    _loss(net, x, y, selection).backward()
    _loss(ref, x, y, Selection.single_path([0])).backward()
    for (name, a), b in zip(net.named_parameters(), ref.parameters()):
        assert (a.grad is None) == (b.grad is None), name
        if a.grad is not None:
            assert torch.equal(a.grad, b.grad), name
    assert torch.equal(bn.running_mean, before[0]) and torch.equal(bn.running_var, before[1])
    assert int(bn.num_batches_tracked) == before[2]
    assert (gates.grad[0] != 0).all()


def test_binary_gate_two_path_pair_gradient_and_rescale() -> None:
    net, arch, x, y = _setup(5, (0, 1, 2, 0))
    arch.fix(2, 1)
    est = BinaryGateEstimator("two_path")
    selection = est.sample(arch, torch.Generator().manual_seed(6), CPU)
    pairs, sample = selection.info["pairs"], selection.info["sample"]
    p = arch.probs().detach()
    for i in (0, 1):
        a, b = pairs[i].tolist()
        assert a != b and sample[i] in (a, b) and selection.probe[i] == [b if sample[i] == a else a]
        torch.testing.assert_close(selection.info["gate_probs"][i, [a, b]], p[i, [a, b]] / p[i, [a, b]].sum())
    _loss(net, x, y, selection).backward()

    gates = F.one_hot(sample, K).double()
    _, exact = _explicit(net, x, y, gates, _all(arch), fixed={2: 1})
    grad = est.alpha_grad(arch, selection)
    for i in (0, 1):
        pair = pairs[i]
        outside = torch.ones(K, dtype=torch.bool)
        outside[pair] = False
        torch.testing.assert_close(est.gate_grads(selection)[i, pair].double(), exact[i, pair], rtol=1e-5, atol=1e-7)
        assert (grad[i, outside] == 0).all() and (grad[i, pair] != 0).all()
        q, g = p[i, pair] / p[i, pair].sum(), exact[i, pair]
        torch.testing.assert_close(grad[i, pair], q * (g - (q * g).sum()), rtol=1e-5, atol=1e-7)
    assert (grad[2] == 0).all()

    alpha_before, probs_before = arch.alpha.detach().clone(), arch.probs().detach()
    opt = torch.optim.Adam([arch.alpha], lr=0.1, betas=(0.0, 0.999))  # ProxylessNAS: beta1 = 0
    arch.alpha.grad = grad
    opt.step()
    arch.restore_fixed()
    est.after_alpha_step(arch, selection)
    probs_after = arch.probs().detach()
    for i in (0, 1):
        pair = pairs[i]
        outside = torch.ones(K, dtype=torch.bool)
        outside[pair] = False
        assert torch.equal(arch.alpha.detach()[i, outside], alpha_before[i, outside])  # only the pair moved
        assert not torch.allclose(arch.alpha.detach()[i, pair], alpha_before[i, pair])
        torch.testing.assert_close(probs_after[i, outside], probs_before[i, outside])
        torch.testing.assert_close(
            torch.logsumexp(arch.alpha.detach()[i, pair], 0), torch.logsumexp(alpha_before[i, pair], 0)
        )
    assert torch.equal(arch.alpha.detach()[2], alpha_before[2])


# ----- reinforce --------------------------------------------------------------------------------
def test_reinforce_gradient_baseline_and_state() -> None:
    _, arch, _, _ = _setup(6, double=False)
    arch.fix(0, 2)
    est = ReinforceEstimator(baseline_decay=0.9)
    gen = torch.Generator().manual_seed(0)
    p = arch.probs().detach()
    rewards, baseline = [0.5, 0.8, 0.2], None
    for r in rewards:
        selection = est.sample(arch, gen, CPU)
        assert selection.weights is None and selection.active[0] == [2]
        with pytest.raises(KeyError):
            est.alpha_grad(arch, selection)
        selection.info["reward"] = r
        b = r if baseline is None else baseline
        ascent = (r - b) * (F.one_hot(selection.info["sample"], K).float() - p)
        ascent[0] = 0.0
        torch.testing.assert_close(est.alpha_grad(arch, selection), -ascent)  # alpha.grad: minus the ascent
        baseline = 0.9 * b + 0.1 * r
        assert est.baseline == pytest.approx(baseline)
    assert est.baseline == pytest.approx(0.9 * (0.9 * 0.5 + 0.1 * 0.8) + 0.1 * 0.2)

    restored = ReinforceEstimator(baseline_decay=0.9)
    restored.load_state_dict(est.state_dict())
    assert restored.baseline == est.baseline
    selection = est.sample(arch, torch.Generator().manual_seed(1), CPU)
    selection.info["reward"] = 1.0
    twin = Selection(selection.active, info=dict(selection.info))
    torch.testing.assert_close(restored.alpha_grad(arch, twin), est.alpha_grad(arch, selection))


# ----- every registered estimator ---------------------------------------------------------------
# every estimator that runs on any space (one tied to a space, entrannas, has its own tests there)
VARIANTS = [*(n for n in ESTIMATORS.names() if ESTIMATORS.get(n).requires_space is None), "binary_gate:two_path"]


def _build(variant: str) -> Estimator:
    """``name`` with default hyperparameters, or ``name:mode`` (binary_gate's two-path mode)."""
    name, _, mode = variant.partition(":")
    return ESTIMATORS.get(name)(mode=mode) if mode else ESTIMATORS.get(name)()


def _finish_step(est: Estimator, arch: ArchParameters, selection: Selection, reward: float = 0.5) -> Tensor | None:
    if est.needs_reward:
        selection.info["reward"] = reward
    grad = est.alpha_grad(arch, selection)
    return grad if grad is not None else arch.alpha.grad


@pytest.mark.parametrize("name", VARIANTS)
def test_masks_fixed_decisions_and_op_counts(name: str) -> None:
    """Masked candidates never sampled or run; fixed decisions unscaled with zero grad; the
    number of ops each decision runs in the forward (one for single-path estimators)."""
    net, arch, x, y = _setup(7, double=False)
    arch.mask[0, 3] = arch.mask[2, 1] = False
    with torch.no_grad():
        arch.alpha[0, 3] = arch.alpha[2, 1] = 8.0  # would dominate if the mask were ignored
    arch.fix(1, 2)
    est = _build(name)
    assert isinstance(est.single_path, bool) and isinstance(est.needs_reward, bool)
    est.on_epoch_start(0, 2)
    calls: dict[tuple[int, int], int] = {}
    block_out, op_out = {}, {}

    def counter(d: int, k: int):
        def hook(module, inputs, output):
            calls[(d, k)] = calls.get((d, k), 0) + 1
            op_out[(d, k)] = output

        return hook

    for block in net.choice_blocks():
        block.register_forward_hook(lambda m, i, o: block_out.__setitem__(m.decision, o))
        for k, op in enumerate(block.candidates):
            op.register_forward_hook(counter(block.decision, k))

    gen = torch.Generator().manual_seed(0)
    for _ in range(30):
        arch.alpha.grad = None
        calls.clear()
        selection = est.sample(arch, gen, CPU)
        assert 3 not in selection.active[0] and 1 not in selection.active[2]
        assert selection.active[1] == [2] and not selection.is_weighted(1)
        for d, probes in enumerate(selection.probe or []):
            assert probes is None or not ({3} if d == 0 else {1} if d == 2 else set()) & set(probes)
        loss = _loss(net, x, y, selection)
        assert torch.equal(block_out[1], op_out[(1, 2)])  # the fixed decision's op, unscaled
        for d in range(3):
            ran = [k for k in range(K) if calls.get((d, k))]
            assert all(calls[(d, k)] == 1 for k in ran)
            expected = 1 if est.single_path or d == 1 else int(arch.mask[d].sum())
            assert len(ran) == expected, (d, ran)
        loss.backward()
        assert calls.get((0, 3), 0) == 0 and calls.get((2, 1), 0) == 0  # not even in a backward recompute
        grad = _finish_step(est, arch, selection)
        if est.learns_alpha:
            assert grad is not None and torch.isfinite(grad).all()
            assert (grad[1] == 0).all()
            assert grad[0, 3] == 0 and grad[2, 1] == 0


@pytest.mark.parametrize("name", VARIANTS)
def test_every_estimator_runs_on_the_tiny_space(name: str) -> None:
    torch.manual_seed(0)
    space = tiny_space()
    supernet = space.build_supernet()
    arch = ArchParameters(space.candidate_mask(), 0.0, 0.1, torch.Generator().manual_seed(0))
    est = _build(name)
    est.on_epoch_start(0, 2)
    alpha_opt = torch.optim.Adam([arch.alpha], lr=1e-3)
    gen = torch.Generator().manual_seed(1)
    x, y = torch.rand(4, 1, 28, 28), torch.randint(10, (4,))
    for _ in range(2):
        arch.alpha.grad = None
        supernet.zero_grad(set_to_none=True)
        selection = est.sample(arch, gen, CPU)
        logits = supernet(x, selection)
        loss = F.cross_entropy(logits, y)
        loss.backward()
        assert torch.isfinite(loss)
        assert all(torch.isfinite(p.grad).all() for p in supernet.parameters() if p.grad is not None)
        grad = _finish_step(est, arch, selection, float((logits.argmax(1) == y).float().mean()))
        if est.learns_alpha:
            assert grad is not None and grad.shape == arch.alpha.shape and torch.isfinite(grad).all()
            arch.alpha.grad = grad
            alpha_opt.step()
            est.after_alpha_step(arch, selection)
        assert torch.isfinite(arch.alpha).all()
    twin = _build(name)
    twin.load_state_dict(est.state_dict())
    assert twin.state_dict() == est.state_dict()
