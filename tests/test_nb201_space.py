"""The NAS-Bench-201 space against the benchmark's published counts, its arch strings, and
children against the supernet.

Published counts are the benchmark's ``get_cost_info`` fields: 'params' in millions
(count / 1e6: the NAS-Bench-201-era ``count_parameters_in_MB``) and 'flops' in millions, where
the official counter (AutoDL-Projects utils/flop_benchmark.py) sums multiply-accumulates of
Conv2d and Linear layers plus one add per output of a layer with a bias; pooling, BN and ReLU
are not counted. Our ``count_macs`` counts conv and matmul multiply-accumulates without bias
adds, and the only biased layer is the classifier, so: flops * 1e6 == macs + num_classes.
"""

from __future__ import annotations

import csv
import gzip

import pytest
import torch

from conftest import preset, tiny_space
from nasbench.errors import UserError
from nasbench.flops import count_macs, count_params
from nasbench.nb201_truth import SHIPPED_TABLE
from nasbench.spaces import SPACES
from nasbench.spaces.base import InputSpec
from nasbench.supernet import Selection

FASHION = InputSpec(1, 28, 10, (0.286,), (0.353,))
ALL_3X3 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
ALL_SKIP = "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|"
INDEX_0 = "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|"
INDEX_1 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
ISSUE_36 = "|skip_connect~0|+|none~0|nor_conv_3x3~1|+|avg_pool_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"

# (classes, size) -> [(arch, published params in M or None, published flops in M)], as printed:
# each number is checked to the precision it was published with.
PUBLISHED = {
    # D-X-Y/NATS-Bench issue #36 (get_cost_info of its topology space, which is NAS-Bench-201;
    # cifar10, hp="12"): {'flops': 113.95137, 'params': 0.802426}.
    # D-X-Y/NATS-Bench issue #18 (query_info_str_by_arch(1)): "cifar10 FLOP=113.95 M, Params=0.802 MB".
    # D-X-Y/NATS-Bench issue #24: arch index 0 has flops 15.64737 (cifar10-valid), 15.65322
    # (cifar100), 3.91948 (ImageNet16-120).
    # The min and max over all 15,625 cells of NAS-Bench-201-v1_1-096897, as listed in the README
    # of automl/MO-HPOBenchExperimentUtils and in EvoXBench-based nb201 ``min_max_values``: the max
    # is the all-nor_conv_3x3 cell, the min every conv-free cell such as all-skip_connect.
    (10, 32): [
        (ISSUE_36, "0.802426", "113.95137"),
        (INDEX_1, "0.802", "113.95"),
        (INDEX_0, None, "15.64737"),
        (ALL_3X3, "1.531546", "220.11969"),
        (ALL_SKIP, "0.073306", "7.78305"),
    ],
    (100, 32): [(INDEX_0, None, "15.65322"), (ALL_3X3, "1.537396", "220.12554"), (ALL_SKIP, "0.079156", "7.7889")],
    (120, 16): [(INDEX_0, None, "3.91948"), (ALL_3X3, "1.538696", "55.03756"), (ALL_SKIP, "0.080456", "1.9534")],
}


def assert_as_published(value: float, published: str, what: str) -> None:
    """``value`` rounds to ``published`` at the number of decimals it was published with."""
    decimals = len(published.partition(".")[2])
    assert f"{value:.{decimals}f}" == published, f"{what}: {value} is not {published}"


