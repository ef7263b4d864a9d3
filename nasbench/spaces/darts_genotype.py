"""DARTS genotypes: reading, writing, the published ones, and their link to the suite's
architecture tuples.

A genotype lists, for each of a cell's 4 intermediate nodes, the (op, input) pairs it sums;
inputs 0 and 1 are the cell's two inputs (cells k-2 and k-1), input i >= 2 is intermediate node
i. The DARTS code prints a flat list with two pairs per node (``Genotype(normal=[('sep_conv_3x3',
0), ...], normal_concat=[2, 3, 4, 5], reduce=[...], reduce_concat=[2, 3, 4, 5])``, cnn/genotypes.py);
SNAS's ``edge_all`` genotypes list all 14 edges (2, 3, 4, 5 per node), GDAS's code nests the pairs
per node, and DSO-NAS and EnTranNAS-DST keep any number of inputs per node. Every form is read
here; a genotype whose nodes do not all have two inputs is written nested, one list per node.

The suite's architecture tuple for this space has 28 entries, one op per edge: the 14 edges of
the normal cell, then the 14 of the reduction cell, in the DARTS edge order (node 2's inputs 0, 1;
node 3's inputs 0, 1, 2; ...). ``none`` is an absent edge, so a tuple is a genotype with any
number of inputs per node and at most one op per edge.
"""

from __future__ import annotations

import ast
from collections.abc import Sequence
from dataclasses import dataclass

from nasbench.errors import UserError
from nasbench.spaces.darts_ops import OPS

STEPS = 4  #: intermediate nodes per cell
EDGES = tuple((node, src) for node in range(2, 2 + STEPS) for src in range(node))  #: (node, input), DARTS order
EDGES_PER_CELL = len(EDGES)  # 14
CONCAT = tuple(range(2, 2 + STEPS))
#: per intermediate node (normal cell's 2..5, then the reduction cell's), the decisions feeding it
NODE_ROWS = tuple(
    tuple(c * EDGES_PER_CELL + e for e, (node, _) in enumerate(EDGES) if node == j)
    for c in range(2)
    for j in range(2, 2 + STEPS)
)

Node = tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class Genotype:
    """Per cell type, the (op, input) pairs of each intermediate node, and the nodes concatenated."""

    normal: tuple[Node, ...]
    normal_concat: tuple[int, ...]
    reduce: tuple[Node, ...]
    reduce_concat: tuple[int, ...]

    def cell(self, reduction: bool) -> tuple[tuple[Node, ...], tuple[int, ...]]:
        return (self.reduce, self.reduce_concat) if reduction else (self.normal, self.normal_concat)

    def __str__(self) -> str:
        return format_genotype(self)


def _node_text(node: Node) -> str:
    return ", ".join(f"('{op}', {src})" for op, src in node)


def format_genotype(g: Genotype) -> str:
    """The DARTS code's form when every node has two inputs, else one list per node."""

    def cell(nodes: tuple[Node, ...]) -> str:
        if all(len(n) == 2 for n in nodes):
            return "[" + ", ".join(_node_text(n) for n in nodes) + "]"
        return "[" + ", ".join("[" + _node_text(n) + "]" for n in nodes) + "]"

    return (
        f"Genotype(normal={cell(g.normal)}, normal_concat={list(g.normal_concat)}, "
        f"reduce={cell(g.reduce)}, reduce_concat={list(g.reduce_concat)})"
    )


EXAMPLE = (
    "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ...], normal_concat=[2, 3, 4, 5], "
    "reduce=[...], reduce_concat=[2, 3, 4, 5])"
)


def _literal(node: ast.expr, what: str) -> object:
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "range":
        return list(range(*(int(ast.literal_eval(a)) for a in node.args)))
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise UserError(f"cannot read {what} of the genotype: only literals and range(a, b) are allowed") from None


