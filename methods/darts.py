"""DARTS: differentiable architecture search (Liu et al., ICLR 2019).

Every candidate runs, weighted by p = softmax(alpha) (``softmax`` estimator). Bilevel
(Sec. 2.3, Algorithm 1): before each weight step on the training split, one alpha step on a
held-out batch. First order by default (alpha's gradient at the current weights); with
``method.second_order=true`` the unrolled approximation of Eq. 7-8: the gradient at
w' = w - xi * dL_train/dw minus xi times a finite-difference Hessian-vector product (Eq. 8,
eps = 0.01 / ||dL_val/dw'||), xi = the current weight lr. The unrolled step is plain SGD (the
official code also folds in momentum and weight decay). Derivation: argmax per edge, the
NAS-Bench-201 rule (its collapse to skip_connect there is a known result, not a bug); retrain.
"""

from __future__ import annotations

import torch
from torch import Tensor

from methods.alpha_search import AlphaSearch
from methods.base import METHODS
from methods.estimators.base import Estimator
from methods.phases import SupernetSearch
from methods.steps import AlphaStep, bilevel_step, check_alpha
from nasbench import distributed
from nasbench.errors import UserError
from nasbench.train import StepFn


def second_order_alpha_step(s: SupernetSearch, estimator: Estimator, device: torch.device, loss_fn) -> AlphaStep:
    """DARTS Eq. 7-8 for an estimator whose alpha gradient comes by autograd."""
    params = [p for p in s.supernet.parameters() if p.requires_grad]

    def loss_at(x: Tensor, y: Tensor) -> Tensor:
        return loss_fn(s.supernet(x, estimator.sample(s.arch, s.sampler, device)), y)

    def alpha_step(xv: Tensor, yv: Tensor, x: Tensor, y: Tensor) -> dict[str, float]:
        xi = float(s.weight_opt.param_groups[0]["lr"])
        backup = [p.detach().clone() for p in params]
        grads = torch.autograd.grad(loss_at(x, y), params, allow_unused=True)
        with torch.no_grad():  # w' = w - xi * dL_train/dw
            for p, g in zip(params, grads):
                if g is not None:
                    p.sub_(xi * g)
        valid_loss = loss_at(xv, yv)
        d_alpha, *d_w = torch.autograd.grad(valid_loss, [s.arch.alpha, *params], allow_unused=True)
        d_w = [torch.zeros_like(p) if g is None else g for p, g in zip(params, d_w)]
        eps = 0.01 / max(float(torch.sqrt(sum((g * g).sum() for g in d_w))), 1e-12)
        hessian_terms = []
        for sign in (1.0, -1.0):  # dL_train/dalpha at w +- eps * dL_val/dw'
            with torch.no_grad():
                for p, b, g in zip(params, backup, d_w):
                    p.copy_(b + sign * eps * g)
            hessian_terms.append(torch.autograd.grad(loss_at(x, y), s.arch.alpha)[0])
        with torch.no_grad():
            for p, b in zip(params, backup):
                p.copy_(b)
        s.alpha_opt.zero_grad(set_to_none=True)
        s.arch.alpha.grad = d_alpha - xi * (hessian_terms[0] - hessian_terms[1]) / (2 * eps)
        distributed.average_(s.arch.alpha.grad)  # (each rank's virtual step uses its batch part)
        for i in s.arch.fixed:
            s.arch.alpha.grad[i] = 0.0
        s.alpha_opt.step()
        s.arch.restore_fixed()
        check_alpha(s.arch)
        return {"valid_loss": float(valid_loss.detach())}

    return alpha_step


@METHODS.register("darts")
class DARTS(AlphaSearch):
    name = "darts"
    alpha_data = "valid"

    @classmethod
    def check_estimator(cls, cfg, estimator) -> None:
        super().check_estimator(cfg, estimator)
        autograd = type(estimator).alpha_grad is Estimator.alpha_grad
        if cfg.get("second_order") and not autograd:
            raise UserError(
                f"method.second_order=true differentiates the validation loss through alpha; estimator"
                f" {estimator.name} forms alpha's gradient itself: use estimator=softmax (or gumbel_softmax)"
            )

    def search_step(self, s: SupernetSearch) -> StepFn:
        if not self.cfg.get("second_order"):
            return super().search_step(s)
        ctx = self.ctx
        alpha_step = second_order_alpha_step(s, ctx.estimator, ctx.device, ctx.trainer.loss)
        return bilevel_step(
            s.trained,
            ctx.estimator,
            s.arch,
            s.sampler,
            ctx.device,
            ctx.trainer.loss,
            s.weight_opt,
            alpha_step,
            ctx.trainer.valid_stream(),
            self.alpha_every(),
            s.options,
        )
