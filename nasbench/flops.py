"""Parameter and multiply-accumulate counts, with PyTorch's own FLOP counter.

``torch.utils.flop_counter`` counts 2 FLOPs per multiply-accumulate for convolutions and
matrix products (and nothing for BatchNorm, ReLU or pooling); we report MACs, the unit the NAS
papers call "FLOPs" (DSNAS Table 3: 324M for its ShuffleNet child).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(model: nn.Module, example: Tensor) -> int:
    """Multiply-accumulates of one forward pass of ``model`` on ``example`` (batch 1 please)."""
    was_training = model.training
    model.eval()
    with FlopCounterMode(display=False) as counter:
        model(example)
    model.train(was_training)
    return counter.get_total_flops() // 2
