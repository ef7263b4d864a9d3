"""The NAS-Bench-201 cell space (Dong & Yang, ICLR 2020, Sec. 2.1 and Fig. 1).

A cell is a DAG of 4 nodes; node j (1..3) is the sum over i < j of op_(j<-i)(node i), and the
cell's output is node 3. Each of the 6 edges picks one of 5 ops, in this index order (the
official ``NAS_BENCH_201`` list): 0 none, 1 skip_connect, 2 nor_conv_1x1, 3 nor_conv_3x3,
4 avg_pool_3x3; 5^6 = 15,625 architectures. Edges are numbered in the official string order:
1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2.

The macro skeleton is the official ``TinyNetwork`` (D-X-Y/AutoDL-Projects,
lib/models/cell_infers/tiny_network.py): a 3x3 conv + BN stem with C channels; three stages of
N cells with C, 2C and 4C channels and a ``ResNetBasicblock`` (stride 2) between stages; BN,
ReLU, global average pooling and a linear classifier. The paper's setting is C=16, N=5. Every
cell of a network shares one architecture; the supernet gives the corresponding edge of every
cell the same decision index (separate weights per cell).

Ops follow lib/models/cell_operations.py: ReLU-Conv-BN for the convolutions, Identity for
skip_connect, AvgPool2d(3, 1, 1, count_include_pad=False) for avg_pool_3x3 and ``x.mul(0.)``
for none. BatchNorm is affine with running statistics, as in the benchmark's stand-alone
training (``InferCell``: affine=True, track_running_stats=True); the supernet uses the same
modules, so an inherited child is the supernet's path exactly. (The paper's own weight-sharing
baselines use BN without affine parameters in their search cells; we keep one BN so that a
child inherits every weight it has.)

Counts: ``count_params / 1e6`` is the benchmark's 'params'; its 'flops' are conv and linear
multiply-accumulates plus the classifier's bias adds, i.e. ``count_macs + num_classes``
(tests/test_nb201_space.py checks both against the published numbers).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from nasbench.errors import UserError
from nasbench.flops import count_macs
from nasbench.preprocess import InputAdapter
from nasbench.spaces import SPACES
from nasbench.spaces.base import Arch, Decision, InputSpec, SearchSpace
from nasbench.supernet import Supernet

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
NODES = 4
EDGES = tuple((j, i) for j in range(1, NODES) for i in range(j))  # (to, from), official order
EXAMPLE = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"


class ReLUConvBN(nn.Sequential):
    """ReLU, k x k conv without bias, affine BN with running statistics (official ReLUConvBN)."""

    credit_kind = "batchnorm"  # nasbench/credit.py: DSNAS's credit from the BN's gradients

    @property
    def credit_bn(self) -> nn.BatchNorm2d:
        return self[2]

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(cin, cout, k, stride, k // 2, bias=False),
            nn.BatchNorm2d(cout, affine=True, track_running_stats=True),
        )


class Zero(nn.Module):
    """The ``none`` op: zeros of the input's shape, computed as the official ``x.mul(0.)``."""

    credit_kind = "zero"

    def forward(self, x: Tensor) -> Tensor:
        return x.mul(0.0)


def make_candidates(channels: int) -> list[nn.Module]:
    """The five ops of one cell edge (C -> C, stride 1), in ``OPS`` order."""
    skip, pool = nn.Identity(), nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    skip.credit_kind = pool.credit_kind = "linear"  # nasbench/credit.py: the credit from the input side
    return [Zero(), skip, ReLUConvBN(channels, channels, 1), ReLUConvBN(channels, channels, 3), pool]