def _pair(item: object, where: str) -> tuple[str, int]:
    ok = isinstance(item, (tuple, list)) and len(item) in (2, 3) and isinstance(item[0], str)
    if not ok or isinstance(item[1], bool) or not isinstance(item[1], int):
        raise UserError(f"{where}: expected ('op', input), got {item!r}")
    if item[0] not in OPS:
        raise UserError(f"{where}: unknown op {item[0]!r}; ops are: {', '.join(OPS)}")
    return str(item[0]), int(item[1])


def _nodes(value: object, cell: str) -> tuple[Node, ...]:
    if not isinstance(value, (list, tuple)):
        raise UserError(f"genotype {cell}: expected a list of ('op', input) pairs, got {value!r}")
    items = list(value)
    nested = bool(items) and all(
        isinstance(i, (list, tuple)) and (not i or isinstance(i[0], (list, tuple))) for i in items
    )
    if nested:  # one list per node (GDAS's code, variable fan-in)
        groups = [list(i) for i in items]
    elif len(items) == 2 * STEPS:  # the DARTS code: two per node
        groups = [items[2 * j : 2 * j + 2] for j in range(STEPS)]
    elif len(items) == EDGES_PER_CELL:  # SNAS edge_all: every edge, 2, 3, 4, 5 per node
        starts = [sum(range(2, 2 + j)) for j in range(STEPS + 1)]
        groups = [items[starts[j] : starts[j + 1]] for j in range(STEPS)]
    else:
        raise UserError(
            f"genotype {cell}: {len(items)} pairs; a flat list has {2 * STEPS} (two per node) or"
            f" {EDGES_PER_CELL} (every edge); for another number of inputs per node give one list per node"
        )
    if len(groups) != STEPS:
        raise UserError(f"genotype {cell}: {len(groups)} nodes, the cell has {STEPS}")
    nodes = []
    for j, group in enumerate(groups):
        pairs = tuple(_pair(p, f"genotype {cell}, node {j + 2}") for p in group)
        for _, src in pairs:
            if not 0 <= src < j + 2:
                raise UserError(f"genotype {cell}, node {j + 2}: input {src} does not exist; it may read 0..{j + 1}")
        nodes.append(pairs)
    return tuple(nodes)


def _concat(value: object, cell: str) -> tuple[int, ...]:
    out = tuple(int(v) for v in value) if isinstance(value, (list, tuple)) else ()
    if not out or any(not 2 <= v < 2 + STEPS for v in out):
        raise UserError(f"genotype {cell}_concat={value!r}: a non-empty list of nodes in 2..{1 + STEPS}")
    return out


def parse_genotype(text: str) -> Genotype:
    """A genotype as the DARTS code prints it (or nested per node, or SNAS's edge_all form)."""
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except SyntaxError:
        tree = None
    if not (isinstance(tree, ast.Call) and isinstance(tree.func, ast.Name) and tree.func.id == "Genotype"):
        raise UserError(f"cannot read genotype {text[:80]!r}: expected {EXAMPLE}")
    fields = {k.arg: _literal(k.value, str(k.arg)) for k in tree.keywords}
    names = ("normal", "normal_concat", "reduce", "reduce_concat")
    fields.update({n: _literal(v, n) for n, v in zip(names, tree.args)})
    missing = [n for n in names if n not in fields]
    if missing or set(fields) - set(names):
        raise UserError(f"cannot read genotype: it needs exactly the fields {', '.join(names)}")
    return Genotype(
        _nodes(fields["normal"], "normal"),
        _concat(fields["normal_concat"], "normal"),
        _nodes(fields["reduce"], "reduce"),
        _concat(fields["reduce_concat"], "reduce"),
    )


