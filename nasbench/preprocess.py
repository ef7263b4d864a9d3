"""The input adapter that makes every network take images as the data set stores them.

Networks (supernets and children) start with :class:`InputAdapter`: float tensors in [0, 1] of
the data set's native channels and size go in; it normalises with the data set's mean and std
and resizes to the space's working resolution. The exported child therefore needs no
preprocessing code at all (the run record's ``input_shape`` says what it takes).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class InputAdapter(nn.Module):
    def __init__(self, mean: Sequence[float], std: Sequence[float], resolution: int | None) -> None:
        super().__init__()
        c = len(mean)
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, c, 1, 1))
        self.register_buffer("inv_std", 1.0 / torch.tensor(list(std), dtype=torch.float32).view(1, c, 1, 1))
        self.resolution = resolution

    def forward(self, x: Tensor) -> Tensor:
        x = (x - self.mean) * self.inv_std
        if self.resolution is not None and (x.shape[-1] != self.resolution or x.shape[-2] != self.resolution):
            x = F.interpolate(x, size=(self.resolution, self.resolution), mode="bilinear", align_corners=False)
        return x
