"""The DARTS cell space (Liu et al., ICLR 2019; quark0/darts), the space DARTS, SNAS, GDAS,
PC-DARTS and P-DARTS report on.

28 decisions: the 14 edges of the normal cell, then the 14 of the reduction cell, each one of 8
ops (``darts_ops.OPS``: none, max_pool_3x3, avg_pool_3x3, skip_connect, sep_conv_3x3,
sep_conv_5x5, dil_conv_3x3, dil_conv_5x5). One alpha row per edge and cell type, shared by every
cell of that type, as alpha_normal / alpha_reduce in the DARTS code. ``none`` is an absent edge,
so an architecture is a cell with any number of inputs per node (darts_genotype.py).

Networks, by preset keys:
- the **search network** (``cells``, ``channels``): every method searches in it. The DARTS
  search network's BatchNorm is non-affine in the cells, with a non-affine BatchNorm after every
  pooling op (``MixedOp``); the stem's is affine. An inherited child keeps those modules, so it is
  the supernet's path exactly.
- the **evaluation network** (``eval_cells``, ``eval_channels``): what a two-stage method retrains
  from scratch (``NetworkCIFAR``: affine BatchNorm, no BatchNorm after pools, an auxiliary head
  after cell 2 * eval_cells // 3 with loss weight ``auxiliary_weight``, drop-path ``drop_path``
  growing linearly over the epochs, cutout ``cutout`` pixels; nasbench/retrain_recipe.py).
- a **one-stage method** (DSNAS) deploys the network it searched, so with
  ``one_stage_network: eval`` (the default) it searches a supernet of the evaluation network's depth
  and width, with affine BatchNorm: its child is a network of the size the two-stage methods
  deploy, and needs no retraining. Its memory per step is one path (about the child's), which is
  what makes this affordable (DSNAS, Sec. 4). It keeps the search network's BatchNorm after each
  pooling op: a sampled path keeps every edge whose op is not ``none`` (about 12 of 14), and
  without that BatchNorm the sums of unnormalised pooling and identity outputs grow from node to
  node (measured at tiny scale: the search loss rose to 5.4 and the child stayed at chance; with
  it, 2.4 and 0.56). ``one_stage_network: search`` searches the search network instead.

Derivation (``derivation``): ``top2`` (DARTS ``genotype()``: per node the two inputs with the
largest best non-``none`` weight, each with its best non-``none`` op) for the methods that derive
from alpha; ``argmax`` keeps every edge's most likely op, ``none`` included (SNAS's edge_all).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from nasbench.errors import UserError
from nasbench.flops import count_macs
from nasbench.preprocess import InputAdapter
from nasbench.spaces import SPACES
from nasbench.spaces.base import Arch, Decision, InputSpec, SearchSpace
from nasbench.spaces.darts_genotype import (
    CONCAT,
    EDGES,
    EDGES_PER_CELL,
    NODE_ROWS,
    STEPS,
    Genotype,
    format_genotype,
    genotype_to_arch,
    read_genotype,
)
from nasbench.spaces.darts_networks import (
    AuxiliaryHead,
    Cell,
    DartsNetwork,
    build_cells,
    imagenet_network,
    normalise_head,
    reduction_cells,
    share_features,
    unshared,
)
from nasbench.spaces.darts_ops import OPS, make_op
from nasbench.spaces.darts_opsets import (
    OpSetScales,
    edge_ops,
    genotype_of,
    is_opset,
    opset_from_genotype,
    shares_an_edge,
    validate_opset,
)
from nasbench.supernet import Supernet

STEM_MULTIPLIER = 3  # the stem has 3C channels
DERIVATIONS = ("top2", "argmax")
ONE_STAGE_NETWORKS = ("eval", "search")


class DartsSupernet(Supernet):
    """The search network: every cell edge a ChoiceBlock over the 8 ops; edge e of every normal
    cell is decision e, of every reduction cell decision 14 + e; cell i's blocks are group i
    (``Selection.groups``). ``deploy``: the one-stage
    network (the evaluation network's depth, width and affine BatchNorm; BatchNorm after pools kept)."""

    def __init__(self, space: DartsSpace, deploy: bool = False) -> None:
        super().__init__()
        preset = space.preset
        layers = int(preset["eval_cells" if deploy else "cells"])
        c = int(preset["eval_channels" if deploy else "channels"])

        def plan(reduction: bool) -> tuple[list[list[tuple[int, int]]], list[int]]:
            base = EDGES_PER_CELL if reduction else 0
            nodes = [[(src, base + EDGES.index((node, src))) for src in range(node)] for node in range(2, 2 + STEPS)]
            return nodes, list(CONCAT)

        def edge(reduction: bool, decision: int, ch: int, stride: int) -> nn.Module:
            ops = [make_op(name, ch, stride, affine=deploy, pool_bn=True) for name in OPS]
            return self.make_choice_block(decision, ops)

        cells, widths = build_cells(layers, c, STEM_MULTIPLIER * c, deploy, plan, edge)
        for i, cell in enumerate(cells):  # each cell is a group (Selection.groups)
            for block in cell.edges:
                block.group = i
            if preset.get("feature_sharing", False):
                share_features(cell)
        self.adapter = space.adapter()
        self.stem = _stem(space.inputs.channels, STEM_MULTIPLIER * c)
        self.cells = nn.ModuleList(cells)
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(widths[-1], space.inputs.num_classes)

    def normalise_head(self) -> None:
        """A non-affine BatchNorm before global pooling (method=dsonas's adaptation,
        darts_networks.normalise_head)."""
        normalise_head(self)

    def body(self, x: Tensor) -> Tensor:
        s0 = s1 = self.stem(self.adapter(x))
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1)
        return self.classifier(self.global_pooling(s1).flatten(1))


