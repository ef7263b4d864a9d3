"""The ShuffleNet space's official network options (DSNAS's BatchNorm eps, SPOS's non-affine
supernet BatchNorm, both codes' weight initialisation and dropout) and SPOS's FLOPs-bin sampling."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import preset, run_entry, tiny_space
from methods.estimators.uniform import UniformEstimator
from methods.evolution import FlopsLimit
from methods.uniform_search import FlopsBinSampler
from nasbench.arch_params import ArchParameters
from nasbench.spaces import SPACES
from nasbench.spaces.base import InputSpec
from nasbench.supernet import Selection

SPEC = InputSpec(1, 28, 10, (0.5,), (0.5,))


def _space(**options):
    return SPACES.get("shufflenet")({**preset("shufflenet", "cpu"), **options}, SPEC)


def _bns(net: nn.Module) -> list[nn.BatchNorm2d]:
    return [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]


def test_defaults_are_pytorchs_and_the_same_network_for_every_method() -> None:
    net = _space().build_supernet()
    assert all(bn.eps == 1e-5 and bn.affine and bn.weight is not None for bn in _bns(net))
    assert isinstance(net.head.dropout, nn.Identity)


def test_dsnas_official_options() -> None:
    """bn_eps 1e-2, dropout 0.1 and the official initialisation, in supernet and child alike."""
    torch.manual_seed(0)
    space = _space(bn_eps=0.01, dropout=0.1, init="official")
    net = space.build_supernet()
    assert all(bn.eps == 0.01 for bn in _bns(net)) and net.head.dropout.p == 0.1
    assert all(bn.eps == 0.01 for bn in _bns(space.build_child((0,) * space.num_decisions)))
    stem = net.stem[0].weight.detach()
    assert abs(float(stem.std()) - 0.01) < 0.003
    pw = net.layers[1].candidates[0].branch_main[0].weight.detach()  # a 1x1 conv: std 1 / input channels
    assert abs(float(pw.std()) * pw.shape[1] - 1.0) < 0.1
    assert all(float(bn.bias.detach().abs().max()) == pytest.approx(1e-4) for bn in _bns(net))
    assert abs(float(net.head.classifier.weight.detach().std()) - 0.01) < 0.002
    assert abs(float(_space().build_supernet().head.classifier.weight.detach().std()) - 0.01) > 0.005  # the control


def test_spos_supernet_batchnorm_learns_no_scale_but_a_retrained_child_does() -> None:
    space = _space(supernet_bn_affine=False)
    net = space.build_supernet()
    assert all(not bn.affine and bn.weight is None for bn in _bns(net))
    arch = (0,) * space.num_decisions
    assert all(not bn.affine for bn in _bns(space.build_child(arch, net)))  # inherited: as searched
    assert all(bn.affine for bn in _bns(space.build_child(arch)))  # from scratch: affine
    params = sum(p.numel() for p in net.parameters())
    assert params < sum(p.numel() for p in _space().build_supernet().parameters())
    x = torch.rand(4, *SPEC.shape)
    net.train()(x, Selection.single_path(arch)).sum().backward()  # runs and trains without gamma and beta


def test_an_unknown_space_option_is_one_line(tmp_path) -> None:
    typo = "+method.space_options.shufflenet.bn_epz=0.1"
    proc = run_entry("run.py", "scale=tiny", typo, f"hydra.run.dir={tmp_path / 'r'}")
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == [
        "error: method.space_options.shufflenet sets bn_epz, which space shufflenet does not have; its options:"
        " bn_eps, dropout, init, last_channels, resolution, stage_channels, stage_repeats, stem_channels, stem_stride,"
        " supernet_bn_affine"
    ]
    assert not (tmp_path / "r").exists()


def test_flops_bins_are_drawn_uniformly_and_each_path_lies_in_its_bin() -> None:
    """Official SPOS's get_uniform_sample_cand: a bin uniformly, then a path inside it."""
    space = tiny_space()
    limit = FlopsLimit(space, None)
    every = sorted(limit.mmacs(a) for a in [tuple(int(k) for k in torch.randint(4, (4,))) for _ in range(300)])
    low, high = every[30], every[-30]
    step = (high - low) / 4
    sampler = FlopsBinSampler(UniformEstimator(), limit, [low, high - 1e-9, step])
    arch, gen = ArchParameters(space.candidate_mask()), torch.Generator().manual_seed(0)
    counts = [0] * len(sampler.bins)
    n = 400
    for _ in range(n):
        mmacs = limit.mmacs(tuple(k for (k,) in sampler.sample(arch, gen, torch.device("cpu")).active))
        assert low <= mmacs <= high
        counts[next(i for i, (lo, hi) in enumerate(sampler.bins) if lo <= mmacs <= hi)] += 1
    expected, sd = n / len(counts), (n * 0.25 * 0.75) ** 0.5
    assert all(abs(c - expected) < 4 * sd for c in counts), counts
