"""DSO-NAS's search space (nasbench/spaces/dsonas*.py): connection counts against the paper's
formula and the official code, share/full, dead-op removal, the shortcut-only block, and the
pruned network against the search network with those lambdas at zero."""

from __future__ import annotations

import pytest
import torch

from conftest import preset
from methods.estimators.scales import ScalesEstimator
from nasbench.arch_params import ArchParameters
from nasbench.flops import count_macs
from nasbench.spaces.base import InputSpec
from nasbench.spaces.dsonas import BlockPlan, DsoNasSpace
from nasbench.spaces.dsonas_blocks import NormalBlock
from nasbench.supernet import Selection

FASHION = InputSpec(1, 28, 10, (0.286,), (0.353,))
CIFAR = InputSpec(3, 32, 10, (0.49, 0.48, 0.45), (0.25, 0.24, 0.26))


def space(scale: str = "tiny", **changes) -> DsoNasSpace:
    return DsoNasSpace({**preset("dsonas", scale), **changes}, FASHION if scale != "paper" else CIFAR)


def paper_lambdas_per_block(m: int, n: int) -> int:
    """The paper's count: op (level l, 1-based) reads (l - 1) N + 1 scaled inputs; M N outputs."""
    return sum(n * ((level - 1) * n + 1) for level in range(1, m + 1)) + m * n


@pytest.mark.parametrize("levels", [2, 3, 4])
def test_connections_per_block_follow_the_paper_formula_or_the_official_code(levels: int) -> None:
    paper = BlockPlan(levels, 4, level1_lambdas=True)
    code = BlockPlan(levels, 4, level1_lambdas=False)
    assert paper.size == paper_lambdas_per_block(levels, 4)
    assert code.size == paper.size - 4  # the official code leaves level 1's block input unscaled
    if levels == 4:
        assert (paper.size, code.size) == (128, 124)


def test_share_has_one_set_for_every_normal_block_and_full_one_per_block() -> None:
    share = space("paper")
    full = space("paper", variant="full")
    normal_share = [start for kind, start in share.layout if kind == "normal"]
    normal_full = [start for kind, start in full.layout if kind == "normal"]
    assert len(normal_share) == len(normal_full) == 24 and len(set(normal_share)) == 1
    assert len(set(normal_full)) == 24
    # every reduction block has its own two connections (1x1 and 3x3) in both variants
    assert share.num_decisions == 124 + 2 * 2 == 128
    assert full.num_decisions == 24 * 124 + 2 * 2 == 2980
    assert space("paper", level1_input_lambdas=True).num_decisions == 128 + 4
    assert all(d.candidates == ("none", "keep") for d in full.decisions)


def test_an_op_with_no_live_input_or_no_use_is_removed() -> None:
    plan = BlockPlan(2, 4, level1_lambdas=False)  # 4 level-1 ops (unscaled input), 4 level-2 ops
    ones = [1] * plan.size
    assert all(plan.live_ops(ones))
    # level-2 op 4 (sep 3x3) with every input off: dead, and its output connection goes too
    bits = list(ones)
    for _, k in plan.inputs[4]:
        bits[k] = 0
    alive = plan.live_ops(bits)
    assert not alive[4] and sum(alive) == 7
    assert plan.complete(bits)[plan.outputs[4]] == 0
    # level-1 op 0 whose output is off and that no later op reads: dead, its readers' inputs go
    bits = list(ones)
    bits[plan.outputs[0]] = 0
    for j in range(4, 8):
        for src, k in plan.inputs[j]:
            if src == 1:
                bits[k] = 0
    alive = plan.live_ops(bits)
    assert not alive[0] and all(alive[1:])
    # ... but an op whose output is off and that a live op reads stays
    bits = list(ones)
    bits[plan.outputs[0]] = 0
    assert plan.live_ops(bits)[0]
    # a chain: cutting the only use of op 1 after op 5 died kills op 1 as well
    bits = [0] * plan.size
    bits[plan.outputs[5]] = 1
    (k_from_op1,) = [k for src, k in plan.inputs[5] if src == 2]
    bits[k_from_op1] = 1
    assert [i for i, a in enumerate(plan.live_ops(bits)) if a] == [1, 5]
    bits[plan.outputs[5]] = 0
    assert not any(plan.live_ops(bits)) and not any(plan.complete(bits))


def test_a_block_whose_every_op_is_pruned_is_its_shortcut() -> None:
    s = space("tiny")
    arch = [0] * s.num_decisions
    for _, start in (e for e in s.layout if e[0] == "reduce"):
        arch[start] = 1  # keep the reductions' 1x1 convolution
    child = s.build_child(arch).eval()
    x = torch.rand(2, 1, 28, 28)
    blocks = [b for b in child.net_blocks()] if hasattr(child, "net_blocks") else list(child.blocks)
    h = child.stem(child.adapter(x))
    for block in blocks:
        if isinstance(block, NormalBlock):
            assert len(block.ops) == 0 and len(block.out_convs) == 0
            torch.testing.assert_close(block(h), block.shortcut(h), rtol=0, atol=0)
        h = block(h)
    assert torch.isfinite(child(x)).all()


