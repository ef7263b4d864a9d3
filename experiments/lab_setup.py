"""Setting up the estimator lab's problem: the weights (a warm-up, or a run's supernet.pt) and
the alpha points it is measured at."""

from __future__ import annotations

from pathlib import Path

import torch

from methods.estimators.uniform import UniformEstimator
from methods.steps import weight_step
from nasbench.arch_params import ArchParameters
from nasbench.errors import UserError
from nasbench.records import RunRecord
from nasbench.train import Trainer, weight_optimizer

POINTS = ("uniform", "peaked", "run")


def load_run(folder: str, space, supernet) -> tuple[torch.Tensor, tuple[int, ...]]:
    """alpha and the picked architecture of a run's supernet.pt; its weights go into ``supernet``."""
    state = RunRecord.peek(Path(folder).expanduser()).load_supernet()
    if state.get("space") != space.name or state.get("alpha") is None:
        raise UserError(
            f"alpha_from={folder}: its supernet.pt holds space={state.get('space')} with"
            f" {'no alpha' if state.get('alpha') is None else 'alpha'}; give a run of space={space.name} by a method"
            " that learns alpha, at this scale"
        )
    try:
        supernet.load_state_dict(state["state_dict"])
    except RuntimeError:
        raise UserError(
            f"alpha_from={folder}: its weights do not fit this supernet; pass the scale the run used"
        ) from None
    return state["alpha"].detach().float(), space.decode(state["arch"])


def alpha_at(point: str, arch: ArchParameters, free: list[int], prob: float, seed: int, run_alpha) -> torch.Tensor:
    alpha = torch.zeros_like(arch.alpha)
    if point == "run":
        return run_alpha.clone()
    if point == "peaked":
        gen = torch.Generator().manual_seed(seed)
        for i in free:
            cands = torch.nonzero(arch.mask[i]).flatten()
            k = int(cands[torch.randint(len(cands), (1,), generator=gen)])
            alpha[i, k] = torch.log(torch.tensor(prob * (len(cands) - 1) / (1 - prob)))
    return alpha


def warm_up(supernet, space, trainer: Trainer, budget: dict, device: torch.device, steps: int, seed: int) -> None:
    """Uniform single-path training (SPOS's), so that paths differ in loss before the lab holds
    the weights fixed; a real training loop on the search split."""
    if steps <= 0:
        return
    arch = ArchParameters(space.candidate_mask())
    step = weight_step(
        supernet,
        UniformEstimator(),
        arch,
        torch.Generator().manual_seed(seed),
        device,
        trainer.criterion,
        weight_optimizer(supernet, budget),
    )
    done = 0
    while done < steps:
        for x, y in trainer.search_loader():
            step(x.to(device), y.to(device))
            done += 1
            if done == steps:
                break
