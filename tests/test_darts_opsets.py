"""The DARTS space's op-set form (nasbench/spaces/darts_opsets.py), what method=dsonas finds there:
round trips through genotypes, the dead-op closure, the child that sums an edge's ops against
the search network with those lambdas, and the penalty weights per cell type."""

from __future__ import annotations

import pytest
import torch

from conftest import preset
from methods.estimators.scales import ScalesEstimator
from nasbench.arch_params import ArchParameters
from nasbench.errors import UserError
from nasbench.spaces.base import InputSpec
from nasbench.spaces.darts import DartsSpace
from nasbench.spaces.darts_genotype import EDGES, EDGES_PER_CELL, format_genotype, genotype_to_arch, read_genotype
from nasbench.spaces.darts_ops import OPS
from nasbench.spaces.darts_opsets import (
    OPSET_SIZE,
    SCALED_OPS,
    edge_ops,
    live_closure,
    live_summary,
    opset_from_edges,
    penalty_weights,
)

FASHION = InputSpec(1, 28, 10, (0.286,), (0.353,))


def space() -> DartsSpace:
    return DartsSpace(preset("darts", "tiny"), FASHION)


def random_opset(gen: torch.Generator, p: float = 0.3) -> tuple[int, ...]:
    return tuple(int(v) for v in (torch.rand(OPSET_SIZE, generator=gen) < p))


def test_op_sets_round_trip_through_genotypes_and_text() -> None:
    s = space()
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        arch = random_opset(gen)
        assert s.decode(s.encode(arch)) == arch
        assert s.decode(",".join(map(str, arch))) == arch
        described = s.describe(arch)
        assert len(described) == 28
        assert all(d == "none" or all(op in OPS for op in d.split("+")) for d in described)
        assert sum(len(ks) for ks in edge_ops(arch)) == sum(arch)
    # an edge with two ops reads as the op-set form; one op per edge stays the ordinary tuple
    two = "Genotype(normal=[[('sep_conv_3x3', 0), ('skip_connect', 0)], [], [], []], normal_concat=[2, 3, 4, 5],"
    two += " reduce=[[('max_pool_3x3', 1)], [], [], []], reduce_concat=[2, 3, 4, 5])"
    arch = s.decode(two)
    assert len(arch) == OPSET_SIZE
    assert s.describe(arch)[0] == "skip_connect+sep_conv_3x3"
    assert s.describe(arch)[EDGES_PER_CELL + 1] == "max_pool_3x3" and sum(arch) == 3
    assert format_genotype(s.genotype(arch)) == s.encode(arch)
    with pytest.raises(UserError, match="two ops on the edge from 0"):  # the 28-entry form cannot hold it
        genotype_to_arch(read_genotype(two))
    one = s.decode(two.replace(", ('skip_connect', 0)", ""))
    assert len(one) == 28 and one[0] == OPS.index("sep_conv_3x3")


@pytest.mark.parametrize("entry", [2, -1, True])
def test_a_bad_op_set_entry_gets_one_line(entry) -> None:
    arch = [0] * OPSET_SIZE
    arch[5] = entry
    with pytest.raises(UserError, match="entry 5 of the op-set architecture") as err:
        space().validate(arch)
    assert "\n" not in str(err.value)


def test_ops_reading_a_dead_node_are_removed() -> None:
    live = torch.zeros(2 * EDGES_PER_CELL, len(OPS), dtype=torch.bool)
    e = {pair: i for i, pair in enumerate(EDGES)}
    live[e[(3, 0)], 3] = True  # node 3 reads input 0: alive
    live[e[(4, 2)], 4] = True  # node 4 reads node 2, which nothing feeds: dead, this op goes
    live[e[(5, 3)], 2] = live[e[(5, 3)], 5] = True  # node 5 reads node 3 with two ops: kept
    live[e[(5, 4)], 1] = True  # reads node 4, dead once (4, 2) goes
    live[e[(2, 1)], 0] = True  # none carries no op
    kept = live_closure(live)
    expected = live.clone()
    expected[e[(4, 2)]] = expected[e[(5, 4)]] = expected[e[(2, 1)]] = False
    assert torch.equal(kept, expected)
    s = space()
    arch = s.support_arch(live)
    assert s.live_summary(arch) == {
        "live_connections": 2,
        "connections": 28,
        "live_ops": 3,
        "ops": OPSET_SIZE,
        "live_ops_normal": 3,
        "live_ops_reduce": 0,
    }
    assert live_summary(arch) == s.live_summary(arch)
    assert torch.equal(s.prune_closure(kept), kept)  # a fixed point


