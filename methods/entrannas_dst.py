"""EnTranNAS-DST's differentiable sparsification (Yang et al., "Towards Improving the Consistency,
Efficiency, and Flexibility of Differentiable Neural Architecture Search", CVPR 2021, arXiv
2101.11342): the weights an engine cell uses in place of DARTS's softmax, and the derived
sub-graph, which is their support.

No official code exists, and the paper's body could not be read here. What is below follows a
survey's account of it (Heuillet et al., "Efficient Automation of Neural Network Design: A Survey
on Differentiable Neural Architecture Search", ACM Computing Surveys 2024, arXiv 2304.05405,
Sec. 4.1); items marked [A] are assumptions of this reading (docs/fidelity.md, "EnTranNAS"):

- per intermediate node j a learnable beta_j and a threshold t_j = sigmoid(beta_j)
  (beta initialised at 0, t = 0.5 [A]);
- q_ij^k = ReLU(p_ij^k / max over node j's (i', k') of p - t_j), p = softmax(alpha) per edge;
- q normalised to sum to 1 over node j's (i, k) pairs; the arg-max pair has p / max = 1 > t_j,
  so every node keeps at least one input, and a node may keep any number;
- ``none`` takes part in the softmax but never in q (excluded from the support [A]).

Nothing here imports a space: a node is given as the rows (edges) of alpha that feed it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def dst_weights(probs: Tensor, beta: Tensor, node_rows: Sequence[Sequence[int]], excluded: Tensor) -> Tensor:
    """The normalised DST weights q, shaped like ``probs`` (edges x ops).

    ``probs``: p per edge (rows sum to 1); ``beta``: one logit per node, in ``node_rows``' order;
    ``node_rows``: per node, the rows of the edges that feed it (every row in exactly one node);
    ``excluded``: (ops,) bool, the columns that never enter q (``none``). Differentiable in
    ``probs`` and ``beta``.
    """
    if beta.shape != (len(node_rows),):
        raise ValueError(f"beta has shape {tuple(beta.shape)}; one entry per node ({len(node_rows)}) is needed")
    keep = (~excluded.to(probs.device)).to(probs.dtype)
    q = torch.zeros_like(probs)
    # sigmoid saturates to exactly 1 in float32 from beta ~ 17: keep t below 1, so the arg-max survives
    thresholds = torch.sigmoid(beta.to(probs.dtype)).clamp(max=1 - torch.finfo(probs.dtype).eps)
    for j, rows in enumerate(node_rows):
        index = torch.as_tensor(list(rows), device=probs.device)
        p = probs.index_select(0, index) * keep
        relative = p / p.max()
        raw = torch.relu(relative - thresholds[j]) * keep
        q = q.index_copy(0, index, raw / raw.sum())
    return q


def dst_support(q: Tensor) -> Tensor:
    """The derived sub-graph: every (edge, op) with q > 0 (bool, like ``q``)."""
    return q.detach() > 0
