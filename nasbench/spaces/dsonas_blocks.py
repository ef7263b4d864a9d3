"""The networks of DSO-NAS's search space (Zhang, Huang and Wang, "You Only Search Once", Sec. 3.1
and Fig. 2; official code XinbangZhang/DSO-NAS, Cifar/symbol/dsonas_search_share.py and operation.py).

A normal block is "completely connected": M levels of N ops, every op stride 1 with C channels
and followed by BN + ReLU (separable 3x3 and 5x5 convolutions: one depthwise k x k and one 1x1;
3x3 max and average pooling). The input of an op is the sum of the block input and of every op
output of the earlier levels, each through its own connection; every op output goes through
its own connection and 1x1 convolution into one sum (= concat + 1x1), then BN + ReLU, plus the
shortcut (identity, or 1x1 conv-BN-ReLU in a stage's first block). A reduction block is a 1x1
and a 3x3 stride-2 Conv-BN-ReLU, each through a connection, summed; channels double.

A connection is any module that maps a tensor to a tensor or to None (absent): a ChoiceBlock in
the supernet (candidates ``none`` and ``keep``; DSO-NAS scales ``keep`` by its lambda), an
Identity in a pruned child. An op none of whose inputs arrives is not run, and a block none of
whose outputs arrives is its shortcut alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from nasbench.supernet import ChoiceBlock

OP_NAMES = ("sep_conv_3x3", "sep_conv_5x5", "max_pool_3x3", "avg_pool_3x3")


def conv_bn_relu(cin: int, cout: int, k: int, stride: int = 1) -> nn.Sequential:
    """operation.py ``Conv``: conv (no bias), BN, ReLU."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=False)
    )


