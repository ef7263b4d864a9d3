"""The estimator interface and registry (design.md, "Estimator").

Per training step an estimator
1. ``sample``s a :class:`~nasbench.supernet.Selection`: which candidate ops run in every
   decision and the combination weights (tensors that carry gradient to alpha where the method
   needs it), and
2. after the step's single backward pass, turns what it observed into the alpha gradient
   (``alpha_grad``), or returns None when alpha's gradient already came through autograd or
   alpha is not learned.
It never calls backward itself. Temperature schedules live here too (``on_epoch_start``).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor

from nasbench.arch_params import ArchParameters
from nasbench.registry import Registry
from nasbench.supernet import Selection

ESTIMATORS: Registry = Registry("estimator", package="methods.estimators")


class Estimator:
    """Base class. Subclasses set ``name`` and implement :meth:`sample`."""

    name: ClassVar[str] = ""
    #: whether alpha gets a gradient from this estimator (False: uniform sampling, SPOS)
    learns_alpha: ClassVar[bool] = True

    def __init__(self, **hparams: Any) -> None:
        self.hparams = hparams

    def sample(self, arch: ArchParameters, generator: torch.Generator, device: torch.device) -> Selection:
        raise NotImplementedError

    def alpha_grad(self, arch: ArchParameters, selection: Selection) -> Tensor | None:
        """The gradient of the loss with respect to alpha, after the step's backward."""
        return None

    def on_epoch_start(self, epoch: int, epochs: int) -> Mapping[str, Any]:
        """Hook for schedules (temperature); returns fields for the epoch's metrics record."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        return None


def build_estimator(cfg: Mapping[str, Any]) -> Estimator:
    """An estimator from its config: ``name`` picks the class, the other keys are hyperparameters.

    ``module: some.package.file`` imports a module first, so an estimator defined outside this
    package registers itself before the lookup.
    """
    params = {k: v for k, v in dict(cfg).items() if k not in ("name", "module")}
    if cfg.get("module"):
        importlib.import_module(str(cfg["module"]))
    return ESTIMATORS.get(str(cfg["name"]))(**params)
