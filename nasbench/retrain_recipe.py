"""What a two-stage method's retrain adds to the shared budget when a space has an evaluation
protocol of its own: DARTS's (quark0/darts cnn/train.py) auxiliary head loss, drop-path growing
linearly over the epochs and cutout. The numbers are the space preset's (``auxiliary_weight``,
``drop_path``, ``cutout``), the same for every method; spaces without them retrain with none.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from nasbench.errors import UserError


@dataclass(frozen=True)
class EvalRecipe:
    """``auxiliary_weight``: weight of the auxiliary head's loss (DARTS 0.4; 0: no head);
    ``drop_path``: the drop-path probability reached at the last epoch (DARTS 0.2, scaled by
    epoch / epochs); ``cutout``: side of the square cut out of each training image, in the data
    set's pixels (DARTS 16 on CIFAR-10; 0: off)."""

    auxiliary_weight: float = 0.0
    drop_path: float = 0.0
    cutout: int = 0

    @classmethod
    def from_preset(cls, preset: Mapping[str, Any]) -> EvalRecipe:
        weight, drop = float(preset.get("auxiliary_weight", 0.0)), float(preset.get("drop_path", 0.0))
        recipe = cls(weight, drop, int(preset.get("cutout", 0)))
        if recipe.auxiliary_weight < 0 or not 0 <= recipe.drop_path < 1 or recipe.cutout < 0:
            raise UserError(
                f"evaluation recipe auxiliary_weight={recipe.auxiliary_weight}, drop_path={recipe.drop_path},"
                f" cutout={recipe.cutout}: the weight and cutout must be >= 0 and drop_path in [0, 1)"
            )
        return recipe


def with_auxiliary(loss_fn: Callable[[Tensor, Tensor], Tensor], weight: float) -> Callable[[Any, Tensor], Tensor]:
    """The loss of a network that returns (logits, auxiliary logits) in training mode: the main
    loss plus ``weight`` times the auxiliary one (DARTS: ``loss += auxiliary_weight * loss_aux``).
    A plain tensor output gets the main loss alone."""

    def loss(out: Any, target: Tensor) -> Tensor:
        if isinstance(out, tuple):
            logits, aux = out
            return loss_fn(logits, target) + weight * loss_fn(aux, target)
        return loss_fn(out, target)

    return loss


def drop_path_schedule(net: nn.Module, prob: float, epochs: int) -> Callable[[int], Mapping[str, Any]]:
    """Per epoch (0-based), set ``net.drop_path_prob = prob * epoch / epochs``, as DARTS's train.py
    does at the start of every epoch; the value goes into the epoch's metrics line."""

    def on_epoch_start(epoch: int) -> Mapping[str, Any]:
        net.drop_path_prob = prob * epoch / epochs
        return {"drop_path_prob": round(net.drop_path_prob, 6)}

    return on_epoch_start
