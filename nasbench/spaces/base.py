"""The SearchSpace abstraction every method runs on.

A space is a list of decisions, each with named candidate ops. It encodes and decodes
architectures (one candidate index per decision), samples and enumerates them, builds the
supernet (one :class:`~nasbench.supernet.ChoiceBlock` per decision use) and a stand-alone child
for an architecture, optionally inheriting the supernet's weights.
"""

from __future__ import annotations

import itertools
import math
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from nasbench.errors import UserError
from nasbench.retrain_recipe import EvalRecipe
from nasbench.supernet import Supernet

Arch = tuple[int, ...]


@dataclass(frozen=True)
class Decision:
    """One choice layer or cell edge and its candidate op names, in index order."""

    name: str
    candidates: tuple[str, ...]


@dataclass(frozen=True)
class InputSpec:
    """What the networks take and predict: native image shape, classes, normalisation."""

    channels: int
    size: int
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, self.size, self.size)


class SearchSpace(ABC):
    """Base class: subclasses set ``name``, build ``self.decisions`` and the networks."""

    name: ClassVar[str]
    decisions: list[Decision]
    #: whether runs on the CPU may use channels_last (``channels_last=true``, the default)
    channels_last_on_cpu: ClassVar[bool] = True

    def __init__(self, preset: Mapping[str, Any], inputs: InputSpec) -> None:
        self.preset = dict(preset)
        self.inputs = inputs

    # ----- architectures -------------------------------------------------------------------
    @property
    def num_decisions(self) -> int:
        return len(self.decisions)

    @property
    def max_candidates(self) -> int:
        return max(len(d.candidates) for d in self.decisions)

    def candidate_mask(self) -> Tensor:
        """(decisions x max_candidates) bool: which entries of alpha are real candidates."""
        mask = torch.zeros(self.num_decisions, self.max_candidates, dtype=torch.bool)
        for i, d in enumerate(self.decisions):
            mask[i, : len(d.candidates)] = True
        return mask

    def size(self) -> int:
        """The number of architectures in the space."""
        return math.prod(len(d.candidates) for d in self.decisions)

    def validate(self, arch: Sequence[int]) -> Arch:
        if len(arch) != self.num_decisions:
            raise UserError(f"an architecture of space {self.name!r} has {self.num_decisions} entries, got {len(arch)}")
        out = []
        for i, (k, d) in enumerate(zip(arch, self.decisions)):
            if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < len(d.candidates):
                raise UserError(
                    f"entry {i} of the architecture is {k!r}; {d.name} allows 0..{len(d.candidates) - 1}"
                    f" ({', '.join(d.candidates)})"
                )
            out.append(int(k))
        return tuple(out)

    def encode(self, arch: Sequence[int]) -> str:
        """The short string form used in run records (comma-separated indices by default)."""
        return ",".join(str(k) for k in self.validate(arch))

    def decode(self, text: str) -> Arch:
        parts = [p.strip() for p in text.strip().strip("[]").split(",") if p.strip()]
        try:
            values = [int(p) for p in parts]
        except ValueError:
            raise UserError(
                f"cannot read architecture {text!r}: expected {self.num_decisions} comma-separated op indices"
            ) from None
        return self.validate(values)

    def parse_arch(self, value: str | Sequence[int]) -> Arch:
        """An architecture from the command line: a string or a list of indices."""
        if isinstance(value, str):
            return self.decode(value)
        return self.validate(list(value))

    def describe(self, arch: Sequence[int]) -> list[str]:
        """Candidate op names of an architecture, one per decision."""
        return [d.candidates[k] for d, k in zip(self.decisions, self.validate(arch))]

    def sample(self, generator: torch.Generator | None = None) -> Arch:
        """One architecture uniformly at random."""
        return tuple(int(torch.randint(len(d.candidates), (1,), generator=generator)) for d in self.decisions)

    def enumerate(self, limit: int = 1_000_000) -> Iterator[Arch]:
        """Every architecture, in index order; refuses spaces larger than ``limit``."""
        if self.size() > limit:
            raise UserError(f"space {self.name!r} has {self.size():.3g} architectures; too many to enumerate")
        return itertools.product(*(range(len(d.candidates)) for d in self.decisions))

    def derive(self, probs: Tensor, fixed: Mapping[int, int] | None = None) -> Arch:
        """The architecture a method that learns alpha derives from p = softmax(alpha): the most
        likely candidate of every decision, fixed decisions at their op. A space with its own rule
        overrides it (darts: DARTS's top-2 inputs per node)."""
        arch = probs.detach().argmax(-1).tolist()
        for i, k in (fixed or {}).items():
            arch[i] = k
        return tuple(int(k) for k in arch)

    # ----- networks ------------------------------------------------------------------------
    @abstractmethod
    def build_supernet(self, one_stage: bool = False) -> Supernet:
        """The weight-sharing network holding every candidate; ``one_stage``: the one a method
        that deploys its searched child searches in (the same network, unless the space's
        deployed network differs from its search network, as darts's evaluation network)."""

    @abstractmethod
    def build_child(self, arch: Sequence[int], supernet: Supernet | None = None) -> nn.Module:
        """The stand-alone network of one architecture; copies the supernet's weights if given."""

    def build_eval_network(self, arch: Sequence[int]) -> nn.Module:
        """The network a two-stage method retrains from scratch for ``arch``: the stand-alone
        child, unless the space has a separate evaluation network (darts)."""
        return self.build_child(arch)

    def eval_recipe(self) -> EvalRecipe:
        """What the retrain of the evaluation network adds to the shared budget (the preset's
        ``auxiliary_weight``, ``drop_path``, ``cutout``; none of them by default)."""
        return EvalRecipe.from_preset(self.preset)

    def deployable(self, net: nn.Module) -> nn.Module:
        """``net`` as deployed after training: parts that only train (darts's auxiliary head)
        removed."""
        return net

    def inspect(self, value: str | Sequence[int]) -> tuple[nn.Module, list[str], str, str]:
        """What experiments/inspect_arch.py prints for an architecture: (the deployed network, one
        line per decision, the architecture as encoded, which network it is)."""
        arch = self.parse_arch(value)
        table = self.candidate_macs()
        lines = [
            f"{d.name:>10}: {op:<14} {table[i, arch[i]] / 1e6:8.2f} MMACs"
            for i, (d, op) in enumerate(zip(self.decisions, self.describe(arch)))
        ]
        return self.deployable(self.build_eval_network(arch)).eval(), lines, self.encode(arch), "child"

    @abstractmethod
    def candidate_macs(self) -> Tensor:
        """(decisions x max_candidates) multiply-accumulates of each candidate at its place."""