@pytest.mark.parametrize("normalised", [False, True])
def test_the_child_summing_an_edges_ops_equals_the_search_network_with_those_lambdas(normalised: bool) -> None:
    s = space()
    torch.manual_seed(0)
    supernet = s.build_supernet()
    if normalised:
        supernet.normalise_head()
    with torch.no_grad():  # BatchNorm statistics that are not the identity
        for m in supernet.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    supernet.eval()
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(3, 1, 28, 28)
    for p in (0.15, 0.5):
        arch = random_opset(gen, p)
        child = s.build_child(arch, supernet).eval()
        bits = torch.zeros(2 * EDGES_PER_CELL, len(OPS))
        for d, ks in enumerate(edge_ops(arch)):
            bits[d, ks] = 1.0
        for masked in (True, False):  # pruned, or merely lambda = 0 (still running)
            params = ArchParameters(s.candidate_mask())
            with torch.no_grad():
                params.mask[:, 0] = False
                params.alpha.copy_(bits)
                if masked:
                    params.mask &= bits.bool()
            selection = ScalesEstimator().sample(params, gen, torch.device("cpu"))
            with torch.no_grad():
                torch.testing.assert_close(supernet(x, selection), child(x), rtol=1e-5, atol=1e-5)


def test_the_retrained_network_of_an_op_set_sums_its_ops_behind_a_normalised_head() -> None:
    s = space()
    arch = opset_from_edges([[1, 4, 7]] * (2 * EDGES_PER_CELL))
    net = s.build_eval_network(arch)
    assert isinstance(net.global_pooling[0], torch.nn.BatchNorm2d) and not net.global_pooling[0].affine
    one_op = opset_from_edges([[4]] * (2 * EDGES_PER_CELL))  # one op per edge: DARTS's own network
    assert isinstance(s.build_eval_network(one_op).global_pooling, torch.nn.AdaptiveAvgPool2d)
    out = net.eval()(torch.rand(2, 1, 28, 28))
    assert out.shape == (2, 10) and bool(torch.isfinite(out).all())
    cell = net.cells[0]  # every (node, input) pair once per op: three modules per edge
    assert [len(n) for n in cell.nodes] == [6, 9, 12, 15] and len(cell.edges) == 42
    assert cell.nodes[0] == [0, 0, 0, 1, 1, 1]


def test_penalty_weights_per_cell_type() -> None:
    s = space()
    macs = s.candidate_macs()
    live = s.scale_mask().clone()
    assert torch.equal(penalty_weights(live, macs, "none"), torch.ones(28, dtype=torch.float64))
    live[EDGES_PER_CELL:] = False  # the reduction cell fully pruned
    live[0] = False  # and one normal edge
    count = s.penalty_weights(live, "count")
    ops_per_cell = EDGES_PER_CELL * SCALED_OPS
    assert count[0] == pytest.approx((ops_per_cell - SCALED_OPS + 1) / (ops_per_cell + 1))
    assert count[EDGES_PER_CELL] == pytest.approx(1 / (ops_per_cell + 1))
    flops = s.penalty_weights(live, "flops")
    normal = macs[:EDGES_PER_CELL, 1:]
    assert flops[5] == pytest.approx(float(normal[1:].sum() / normal.sum()))
    assert flops[EDGES_PER_CELL] == 0.0
    assert len(set(flops[:EDGES_PER_CELL].tolist())) == 1  # one factor per cell type