class ResNetBasicblock(nn.Module):
    """The reduction block between stages (official ResNetBasicblock, stride 2): two
    ReLU-Conv-BN 3x3 (the first strided) plus a shortcut of AvgPool2d(2, 2) and a 1x1 conv
    without BN."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv_a = ReLUConvBN(cin, cout, 3, stride=2)
        self.conv_b = ReLUConvBN(cout, cout, 3)
        self.downsample = nn.Sequential(nn.AvgPool2d(2, 2), nn.Conv2d(cin, cout, 1, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        return self.downsample(x) + self.conv_b(self.conv_a(x))


class Cell(nn.Module):
    """A NAS-Bench-201 cell over six edge modules in ``EDGES`` order (official InferCell).

    The edges are ChoiceBlocks in the supernet and the chosen ops in a child; the wiring is
    the same, so a child computes exactly the supernet's single path.
    """

    def __init__(self, edges: Sequence[nn.Module]) -> None:
        super().__init__()
        if len(edges) != len(EDGES):
            raise ValueError(f"a cell has {len(EDGES)} edges, got {len(edges)}")
        self.edges = nn.ModuleList(edges)

    def forward(self, x: Tensor) -> Tensor:
        nodes = [x]
        e = 0
        for j in range(1, NODES):
            node = self.edges[e](nodes[0])
            for i in range(1, j):
                node = node + self.edges[e + i](nodes[i])
            e += j
            nodes.append(node)
        return nodes[-1]


class Head(nn.Module):
    """BN + ReLU (official ``lastact``), global average pooling, linear classifier with bias."""

    def __init__(self, cin: int, num_classes: int) -> None:
        super().__init__()
        self.lastact = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(inplace=True))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(cin, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.pool(self.lastact(x)).flatten(1))


class NB201Child(nn.Module):
    """A stand-alone network (official TinyNetwork, returning only the logits): adapter, stem,
    cells and reduction blocks, head."""

    def __init__(self, adapter: nn.Module, stem: nn.Module, cells: Sequence[nn.Module], head: nn.Module) -> None:
        super().__init__()
        self.adapter = adapter
        self.stem = stem
        self.cells = nn.Sequential(*cells)
        self.head = head

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.cells(self.stem(self.adapter(x))))


class NB201Supernet(Supernet):
    """Every cell edge is a ChoiceBlock over the five ops; edge e of every cell is decision e."""

    def __init__(self, space: NB201Space) -> None:
        super().__init__()
        inputs, c = space.inputs, space.preset["init_channels"]
        self.adapter = InputAdapter(inputs.mean, inputs.std, space.resolution)
        self.stem = nn.Sequential(nn.Conv2d(inputs.channels, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))
        cells: list[nn.Module] = []
        for cin, cout in space.layer_channels():
            if cin != cout:
                cells.append(ResNetBasicblock(cin, cout))
            else:
                cells.append(Cell([self.make_choice_block(e, make_candidates(cout)) for e in range(len(EDGES))]))
        self.cells = nn.ModuleList(cells)
        self.head = Head(space.layer_channels()[-1][1], inputs.num_classes)

    def body(self, x: Tensor) -> Tensor:
        x = self.stem(self.adapter(x))
        for cell in self.cells:
            x = cell(x)
        return self.head(x)


@SPACES.register("nb201")
class NB201Space(SearchSpace):
    """6 cell edges x 5 ops (15,625 architectures); networks as in NAS-Bench-201."""

    name = "nb201"

    def __init__(self, preset: Mapping[str, Any], inputs: InputSpec) -> None:
        super().__init__(preset, inputs)
        self.resolution: int = self.preset.get("resolution") or inputs.size
        if self.resolution % 4:
            # the two reductions halve the size with a strided conv and an AvgPool2d(2) shortcut,
            # which only agree on even sizes
            raise UserError(f"space nb201 needs a resolution divisible by 4, got {self.resolution}")
        self.decisions = [Decision(f"edge{j}<-{i}", OPS) for j, i in EDGES]

    def layer_channels(self) -> list[tuple[int, int]]:
        """(input, output) channels of every layer after the stem; reduction blocks widen."""
        c, n = self.preset["init_channels"], self.preset["cells_per_stage"]
        widths = [c] * n + [2 * c] * (n + 1) + [4 * c] * (n + 1)
        return list(zip([c, *widths[:-1]], widths))

    # ----- architecture strings --------------------------------------------------------------
    def encode(self, arch: Sequence[int]) -> str:
        """The official string, e.g. ``|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|...|``."""
        names = self.describe(arch)
        nodes, e = [], 0
        for j in range(1, NODES):
            nodes.append("|" + "|".join(f"{names[e + i]}~{i}" for i in range(j)) + "|")
            e += j
        return "+".join(nodes)

    def decode(self, text: str) -> Arch:
        """The official string, or the base class's comma-separated op indices."""
        s = text.strip()
        if "~" in s or "|" in s:
            return self._decode_official(text)
        if not re.fullmatch(r"\[?\s*\d+(\s*,\s*\d+)*\s*\]?", s):
            raise UserError(
                f"cannot read architecture {text!r}: expected a NAS-Bench-201 string like {EXAMPLE}"
                f" or {len(EDGES)} comma-separated op indices; ops are: {', '.join(OPS)}"
            )
        return super().decode(s)

    def _decode_official(self, text: str) -> Arch:
        bad = f"cannot read NAS-Bench-201 architecture {text!r}"
        nodes = text.strip().split("+")
        if len(nodes) != NODES - 1:
            raise UserError(f"{bad}: expected {NODES - 1} nodes joined by '+', like {EXAMPLE}; got {len(nodes)}")
        arch = []
        for j, node in enumerate(nodes, start=1):
            if not (node.startswith("|") and node.endswith("|") and len(node) > 1):
                raise UserError(f"{bad}: node {j} must look like |op~0|...|, got {node!r}")
            edges = node[1:-1].split("|")
            if len(edges) != j:
                raise UserError(f"{bad}: node {j} needs {j} edges (from nodes 0..{j - 1}), got {len(edges)}")
            for i, edge in enumerate(edges):
                op, sep, src = edge.partition("~")
                if op not in OPS:
                    raise UserError(f"{bad}: unknown op {op!r}; ops are: {', '.join(OPS)}")
                if not sep or src != str(i):
                    raise UserError(f"{bad}: edge {i + 1} of node {j} must read node {i} ('{op}~{i}'), got {edge!r}")
                arch.append(OPS.index(op))
        return tuple(arch)

    # ----- networks ------------------------------------------------------------------------
    def build_supernet(self, one_stage: bool = False) -> NB201Supernet:
        return NB201Supernet(self)

    def build_child(self, arch: Sequence[int], supernet: Supernet | None = None) -> NB201Child:
        arch = self.validate(arch)
        net = supernet if supernet is not None else self.build_supernet()
        cells = [
            Cell([edge.candidates[k] for edge, k in zip(cell.edges, arch)]) if isinstance(cell, Cell) else cell
            for cell in net.cells
        ]
        child = NB201Child(net.adapter, net.stem, cells, net.head)
        # a fresh supernet is private to this call: no copy needed; an inherited one is copied
        return copy.deepcopy(child) if supernet is not None else child

    def candidate_macs(self) -> Tensor:
        """Each op's multiply-accumulates summed over the cells (every cell has every edge); the
        rows are equal because every edge of a cell sees the same C x H x W input."""
        table = torch.zeros(self.num_decisions, self.max_candidates, dtype=torch.float64)
        size = self.resolution
        for cin, cout in self.layer_channels():
            if cin != cout:
                size //= 2
                continue
            x = torch.zeros(1, cout, size, size)
            row = torch.tensor([count_macs(op, x) for op in make_candidates(cout)], dtype=torch.float64)
            table += row
        return table