def make_op(name: str, c: int) -> nn.Sequential:
    """operation.py ``Conv_Sep`` (depthwise k x k, 1x1, BN, ReLU) or ``Pool`` (pool, BN, ReLU)."""
    if name.startswith("sep_conv"):
        k = int(name[-1])
        layers: list[nn.Module] = [
            nn.Conv2d(c, c, k, 1, k // 2, groups=c, bias=False),
            nn.Conv2d(c, c, 1, bias=False),
        ]
    elif name == "max_pool_3x3":
        layers = [nn.MaxPool2d(3, 1, 1)]
    elif name == "avg_pool_3x3":
        layers = [nn.AvgPool2d(3, 1, 1)]
    else:
        raise ValueError(f"unknown DSO-NAS op {name}")
    return nn.Sequential(*layers, nn.BatchNorm2d(c), nn.ReLU(inplace=False))


class ZeroReduce(nn.Module):
    """The ``none`` candidate of a reduction block's connection: zeros with the block's output
    channels at stride 2 (a normal connection's ``none`` is darts_ops.Zero(1), x * 0)."""

    credit_kind = "zero"  # DSNAS: its credit is 0, nothing to compute (nasbench/credit.py)

    def __init__(self, cout: int, stride: int = 2) -> None:
        super().__init__()
        self.cout, self.stride = cout, stride

    def forward(self, x: Tensor) -> Tensor:
        n, _, h, w = x.shape
        s = self.stride
        return x.new_zeros(n, self.cout, (h + s - 1) // s, (w + s - 1) // s)


def link_state(link: nn.Module) -> str:
    """``live`` (the connection passes its input: ``keep`` runs, or a pruned child's Identity),
    ``probe`` (``none`` runs, but the estimator wants a gate gradient there: it runs, adding
    zeros) or ``absent`` (``none`` alone, or nothing: it is skipped). An op is run only when at
    least one of its inputs is live, so a path's dead ops do not run, as in the pruned child."""
    if not isinstance(link, ChoiceBlock):
        return "live"
    selection = link._slot.selection
    active = selection.active[link.decision] if selection is not None else [1]
    if 1 in active:
        return "live"
    if active and selection.probes(link.decision):
        return "probe"
    return "absent"


def sources(level: int, ops_per_level: int) -> list[int]:
    """The state indices an op of ``level`` (0-based) reads: 0 is the block input, 1 + i op i."""
    return list(range(1 + level * ops_per_level))


class NormalBlock(nn.Module):
    """One completely connected block. ``ops[i]`` is op i's module or None (pruned);
    ``inputs[i]`` its (source state, connection) pairs; ``outputs[i]`` op i's output connection
    or None; ``out_convs[i]`` its 1x1 conv or None."""

    def __init__(
        self,
        ops: Sequence[nn.Module | None],
        inputs: Sequence[Sequence[tuple[int, nn.Module]]],
        outputs: Sequence[nn.Module | None],
        out_convs: Sequence[nn.Module | None],
        c: int,
        shortcut: nn.Module,
    ) -> None:
        super().__init__()
        self.ops = nn.ModuleDict({str(i): op for i, op in enumerate(ops) if op is not None})
        self.sources = [[src for src, _ in pairs] for pairs in inputs]
        self.in_links = nn.ModuleDict(
            {f"{i}_{src}": link for i, pairs in enumerate(inputs) for src, link in pairs if ops[i] is not None}
        )
        self.out_links = nn.ModuleDict({str(i): m for i, m in enumerate(outputs) if m is not None})
        self.out_convs = nn.ModuleDict({str(i): m for i, m in enumerate(out_convs) if m is not None})
        self.num_ops = len(ops)
        self.bn = nn.BatchNorm2d(c)
        self.shortcut = shortcut

    def forward(self, x: Tensor) -> Tensor:
        states: list[Tensor | None] = [x]
        for i in range(self.num_ops):
            links = [
                (self.in_links[f"{i}_{src}"], states[src])
                for src in self.sources[i]
                if f"{i}_{src}" in self.in_links and states[src] is not None
            ]
            states_of = [(link, h, link_state(link)) for link, h in links]
            total: Tensor | None = None
            if any(state == "live" for _, _, state in states_of):  # else the op does not run
                for link, h, state in states_of:
                    if state == "absent":
                        continue
                    h = link(h)
                    if h is not None:
                        total = h if total is None else total + h
            states.append(None if total is None else self.ops[str(i)](total))
        out: Tensor | None = None
        for i in range(self.num_ops):
            h = states[1 + i]
            link = self.out_links[str(i)] if str(i) in self.out_links else None
            if h is None or link is None or link_state(link) == "absent":
                continue
            h = link(h)
            if h is None:
                continue
            h = self.out_convs[str(i)](h)
            out = h if out is None else out + h
        skip = self.shortcut(x)
        if out is None:  # every op pruned: the shortcut alone
            return skip
        return torch.relu(self.bn(out)) + skip


class ReductionBlock(nn.Module):
    """The 1x1 and 3x3 stride-2 Conv-BN-ReLU, each through its connection (None: pruned), summed."""

    def __init__(self, links: Sequence[nn.Module | None], cout: int) -> None:
        super().__init__()
        self.links = nn.ModuleDict({str(i): m for i, m in enumerate(links) if m is not None})
        self.cout = cout

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor | None = None
        for link in self.links.values():
            h = link(x)
            if h is not None:
                out = h if out is None else out + h
        if out is None:
            n, _, h, w = x.shape
            return x.new_zeros(n, self.cout, (h + 1) // 2, (w + 1) // 2)
        return out


class DsoNetwork(nn.Module):
    """Stem, stages of normal blocks with a reduction block between stages, BN-ReLU, pool, FC
    (dsonas_search_share.py ``dsonas``; the CIFAR stem: 3x3 conv-BN-ReLU)."""

    def __init__(self, adapter: nn.Module, stem: nn.Module, blocks: Sequence[nn.Module], c_last: int, classes: int):
        super().__init__()
        self.adapter, self.stem = adapter, stem
        self.blocks = nn.ModuleList(blocks)
        self.final = nn.Sequential(nn.BatchNorm2d(c_last), nn.ReLU(inplace=False))
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_last, classes)

    def forward(self, x: Tensor) -> Tensor:
        h = self.stem(self.adapter(x))
        for block in self.blocks:
            h = block(h)
        return self.classifier(self.global_pooling(self.final(h)).flatten(1))
