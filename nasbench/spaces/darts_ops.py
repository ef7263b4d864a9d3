"""The eight candidate ops of the DARTS cell space (Liu et al., ICLR 2019; quark0/darts,
cnn/operations.py and cnn/model_search.py), in the official index order of ``PRIMITIVES``.

Each op maps C channels to C channels at stride 1 or 2 (the edges from a reduction cell's two
inputs). ``affine`` is the BatchNorm's learnable scale and shift: off in the search network, on in
the evaluation network (the DARTS code's ``affine=False`` / ``True``). ``pool_bn`` adds the
search network's non-affine BatchNorm after each pooling op (``MixedOp``: search only).

Every op carries a ``credit_kind`` (nasbench/credit.py), so that DSNAS's credit <dL/dO, O> is read
without multiplying by the dummy where the op allows it: ``zero`` for none, ``linear`` for the
identity and average pooling without a BatchNorm after it, ``batchnorm`` for ops that end in a
BatchNorm (used when it is affine; a non-affine one falls back to ``output``), and the default
``output`` for max pooling, which is not linear.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

OPS = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)


class Zero(nn.Module):
    """``none``: zeros of the output's shape, computed as the official ``x.mul(0.)`` (strided)."""

    credit_kind = "zero"

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        if self.stride == 1:
            return x.mul(0.0)
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)


class Identity(nn.Module):
    """``skip_connect`` at stride 1. Its own class (not ``nn.Identity``) so that drop-path can
    recognise it: the DARTS evaluation cell never drops an identity edge."""

    credit_kind = "linear"

    def forward(self, x: Tensor) -> Tensor:
        return x


class _EndsInBatchNorm(nn.Sequential):
    credit_kind = "batchnorm"

    @property
    def credit_bn(self) -> nn.BatchNorm2d:
        return self[-1]


class ReLUConvBN(_EndsInBatchNorm):
    """ReLU, k x k conv without bias, BatchNorm: the cells' preprocessing of their inputs."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, padding: int, affine: bool) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(cout, affine=affine),
        )


class SepConv(_EndsInBatchNorm):
    """The separable convolution applied twice: [ReLU, depthwise k x k (stride s), pointwise,
    BN] then [ReLU, depthwise k x k, pointwise, BN] (official SepConv)."""

    def __init__(self, c: int, kernel: int, stride: int, affine: bool) -> None:
        pad = kernel // 2
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c, c, kernel, stride=stride, padding=pad, groups=c, bias=False),
            nn.Conv2d(c, c, 1, bias=False),
            nn.BatchNorm2d(c, affine=affine),
            nn.ReLU(inplace=False),
            nn.Conv2d(c, c, kernel, stride=1, padding=pad, groups=c, bias=False),
            nn.Conv2d(c, c, 1, bias=False),
            nn.BatchNorm2d(c, affine=affine),
        )


class DilatedDepthwise(nn.Conv2d):
    """A depthwise k x k convolution with dilation 2 and padding k - 1 (DARTS's DilConv), computed
    on the CPU as the same convolution without dilation on the image's four pixel phases (stride
    1: x[a::2, b::2] for a, b in {0, 1}, as one batch; stride 2: x[::2, ::2] alone). The results
    are identical (tests/test_darts_space.py); PyTorch's CPU kernel for dilated depthwise
    convolutions is slow at some shapes (measured on 2 cores: C=8, 32x32, batch 64, 5x5: 0.1-1.3 s
    per forward-backward, against 28 ms this way). Parameters, state dict and MACs are a plain
    Conv2d's; other devices, and odd sizes, run the dilated convolution itself."""

    def __init__(self, c: int, kernel: int, stride: int) -> None:
        super().__init__(c, c, kernel, stride=stride, padding=kernel - 1, dilation=2, groups=c, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        if x.device.type != "cpu" or h % 2 or w % 2:
            return super().forward(x)
        pad, k = self.kernel_size[0] // 2, self.weight
        if self.stride[0] == 2:
            return F.conv2d(x[:, :, ::2, ::2], k, padding=pad, groups=c)
        phases = x.reshape(b, c, h // 2, 2, w // 2, 2).permute(3, 5, 0, 1, 2, 4).reshape(4 * b, c, h // 2, w // 2)
        out = F.conv2d(phases, k, padding=pad, groups=c)
        return out.reshape(2, 2, b, c, h // 2, w // 2).permute(2, 3, 4, 0, 5, 1).reshape(b, c, h, w)


class DilConv(_EndsInBatchNorm):
    """ReLU, depthwise k x k with dilation 2 (padding 2 for 3x3, 4 for 5x5), pointwise, BN."""

    def __init__(self, c: int, kernel: int, stride: int, affine: bool) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            DilatedDepthwise(c, kernel, stride),
            nn.Conv2d(c, c, 1, bias=False),
            nn.BatchNorm2d(c, affine=affine),
        )


class FactorizedReduce(nn.Module):
    """Halve the resolution without losing every other pixel: ReLU, two 1x1 stride-2 convs to C/2
    channels, the second on the input shifted by one pixel, concatenated, BN (official
    FactorizedReduce: ``skip_connect`` at stride 2 and ``preprocess0`` after a reduction cell)."""

    credit_kind = "batchnorm"

    def __init__(self, cin: int, cout: int, affine: bool) -> None:
        super().__init__()
        if cout % 2:
            raise ValueError(f"FactorizedReduce needs an even number of output channels, got {cout}")
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(cin, cout // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(cin, cout // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(cout, affine=affine)

    @property
    def credit_bn(self) -> nn.BatchNorm2d:
        return self.bn

    def forward(self, x: Tensor) -> Tensor:
        # the shifted half reads pixels 1..; on even sizes both halves give size/2 (the space
        # checks that every size a FactorizedReduce meets is even)
        x = self.relu(x)
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(x[:, :, 1:, 1:])], dim=1))


def _avg_pool(stride: int) -> nn.Module:
    pool = nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)
    pool.credit_kind = "linear"
    return pool


def make_op(name: str, c: int, stride: int, affine: bool, pool_bn: bool = False) -> nn.Module:
    """One candidate op on C channels at ``stride`` (DARTS ``OPS[name](C, stride, affine)``; with
    ``pool_bn`` a pooling op is followed by a non-affine BatchNorm, as in ``MixedOp``)."""
    if name == "none":
        return Zero(stride)
    if name in ("max_pool_3x3", "avg_pool_3x3"):
        pool = nn.MaxPool2d(3, stride=stride, padding=1) if name == "max_pool_3x3" else _avg_pool(stride)
        return nn.Sequential(pool, nn.BatchNorm2d(c, affine=False)) if pool_bn else pool
    if name == "skip_connect":
        return Identity() if stride == 1 else FactorizedReduce(c, c, affine)
    if name.startswith("sep_conv_"):
        return SepConv(c, int(name[-1]), stride, affine)
    if name.startswith("dil_conv_"):
        return DilConv(c, int(name[-1]), stride, affine)
    raise ValueError(f"unknown DARTS op {name!r}; ops are: {', '.join(OPS)}")


def drop_path(x: Tensor, prob: float) -> Tensor:
    """DARTS's drop-path (cnn/utils.py): zero a whole sample's output with probability ``prob``
    and scale the kept ones by 1 / (1 - prob). The mask is drawn on the tensor's device."""
    if prob <= 0.0:
        return x
    keep = 1.0 - prob
    mask = torch.empty(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype).bernoulli_(keep)
    return x / keep * mask
