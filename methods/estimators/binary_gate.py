"""ProxylessNAS binary gates (Cai, Zhu & Han, ICLR 2019, Sec. 3.2.1, Eq. 4).

Gates g = onehot(s), s ~ Categorical(p): the forward runs only op s, unscaled, so it is the
single-path child's to the bit. The gate gradient dL/dg_j = <dL/dm, O^j(x)> is needed for the
candidates j whose gate is probed; the supernet's gated decisions compute it in the backward
(``Selection.probe``: the probed ops are recomputed there without autograd, as the official
``ArchGradientFunction`` does). The alpha gradient is Eq. 4:

    dL/dalpha_i = sum_j dL/dg_j * p_j * (delta_ij - p_i) = p_i * (G_i - sum_j p_j G_j).

Modes (hparam ``mode``):
- ``full``: every unmasked candidate is probed; p is the decision's softmax.
- ``two_path``: for an alpha step, two distinct candidates are drawn from p without
  replacement, p is renormalised over the pair, and the active one is drawn from the
  renormalised pair; only the other one is probed and only the pair's alphas get a gradient.
  A weight step draws its one op from p itself (:meth:`sample_weights_only`; the official
  ``MixedEdge.binarize`` with ``MODE = None`` outside the architecture step): the pair-then-pick
  draw would over-sample the likely ops (p = 0.7 becomes 0.767 with the rest spread evenly). After the alpha step
  (:meth:`after_alpha_step`) both alphas shift by one offset so that their logsumexp is what it
  was before the step: the unsampled candidates keep their probabilities (the official
  ``rescale_updated_arch_param``). With Adam beta1 = 0, as the paper uses for alpha, nothing but
  the pair moves at all.

Probed ops are recomputed with batch statistics (train mode) like the official code, but their
BatchNorm running statistics are restored afterwards (see ``ChoiceBlock.gate_gradients``). The
official code skips the alpha gradient when the active op is the zero op; here the gate
gradients are well defined for it too (its output is zero, its probes' are not) and are used.
"""

from __future__ import annotations

import torch
from torch import Tensor

from methods.estimators.base import ESTIMATORS, Estimator, free_candidates, free_flags, zero_fixed_rows
from nasbench.arch_params import ArchParameters
from nasbench.errors import UserError
from nasbench.supernet import Selection, one_hot_rows

MODES = ("full", "two_path")


@ESTIMATORS.register("binary_gate")
class BinaryGateEstimator(Estimator):
    name = "binary_gate"
    single_path = True

    def __init__(self, mode: str = "full") -> None:
        if mode not in MODES:
            raise UserError(f"binary_gate mode {mode!r}; choose one of: {', '.join(MODES)}")
        super().__init__(mode=mode)
        self.mode = mode

    def sample(self, arch: ArchParameters, generator: torch.Generator, device: torch.device) -> Selection:
        probs = arch.probs().detach()
        gate_probs = torch.zeros_like(probs)
        sample = torch.zeros(probs.shape[0], dtype=torch.long)
        pairs = torch.full((probs.shape[0], 2), -1, dtype=torch.long)  # two_path: the sampled pair
        probe: list[list[int] | None] = []
        for i, cands in enumerate(free_candidates(arch)):
            if i in arch.fixed:
                sample[i] = cands[0]
                probe.append(None)
                continue
            if self.mode == "full" or int((probs[i] > 0).sum()) < 2:  # two_path needs two candidates
                s = int(torch.multinomial(probs[i], 1, generator=generator))
                gate_probs[i] = probs[i]
                probe.append([j for j in cands if j != s] if self.mode == "full" else [])
            else:
                pair = torch.multinomial(probs[i], 2, replacement=False, generator=generator)
                gate_probs[i, pair] = probs[i, pair] / probs[i, pair].sum()
                c = int(torch.multinomial(gate_probs[i, pair], 1, generator=generator))
                s, other = int(pair[c]), int(pair[1 - c])
                pairs[i] = pair
                probe.append([other])
            sample[i] = s
        gates = one_hot_rows(sample, probs.shape[1]).to(device).requires_grad_()
        return Selection(
            active=[[k] for k in sample.tolist()],
            weights=gates,
            weighted=free_flags(arch),
            probe=probe,
            info={
                "probs": probs,
                "gate_probs": gate_probs,
                "sample": sample,
                "pairs": pairs,
                "alpha": arch.alpha.detach().clone(),
            },
        )

    def sample_weights_only(self, arch: ArchParameters, generator: torch.Generator, device: torch.device) -> Selection:
        """One op per decision drawn from p, in both modes (no gate gradient is wanted)."""
        if self.mode == "full":
            return self.sample(arch, generator, device)
        probs = arch.probs().detach()
        sample = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        for i, k in arch.fixed.items():
            sample[i] = k
        return Selection.single_path(sample.tolist())

    @staticmethod
    def gate_grads(selection: Selection) -> Tensor:
        """G_ij = dL/dg_ij on the CPU: filled for the active and probed candidates, else 0."""
        grad = selection.weights.grad
        if grad is None:
            return torch.zeros_like(selection.info["probs"])
        return grad.detach().to("cpu", selection.info["probs"].dtype)

    def alpha_grad(self, arch: ArchParameters, selection: Selection) -> Tensor:
        p, g = selection.info["gate_probs"], self.gate_grads(selection)
        grad = p * (g - (p * g).sum(-1, keepdim=True))
        return zero_fixed_rows(grad, arch)

    def after_alpha_step(self, arch: ArchParameters, selection: Selection) -> None:
        """two_path: shift the pair's alphas so that their logsumexp is unchanged by the step."""
        if self.mode != "two_path":
            return
        old, pairs = selection.info["alpha"], selection.info["pairs"]
        with torch.no_grad():
            for i, pair in enumerate(pairs):
                if i in arch.fixed or int(pair[0]) < 0:
                    continue
                offset = torch.logsumexp(arch.alpha[i, pair], 0) - torch.logsumexp(old[i, pair], 0)
                arch.alpha[i, pair] -= offset
