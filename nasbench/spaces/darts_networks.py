"""The networks of the DARTS cell space (quark0/darts: cnn/model_search.py ``Network`` and
cnn/model.py ``NetworkCIFAR`` / ``NetworkImageNet``), built from one :class:`Cell` whose edges are
any modules: ChoiceBlocks in the supernet, the chosen ops in a child or evaluation network.

A cell reads the outputs of the two previous cells (preprocessed to C channels: FactorizedReduce
for cell k-2 if cell k-1 reduced, else ReLU-Conv1x1-BN), computes 4 intermediate nodes, each the
sum of its (edge op, input) pairs, and concatenates the nodes in ``concat`` (4C channels).
Reductions sit at cells ``layers // 3`` and ``2 * layers // 3``, where C doubles; in a reduction
cell the edges from its two inputs have stride 2.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from nasbench.spaces.darts_ops import FactorizedReduce, Identity, ReLUConvBN, drop_path


class Cell(nn.Module):
    """One cell: ``nodes[j]`` lists the input indices of intermediate node j + 2, and ``edges``
    holds the module of each (node, input) pair in the same order. A node without inputs is
    zero (DSO-NAS and SNAS genotypes can leave one empty); so is an edge whose module returns
    None (a ChoiceBlock none of whose candidates runs)."""

    def __init__(
        self,
        preprocess0: nn.Module,
        preprocess1: nn.Module,
        nodes: Sequence[Sequence[int]],
        edges: Sequence[nn.Module],
        concat: Sequence[int],
        reduction: bool,
    ) -> None:
        super().__init__()
        self.preprocess0, self.preprocess1 = preprocess0, preprocess1
        self.nodes = [list(n) for n in nodes]
        self.edges = nn.ModuleList(edges)
        self.concat = list(concat)
        self.reduction = reduction
        #: ops shared by every edge from one input (``share_features``), emptied after each forward
        self.shared: list[SharedOp] = []

    def forward(self, s0: Tensor, s1: Tensor, drop_prob: float = 0.0) -> Tensor:
        try:
            return self._forward(s0, s1, drop_prob)
        finally:
            for op in self.shared:  # hold no activation past the forward
                op.clear()

    def _forward(self, s0: Tensor, s1: Tensor, drop_prob: float) -> Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        e = 0
        for inputs in self.nodes:
            total: Tensor | None = None
            for src in inputs:
                op = self.edges[e]
                h = op(states[src])
                e += 1
                if h is None:  # a ChoiceBlock that runs no op (every candidate pruned): no input
                    continue
                if drop_prob > 0.0 and not isinstance(op, Identity):  # DARTS: never drop an identity
                    h = drop_path(h, drop_prob)
                total = h if total is None else total + h
            if total is None:  # no input: zeros at the cell's output resolution
                stride = 2 if self.reduction else 1
                total = states[1][:, :, ::stride, ::stride].mul(0.0)
            states.append(total)
        return torch.cat([states[i] for i in self.concat], dim=1)


class SharedOp(nn.Module):
    """One op on one input of a cell, computed once per cell forward for every edge that reads
    that input (EnTranNAS's feature sharing: o_ij^k = o_i^k, the same weights and the same
    output for every later node j). The output is kept only while its cell's forward runs."""

    def __init__(self, op: nn.Module) -> None:
        super().__init__()
        self.op = op
        self._last: tuple[Tensor, Tensor] | None = None

    def forward(self, x: Tensor) -> Tensor:
        if self._last is not None and self._last[0] is x:
            return self._last[1]
        y = self.op(x)
        self._last = (x, y)
        return y

    def clear(self) -> None:
        self._last = None


def share_features(cell: Cell) -> None:
    """Make every edge of ``cell`` that reads input i use input i's one bank of ops (the first
    such edge's candidates, each a ``SharedOp``); the other edges' own ops are dropped. The
    edges must be choice blocks (``candidates``) in ``cell.nodes`` order."""
    banks: dict[int, nn.ModuleList] = {}
    e = 0
    for inputs in cell.nodes:
        for src in inputs:
            block = cell.edges[e]
            if src not in banks:
                banks[src] = nn.ModuleList(SharedOp(op) for op in block.candidates)
            block.candidates = banks[src]
            e += 1
    cell.shared = [op for bank in banks.values() for op in bank]


def unshared(op: nn.Module) -> nn.Module:
    """The op itself, without the sharing wrapper (a child computes each edge on its own)."""
    return op.op if isinstance(op, SharedOp) else op


def reduction_cells(layers: int) -> tuple[int, int]:
    """The indices of the two reduction cells (DARTS: layers // 3 and 2 * layers // 3)."""
    return layers // 3, 2 * layers // 3


def build_cells(
    layers: int,
    channels: int,
    stem_channels: int,
    affine: bool,
    cell_plan: Callable[[bool], tuple[Sequence[Sequence[tuple[int, Any]]], Sequence[int]]],
    edge: Callable[[bool, Any, int, int], nn.Module],
    reduction_prev: bool = False,
) -> tuple[list[Cell], list[int]]:
    """The cells of a network and their output channels. ``cell_plan(reduction)`` gives, per
    intermediate node, its (input, what) pairs, and the concat; ``edge(reduction, what, C,
    stride)`` builds the module of one pair (stride 2 on a reduction cell's inputs 0 and 1)."""
    c_pp, c_p, c = stem_channels, stem_channels, channels
    cells, widths = [], []
    for i in range(layers):
        reduction = i in reduction_cells(layers)
        if reduction:
            c *= 2
        pre0 = FactorizedReduce(c_pp, c, affine) if reduction_prev else ReLUConvBN(c_pp, c, 1, 1, 0, affine)
        pre1 = ReLUConvBN(c_p, c, 1, 1, 0, affine)
        plan, concat = cell_plan(reduction)
        nodes = [[src for src, _ in pairs] for pairs in plan]
        edges = [edge(reduction, what, c, 2 if reduction and src < 2 else 1) for pairs in plan for src, what in pairs]
        cells.append(Cell(pre0, pre1, nodes, edges, concat, reduction))
        c_pp, c_p = c_p, len(concat) * c
        widths.append(c_p)
        reduction_prev = reduction
    return cells, widths