def genotype_edges(g: Genotype) -> list[list[int]]:
    """Per decision (28 edges: normal, then reduction), the indices into ``OPS`` of the genotype's
    ops on that edge (``none`` dropped); refuses a concat other than 2..5."""
    ops: list[list[int]] = []
    for cell, (nodes, concat) in (("normal", g.cell(False)), ("reduce", g.cell(True))):
        if tuple(concat) != CONCAT:
            raise UserError(f"genotype {cell}_concat={list(concat)}: this space concatenates nodes {list(CONCAT)}")
        row: list[list[int]] = [[] for _ in range(EDGES_PER_CELL)]
        for j, node in enumerate(nodes):
            for op, src in node:
                if op != "none":
                    row[EDGES.index((j + 2, src))].append(OPS.index(op))
        ops += row
    return ops


def genotype_to_arch(g: Genotype) -> tuple[int, ...]:
    """The 28-entry tuple (one op per edge, ``none`` where the genotype has no pair); refuses a
    genotype with two ops on one edge (darts_opsets.py's op-set form holds it)."""
    arch = []
    for e, ks in enumerate(genotype_edges(g)):
        if len(ks) > 1:
            cell, (node, src) = ("normal", "reduce")[e // EDGES_PER_CELL], EDGES[e % EDGES_PER_CELL]
            raise UserError(
                f"genotype {cell}, node {node}: two ops on the edge from {src}; an architecture of"
                " this space has one op per edge (the evaluation network takes such genotypes)"
            )
        arch.append(ks[0] if ks else 0)
    return tuple(arch)


def edges_to_genotype(ops: Sequence[Sequence[int]]) -> Genotype:
    """The genotype of per-edge op lists (28 of them): each node's pairs, by input, then op."""
    cells = []
    for c in range(2):
        nodes = []
        for j in range(STEPS):
            pairs = (
                (OPS[k], src)
                for e, (node, src) in enumerate(EDGES)
                if node == j + 2
                for k in ops[c * EDGES_PER_CELL + e]
            )
            nodes.append(tuple(pairs))
        cells.append(tuple(nodes))
    return Genotype(cells[0], CONCAT, cells[1], CONCAT)


def arch_to_genotype(arch: Sequence[int]) -> Genotype:
    """The genotype of a 28-entry tuple: each node's non-``none`` edges, by input."""
    return edges_to_genotype([[k] if k else [] for k in arch])


#: published genotypes, as their official code prints them (facts copied, not code): quark0/darts
#: cnn/genotypes.py (DARTS_V1, DARTS_V2), yuhuixu1993/PC-DARTS, chenxin061/pdarts,
#: D-X-Y/AutoDL-Projects (GDAS_V1), SNAS-Series/SNAS genotypes.py (SNAS_mild/moderate/aggressive)
PUBLISHED_TEXT = {
    "DARTS_V1": "Genotype(normal=[('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('skip_connect', 0), ('sep_conv_3x3', 1),"
    " ('skip_connect', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('skip_connect', 2)], normal_concat=[2, 3, 4, 5],"
    " reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 0), ('max_pool_3x3', 0),"
    " ('skip_connect', 2), ('skip_connect', 2), ('avg_pool_3x3', 0)], reduce_concat=[2, 3, 4, 5])",
    "DARTS_V2": "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1),"
    " ('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], normal_concat=[2, 3, 4, 5],"
    " reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), ('max_pool_3x3', 0),"
    " ('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])",
    "PC_DARTS_cifar": "Genotype(normal=[('sep_conv_3x3', 1), ('skip_connect', 0), ('sep_conv_3x3', 0),"
    " ('dil_conv_3x3', 1), ('sep_conv_5x5', 0), ('sep_conv_3x3', 1), ('avg_pool_3x3', 0), ('dil_conv_3x3', 1)],"
    " normal_concat=range(2, 6), reduce=[('sep_conv_5x5', 1), ('max_pool_3x3', 0), ('sep_conv_5x5', 1),"
    " ('sep_conv_5x5', 2), ('sep_conv_3x3', 0), ('sep_conv_3x3', 3), ('sep_conv_3x3', 1), ('sep_conv_3x3', 2)],"
    " reduce_concat=range(2, 6))",
    "PDARTS": "Genotype(normal=[('skip_connect', 0), ('dil_conv_3x3', 1), ('skip_connect', 0), ('sep_conv_3x3', 1),"
    " ('sep_conv_3x3', 1), ('sep_conv_3x3', 3), ('sep_conv_3x3', 0), ('dil_conv_5x5', 4)], normal_concat=range(2, 6),"
    " reduce=[('avg_pool_3x3', 0), ('sep_conv_5x5', 1), ('sep_conv_3x3', 0), ('dil_conv_5x5', 2), ('max_pool_3x3', 0),"
    " ('dil_conv_3x3', 1), ('dil_conv_3x3', 1), ('dil_conv_5x5', 3)], reduce_concat=range(2, 6))",
    "GDAS_V1": "Genotype(normal=[(('skip_connect', 0), ('skip_connect', 1)),"
    " (('skip_connect', 0), ('sep_conv_5x5', 2)), (('sep_conv_3x3', 3), ('skip_connect', 0)),"
    " (('sep_conv_5x5', 4), ('sep_conv_3x3', 3))],"
    " normal_concat=[2, 3, 4, 5], reduce=[(('sep_conv_5x5', 0), ('sep_conv_3x3', 1)), (('sep_conv_5x5', 2),"
    " ('sep_conv_5x5', 1)), (('dil_conv_5x5', 2), ('sep_conv_3x3', 1)), (('sep_conv_5x5', 0), ('sep_conv_5x5', 1))],"
    " reduce_concat=[2, 3, 4, 5])",
    "SNAS_mild": "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('skip_connect', 0), ('dil_conv_3x3', 1),"
    " ('skip_connect', 0), ('skip_connect', 1), ('skip_connect', 0), ('sep_conv_3x3', 1)], normal_concat=range(2, 6),"
    " reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1),"
    " ('skip_connect', 2), ('max_pool_3x3', 0), ('dil_conv_5x5', 2)], reduce_concat=range(2, 6))",
    "SNAS_moderate": "Genotype(normal=[('dil_conv_5x5', 0), ('skip_connect', 1), ('sep_conv_3x3', 0),"
    " ('skip_connect', 1), ('skip_connect', 0), ('skip_connect', 1), ('sep_conv_3x3', 0), ('dil_conv_5x5', 1)],"
    " normal_concat=range(2, 6), reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('sep_conv_5x5', 0),"
    " ('dil_conv_5x5', 1), ('sep_conv_5x5', 0), ('sep_conv_5x5', 1), ('sep_conv_5x5', 0), ('sep_conv_5x5', 1)],"
    " reduce_concat=range(2, 6))",
    "SNAS_aggressive": "Genotype(normal=[('sep_conv_5x5', 0), ('skip_connect', 1), ('skip_connect', 0),"
    " ('skip_connect', 1), ('dil_conv_5x5', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_5x5', 1)],"
    " normal_concat=range(2, 6), reduce=[('sep_conv_5x5', 0), ('none', 1), ('sep_conv_5x5', 0), ('none', 1),"
    " ('none', 1), ('none', 0), ('none', 1), ('none', 0)], reduce_concat=range(2, 6))",
}
ALIASES = {"DARTS": "DARTS_V2", "PCDARTS": "PC_DARTS_cifar", "GDAS": "GDAS_V1"}


def published(name: str) -> Genotype:
    key = ALIASES.get(name, name)
    if key not in PUBLISHED_TEXT:
        raise UserError(f"no published genotype named {name!r}; the suite ships: {', '.join(PUBLISHED_TEXT)}")
    return parse_genotype(PUBLISHED_TEXT[key])


def read_genotype(text: str) -> Genotype:
    """A published name (``DARTS_V2``) or a genotype's text."""
    s = text.strip()
    return parse_genotype(s) if s.startswith("Genotype") else published(s)
