"""EnTranNAS's engine and transit cells (Yang et al., "Towards Improving the Consistency,
Efficiency, and Flexibility of Differentiable Neural Architecture Search", CVPR 2021, arXiv
2101.11342). No official code exists; this follows a survey's account of the paper (Heuillet et
al., "Efficient Automation of Neural Network Design: A Survey on Differentiable Neural
Architecture Search", arXiv 2304.05405, Sec. 4.1), and what that reading assumes is marked [A].

Engine cells are DARTS mixtures: every op of every edge runs, weighted by p = softmax(alpha)
(``derivation: top2``) or by EnTranNAS-DST's normalised weights q (``derivation: dst``,
methods/entrannas_dst.py; there only the ops with q > 0 run, which gives the same forward and
the same gradients, since an op with q = 0 has zero weight and zero derivative). Transit cells
run only the sub-graph derived from the current alpha, re-derived at every sample [A: each
iteration], as an unweighted sum of the kept (input, op) pairs: the other ops of a transit
cell neither run nor learn. The derived sub-graph is DARTS's top-2 rule (``top2``: the space's
``derive``) or the support of q (``dst``: any number of inputs per node, and possibly several
ops on one edge: the op-set form of nasbench/spaces/darts_opsets.py).

``engine_cells``: indices of the search network's engine cells; null takes the first normal and
the first reduction cell [A: the paper's choice could not be read]. DST's per-node thresholds
beta (one per node of each cell type, 8) start at ``beta_init`` [A: 0, t = 0.5] and are stepped
by the method's alpha optimizer with alpha [A] (``arch_parameters``). method=entrannas sets
these three from its own keys (``method.derivation``, ``method.engine_cells``,
``method.beta_init``) before binding the estimator to the space.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from methods.entrannas_dst import dst_support, dst_weights
from methods.estimators.base import ESTIMATORS, Estimator, free_candidates, free_flags
from nasbench.arch_params import ArchParameters
from nasbench.errors import UserError
from nasbench.spaces.darts_genotype import NODE_ROWS
from nasbench.spaces.darts_opsets import opset_from_edges
from nasbench.supernet import Selection

DERIVATIONS = ("top2", "dst")


@ESTIMATORS.register("entrannas")
class EnTranNASEstimator(Estimator):
    name = "entrannas"
    single_path = False
    requires_space = "darts"

    def __init__(self, derivation: str = "top2", engine_cells: list[int] | None = None, beta_init: float = 0.0,
                 **hparams: Any) -> None:  # fmt: skip
        super().__init__(**hparams)
        self.space: Any = None
        self.beta: Tensor | None = None
        self.configure(derivation, engine_cells, beta_init)

    def configure(self, derivation: str, engine_cells: list[int] | None, beta_init: float) -> None:
        """The derivation (top2 | dst), the engine cells (null: the default) and beta's start."""
        if derivation not in DERIVATIONS:
            raise UserError(f"method.derivation={derivation}: must be one of {', '.join(DERIVATIONS)}")
        self.derivation = str(derivation)
        self.engine_cells = None if engine_cells is None else [int(i) for i in engine_cells]
        self.beta_init = float(beta_init)
        self.hparams.update(derivation=self.derivation, engine_cells=self.engine_cells, beta_init=self.beta_init)

    # ----- binding to the run ---------------------------------------------------------------------
    def bind(self, space: Any, device: torch.device) -> None:
        if not hasattr(space, "search_cell_kinds"):
            raise UserError(
                f"estimator entrannas splits a cell search network into engine and transit cells; space"
                f" {space.name} has no cells: use space=darts"
            )
        kinds = space.search_cell_kinds()
        engines = self.engine_cells
        if engines is None:  # [A] the first normal and the first reduction cell
            engines = [kinds.index(kind) for kind in (False, True) if kind in kinds]
        bad = [i for i in engines if not 0 <= i < len(kinds)]
        if bad or not engines:
            raise UserError(
                f"method.engine_cells={engines}: give at least one cell index of the search network's"
                f" {len(kinds)} cells (0..{len(kinds) - 1})"
            )
        self.space, self.engines = space, sorted(set(engines))
        self.transit = [i for i in range(len(kinds)) if i not in self.engines]
        self.node_rows = NODE_ROWS
        self.none = torch.tensor([op == "none" for op in space.decisions[0].candidates])
        if self.derivation == "dst":  # beside alpha, which lives on the CPU whatever the run's device
            self.beta = torch.full((len(NODE_ROWS),), self.beta_init, requires_grad=True)

    def arch_parameters(self) -> list[Tensor]:
        return [] if self.beta is None else [self.beta]

    # ----- what runs ------------------------------------------------------------------------------
    def engine_weights(self, probs: Tensor) -> Tensor:
        """p itself (top2) or DST's q (dst), from p = ``arch.probs()``; differentiable in alpha (and beta)."""
        if self.derivation == "top2":
            return probs
        return dst_weights(probs, self.beta, self.node_rows, self.none.to(probs.device))

    def derived_ops(self, arch: ArchParameters, probs: Tensor | None = None, weights: Tensor | None = None
                    ) -> list[list[int]]:  # fmt: skip
        """Per decision, the ops of the derived sub-graph (what transit cells run); ``probs`` and
        ``weights``: this step's p and engine weights, when already computed."""
        probs = arch.probs() if probs is None else probs
        if self.derivation == "top2":
            derived = self.space.derive(probs.detach(), arch.fixed)
            return [[k] if k else [] for k in derived]
        kept = dst_support(self.engine_weights(probs) if weights is None else weights).cpu()
        ops = [[int(k) for k in torch.nonzero(row).flatten()] for row in kept]
        for i, k in arch.fixed.items():  # a fixed decision keeps its op, as the top-2 rule does
            ops[i] = [k] if k else []
        return ops

    def derived_arch(self, arch: ArchParameters) -> tuple[int, ...]:
        """The architecture the transit cells run now: 28 op indices (top2) or the op-set form (dst)."""
        with torch.no_grad():
            ops = self.derived_ops(arch)
        if self.derivation == "top2":
            return tuple(ks[0] if ks else 0 for ks in ops)
        return opset_from_edges(ops)

    def sample(self, arch: ArchParameters, generator: torch.Generator, device: torch.device) -> Selection:
        if self.space is None:
            raise RuntimeError("estimator entrannas must be bound to its space (Estimator.bind) before sampling")
        probs = arch.probs()  # once a step: the engine weights, the derivation and the record read it
        weights = self.engine_weights(probs)
        derived = self.derived_ops(arch, probs, weights)
        active = free_candidates(arch)
        if self.derivation == "dst":  # an op with q = 0 adds nothing and learns nothing: skip it
            active = [ks if i in arch.fixed else derived[i] for i, ks in enumerate(active)]
        ones = torch.ones(len(derived), arch.alpha.shape[1], device=device)
        transit = Selection(active=derived, weights=ones)
        return Selection(
            active=active,
            weights=weights.to(device),
            weighted=free_flags(arch),
            info={"probs": probs.detach(), "derived": derived},
            groups={i: transit for i in self.transit},
        )

    def state_dict(self) -> dict[str, Any]:
        return {} if self.beta is None else {"beta": self.beta.detach().cpu()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.beta is not None and "beta" in state:
            with torch.no_grad():
                self.beta.copy_(state["beta"].to(self.beta.device))