def paper_space(num_classes: int = 10, size: int = 32):
    inputs = InputSpec(3, size, num_classes, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    return SPACES.get("nb201")(preset("nb201", "paper"), inputs)


@pytest.mark.parametrize("data", sorted(PUBLISHED))
def test_paper_networks_have_the_published_params_and_flops(data: tuple[int, int]) -> None:
    num_classes, size = data
    space = paper_space(num_classes, size)
    for text, params, flops in PUBLISHED[data]:
        child = space.build_child(space.decode(text))
        if params is not None:
            assert_as_published(count_params(child) / 1e6, params, f"params of {text}")
        macs = count_macs(child, torch.zeros(1, 3, size, size))
        assert_as_published((macs + num_classes) / 1e6, flops, f"flops of {text}")


def test_paper_space_shape_and_candidate_macs() -> None:
    space = paper_space()
    assert space.size() == 15_625 and space.num_decisions == 6
    assert [d.name for d in space.decisions] == ["edge1<-0", "edge2<-0", "edge2<-1", "edge3<-0", "edge3<-1", "edge3<-2"]
    assert space.decisions[0].candidates == ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
    table = space.candidate_macs()
    assert table.shape == (6, 5) and table.dtype == torch.float64
    # one 3x3 edge in all 15 cells: 5 x 9 x (16^2 x 32^2 + 32^2 x 16^2 + 64^2 x 8^2) MACs
    assert table[0].tolist() == [0, 0, 5 * (16**2 * 32**2 + 32**2 * 16**2 + 64**2 * 8**2), 5 * 9 * 786432, 0]
    x = torch.zeros(1, 3, 32, 32)
    fixed = count_macs(space.build_child((0,) * 6), x)
    for arch in [(3, 3, 4, 1, 3, 1), (2, 0, 1, 4, 3, 2)]:
        picked = sum(float(table[i, k]) for i, k in enumerate(arch))
        assert count_macs(space.build_child(arch), x) == fixed + picked


def test_every_published_arch_string_decodes_and_re_encodes() -> None:
    space = tiny_space("nb201")
    with gzip.open(SHIPPED_TABLE, "rt", newline="") as f:
        strings = [row["arch_str"] for row in csv.DictReader(f)]
    assert len(strings) == 15_625
    archs = [space.decode(s) for s in strings]
    assert [space.encode(a) for a in archs] == strings
    assert set(archs) == set(space.enumerate())


def test_index_form_and_round_trip() -> None:
    space = tiny_space("nb201")
    for arch in space.enumerate():
        assert space.decode(space.encode(arch)) == arch
    assert space.decode(INDEX_1) == (3, 3, 4, 1, 3, 1)
    assert space.decode("3,3,4,1,3,1") == space.decode("[3, 3, 4, 1, 3, 1]") == (3, 3, 4, 1, 3, 1)
    assert space.parse_arch([0, 1, 2, 3, 4, 0]) == (0, 1, 2, 3, 4, 0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|", "expected 3 nodes"),
        ("|nor_conv_3x3~0|+|nor_conv_3x3~0|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|", "node 2 needs 2 edges"),
        (INDEX_1.replace("avg_pool_3x3", "max_pool_3x3"), "unknown op 'max_pool_3x3'; ops are: none, skip_connect"),
        (INDEX_1.replace("skip_connect~2", "skip_connect~1"), "edge 3 of node 3 must read node 2"),
        (INDEX_1.replace("~0|+", "|+", 1), "edge 1 of node 1 must read node 0"),
        ("nor_conv_3x3~0+|a~0|b~1|+|c|", "node 1 must look like"),
        ("conv3x3", "or 6 comma-separated op indices; ops are: none, skip_connect, nor_conv_1x1"),
        ("0,1,2,3,4,5", "allows 0..4"),
        ("0,1,2", "has 6 entries, got 3"),
    ],
)
def test_malformed_strings_are_refused_in_one_line(text: str, message: str) -> None:
    with pytest.raises(UserError, match=message) as info:
        tiny_space("nb201").decode(text)
    assert "\n" not in str(info.value)


def test_a_resolution_the_reductions_cannot_halve_is_refused() -> None:
    with pytest.raises(UserError, match="divisible by 4"):
        SPACES.get("nb201")({**preset("nb201", "tiny"), "resolution": 30}, FASHION)


def test_every_candidate_runs_forward_and_backward() -> None:
    """Each op (none included) alone, and all five mixed: finite outputs, gradients where due."""
    space = tiny_space("nb201")
    supernet = space.build_supernet()
    x = torch.rand(4, 1, 28, 28)
    for k in range(5):
        out = supernet(x, Selection.single_path((k,) * 6))
        assert out.shape == (4, 10) and torch.isfinite(out).all()
        supernet.zero_grad(set_to_none=True)
        out.sum().backward()
        for block in supernet.choice_blocks():
            for j, op in enumerate(block.candidates):
                assert all((p.grad is not None) == (j == k) for p in op.parameters())
        assert all(torch.isfinite(p.grad).all() for p in supernet.parameters() if p.grad is not None)
    weights = torch.full((6, 5), 0.2, requires_grad=True)
    out = supernet(x, Selection(active=[list(range(5))] * 6, weights=weights))
    out.square().mean().backward()
    assert torch.isfinite(out).all() and torch.isfinite(weights.grad).all() and weights.grad.abs().sum() > 0
    assert all(p.grad is not None for p in supernet.parameters())


def test_none_returns_zeros_of_the_input_shape() -> None:
    block = tiny_space("nb201").build_supernet().choice_blocks()[0]
    x = torch.rand(2, 4, 16, 16)
    assert torch.equal(block.candidates[0](x), torch.zeros_like(x))


def test_child_exports_and_runs_without_project_code() -> None:
    space = tiny_space("nb201")
    child = space.build_child((3, 0, 2, 1, 4, 3)).eval()
    x = torch.rand(3, 1, 28, 28)
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    program = torch.export.export(child, (torch.rand(2, 1, 28, 28),), dynamic_shapes=({0: batch},))
    torch.testing.assert_close(program.module()(x), child(x))
