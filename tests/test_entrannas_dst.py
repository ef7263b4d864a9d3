"""EnTranNAS-DST's normalised weights (methods/entrannas_dst.py) on the DARTS cell's nodes: they
sum to 1 per node, every node keeps an input, the derived sub-graph is their support, and the
gradient in alpha and beta is the true one (finite differences)."""

from __future__ import annotations

import pytest
import torch

from methods.entrannas_dst import dst_support, dst_weights
from nasbench.spaces.darts_genotype import EDGES_PER_CELL, NODE_ROWS, STEPS
from nasbench.spaces.darts_ops import OPS

NONE = torch.tensor([op == "none" for op in OPS])


def darts_nodes() -> list[list[int]]:
    """Rows of the 28 decisions per intermediate node: normal cell's nodes 2..5, then reduction's."""
    return [list(rows) for rows in NODE_ROWS]


def weights(alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    return dst_weights(torch.softmax(alpha, -1), beta, darts_nodes(), NONE)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_each_node_sums_to_one_keeps_an_input_and_derives_the_support(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    alpha = torch.randn(2 * EDGES_PER_CELL, len(OPS), generator=gen) * 2
    beta = torch.randn(2 * STEPS, generator=gen)
    q = weights(alpha, beta)
    p = torch.softmax(alpha, -1)
    support = dst_support(q)
    assert not support[:, 0].any(), "none never enters the sub-graph"
    for j, rows in enumerate(darts_nodes()):
        assert float(q[rows].sum()) == pytest.approx(1.0, abs=1e-6)
        assert int(support[rows].sum()) >= 1
        node_p = p[rows, 1:]
        relative = node_p / node_p.max()
        expected = relative > torch.sigmoid(beta[j])
        assert torch.equal(support[rows, 1:], expected)  # the support is exactly p / max > t_j
        best = divmod(int(node_p.argmax()), len(OPS) - 1)
        assert support[rows[best[0]], best[1] + 1], "the node's arg-max always survives"


def test_a_high_threshold_keeps_one_input_and_a_low_one_keeps_every_op() -> None:
    alpha = torch.randn(2 * EDGES_PER_CELL, len(OPS), generator=torch.Generator().manual_seed(5))
    one = dst_support(weights(alpha, torch.full((2 * STEPS,), 20.0)))  # t -> 1: only each node's arg-max
    assert [int(one[rows].sum()) for rows in darts_nodes()] == [1] * (2 * STEPS)
    every = dst_support(weights(alpha, torch.full((2 * STEPS,), -20.0)))  # t -> 0: every op but none
    assert int(every.sum()) == 2 * EDGES_PER_CELL * (len(OPS) - 1)


def test_the_gradient_in_alpha_and_beta_matches_finite_differences() -> None:
    gen = torch.Generator().manual_seed(3)
    alpha = (torch.randn(2 * EDGES_PER_CELL, len(OPS), generator=gen) * 0.5).double().requires_grad_()
    beta = torch.full((2 * STEPS,), -1.0, dtype=torch.float64, requires_grad=True)
    target = torch.randn(2 * EDGES_PER_CELL, len(OPS), generator=gen).double()

    def loss(a, b):
        return (weights(a, b) * target).sum()

    assert torch.autograd.gradcheck(loss, (alpha, beta), eps=1e-6, atol=1e-5)


def test_beta_must_have_one_entry_per_node() -> None:
    with pytest.raises(ValueError, match="one entry per node"):
        dst_weights(torch.ones(28, 8) / 8, torch.zeros(3), darts_nodes(), NONE)
