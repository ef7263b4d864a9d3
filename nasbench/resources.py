"""What each candidate op of a supernet costs where it sits: parameters, multiply-accumulates and
memory access, the three resources of SNAS's resource constraint (Xie et al., ICLR 2019, Sec.
2.4; SNAS-Series/SNAS operations.py: ``op.size``, ``op.flops``, ``op.mac``).

Counted from one forward at batch 1 with every candidate running, by hooks on the leaf layers:
a convolution or linear layer with weight W (its number of elements) turning input x into
output y adds |W| parameters, |W| * (output positions) multiply-accumulates and |x| + |y| + |W|
memory accesses (ShuffleNet V2's MAC, the official ``op.mac``: a ReLU-conv-BN at stride 1 gives
h w (C_in + C_out) + |W|); a pooling layer of kernel k adds k^2 |y| multiply-accumulates and
|x| + |y| memory accesses. BatchNorm, ReLU, identity and zero ops cost nothing, as there.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from nasbench.supernet import Selection, Supernet

RESOURCES = ("params", "macs", "memory_access")


def _kernel_area(kernel: int | tuple[int, ...]) -> int:
    return kernel * kernel if isinstance(kernel, int) else int(torch.tensor(kernel).prod())


@torch.no_grad()
def block_resources(supernet: Supernet, example: Tensor, mask: Tensor) -> tuple[Tensor, list[int]]:
    """(choice blocks x candidates x 3) resources in ``RESOURCES`` order, and each block's
    decision (blocks that share a decision, as the cells of NAS-Bench-201, are listed apart)."""
    blocks = supernet.choice_blocks()
    table = torch.zeros(len(blocks), mask.shape[1], len(RESOURCES), dtype=torch.float64)
    handles = []

    def hook(b: int, k: int):
        def count(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
            x = inputs[0]
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                weight = module.weight.numel()
                positions = output.shape[-2] * output.shape[-1] if isinstance(module, nn.Conv2d) else 1
                table[b, k] += torch.tensor([weight, weight * positions, x.numel() + output.numel() + weight])
            else:  # pooling
                area = _kernel_area(module.kernel_size)
                table[b, k] += torch.tensor([0, area * output.numel(), x.numel() + output.numel()])

        return count

    for b, block in enumerate(blocks):
        for k, op in enumerate(block.candidates):
            for leaf in op.modules():
                if isinstance(leaf, (nn.Conv2d, nn.Linear, nn.AvgPool2d, nn.MaxPool2d)):
                    handles.append(leaf.register_forward_hook(hook(b, k)))
    every = Selection(
        active=[torch.nonzero(row).flatten().tolist() for row in mask],
        weights=torch.ones(mask.shape, device=example.device),
    )
    was_training = supernet.training
    supernet.eval()
    try:
        supernet(example[:1], every)
    finally:
        supernet.train(was_training)
        for handle in handles:
            handle.remove()
    return table, [block.decision for block in blocks]
