"""The ShuffleNet space against the published counts, and children against the supernet."""

from __future__ import annotations

import pytest
import torch

from conftest import preset, tiny_space
from nasbench.errors import UserError
from nasbench.flops import count_macs, count_params
from nasbench.spaces import SPACES
from nasbench.spaces.base import InputSpec
from nasbench.supernet import Selection

DSNAS_ARCH = (0, 0, 3, 0, 3, 2, 0, 0, 3, 3, 2, 3, 3, 3, 2, 0, 0, 3, 3, 0)
IMAGENET = InputSpec(3, 224, 1000, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


@pytest.fixture(scope="module")
def paper_space():
    return SPACES.get("shufflenet")(preset("shufflenet", "paper"), IMAGENET)


def test_paper_space_has_table6_shape(paper_space) -> None:
    assert paper_space.num_decisions == 20
    assert paper_space.size() == 4**20
    strides = [s for _, _, s in paper_space.layer_shapes()]
    assert [i for i, s in enumerate(strides) if s == 2] == [0, 4, 8, 16]
    assert [out for _, out, _ in paper_space.layer_shapes()][::4] == [64, 160, 320, 320, 640]


def test_dsnas_architecture_has_the_published_flops(paper_space) -> None:
    """DSNAS Table 3: 324 MFLOPs (multiply-adds) at 224x224, 1000 classes; within 2%."""
    child = paper_space.build_child(DSNAS_ARCH)
    macs = count_macs(child, torch.zeros(1, 3, 224, 224))
    assert macs == pytest.approx(324e6, rel=0.02)
    # the fixed parts (stem, last conv, classifier) are about 40 M (the official SPOS/DSNAS FLOPs table)
    blocks = float(sum(paper_space.candidate_macs()[i, k] for i, k in enumerate(DSNAS_ARCH)))
    assert macs - blocks == pytest.approx(40e6, rel=0.05)
    assert 3.0e6 < count_params(child) < 4.0e6


def test_choice_block_flops_match_the_official_table(paper_space) -> None:
    """Per-candidate multiply-adds of the first layer of each stage, as tabulated in the official
    DSNAS code (SNAS-Series/DSNAS), to the operation: the blocks are built as published."""
    table = paper_space.candidate_macs()
    official = {
        0: [13396992, 15805440, 19418112, 13146112],
        1: [7325696, 8931328, 11339776, 12343296],
        4: [26304768, 28111104, 30820608, 20296192],
        8: [30670080, 31673600, 33178880, 21199360],
        19: [10176320, 10427200, 10803520, 15476160],
    }
    for layer, row in official.items():
        assert table[layer].tolist() == row


def test_every_candidate_runs_forward_and_backward() -> None:
    """Each candidate of each layer: finite outputs, and a gradient for every parameter it owns."""
    space = tiny_space()
    supernet = space.build_supernet()
    for k in range(4):
        arch = (k,) * space.num_decisions
        out = supernet(torch.rand(4, 1, 28, 28), Selection.single_path(arch))
        assert out.shape == (4, 10) and torch.isfinite(out).all()
        supernet.zero_grad(set_to_none=True)
        out.sum().backward()
        for block in supernet.choice_blocks():
            for p in block.candidates[k].parameters():
                assert p.grad is not None and torch.isfinite(p.grad).all()
            for j in set(range(4)) - {k}:
                assert all(p.grad is None for p in block.candidates[j].parameters())


def test_architecture_strings_round_trip_and_bad_ones_are_refused() -> None:
    space = tiny_space()
    arch = (3, 0, 2, 1)
    assert space.decode(space.encode(arch)) == arch
    assert space.parse_arch([3, 0, 2, 1]) == arch
    assert space.describe(arch) == ["xception", "shuffle3x3", "shuffle7x7", "shuffle5x5"]
    with pytest.raises(UserError, match="has 4 entries, got 3"):
        space.parse_arch([0, 1, 2])
    with pytest.raises(UserError, match="allows 0..3"):
        space.parse_arch([0, 1, 2, 4])
    with pytest.raises(UserError, match="comma-separated"):
        space.decode("0,a,1,2")
    assert len(list(space.enumerate())) == 4**4


def test_a_stage_that_does_not_widen_is_refused() -> None:
    bad = {**preset("shufflenet", "tiny"), "stage_channels": [8, 24, 32, 48]}
    with pytest.raises(ValueError, match="must widen"):
        SPACES.get("shufflenet")(bad, InputSpec(1, 28, 10, (0.3,), (0.35,))).build_supernet()