def _genotype_plan(g: Genotype):
    """``build_cells``'s plan for a genotype: per node its (input, op) pairs, ``none`` dropped."""

    def plan(reduction: bool) -> tuple[list[list[tuple[int, str]]], list[int]]:
        nodes, concat = g.cell(reduction)
        return [[(src, op) for op, src in node if op != "none"] for node in nodes], list(concat)

    return plan


def _fresh_op(reduction: bool, op: str, ch: int, stride: int) -> nn.Module:
    """An evaluation network's edge: the op with affine BatchNorm, no BatchNorm after pools."""
    return make_op(op, ch, stride, affine=True)


def _stem(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout))


@SPACES.register("darts")
class DartsSpace(OpSetScales, SearchSpace):
    """28 edges x 8 ops; search, evaluation and one-stage networks as in the DARTS code; the
    sparse-scale hooks of method=dsonas (``OpSetScales``)."""

    name = "darts"
    #: channels_last on the CPU made the gradients of steps through stride-2 skip_connect edges
    #: (FactorizedReduce) differ from run to run by up to 6% (torch 2.14.1; tests/test_darts_space.py
    #: checks that two identical steps agree), so runs on the CPU keep the default layout
    channels_last_on_cpu = False

    def __init__(self, preset: Mapping[str, Any], inputs: InputSpec) -> None:
        super().__init__(preset, inputs)
        self.resolution: int = self.preset.get("resolution") or inputs.size
        if self.resolution % 4:
            raise UserError(f"space darts needs a resolution divisible by 4 (two reductions), got {self.resolution}")
        for key, allowed in (("derivation", DERIVATIONS), ("one_stage_network", ONE_STAGE_NETWORKS)):
            if self.preset.get(key, allowed[0]) not in allowed:
                raise UserError(f"space darts: {key}={self.preset[key]}; allowed: {', '.join(allowed)}")
        for key in ("channels", "eval_channels"):
            if int(self.preset[key]) % 2:
                raise UserError(f"space darts: {key}={self.preset[key]} must be even (FactorizedReduce halves it)")
        self.decisions = [
            Decision(f"{cell}:{node}<-{src}", OPS) for cell in ("normal", "reduce") for node, src in EDGES
        ]

    # ----- architectures -------------------------------------------------------------------
    def validate(self, arch: Sequence[int]) -> Arch:
        """28 op indices (one op per edge), or the op-set form of darts_opsets.py (196 0/1 entries,
        any number of ops per edge: what method=dsonas finds here)."""
        return validate_opset(arch) if is_opset(arch) else super().validate(arch)

    def genotype(self, arch: Sequence[int]) -> Genotype:
        return genotype_of(self.validate(arch))

    def describe(self, arch: Sequence[int]) -> list[str]:
        """Per edge its op, its ops joined by ``+`` (op-set form), or ``none``."""
        return ["+".join(OPS[k] for k in ks) or "none" for ks in edge_ops(self.validate(arch))]

    def encode(self, arch: Sequence[int]) -> str:
        """The genotype in the DARTS code's form (nested per node when not two inputs each)."""
        return format_genotype(self.genotype(arch))

    def decode(self, text: str) -> Arch:
        """A genotype (any form darts_genotype reads; with two ops on an edge: the op-set form), a
        published name, 28 op indices, or the op-set form's 196 0/1 entries."""
        s = text.strip()
        if s.startswith("Genotype") or (s.replace("_", "").isalnum() and not s.isdigit()):
            g = read_genotype(s)
            return opset_from_genotype(g) if shares_an_edge(g) else genotype_to_arch(g)
        return super().decode(s)

    def derive(self, probs: Tensor, fixed: Mapping[int, int] | None = None) -> Arch:
        """DARTS's ``genotype()`` (top2) or every edge's argmax (argmax); fixed decisions keep their op."""
        if self.preset.get("derivation", "top2") == "argmax":
            return super().derive(probs, fixed)
        p = probs.detach().float().cpu()
        arch = [0] * self.num_decisions
        for edges in NODE_ROWS:  # every intermediate node of both cell types
            best = {e: int(p[e, 1:].argmax()) + 1 for e in edges}  # the best op other than none
            strength = {e: float(p[e, best[e]]) for e in edges}
            for e in sorted(edges, key=lambda e: -strength[e])[:2]:
                arch[e] = best[e]
        for i, k in (fixed or {}).items():
            arch[i] = k
        return tuple(arch)

    def search_cell_kinds(self) -> list[bool]:
        """Per cell of the search network, whether it is a reduction cell (its group in
        ``Selection.groups`` is its index)."""
        layers = int(self.preset["cells"])
        return [i in reduction_cells(layers) for i in range(layers)]

    # ----- networks ------------------------------------------------------------------------
    def adapter(self) -> InputAdapter:
        return InputAdapter(self.inputs.mean, self.inputs.std, self.resolution)

    def build_supernet(self, one_stage: bool = False) -> DartsSupernet:
        """The search network; for a one-stage method with ``one_stage_network: eval``, a
        supernet of the evaluation network's depth, width and affine BatchNorm."""
        return DartsSupernet(self, deploy=one_stage and self.preset.get("one_stage_network", "eval") == "eval")

    def build_child(self, arch: Sequence[int], supernet: Supernet | None = None) -> DartsNetwork:
        """The path of ``arch`` through the supernet (its modules, copied when given): the cells
        keep only the edges whose op is not ``none``; an edge with several ops (op-set form)
        sums them."""
        ops = edge_ops(self.validate(arch))
        net = supernet if supernet is not None else self.build_supernet()
        cells: list[Cell] = []
        for cell in net.cells:
            base = EDGES_PER_CELL if cell.reduction else 0
            nodes, edges, e = [], [], 0
            for node_inputs in cell.nodes:
                kept = []
                for src in node_inputs:
                    for k in ops[base + e]:
                        kept.append(src)
                        edges.append(unshared(cell.edges[e].candidates[k]))
                    e += 1
                nodes.append(kept)
            cells.append(Cell(cell.preprocess0, cell.preprocess1, nodes, edges, cell.concat, cell.reduction))
        child = DartsNetwork(net.adapter, net.stem, cells, net.classifier, pool=net.global_pooling)
        return copy.deepcopy(child) if supernet is not None else child

    def build_eval_network(self, arch: Sequence[int] | Genotype) -> DartsNetwork:
        """The evaluation network of a genotype (or architecture), fresh weights, as
        ``NetworkCIFAR``: affine BatchNorm, no BatchNorm after pools, and an auxiliary head when
        ``auxiliary_weight`` > 0. With several ops on one edge (the op-set form: DSO-NAS,
        EnTranNAS-DST) a non-affine BatchNorm before global pooling: the sums of many ops per
        edge scale the logits so far that the retrain diverged without it (2026-12-04, tiny
        scale, every op on every edge: retrain loss 80 rising to 150)."""
        g = arch if isinstance(arch, Genotype) else self.genotype(arch)
        if self.imagenet:  # NetworkImageNet, the mobile setting: 14 cells, C=48
            layers, c = int(self.preset.get("imagenet_cells", 14)), int(self.preset.get("imagenet_channels", 48))
            aux = self.eval_recipe().auxiliary_weight > 0
            net = imagenet_network(self.adapter(), self.inputs, layers, c, _genotype_plan(g), _fresh_op, aux)
        else:
            net = self._cifar_network(g)
        if shares_an_edge(g):  # a sum of several ops per edge: see normalise_head
            net.normalise_head()
        return net

    def _cifar_network(self, g: Genotype) -> DartsNetwork:
        layers, c = int(self.preset["eval_cells"]), int(self.preset["eval_channels"])

        cells, widths = build_cells(layers, c, STEM_MULTIPLIER * c, True, _genotype_plan(g), _fresh_op)
        after = reduction_cells(layers)[1]
        aux = None
        if self.eval_recipe().auxiliary_weight > 0:
            aux = AuxiliaryHead(widths[after], self.inputs.num_classes)
        stem = _stem(self.inputs.channels, STEM_MULTIPLIER * c)
        classifier = nn.Linear(widths[-1], self.inputs.num_classes)
        return DartsNetwork(self.adapter(), stem, cells, classifier, auxiliary=aux, auxiliary_after=after)

    def inspect(self, value: str | Sequence[int]) -> tuple[nn.Module, list[str], str, str]:
        """The evaluation network of a genotype (any form, a published name, or 28 indices; a
        genotype with two ops on one edge too), one line per node."""
        if isinstance(value, str) and not value.strip()[:1].isdigit() and not value.strip().startswith("["):
            g = read_genotype(value)
        else:
            g = self.genotype(self.parse_arch(value))
        lines = []
        for cell in ("normal", "reduce"):
            nodes, concat = g.cell(cell == "reduce")
            for j, node in enumerate(nodes):
                inputs = ", ".join(f"{op} <- {src}" for op, src in node if op != "none") or "(no input: zero)"
                lines.append(f"{cell:>6} node {j + 2}: {inputs}")
            lines.append(f"{cell:>6} concat: {list(concat)}")
        if self.imagenet:
            cells, width = self.preset.get("imagenet_cells", 14), self.preset.get("imagenet_channels", 48)
            label = f"ImageNet network ({cells} cells, C={width})"
        else:
            label = f"evaluation network ({self.preset['eval_cells']} cells, C={self.preset['eval_channels']})"
        return self.deployable(self.build_eval_network(g)).eval(), lines, format_genotype(g), label

    @property
    def imagenet(self) -> bool:
        """Inputs of ImageNet size (a working resolution of 128 or more): the evaluation network is
        DARTS's ``NetworkImageNet`` (the mobile setting) instead of ``NetworkCIFAR``."""
        return self.resolution >= 128

    def deployable(self, net: nn.Module) -> nn.Module:
        """The evaluation network without its auxiliary head (it only trains)."""
        if isinstance(net, DartsNetwork):
            net.drop_auxiliary()
        return net

    def candidate_macs(self) -> Tensor:
        """Each op's multiply-accumulates summed over the search network's cells of its type
        (a reduction cell's edges from its inputs are strided; those from its nodes are not)."""
        table = torch.zeros(self.num_decisions, self.max_candidates, dtype=torch.float64)
        layers, c = int(self.preset["cells"]), int(self.preset["channels"])
        size = self.resolution
        for i in range(layers):
            reduction = i in reduction_cells(layers)
            c = c * 2 if reduction else c
            base = EDGES_PER_CELL if reduction else 0
            for e, (_, src) in enumerate(EDGES):
                stride = 2 if reduction and src < 2 else 1
                side = size // 2 if reduction and src >= 2 else size
                x = torch.zeros(1, c, side, side)
                for k, name in enumerate(OPS):
                    table[base + e, k] += count_macs(make_op(name, c, stride, affine=False), x)
            size = size // 2 if reduction else size
        return table
