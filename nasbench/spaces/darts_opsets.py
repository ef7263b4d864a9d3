"""Several ops per edge in the DARTS cell space: the architectures DSO-NAS finds there, and its
sparse-scale hooks (method=dsonas on space=darts, the suite's adaptation of DSO-NAS to the DARTS
cell: one lambda per (edge, op), no softmax; methods/dsonas.py).

The **op-set form** of an architecture has one 0/1 per (edge, op other than ``none``): 28 edges x
7 ops = 196 entries, edge-major in the DARTS edge order, ops in ``OPS`` order without ``none``.
An edge with several ops sums them (a node's inputs are its (op, input) pairs, so a genotype with
two ops on one edge is this form); an edge with none is absent. The one-op-per-edge tuple of 28
op indices stays the space's ordinary form: sampling, derivation and every other method use it.

Dead ops (what DSO-NAS's pruning removes besides the zero lambdas, methods.md "DSO-NAS"): a node
none of whose live ops reads a live state is dead (zero); an op reading a dead node has all-zero
input and goes. Every intermediate node is concatenated into the cell's output, so no op's output
is unused.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from nasbench.errors import UserError
from nasbench.spaces.darts_genotype import EDGES, EDGES_PER_CELL, STEPS, Genotype, edges_to_genotype, genotype_edges
from nasbench.spaces.darts_ops import OPS

DECISIONS = 2 * EDGES_PER_CELL  # 28
SCALED_OPS = len(OPS) - 1  # every op but none carries a lambda
OPSET_SIZE = DECISIONS * SCALED_OPS  # 196


def is_opset(arch: Sequence[int]) -> bool:
    return len(arch) == OPSET_SIZE


def validate_opset(arch: Sequence[int]) -> tuple[int, ...]:
    for i, v in enumerate(arch):
        if isinstance(v, bool) or v not in (0, 1):
            raise UserError(
                f"entry {i} of the op-set architecture is {v!r}; each of its {OPSET_SIZE} entries (28 edges x 7 ops"
                " other than none) is 0 or 1"
            )
    return tuple(int(v) for v in arch)


def edge_ops(arch: Sequence[int]) -> list[list[int]]:
    """Per decision (edge), the indices into ``OPS`` of its ops: one or none in the 28-entry form,
    any number in the op-set form."""
    if is_opset(arch):
        return [[k + 1 for k in range(SCALED_OPS) if arch[e * SCALED_OPS + k]] for e in range(DECISIONS)]
    return [[k] if k else [] for k in arch]


def opset_from_edges(ops: Sequence[Sequence[int]]) -> tuple[int, ...]:
    bits = [0] * OPSET_SIZE
    for e, ks in enumerate(ops):
        for k in ks:
            if k:
                bits[e * SCALED_OPS + k - 1] = 1
    return tuple(bits)


def genotype_of(arch: Sequence[int]) -> Genotype:
    """The genotype of either form."""
    return edges_to_genotype(edge_ops(arch))


def shares_an_edge(g: Genotype) -> bool:
    """Whether some edge of ``g`` carries two ops."""
    return any(len(ks) > 1 for ks in genotype_edges(g))


def opset_from_genotype(g: Genotype) -> tuple[int, ...]:
    """The op-set form of a genotype with any number of ops per edge (concat must be 2..5)."""
    return opset_from_edges(genotype_edges(g))


def live_closure(live: Tensor) -> Tensor:
    """``live`` ((28 x 8) bool, column 0 ``none``) without the ops that read a dead node."""
    out = live.clone()
    out[:, 0] = False
    for c in range(2):
        base = c * EDGES_PER_CELL
        alive = [True, True] + [False] * STEPS
        for e, (node, src) in enumerate(EDGES):  # edges of node j come before any edge from j
            if not alive[src]:
                out[base + e] = False
            elif bool(out[base + e].any()):
                alive[node] = True
    return out


def live_summary(arch: Sequence[int]) -> dict[str, int]:
    """Edges with at least one op (``live_connections`` of 28), (edge, op) pairs (``live_ops`` of
    196), and per cell type."""
    ops = edge_ops(arch)
    normal = sum(len(k) for k in ops[:EDGES_PER_CELL])
    reduce = sum(len(k) for k in ops[EDGES_PER_CELL:])
    return {
        "live_connections": sum(bool(k) for k in ops),
        "connections": DECISIONS,
        "live_ops": normal + reduce,
        "ops": OPSET_SIZE,
        "live_ops_normal": normal,
        "live_ops_reduce": reduce,
    }


def penalty_weights(live: Tensor, macs: Tensor, mode: str) -> Tensor:
    """Per decision, the factor of gamma: 1 (``none``), the cell type's live MACs over its full
    MACs (``flops``, the paper's rule with a cell in the place of a block; ``macs``: the space's
    candidate_macs), or (live ops + 1) / (all ops + 1) of the cell type (``count``, the official
    code's counting rule)."""
    weights = torch.ones(DECISIONS, dtype=torch.float64)
    if mode == "none":
        return weights
    live = live.detach().cpu().clone()
    live[:, 0] = False
    for c in range(2):
        rows = slice(c * EDGES_PER_CELL, (c + 1) * EDGES_PER_CELL)
        if mode == "flops":
            ratio = float(macs[rows][live[rows]].sum() / macs[rows, 1:].sum())
        else:
            ratio = (int(live[rows].sum()) + 1) / (EDGES_PER_CELL * SCALED_OPS + 1)
        weights[rows] = ratio
    return weights


class OpSetScales:
    """The sparse-scale hooks method=dsonas calls (methods/dsonas.py), for the DARTS space."""

    def scale_mask(self) -> Tensor:
        """(28 x 8) bool: every op but ``none`` carries a lambda."""
        mask = torch.ones(DECISIONS, len(OPS), dtype=torch.bool)
        mask[:, 0] = False
        return mask

    def support_arch(self, live: Tensor) -> tuple[int, ...]:
        """The op-set architecture of the live lambdas ((28 x 8) bool), ops reading dead nodes removed."""
        kept = live_closure(live)
        return opset_from_edges([[k for k in range(1, len(OPS)) if kept[e, k]] for e in range(DECISIONS)])

    def prune_closure(self, live: Tensor) -> Tensor:
        return live_closure(live)

    def live_summary(self, arch: Sequence[int]) -> dict[str, int]:
        return live_summary(self.validate(arch))  # type: ignore[attr-defined]

    def penalty_weights(self, live: Tensor, mode: str) -> Tensor:
        """Per decision, the factor of gamma under ``adaptive`` = ``mode``, per cell type."""
        if getattr(self, "_macs", None) is None:
            self._macs = self.candidate_macs()  # type: ignore[attr-defined]
        return penalty_weights(live, self._macs, mode)
