"""DSO-NAS's search space: completely connected blocks whose connections are pruned (Zhang, Huang
and Wang, "You Only Search Once: Single Shot NAS via Direct Sparse Optimization"; official code
XinbangZhang/DSO-NAS, Cifar/symbol/dsonas_search_{share,full}.py). Networks: dsonas_blocks.py.

Every connection is one decision with the candidates ``none`` and ``keep``: method=dsonas masks
``none`` and scales ``keep`` by a non-negative lambda (its pruning masks ``keep``); a sampling
method (spos, dsnas) switches connections on and off. An architecture is one 0/1 per connection.

Per block set, the connections are, in this order: each op's inputs (level m op reads the block
input and every op of levels 1..m-1: (m-1)N + 1 of them), then each op's output. The official
code leaves level 1's input unscaled (``level1_input_lambdas: false``, the default: 108 + 16 =
124 connections per block with M = N = 4); the paper's formula counts it (``true``: 112 + 16 =
128). ``variant: share`` has one set for every normal block of the network; ``full`` one per
block. Each reduction block adds 2 (its 1x1 and 3x3 convolutions), in both variants.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from nasbench.errors import UserError
from nasbench.preprocess import InputAdapter
from nasbench.spaces import SPACES
from nasbench.spaces.base import Arch, Decision, InputSpec, SearchSpace
from nasbench.spaces.darts_ops import Zero
from nasbench.spaces.dsonas_blocks import (
    OP_NAMES,
    DsoNetwork,
    NormalBlock,
    ReductionBlock,
    ZeroReduce,
    conv_bn_relu,
    make_op,
    sources,
)
from nasbench.spaces.dsonas_costs import penalty_weights, set_costs
from nasbench.supernet import Supernet

VARIANTS = ("share", "full")
CONNECTION = ("none", "keep")


class BlockPlan:
    """The connections of one block set: ``inputs[i]`` lists (source state, local index or None
    for an unscaled input) of op i; ``outputs[i]`` the local index of op i's output."""

    def __init__(self, levels: int, ops_per_level: int, level1_lambdas: bool) -> None:
        self.levels, self.n = levels, ops_per_level
        self.num_ops = levels * ops_per_level
        self.inputs: list[list[tuple[int, int | None]]] = []
        self.names: list[str] = []
        count = 0
        for i in range(self.num_ops):
            level = i // ops_per_level
            pairs: list[tuple[int, int | None]] = []
            for src in sources(level, ops_per_level):
                if level == 0 and not level1_lambdas:
                    pairs.append((src, None))
                    continue
                pairs.append((src, count))
                self.names.append(f"{self.op_name(i)}<-{self.state_name(src)}")
                count += 1
            self.inputs.append(pairs)
        self.outputs = list(range(count, count + self.num_ops))
        self.names += [f"{self.op_name(i)}->out" for i in range(self.num_ops)]
        self.size = count + self.num_ops

    def op_name(self, i: int) -> str:
        return f"L{i // self.n + 1}.{OP_NAMES[i % self.n]}"

    def state_name(self, src: int) -> str:
        return "in" if src == 0 else self.op_name(src - 1)

    def live_ops(self, bits: Sequence[int]) -> list[bool]:
        """Ops that run and are used, after removing dead ones until nothing changes: an op none
        of whose inputs is live (a live source through a kept connection) does not run; an op
        whose output neither reaches the block output nor a live op's input is unused."""
        alive = [True] * self.num_ops
        changed = True
        while changed:
            changed = False
            for i in range(self.num_ops):
                if not alive[i]:
                    continue
                fed = any((src == 0 or alive[src - 1]) and (k is None or bits[k]) for src, k in self.inputs[i])
                used = bool(bits[self.outputs[i]]) or any(
                    alive[j] and (k is None or bits[k])
                    for j in range(i + 1, self.num_ops)
                    for src, k in self.inputs[j]
                    if src == i + 1
                )
                if not (fed and used):
                    alive[i], changed = False, True
        return alive

    def complete(self, bits: Sequence[int]) -> list[int]:
        """``bits`` with every connection into or out of a dead op switched off."""
        alive = self.live_ops(bits)
        out = list(bits)
        for i in range(self.num_ops):
            for src, k in self.inputs[i]:
                if k is not None and (not alive[i] or (src > 0 and not alive[src - 1])):
                    out[k] = 0
            if not alive[i]:
                out[self.outputs[i]] = 0
        return out