def trained_supernet(s: DsoNasSpace, seed: int = 0):
    torch.manual_seed(seed)
    supernet = s.build_supernet()
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(supernet.parameters(), lr=0.05)
    for _ in range(3):  # weights and BatchNorm statistics away from their initial values
        loss = supernet(torch.rand(16, 1, 28, 28), Selection.single_path(s.sample(gen))).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return supernet.eval()


@pytest.mark.parametrize("variant", ["share", "full"])
@pytest.mark.parametrize("scale", ["tiny", "cpu"])
def test_the_pruned_network_equals_the_search_network_with_those_lambdas_at_zero(scale: str, variant: str) -> None:
    s = space(scale, variant=variant)
    supernet = trained_supernet(s)
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(4, 1, 28, 28)
    estimator = ScalesEstimator()
    for _ in range(3):
        arch = s.complete(s.sample(gen))
        keep = torch.tensor(arch, dtype=torch.bool)
        child = s.build_child(arch, supernet).eval()
        expected = child(x)
        for masked in (True, False):  # pruned (masked), or merely lambda = 0 (still running)
            params = ArchParameters(s.candidate_mask())
            with torch.no_grad():
                params.mask[:, 0] = False
                params.alpha.zero_()
                params.alpha[:, 1] = keep.float()
                if masked:
                    params.mask[:, 1] = keep
            selection = estimator.sample(params, gen, torch.device("cpu"))
            with torch.no_grad():
                torch.testing.assert_close(supernet(x, selection), expected, rtol=1e-5, atol=1e-6)


def test_candidate_macs_add_up_to_the_full_network() -> None:
    s = space("cpu")
    table = s.candidate_macs()
    ones, zeros = (1,) * s.num_decisions, (0,) * s.num_decisions
    x = torch.zeros(1, *FASHION.shape)
    full = count_macs(s.build_child(ones).eval(), x)
    empty = count_macs(s.build_child(zeros).eval(), x)
    assert float(table[:, 1].sum()) == pytest.approx(full - empty, rel=1e-9)
    assert float(table[:, 0].sum()) == 0.0


def test_penalty_weights_none_flops_and_the_official_count() -> None:
    s = space("cpu")  # levels 4: 8 separable convolutions, 16 outputs per block
    start = next(st for kind, st in s.layout if kind == "normal")
    reductions = [st + j for kind, st in s.layout if kind == "reduce" for j in range(2)]
    ones = torch.ones(s.num_decisions, 2, dtype=torch.bool)
    for mode in ("none", "flops", "count"):
        assert torch.allclose(s.penalty_weights(ones, mode), torch.ones(s.num_decisions, dtype=torch.float64))
    off = ones.clone()
    off[start : start + s.plan.size, 1] = False
    flops, count = s.penalty_weights(off, "flops"), s.penalty_weights(off, "count")
    assert float(flops[start]) == 0.0  # nothing of the block is live
    assert float(count[start]) == pytest.approx((2 + 0 + 1) / (24 + 1))  # level 1's two convolutions count
    assert torch.all(flops[reductions] == 1) and torch.all(count[reductions] == 1)
    # one output connection off: the block keeps its op but loses that 1x1 convolution
    one_off = ones.clone()
    k = s.plan.outputs[0]
    one_off[start + k, 1] = False
    costs = s.costs()["sets"][start]
    assert float(s.penalty_weights(one_off, "flops")[start]) == pytest.approx(1 - costs.convs[0] / costs.total())
    assert float(s.penalty_weights(one_off, "count")[start]) == pytest.approx(24 / 25)


def test_derived_and_sampled_architectures_keep_a_path_through_every_reduction() -> None:
    """A reduction block with both connections at none passes nothing (chance accuracy): the
    argmax derivation keeps its likelier connection, and sampling draws only passing pairs, uniformly."""
    s = space("tiny")
    reductions = [start for kind, start in s.layout if kind == "reduce"]
    probs = torch.tensor([[0.9, 0.1]] * s.num_decisions)
    probs[reductions[0] + 1] = torch.tensor([0.6, 0.4])  # likelier than its partner's 0.1
    arch = s.derive(probs)
    assert [arch[r : r + 2] for r in reductions] == [(0, 1), *[(1, 0)] * (len(reductions) - 1)]
    assert sum(arch) == len(reductions)  # every normal connection stays none
    gen = torch.Generator().manual_seed(0)
    pairs = [s.sample(gen)[reductions[0] : reductions[0] + 2] for _ in range(3000)]
    counts = {p: pairs.count(p) for p in set(pairs)}
    assert set(counts) == {(1, 0), (0, 1), (1, 1)}
    assert all(abs(c / 3000 - 1 / 3) < 0.04 for c in counts.values()), counts