class AuxiliaryHead(nn.Module):
    """DARTS's auxiliary classifier (``AuxiliaryHeadCIFAR``, for an 8x8 map; ``imagenet``: the
    14x14 variant, pooling stride 2 and no BN after the 2x2 conv, as the official code)."""

    def __init__(self, cin: int, num_classes: int, imagenet: bool = False) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.ReLU(inplace=False),
            nn.AvgPool2d(5, stride=2 if imagenet else 3, padding=0, count_include_pad=False),
            nn.Conv2d(cin, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=False),
            nn.Conv2d(128, 768, 2, bias=False),
        ]
        if not imagenet:
            layers.append(nn.BatchNorm2d(768))
        layers.append(nn.ReLU(inplace=False))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x).flatten(1))


class DartsNetwork(nn.Module):
    """Adapter, stem, cells, global pooling and classifier; with an auxiliary head, training
    mode returns (logits, auxiliary logits). ``drop_path_prob`` (set per epoch by the retrain,
    as DARTS's ``model.drop_path_prob``) applies in training mode only.

    ``stem_cells``: 1 for the CIFAR stem (both first cells read the stem), 2 for the ImageNet
    stems (stem0's output feeds stem1, and the first cells read stem0 and stem1)."""

    def __init__(
        self,
        adapter: nn.Module,
        stem: nn.Module,
        cells: Sequence[nn.Module],
        classifier: nn.Module,
        auxiliary: nn.Module | None = None,
        auxiliary_after: int = -1,
        stem1: nn.Module | None = None,
        pool: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.adapter, self.stem = adapter, stem
        self.stem1 = stem1
        self.cells = nn.ModuleList(cells)
        self.global_pooling = pool if pool is not None else nn.AdaptiveAvgPool2d(1)
        self.classifier = classifier
        self.auxiliary_head = auxiliary
        self.auxiliary_after = auxiliary_after
        self.drop_path_prob = 0.0

    def normalise_head(self) -> None:
        """A non-affine BatchNorm before global pooling (method=dsonas's adaptation; see
        ``normalise_head`` below)."""
        normalise_head(self)

    def drop_auxiliary(self) -> None:
        """Remove the auxiliary head (the deployed network has none; DARTS's parameter counts
        exclude it)."""
        self.auxiliary_head = None

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        x = self.adapter(x)
        s0 = self.stem(x)
        s1 = self.stem1(s0) if self.stem1 is not None else s0
        drop = self.drop_path_prob if self.training else 0.0
        aux = None
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, drop)
            if i == self.auxiliary_after and self.auxiliary_head is not None and self.training:
                aux = self.auxiliary_head(s1)
        logits = self.classifier(self.global_pooling(s1).flatten(1))
        return (logits, aux) if aux is not None else logits


def normalise_head(net: nn.Module) -> None:
    """Put a non-affine BatchNorm before ``net.global_pooling`` (on the classifier's device).
    method=dsonas's adaptation to this space: without it the unbounded per-op scales of the search
    network, and the sums of several ops per edge of the network it finds, scale the logits
    (DSO-NAS's own blocks end in BatchNorm; the DARTS cells do not)."""
    linear = net.classifier if isinstance(net.classifier, nn.Linear) else None
    assert linear is not None, "normalise_head needs a linear classifier"
    norm = nn.BatchNorm2d(linear.in_features, affine=False, device=linear.weight.device)
    net.global_pooling = nn.Sequential(norm, net.global_pooling)


def imagenet_network(
    adapter: nn.Module, inputs: Any, layers: int, c: int, plan: Callable, make: Callable, auxiliary: bool
) -> DartsNetwork:
    """DARTS's ``NetworkImageNet`` of ``layers`` cells at width ``c`` (``plan`` and ``make`` as
    ``build_cells`` takes them): two stride-2 stems (3x3 conv to C/2, BN, ReLU, 3x3 conv to C, BN;
    then ReLU, 3x3 conv, BN), the first cell reading them as after a reduction, a 7x7 average pool,
    and the auxiliary head after the second reduction when ``auxiliary``."""
    cells, widths = build_cells(layers, c, c, True, plan, make, reduction_prev=True)
    stem0 = nn.Sequential(
        nn.Conv2d(inputs.channels, c // 2, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(c // 2),
        nn.ReLU(inplace=False),
        nn.Conv2d(c // 2, c, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(c),
    )
    conv1 = nn.Conv2d(c, c, 3, stride=2, padding=1, bias=False)
    stem1 = nn.Sequential(nn.ReLU(inplace=False), conv1, nn.BatchNorm2d(c))
    after = reduction_cells(layers)[1]
    aux = AuxiliaryHead(widths[after], inputs.num_classes, imagenet=True) if auxiliary else None
    classifier = nn.Linear(widths[-1], inputs.num_classes)
    return DartsNetwork(adapter, stem0, cells, classifier, aux, after, stem1=stem1, pool=nn.AvgPool2d(7))
