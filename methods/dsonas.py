"""DSO-NAS: search by direct sparse optimisation (Zhang, Huang and Wang, "You Only Search Once:
Single Shot Neural Architecture Search via Direct Sparse Optimization"; official MXNet code
XinbangZhang/DSO-NAS, Cifar/train_search.py, core/solver_split_iter.py, core/optimizer_split.py).

No distribution and no sampling: every connection carries a non-negative scale lambda
(``arch.alpha``'s ``keep`` column, the ``scales`` estimator; ``none`` is lambda = 0), and the
objective is CE + weight decay + gamma * ||lambda||_1. Phases, all inside the shared search budget:

1. ``pretrain``: the full network with every lambda at 1 (``method.pretrain_fraction`` of
   ``search_epochs``; the paper's CIFAR schedule is 120 pretrain + 120 search epochs: 0.5).
2. ``search``: strictly alternating, as the official solver: one weight step on a batch of the
   search split's training part, then one lambda step on a held-out batch (never both in one
   iteration). The lambda step is the accelerated proximal gradient of methods/proximal.py
   (momentum 0.9, element-wise gradient clip 2.0) with the weights' current lr times the
   budget's ``arch_lr_multiplier`` (the shared rule for every method's architecture lr; official:
   the weights' lr itself, over ~23k lambda steps). Every ``method.prune_every`` epochs the zero
   lambdas are pruned with every dead op (methods.md, "DSO-NAS"); a pruned connection never runs
   or comes back. BatchNorm scales stay at 1 during both phases (official ``fix_gamma``), so BN
   cannot undo a lambda.
3. The architecture is the support of lambda after a last prune; ``search_acc`` is the search
   network itself (lambdas applied, BatchNorm recalibrated); the pruned network is retrained from
   scratch with the shared recipe.

``method.adaptive``: ``none`` (default: the paper's main CIFAR results and the official search
scripts use one gamma), ``flops`` (the paper's budget-aware variant, Sec. 3.4: gamma of a block
scaled by its live ops' MACs over its full MACs, recomputed before every lambda step) or
``count`` (what the official optimizer_split_flops.py computes instead: a live-op count ratio).
Candidates that did not run get no weight update (``unsampled_weights: skip``): a pruned op is
gone from the official network after its rebuild.

On ``space=darts`` (the suite's adaptation, no official code): one lambda per (edge, op), the
architecture the op-set form of nasbench/spaces/darts_opsets.py, and ``method.normalise_head``
(default true) a non-affine BatchNorm before the classifier of the search network, so that lambdas
cannot scale the logits (docs/fidelity.md, "DSO-NAS").
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import Tensor, nn

from methods.base import METHODS, Method, MethodResult, SearchOutcome
from methods.phases import SupernetSearch, retrain, run_search_phase, start_search
from methods.proximal import ProximalAPG
from methods.steps import BilevelStep, held_out_alpha_step, weight_step
from nasbench.arch_params import ArchParameters
from nasbench.errors import UserError
from nasbench.flops import count_macs
from nasbench.spaces.dsonas_costs import ADAPTIVE
from nasbench.supernet import Selection, Supernet
from nasbench.train import StepOutput


class WeightsThenScales(BilevelStep):
    """The official alternation (solver_split_iter.py): a weight step on the training batch, then
    a lambda step on the next held-out batch."""

    def __call__(self, x: Tensor, y: Tensor) -> StepOutput:
        out = self.weights(x, y)
        xv, yv = next(self.valid)
        self.alpha_step(xv, yv, x, y)
        self.count += 1
        return out


class ScaledSearchNetwork(nn.Module):
    """The search network as searched: the supernet on a fixed selection (every live connection
    scaled by its lambda), callable like a child."""

    def __init__(self, supernet: Supernet, selection: Selection) -> None:
        super().__init__()
        self.supernet, self.selection = supernet, selection

    def forward(self, x: Tensor) -> Tensor:
        return self.supernet(x, self.selection)


@METHODS.register("dsonas")
class DsoNas(Method):
    name = "dsonas"
    one_stage = False
    alpha = "required"
    fixes_decisions = True  # pruned connections stop running: DDP must expect unused weights
    alpha_data = "valid"  # lambda steps on held-out batches (the bench times the same alternation)

    @classmethod
    def check_estimator(cls, cfg, estimator) -> None:
        if estimator.name != "scales":
            raise UserError(
                f"method dsonas scales every connection by a non-negative lambda; estimator {estimator.name}"
                " samples from a distribution instead: use estimator=scales (the default)"
            )
        if float(cfg["gamma"]) < 0:
            raise UserError(f"method.gamma={cfg['gamma']}: must be at least 0")
        if str(cfg["adaptive"]) not in ADAPTIVE:
            raise UserError(f"method.adaptive={cfg['adaptive']}: must be one of {', '.join(ADAPTIVE)}")
        if int(cfg["prune_every"]) < 1:
            raise UserError(f"method.prune_every={cfg['prune_every']}: must be at least 1 (epochs)")
        if not 0.0 <= float(cfg["lambda_momentum"]) < 1.0:
            raise UserError(f"method.lambda_momentum={cfg['lambda_momentum']}: must be at least 0 and less than 1")
        if not 0.0 <= float(cfg["pretrain_fraction"]) < 1.0:
            raise UserError(f"method.pretrain_fraction={cfg['pretrain_fraction']}: must be at least 0 and less than 1")

    @classmethod
    def supports(cls, space: type) -> bool:
        return hasattr(space, "scale_mask")

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        if not self.supports(type(ctx.space)):
            raise UserError(
                f"method dsonas needs a space whose connections or ops carry scales (space=dsonas, or space=darts"
                f" as an adaptation); space {ctx.space.name} has none"
            )
        self.gamma = float(self.cfg["gamma"])
        self.adaptive = str(self.cfg["adaptive"])

    # ----- the interface hooks -----------------------------------------------------------------
    def alpha_lr(self) -> float:
        """lambda's lr is the weights' scheduled lr times this factor (the budget's multiplier)."""
        return float(self.ctx.budget.get("arch_lr_multiplier", 1.0))

    @staticmethod
    def proximal_step(cfg, arch: ArchParameters, weight_opt: torch.optim.Optimizer, scale: float) -> ProximalAPG:
        """The APG update of lambda with lr = ``weight_opt``'s current lr x ``scale``."""
        clip = cfg.get("lambda_grad_clip")
        return ProximalAPG(
            [arch.alpha],
            lr=lambda: float(weight_opt.param_groups[0]["lr"]) * scale,
            gamma=float(cfg["gamma"]),
            momentum=float(cfg["lambda_momentum"]),
            grad_clip=None if clip is None else float(clip),
        )

    def arch_optimizer(self, arch: ArchParameters, weight_opt: torch.optim.Optimizer) -> ProximalAPG:
        return self.proximal_step(self.cfg, arch, weight_opt, self.alpha_lr())

    def prepare_supernet(self, supernet: Supernet) -> None:
        self.normalise_head(supernet)
        if self.cfg.get("fix_bn_scale", True):  # official fix_gamma in pretrain and search
            for m in supernet.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.weight is not None:
                    nn.init.ones_(m.weight)
                    m.weight.requires_grad_(False)

    def normalise_head(self, network: nn.Module) -> None:
        """space=darts (the adaptation): a non-affine BatchNorm before the classifier of the search
        network, when ``method.normalise_head`` (default true; spaces whose networks have no
        ``normalise_head``, as space=dsonas, are left as they are). The retrained network of an
        architecture with several ops on an edge has one in any case (DartsSpace.build_eval_network)."""
        if self.cfg.get("normalise_head", True) and hasattr(network, "normalise_head"):
            network.normalise_head()

    @classmethod
    def bench_state(cls, cfg, space, arch: ArchParameters, weight_opt: torch.optim.Optimizer) -> ProximalAPG:
        """The bench's DSO-NAS step (experiments/bench_step.py): the full network, every lambda at 1
        (the state of pretrain and the first search epochs, its most costly), with its APG step."""
        with torch.no_grad():
            arch.alpha.fill_(1.0)
        cls.init_scales(space, arch)
        return cls.proximal_step(cfg, arch, weight_opt, 1.0)

    # ----- lambda bookkeeping --------------------------------------------------------------------
    @staticmethod
    def live(arch: ArchParameters) -> Tensor:
        """lambda > 0 and not pruned."""
        return (arch.alpha.detach() > 0) & arch.mask

    @staticmethod
    def init_scales(space, arch: ArchParameters) -> None:
        """Only the entries that carry a lambda stay unmasked; the others are 0."""
        with torch.no_grad():
            arch.mask &= space.scale_mask()
            arch.alpha.masked_fill_(~arch.mask, 0.0)

    def prune(self, arch: ArchParameters) -> int:
        """Mask the zero lambdas and the connections of dead ops for good; how many went now."""
        kept = self.ctx.space.prune_closure(self.live(arch))
        gone = int((arch.mask & ~kept).sum())
        with torch.no_grad():
            arch.mask.copy_(kept)
            arch.alpha.masked_fill_(~kept, 0.0)
        return gone

    def gamma_table(self, arch: ArchParameters) -> Tensor:
        weights = self.ctx.space.penalty_weights(self.live(arch), self.adaptive)
        return (self.gamma * weights).to(arch.alpha.dtype)[:, None].expand_as(arch.alpha)

    def scales(self, arch: ArchParameters) -> tuple[Tensor, Tensor]:
        """Every lambda (alpha's entries the space scales by, in order) and whether it is unpruned."""
        scaled = self.ctx.space.scale_mask().to(arch.mask.device)
        return arch.alpha.detach()[scaled], arch.mask[scaled]

    def sparsity(self, arch: ArchParameters) -> dict[str, Any]:
        """Per-epoch metrics: the network pruning would keep now (the space's live connections and
        ops, MACs of its child) and the lambdas (``pruned_connections``: pruned lambdas, a
        connection in space=dsonas, an (edge, op) in space=darts)."""
        space = self.ctx.space
        now = space.support_arch(self.live(arch))
        macs = count_macs(space.build_child(now).eval(), torch.zeros(1, *space.inputs.shape))
        lam, unpruned = self.scales(arch)
        return {
            **space.live_summary(now),
            "live_macs": macs,
            "pruned_connections": int((~unpruned).sum()),
            "zero_lambdas": int(((lam == 0) & unpruned).sum()),
            "lambda_mean": float(lam[unpruned].mean()) if bool(unpruned.any()) else 0.0,
            "lambdas": [round(float(v), 5) for v in lam],
        }

    # ----- phases ----------------------------------------------------------------------------------
    def search_step(self, s: SupernetSearch) -> WeightsThenScales:
        ctx = self.ctx
        rest = (ctx.estimator, s.arch, s.sampler, ctx.device, ctx.trainer.loss)
        scales_step = held_out_alpha_step(s.supernet, *rest, s.alpha_opt)

        def lambda_step(xv: Tensor, yv: Tensor, x: Tensor, y: Tensor) -> dict[str, float]:
            if self.adaptive != "none":
                s.alpha_opt.set_gamma(s.arch.alpha, self.gamma_table(s.arch))
            out = scales_step(xv, yv, x, y)
            with torch.no_grad():  # a pruned lambda stays 0 whatever its momentum
                s.arch.alpha.masked_fill_(~s.arch.mask, 0.0)
            return out

        weights = weight_step(s.trained, *rest, s.weight_opt, s.options)
        return WeightsThenScales(weights, lambda_step, ctx.trainer.valid_stream(), 1)

    def search_stage(self) -> SearchOutcome:
        ctx = self.ctx
        total = self.epochs("search_epochs", minimum=1)
        pretrain = math.floor(float(self.cfg["pretrain_fraction"]) * total)
        s = start_search(self, total)
        self.init_scales(ctx.space, s.arch)
        info = lambda: self.sparsity(s.arch)  # noqa: E731
        pretrain_step = weight_step(s.trained, ctx.estimator, s.arch, s.sampler, ctx.device, ctx.trainer.loss,
                                    s.weight_opt, s.options)  # fmt: skip
        run_search_phase(ctx, "pretrain", pretrain, pretrain_step, s, epoch_info=info)
        every = int(self.cfg["prune_every"])

        def on_epoch_start(epoch: int) -> dict[str, Any]:
            return {"pruned_now": self.prune(s.arch)} if epoch > 0 and epoch % every == 0 else {}

        run_search_phase(ctx, "search", total - pretrain, self.search_step(s), s, on_epoch_start, info)
        self.prune(s.arch)
        arch = ctx.space.support_arch(self.live(s.arch))
        extra = {
            **{f"final_{k}": v for k, v in self.sparsity(s.arch).items() if k != "lambdas"},
            "pretrain_epochs": pretrain,
            "gamma": self.gamma,
            "adaptive": self.adaptive,
            "lambda_lr_multiplier": self.alpha_lr(),
            "lambdas": [round(float(v), 6) for v in self.scales(s.arch)[0]],
        }
        return SearchOutcome(s.supernet, arch, s.arch, extra)

    def finish(self, outcome: SearchOutcome) -> MethodResult:
        """search_acc of the search network as searched (lambdas applied), then the retrain."""
        ctx = self.ctx
        with torch.no_grad():
            selection = ctx.estimator.sample(outcome.alpha, torch.Generator(), ctx.device)
        selection.weights = selection.weights.detach()
        search_acc = ctx.search_accuracy(ScaledSearchNetwork(copy.deepcopy(outcome.supernet), selection))
        child = retrain(ctx, outcome.arch)
        return MethodResult(arch=outcome.arch, search_acc=search_acc, child=child, extra=dict(outcome.extra))
