"""EnTranNAS's feature sharing in the DARTS search network (``feature_sharing: true``): each op on
each cell input runs once per forward with one set of weights, and the network equals the
unshared one whose every edge from input i carries input i's weights (outputs, and gradients
summed over the edges that share)."""

from __future__ import annotations

import re

import torch

from conftest import preset
from nasbench.spaces.base import InputSpec
from nasbench.spaces.darts import DartsSpace
from nasbench.spaces.darts_networks import SharedOp
from nasbench.spaces.darts_ops import OPS
from nasbench.supernet import Selection

FASHION = InputSpec(1, 28, 10, (0.286,), (0.353,))


def space(sharing: bool) -> DartsSpace:
    return DartsSpace({**preset("darts", "tiny"), "feature_sharing": sharing}, FASHION)


def twins():
    """A sharing network and the unshared one with the same weights on every edge from an input."""
    torch.manual_seed(0)
    shared = space(True).build_supernet()
    plain = space(False).build_supernet()
    state = {re.sub(r"(candidates\.\d+)\.op\.", r"\1.", k): v for k, v in shared.state_dict().items()}
    plain.load_state_dict(state)
    return shared, plain


def mixture(n: int) -> Selection:
    weights = torch.softmax(torch.randn(n, len(OPS), generator=torch.Generator().manual_seed(1)), -1)
    return Selection(active=[list(range(len(OPS)))] * n, weights=weights)


def test_each_op_on_each_input_runs_once_per_forward() -> None:
    shared, _ = twins()
    calls: dict[int, int] = {}
    for cell in shared.cells:
        assert len(cell.shared) == 5 * len(OPS)  # inputs 0, 1 and nodes 2, 3, 4
        for op in cell.shared:
            op.op.register_forward_hook(lambda m, a, o: calls.__setitem__(id(m), calls.get(id(m), 0) + 1))
    shared(torch.rand(2, 1, 28, 28), mixture(28))
    assert len(calls) == 3 * 5 * len(OPS) and set(calls.values()) == {1}
    assert all(op._last is None for cell in shared.cells for op in cell.shared), "no activation kept"


def test_sharing_equals_the_unshared_network_with_copied_weights() -> None:
    shared, plain = twins()
    x = torch.rand(4, 1, 28, 28)
    sel = mixture(28)
    out_shared, out_plain = shared(x, sel), plain(x, sel)
    torch.testing.assert_close(out_shared, out_plain, rtol=1e-5, atol=1e-5)
    out_shared.square().sum().backward()
    out_plain.square().sum().backward()
    for cs, cp in zip(shared.cells, plain.cells):
        e, first = 0, {}
        summed: dict[tuple[int, int], list[torch.Tensor]] = {}
        for inputs in cp.nodes:
            for src in inputs:
                first.setdefault(src, e)
                for k, op in enumerate(cp.edges[e].candidates):
                    for n, p in enumerate(op.parameters()):
                        if p.grad is not None:
                            summed.setdefault((src, k, n), []).append(p.grad)
                e += 1
        for (src, k, n), grads in summed.items():
            bank_op = cs.edges[first[src]].candidates[k]
            assert isinstance(bank_op, SharedOp)
            got = list(bank_op.parameters())[n].grad
            torch.testing.assert_close(got, torch.stack(grads).sum(0), rtol=1e-4, atol=1e-5)


def test_sharing_keeps_one_bank_of_weights_per_input_and_children_are_plain() -> None:
    shared, plain = twins()
    dropped = 0  # the ops of every edge but the first from its input
    for cell in plain.cells:
        e, seen = 0, set()
        for inputs in cell.nodes:
            for src in inputs:
                if src in seen:
                    dropped += sum(p.numel() for p in cell.edges[e].parameters())
                seen.add(src)
                e += 1
    assert dropped > 0
    assert sum(p.numel() for p in shared.parameters()) == sum(p.numel() for p in plain.parameters()) - dropped
    s = space(True)
    child = s.build_child(s.sample(torch.Generator().manual_seed(0)), shared)
    assert not any(isinstance(m, SharedOp) for m in child.modules())
