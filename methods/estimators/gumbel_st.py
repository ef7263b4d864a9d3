"""GDAS's straight-through Gumbel sample (Dong & Yang, CVPR 2019, Sec. 3.2, Eq. 5-7).

Per decision: logits = (log_softmax(alpha) + G) / tau, probs = softmax(logits),
idx = argmax(probs), h = onehot(idx) - sg(probs) + probs. Only op idx runs and its output is
multiplied by h[idx], whose value is 1 and whose gradient is d probs[idx] / d alpha, so the
loss reaches alpha by autograd: dL/dalpha = <dL/dm, O^idx(x)> * d probs[idx]/d alpha.
``alpha_grad`` returns None. tau anneals linearly from 10 to 0.1 over the search epochs
(official: ``tau_max - (tau_max - tau_min) * epoch / (total_epoch - 1)``). As the official
code does, a sample whose probs are not finite is drawn again.

h is written onehot + (probs - sg(probs)), which has the same gradient and a value of exactly
1.0 in float arithmetic (1 - p + p can round), so the forward is the single-path child's to the
bit.

``form`` (hparam): ``paper`` (the default) follows Eq. 7: only h[idx] multiplies an op, and
alpha's gradient is the one above. ``official`` is the official NAS-Bench-201 cell
(D-X-Y/AutoDL-Projects, ``NAS201SearchCell.forward_gdas``), which also adds the value-zero
scalars h[k], k != idx, of every other candidate to the edge's output: the forward is
unchanged, and alpha's gradient gains sum(dL/dm) * d h[k]/d alpha for each of them. The
published NAS-Bench-201 GDAS numbers come from that form; the paper form is the default because
it is the estimator the GDAS paper defines, and the one that means the same in every space.
"""

from __future__ import annotations

import torch

from methods.estimators.base import ESTIMATORS, Estimator, TemperatureEstimator, free_flags, sample_gumbel
from methods.estimators.gumbel_softmax import GumbelSoftmaxEstimator
from nasbench.arch_params import ArchParameters
from nasbench.errors import UserError
from nasbench.supernet import Selection, one_hot_rows

MAX_TRIES = 100
FORMS = ("paper", "official")


@ESTIMATORS.register("gumbel_st")
class GumbelSTEstimator(TemperatureEstimator):
    name = "gumbel_st"
    single_path = True

    def __init__(self, tau_start: float = 10.0, tau_end: float = 0.1, form: str = "paper") -> None:
        if form not in FORMS:
            raise UserError(f"gumbel_st form {form!r}; choose one of: {', '.join(FORMS)}")
        super().__init__(tau_start, tau_end, form=form)
        self.form = form

    def sample(self, arch: ArchParameters, generator: torch.Generator, device: torch.device) -> Selection:
        log_probs = torch.log_softmax(arch.logits(), dim=-1)
        for _ in range(MAX_TRIES):
            gumbel = sample_gumbel(log_probs.shape, generator)
            probs = torch.softmax((log_probs + gumbel) / self.temperature, dim=-1)
            if torch.isfinite(probs).all():
                break
        else:
            raise FloatingPointError(f"no finite Gumbel sample in {MAX_TRIES} tries (tau={self.temperature})")
        index = probs.detach().argmax(-1)
        for i, k in arch.fixed.items():
            index[i] = k
        hard = one_hot_rows(index, probs.shape[1]) + (probs - probs.detach())
        constants = None
        if self.form == "official":  # forward_gdas: every other candidate's h[k] (value 0) is added
            free = free_flags(arch)
            constants = [
                [k for k in range(probs.shape[1]) if k != index[i] and bool(arch.mask[i, k])] if free[i] else []
                for i in range(probs.shape[0])
            ]
        return Selection(
            constants=constants,
            active=[[k] for k in index.tolist()],
            weights=hard.to(device),
            weighted=free_flags(arch),
            info={
                "probs": log_probs.detach().exp(),
                "sample": index,
                "gumbel": gumbel,
                "temperature": self.temperature,
            },
        )

    def relaxation(self) -> Estimator:
        """The Concrete relaxation at the current tau, E_G[L(softmax((log p + G) / tau))]: its
        gradient is the soft (Gumbel-softmax) sample's; the hard forward with the soft backward
        is not the gradient of any objective, so the lab shows how far it is from both."""
        return GumbelSoftmaxEstimator(tau_start=self.temperature, tau_end=self.temperature)