@SPACES.register("dsonas")
class DsoNasSpace(SearchSpace):
    """DSO-NAS's completely connected blocks, ``share`` or ``full``; one decision per connection."""

    name = "dsonas"
    #: channels_last on the CPU made two identical steps give different losses (torch 2.14.1, as
    #: darts's FactorizedReduce); runs on the CPU keep the default layout (tests/test_space_contract.py)
    channels_last_on_cpu = False

    def __init__(self, preset: Mapping[str, Any], inputs: InputSpec) -> None:
        super().__init__(preset, inputs)
        self.variant = str(self.preset.get("variant", "share"))
        if self.variant not in VARIANTS:
            raise UserError(f"space dsonas: variant={self.variant}; allowed: {', '.join(VARIANTS)}")
        self.stage_blocks = [int(b) for b in self.preset["blocks"]]
        if not self.stage_blocks or min(self.stage_blocks) < 1:
            raise UserError(f"space dsonas: blocks={self.stage_blocks} must list at least one block per stage")
        self.channels = int(self.preset["channels"])
        self.resolution: int | None = self.preset.get("resolution")
        self.plan = BlockPlan(
            int(self.preset.get("levels", 4)), len(OP_NAMES), bool(self.preset.get("level1_input_lambdas", False))
        )
        # where each block's connections start: normal blocks (set offset) and reductions
        self.layout: list[tuple[str, int]] = []
        self.decisions: list[Decision] = []
        shared = 0 if self.variant == "share" else None
        if shared is not None:
            self._add_set("normal")
        for s, count in enumerate(self.stage_blocks):
            for b in range(count):
                if shared is None:
                    self.layout.append(("normal", self._add_set(f"s{s + 1}b{b + 1}")))
                else:
                    self.layout.append(("normal", shared))
            if s < len(self.stage_blocks) - 1:
                start = len(self.decisions)
                self.decisions += [Decision(f"reduce{s + 1}:{op}", CONNECTION) for op in ("conv_1x1", "conv_3x3")]
                self.layout.append(("reduce", start))

    def _add_set(self, prefix: str) -> int:
        start = len(self.decisions)
        self.decisions += [Decision(f"{prefix}:{n}", CONNECTION) for n in self.plan.names]
        return start

    # ----- architectures -------------------------------------------------------------------
    def set_starts(self) -> list[int]:
        """The first decision of every normal block set (one in ``share``)."""
        return sorted({start for kind, start in self.layout if kind == "normal"})

    def derive(self, probs: Tensor, fixed: Mapping[int, int] | None = None) -> Arch:
        """The most likely candidate per connection (sampling methods' rule), except that a
        reduction block keeps its more likely connection when both would be ``none`` (it would
        leave no path from input to output)."""
        arch = list(super().derive(probs, fixed))
        for kind, start in self.layout:
            if kind == "reduce" and not (arch[start] or arch[start + 1]):
                arch[start + int(probs[start : start + 2, 1].argmax())] = 1
        return tuple(arch)

    def sample(self, generator: torch.Generator | None = None) -> Arch:
        """Uniform over the architectures whose reductions pass something (3 pairs of 4)."""
        arch = list(super().sample(generator))
        for kind, start in self.layout:
            if kind == "reduce" and not (arch[start] or arch[start + 1]):
                pair = ((1, 0), (0, 1), (1, 1))[int(torch.randint(3, (1,), generator=generator))]
                arch[start : start + 2] = pair
        return tuple(arch)

    def complete(self, arch: Sequence[int]) -> Arch:
        """``arch`` with the connections of dead ops switched off (what pruning removes)."""
        out = list(self.validate(arch))
        size = self.plan.size
        for start in self.set_starts():
            out[start : start + size] = self.plan.complete(out[start : start + size])
        return tuple(out)

    def live_summary(self, arch: Sequence[int]) -> dict[str, int]:
        """Live connections and live ops of ``arch`` (after removing dead ops), over the network."""
        arch = self.complete(arch)
        ops = 0
        for kind, start in self.layout:
            if kind == "normal":
                ops += sum(self.plan.live_ops(arch[start : start + self.plan.size]))
            else:
                ops += arch[start] + arch[start + 1]
        return {"live_connections": sum(arch), "connections": len(arch), "live_ops": ops}

    # ----- networks ------------------------------------------------------------------------
    def adapter(self) -> InputAdapter:
        return InputAdapter(self.inputs.mean, self.inputs.std, self.resolution)

    def _network(self, link, arch: Sequence[int] | None) -> tuple[nn.Module, list[nn.Module], int]:
        """Stem and blocks; ``link(decision, candidates)`` makes a connection (None: absent)."""
        c = self.channels
        stem = conv_bn_relu(self.inputs.channels, c, 3)
        blocks: list[nn.Module] = []
        kinds = iter(self.layout)
        for s, count in enumerate(self.stage_blocks):
            for b in range(count):
                _, start = next(kinds)
                bits = None if arch is None else arch[start : start + self.plan.size]
                alive = [True] * self.plan.num_ops if bits is None else self.plan.live_ops(bits)
                ops = [make_op(OP_NAMES[i % self.plan.n], c) if alive[i] else None for i in range(self.plan.num_ops)]
                inputs = [
                    [(src, lk) for src, k in pairs if (lk := link(None if k is None else start + k, None)) is not None]
                    for pairs in self.plan.inputs
                ]
                outputs = [link(start + k, None) if alive[i] else None for i, k in enumerate(self.plan.outputs)]
                convs = [nn.Conv2d(c, c, 1, bias=False) if outputs[i] is not None else None for i in range(len(ops))]
                shortcut = conv_bn_relu(c, c, 1) if b == 0 else nn.Identity()
                blocks.append(NormalBlock(ops, inputs, outputs, convs, c, shortcut))
            if s < len(self.stage_blocks) - 1:
                _, start = next(kinds)
                cout = 2 * c
                links = [link(start + j, (conv_bn_relu(c, cout, k, 2), ZeroReduce(cout))) for j, k in enumerate((1, 3))]
                blocks.append(ReductionBlock(links, cout))
                c = cout
        return stem, blocks, c

    def build_supernet(self, one_stage: bool = False) -> DsoSupernet:
        return DsoSupernet(self)

    def build_child(self, arch: Sequence[int], supernet: Supernet | None = None) -> DsoNetwork:
        """The pruned network: kept connections and live ops only, unscaled; with ``supernet``,
        its weights (copied)."""
        arch = self.complete(arch)

        def link(decision: int | None, conv: tuple[nn.Module, nn.Module] | None) -> nn.Module | None:
            if decision is not None and not arch[decision]:
                return None
            return conv[0] if conv is not None else nn.Identity()

        stem, blocks, c = self._network(link, arch)
        net = DsoNetwork(self.adapter(), stem, blocks, c, self.inputs.num_classes)
        if supernet is not None:
            own = net.state_dict()
            theirs = {
                k.removeprefix("net.").replace(".candidates.1.", "."): v for k, v in supernet.state_dict().items()
            }
            missing = [k for k in own if k not in theirs]
            if missing:
                raise ValueError(f"the supernet lacks {missing[:3]}: not a supernet of this space")
            net.load_state_dict({k: theirs[k].clone() for k in own})
        return net

    def costs(self) -> dict:
        """MACs of every block set's ops and output convolutions and of the reductions (cached)."""
        if getattr(self, "_costs", None) is None:
            side = self.resolution or self.inputs.size
            self._costs = set_costs(self.layout, self.stage_blocks, self.channels, side, self.plan)
        return self._costs

    def candidate_macs(self) -> Tensor:
        """Per decision, MACs of ``keep`` (``none``: 0). Additive approximation (dsonas_costs.py):
        an output connection carries its op and 1x1 convolution, an input connection nothing, a
        reduction connection its convolution. Exact MACs of an architecture: ``count_macs`` of
        its child (the run record's ``flops``)."""
        table = torch.zeros(self.num_decisions, 2, dtype=torch.float64)
        costs = self.costs()
        for start, c in costs["sets"].items():
            for i, k in enumerate(self.plan.outputs):
                table[start + k, 1] = c.ops[i] + c.convs[i]
        for start, pair in costs["reductions"].items():
            table[start : start + 2, 1] = torch.tensor(pair, dtype=torch.float64)
        return table

    # ----- sparse scales (method=dsonas) ------------------------------------------------------
    def scale_mask(self) -> Tensor:
        """(decisions x 2) bool: the entries that carry a lambda (``keep``; ``none`` is lambda = 0)."""
        mask = torch.zeros(self.num_decisions, 2, dtype=torch.bool)
        mask[:, 1] = True
        return mask

    def support_arch(self, live: Tensor) -> Arch:
        """The architecture of the lambdas still live (``live``: decisions x 2 bool), dead ops
        removed: what DSO-NAS's pruning keeps."""
        return self.complete([int(v) for v in live[:, 1].tolist()])

    def prune_closure(self, live: Tensor) -> Tensor:
        """``live`` without the connections of dead ops (an op fed by no live connection, or whose
        output reaches nothing): the connections pruning removes besides the zero lambdas."""
        out = live.clone()
        out[:, 1] = torch.tensor(self.support_arch(live), dtype=torch.bool)
        return out

    def penalty_weights(self, live: Tensor, mode: str) -> Tensor:
        """Per decision, the factor of gamma under ``adaptive`` = ``mode`` (dsonas_costs.py)."""
        return penalty_weights(self, live[:, 1], mode)


class DsoSupernet(Supernet):
    """Every connection a ChoiceBlock over (``none``, ``keep``); shared decisions in ``share``."""

    def __init__(self, space: DsoNasSpace) -> None:
        super().__init__()

        def link(decision: int | None, conv: tuple[nn.Module, nn.Module] | None) -> nn.Module:
            if decision is None:
                return nn.Identity()
            keep, none = conv if conv is not None else (nn.Identity(), Zero(1))
            return self.make_choice_block(decision, [none, keep])

        stem, blocks, c = space._network(link, None)
        self.net = DsoNetwork(space.adapter(), stem, blocks, c, space.inputs.num_classes)

    def body(self, x: Tensor) -> Tensor:
        return self.net(x)
