"""Proximal updates of non-negative architecture scales (DSO-NAS; Zhang, Huang and Wang, "You
Only Search Once", Sec. 3.3, Eqs. 10-12; official code XinbangZhang/DSO-NAS, Cifar/core/optimizer_split.py
``APGNAG.update``).

The objective is CE + weight decay on W + gamma * ||lambda||_1 with lambda >= 0. One step of the
accelerated proximal gradient (APG) on lambda, with lr eta (the weights' current lr in the
official code) and momentum mu:

    g = clip(g, -c, c)                         (the official optimizer clips every gradient at c = 2)
    z = lambda - eta * g                       (Eq. 10: a gradient step on the smooth part)
    z = sign(z) * max(|z| - eta * gamma, 0)    (the proximal operator of eta * gamma * |.|)
    v = z - lambda + mu * v                    (Eq. 11)
    lambda = max(z + mu * v, 0)                (Eq. 12, then the non-negativity the code enforces)

With a zero gradient and lambda > eta * gamma, L1 alone moves lambda down by eta * gamma per step
(before momentum), and once lambda reaches 0 it stays there while its gradient is small: a zero
lambda is a pruned connection. ``gamma`` may be a tensor of lambda's shape (the FLOPs-adaptive
penalty: gamma scaled per block).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor


def soft_threshold(z: Tensor, threshold: Tensor | float) -> Tensor:
    """sign(z) * max(|z| - threshold, 0): the proximal operator of threshold * |.|."""
    return torch.sign(z) * (z.abs() - threshold).clamp_min(0.0)


class ProximalAPG(torch.optim.Optimizer):
    """The APG step above for every parameter of its groups (non-negative scales).

    Args:
        params: the scales (lambda), each updated in place.
        lr: eta, or a callable returning the current eta (DSO-NAS: the weights' scheduled lr).
        gamma: the L1 strength; a float, or a tensor per parameter via ``set_gamma``.
        momentum: mu (official 0.9).
        grad_clip: element-wise gradient clip c before the step (official 2.0; None: none).
    """

    def __init__(
        self,
        params: Iterable[Tensor],
        lr: float | Callable[[], float],
        gamma: float,
        momentum: float = 0.9,
        grad_clip: float | None = 2.0,
    ) -> None:
        if gamma < 0 or not 0.0 <= momentum < 1.0:
            raise ValueError(f"ProximalAPG: gamma must be >= 0 and momentum in [0, 1) (gamma={gamma}, mu={momentum})")
        self.lr_source = lr if callable(lr) else None
        super().__init__(params, {"lr": 0.0 if callable(lr) else float(lr), "gamma": float(gamma)})
        self.momentum = float(momentum)
        self.grad_clip = None if grad_clip is None else float(grad_clip)
        self.gammas: dict[int, Tensor] = {}

    def set_gamma(self, param: Tensor, gamma: Tensor) -> None:
        """A per-element L1 strength for ``param`` (the FLOPs-adaptive variant); replaces the group's."""
        self.gammas[id(param)] = gamma.detach().to(param.device, param.dtype)

    def current_lr(self, group: dict) -> float:
        return float(self.lr_source()) if self.lr_source is not None else float(group["lr"])

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            eta = self.current_lr(group)
            for lam in group["params"]:
                if lam.grad is None:
                    continue
                g = lam.grad
                if self.grad_clip is not None:
                    g = g.clamp(-self.grad_clip, self.grad_clip)
                gamma = self.gammas.get(id(lam), group["gamma"])
                state = self.state[lam]
                v = state.get("velocity", torch.zeros_like(lam))
                z = soft_threshold(lam - eta * g, eta * gamma)
                v = self.momentum * v + (z - lam)  # a new tensor: a loaded state may be shared
                state["velocity"] = v
                lam.copy_((z + self.momentum * v).clamp_min(0.0))
