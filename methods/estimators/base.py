"""The estimator interface and registry (docs/estimators.md).

Per training step an estimator
1. ``sample``s a :class:`~nasbench.supernet.Selection`: which candidate ops run in every
   decision and the combination weights (tensors that carry gradient to alpha where the method
   needs it), and
2. after the step's single backward pass, turns what it observed into the alpha gradient
   (``alpha_grad``), or returns None when alpha's gradient already came through autograd or
   alpha is not learned.
It never calls backward itself. Temperature schedules live here too (``on_epoch_start``).

The pipeline's contract: zero ``arch.alpha.grad``, ``sample``, forward, one backward; for an
estimator with ``needs_reward`` put a float into ``selection.info["reward"]``; set alpha's
gradient from ``alpha_grad`` where it returns a tensor; step the alpha optimizer; then call
``after_alpha_step``. Every estimator respects ``arch.mask`` (a masked candidate is never
sampled or run) and ``arch.fixed`` (a fixed decision runs its op unscaled, ``weighted`` False,
and gets zero alpha gradient).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor

from nasbench.arch_params import ArchParameters
from nasbench.errors import UserError
from nasbench.registry import Registry
from nasbench.supernet import Selection

ESTIMATORS: Registry = Registry("estimator", package="methods.estimators")


class Estimator:
    """Base class. Subclasses set ``name`` and implement :meth:`sample`."""

    name: ClassVar[str] = ""
    #: whether alpha gets a gradient from this estimator (False: uniform sampling, SPOS)
    learns_alpha: ClassVar[bool] = True
    #: whether the forward runs exactly one op per decision (False: DARTS/SNAS run every candidate)
    single_path: ClassVar[bool] = True
    #: whether ``alpha_grad`` needs ``selection.info["reward"]`` (a float, higher is better)
    needs_reward: ClassVar[bool] = False
    #: whether ``sample`` draws at random (False: DARTS's softmax, DSO-NAS's scales compute the same
    #: selection every time; the estimator lab then takes three samples, not N)
    stochastic: ClassVar[bool] = True
    #: whether alpha parameterises a distribution over paths, p = softmax(alpha) per decision, so
    #: that the search objective is E_{Z~p}[L(Z)] (False: DSO-NAS's raw scales; the estimator lab
    #: has no exact gradient to hold such an estimator against)
    distribution: ClassVar[bool] = True
    #: the one space this estimator runs on (EnTranNAS's cells: "darts"), or None: any space
    requires_space: ClassVar[str | None] = None

    def __init__(self, **hparams: Any) -> None:
        self.hparams = hparams

    def bind(self, space: Any, device: torch.device) -> None:
        """The run's space and device, before the first sample (an estimator that needs the space's
        structure or owns parameters reads them here). Nothing by default."""
        return None

    def arch_parameters(self) -> list[Tensor]:
        """Architecture parameters this estimator owns besides alpha (EnTranNAS-DST's per-node
        thresholds): the alpha optimizer steps them with alpha, a held-out alpha step's backward
        reaches them, and data-parallel ranks average their gradients. None by default."""
        return []

    def sample(self, arch: ArchParameters, generator: torch.Generator, device: torch.device) -> Selection:
        raise NotImplementedError

    def relaxation(self) -> Estimator | None:
        """An estimator whose expected alpha gradient is the gradient of the relaxed objective
        this one actually follows (DARTS: the loss of the softmax mixture; SNAS: the expected loss
        of the Concrete relaxation at its temperature), or None: it targets E_Z[L(Z)] itself, or
        declares no relaxation. The estimator lab (experiments/estimator_lab.py) measures both
        distances, so that bias from relaxation is told apart from bias beyond it."""
        return None

    def sample_weights_only(self, arch: ArchParameters, generator: torch.Generator, device: torch.device) -> Selection:
        """The selection of a step that trains the weights alone (alpha learns nothing from it:
        warm-up, the weight steps of a bilevel search). Default: :meth:`sample`. ProxylessNAS's
        two-path mode draws one op from p here, as its official weight steps do."""
        return self.sample(arch, generator, device)

    def alpha_grad(self, arch: ArchParameters, selection: Selection) -> Tensor | None:
        """The gradient of the loss with respect to alpha, after the step's backward."""
        return None

    def after_alpha_step(self, arch: ArchParameters, selection: Selection) -> None:
        """Hook called right after the alpha optimizer's step (ProxylessNAS two-path rescaling)."""
        return None

    def on_epoch_start(self, epoch: int, epochs: int) -> Mapping[str, Any]:
        """Hook for schedules (temperature); returns fields for the epoch's metrics record."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        return None


def free_candidates(arch: ArchParameters) -> list[list[int]]:
    """Per decision, the candidates that may run: the unmasked ones, or the fixed op alone."""
    rows = [torch.nonzero(row).flatten().tolist() for row in arch.mask]
    for i, k in arch.fixed.items():
        rows[i] = [k]
    return rows


def free_flags(arch: ArchParameters) -> list[bool]:
    """Per decision, whether it is still searched (False: fixed, runs unscaled, no gradient)."""
    return [i not in arch.fixed for i in range(arch.alpha.shape[0])]


def zero_fixed_rows(grad: Tensor, arch: ArchParameters) -> Tensor:
    """Zero the alpha gradient of the fixed decisions (in place) and return it."""
    for i in arch.fixed:
        grad[i] = 0.0
    return grad


def sample_gumbel(shape: torch.Size, generator: torch.Generator) -> Tensor:
    """G = -log(-log U), U ~ Uniform(0, 1), drawn on the CPU as one ``torch.rand(shape)`` call.

    U is clamped to [tiny, 1 - eps] (as torch.distributions does), so G is always finite.
    """
    u = torch.rand(shape, generator=generator)
    u = u.clamp(torch.finfo(u.dtype).tiny, 1.0 - torch.finfo(u.dtype).eps)
    return -torch.log(-torch.log(u))


def linear_schedule(start: float, end: float, epoch: int, epochs: int) -> float:
    """Linear from ``start`` at the first epoch to ``end`` at the last (GDAS and SNAS temperatures)."""
    if epochs <= 1:
        return float(start)
    frac = min(max(epoch, 0), epochs - 1) / (epochs - 1)
    return float(start + (end - start) * frac)


class TemperatureEstimator(Estimator):
    """An estimator with a temperature annealed linearly over the search epochs."""

    def __init__(self, tau_start: float, tau_end: float, **hparams: Any) -> None:
        if not (tau_start > 0 and tau_end > 0):
            raise UserError(f"temperatures must be positive (tau_start={tau_start}, tau_end={tau_end})")
        super().__init__(tau_start=tau_start, tau_end=tau_end, **hparams)
        self.tau_start, self.tau_end = float(tau_start), float(tau_end)
        self.temperature = self.tau_start

    def on_epoch_start(self, epoch: int, epochs: int) -> Mapping[str, Any]:
        self.temperature = linear_schedule(self.tau_start, self.tau_end, epoch, epochs)
        return {"temperature": self.temperature}

    def state_dict(self) -> dict[str, Any]:
        return {"temperature": self.temperature}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.temperature = float(state["temperature"])


def build_estimator(cfg: Mapping[str, Any]) -> Estimator:
    """An estimator from its config: ``name`` picks the class, the other keys are hyperparameters.

    ``module: some.package.file`` imports a module first, so an estimator defined outside this
    package registers itself before the lookup. A module that cannot be imported and a key the
    class does not take are one-line errors (:class:`UserError`), not tracebacks.
    """
    name = str(cfg["name"])
    params = {k: v for k, v in dict(cfg).items() if k not in ("name", "module")}
    module = cfg.get("module")
    if module:
        try:
            importlib.import_module(str(module))
        except ImportError as err:  # ModuleNotFoundError, or an import inside the module that fails
            raise UserError(
                f"estimator {name}: cannot import its module {module!r} ({err}); put the folder that holds it on"
                " PYTHONPATH (PYTHONPATH=my_folder .venv/bin/python experiments/run.py ...)"
            ) from None
    cls = ESTIMATORS.get(name)
    own = cls.__init__ is not Estimator.__init__  # the base's **hparams would take any key
    signature = inspect.signature(cls)
    named = [p for p in signature.parameters.values() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    try:
        if not own and params:
            raise TypeError
        signature.bind(**params)
    except TypeError:
        taken = [p.name for p in named] if own else []
        unknown = sorted(set(params) - set(taken)) or sorted(params)
        required = [p.name for p in named if own and p.default is p.empty and p.name not in params]
        what = f"is missing {', '.join(required)}" if required else f"takes no {', '.join(unknown)}"
        raise UserError(
            f"estimator {name} {what}; its parameters are: {', '.join(taken) or 'none'}"
            f" (set them as estimator.<key>=... or in its config)"
        ) from None
    return cls(**params)
