"""The ShuffleNetV2 one-shot space of SPOS and DSNAS.

Paper scale (DSNAS Table 6 / SPOS Table 1): stem 3x3 conv, 16 channels, stride 2; four stages
of 64/160/320/640 channels with 4/4/8/4 choice blocks, the first of each stage with stride 2;
1x1 conv to 1024, global pooling, a linear classifier without bias. Each choice block picks one
of four candidates, in this index order: 0 Shuffle3x3, 1 Shuffle5x5, 2 Shuffle7x7,
3 ShuffleXception. The ``cpu`` and ``tiny`` presets shrink widths, depth and resolution; the
code path is the same at every scale.

Blocks follow ShuffleNetV2 (Ma et al., ECCV 2018) as used by SPOS/DSNAS: a stride-1 block
splits its input into two halves (a channel shuffle), passes one through and transforms the
other; a stride-2 block transforms the whole input in two branches. Both concatenate.

Network options (preset keys; a method chooses them with ``method.space_options.shufflenet``):
``bn_eps`` (1e-5, PyTorch's; official DSNAS search: 1e-2), ``supernet_bn_affine`` (true;
official SPOS supernet: false, its BatchNorms learn no scale or shift; a network built to be
trained from scratch keeps affine BatchNorm), ``init`` (``torch``: PyTorch's defaults;
``official``: the DSNAS/SPOS ``_initialize_weights``: convs N(0, 1/fan-in channels), the stem's
N(0, 0.01), BatchNorm scale 1 and shift 1e-4, the classifier N(0, 0.01)) and ``dropout`` before
the classifier (0; official DSNAS ``--use_dropout`` and SPOS: 0.1). The defaults give every
method the same network, the premise of a comparison; each official choice is one key away.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from nasbench.errors import UserError
from nasbench.flops import count_macs
from nasbench.preprocess import InputAdapter
from nasbench.spaces import SPACES
from nasbench.spaces.base import Decision, InputSpec, SearchSpace
from nasbench.supernet import Supernet

CANDIDATES = ("shuffle3x3", "shuffle5x5", "shuffle7x7", "xception")


def _conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, relu: bool = True) -> list[nn.Module]:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return layers


def split_channels(x: Tensor) -> tuple[Tensor, Tensor]:
    """ShuffleNetV2's channel shuffle before a stride-1 block: even channels, odd channels."""
    b, c, h, w = x.shape
    pairs = x.view(b, c // 2, 2, h, w)
    return pairs[:, :, 0], pairs[:, :, 1]


class ShuffleUnit(nn.Module):
    """A ShuffleNetV2 unit whose main branch is ``main``; ``inp`` input channels, ``out`` out.

    stride 1: ``inp`` is half the block's input; the other half passes through.
    stride 2: both branches see the whole input; the projection branch is dw k x k + pw.
    """

    def __init__(self, main: nn.Module, inp: int, k_proj: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.branch_main = main
        self.branch_proj = (
            nn.Sequential(*_conv_bn(inp, inp, k_proj, stride, groups=inp, relu=False), *_conv_bn(inp, inp, 1))
            if stride == 2
            else None
        )

    def forward(self, x: Tensor) -> Tensor:
        if self.branch_proj is None:
            passed, x = split_channels(x)
            return torch.cat((passed, self.branch_main(x)), 1)
        return torch.cat((self.branch_proj(x), self.branch_main(x)), 1)


def shuffle_block(inp: int, out: int, mid: int, k: int, stride: int) -> ShuffleUnit:
    """Shuffle k x k: pw 1x1 + BN + ReLU, dw k x k + BN, pw 1x1 + BN + ReLU."""
    main = nn.Sequential(
        *_conv_bn(inp, mid, 1),
        *_conv_bn(mid, mid, k, stride, groups=mid, relu=False),
        *_conv_bn(mid, out - inp, 1),
    )
    return ShuffleUnit(main, inp, k, stride)


def xception_block(inp: int, out: int, mid: int, stride: int) -> ShuffleUnit:
    """ShuffleXception: three (dw 3x3 + BN, pw 1x1 + BN + ReLU) pairs, the first strided."""
    main = nn.Sequential(
        *_conv_bn(inp, inp, 3, stride, groups=inp, relu=False),
        *_conv_bn(inp, mid, 1),
        *_conv_bn(mid, mid, 3, 1, groups=mid, relu=False),
        *_conv_bn(mid, mid, 1),
        *_conv_bn(mid, mid, 3, 1, groups=mid, relu=False),
        *_conv_bn(mid, out - inp, 1),
    )
    return ShuffleUnit(main, inp, 3, stride)


def make_candidates(inp: int, out: int, stride: int) -> list[nn.Module]:
    """The four candidates of one choice layer (SPOS: mid channels = out // 2)."""
    mid = out // 2
    return [
        shuffle_block(inp, out, mid, 3, stride),
        shuffle_block(inp, out, mid, 5, stride),
        shuffle_block(inp, out, mid, 7, stride),
        xception_block(inp, out, mid, stride),
    ]


class Head(nn.Module):
    """1x1 conv + BN + ReLU, global average pooling, dropout, linear classifier (no bias)."""

    def __init__(self, cin: int, last: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.conv = nn.Sequential(*_conv_bn(cin, last, 1))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Linear(last, num_classes, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.dropout(self.pool(self.conv(x)).flatten(1)))


class ShuffleNetChild(nn.Module):
    """A stand-alone single-path network: adapter, stem, one block per layer, head."""

    def __init__(self, adapter: nn.Module, stem: nn.Module, blocks: Sequence[nn.Module], head: nn.Module) -> None:
        super().__init__()
        self.adapter = adapter
        self.stem = stem
        self.blocks = nn.Sequential(*blocks)
        self.head = head

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.blocks(self.stem(self.adapter(x))))


INITS = ("torch", "official")


def official_init(net: nn.Module) -> None:
    """The official DSNAS and SPOS ``_initialize_weights`` (network.py of both)."""
    for name, m in net.named_modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0, 0.01 if name.startswith("stem") else 1.0 / m.weight.shape[1])
        elif isinstance(m, nn.BatchNorm2d):
            if m.weight is not None:
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0.0001)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)


def apply_network_options(net: nn.Module, preset: Mapping[str, Any], supernet: bool) -> None:
    """``bn_eps``, ``supernet_bn_affine`` (only for a supernet and what inherits from it) and ``init``."""
    init = str(preset.get("init", "torch"))
    if init not in INITS:
        raise UserError(f"space option init={init}: must be one of {', '.join(INITS)}")
    affine = bool(preset.get("supernet_bn_affine", True)) or not supernet
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eps = float(preset.get("bn_eps", 1e-5))
            if not affine:  # SPOS's supernet: no learned scale or shift
                m.affine = False
                m.register_parameter("weight", None)
                m.register_parameter("bias", None)
    if init == "official":
        official_init(net)


class ShuffleNetSupernet(Supernet):
    def __init__(self, space: ShuffleNetSpace, stand_alone: bool = False) -> None:
        super().__init__()
        p, inputs = space.preset, space.inputs
        self.adapter = InputAdapter(inputs.mean, inputs.std, space.resolution)
        self.stem = nn.Sequential(*_conv_bn(inputs.channels, p["stem_channels"], 3, p["stem_stride"]))
        self.layers = nn.ModuleList(
            self.make_choice_block(i, make_candidates(inp, out, stride))
            for i, (inp, out, stride) in enumerate(space.layer_shapes())
        )
        self.head = Head(p["stage_channels"][-1], p["last_channels"], inputs.num_classes, p.get("dropout", 0.0))
        apply_network_options(self, p, supernet=not stand_alone)

    def body(self, x: Tensor) -> Tensor:
        x = self.stem(self.adapter(x))
        for layer in self.layers:
            x = layer(x)
        return self.head(x)


@SPACES.register("shufflenet")
class ShuffleNetSpace(SearchSpace):
    """20 choice layers x 4 candidates at paper scale (4^20 architectures)."""

    name = "shufflenet"

    def __init__(self, preset: Mapping[str, Any], inputs: InputSpec) -> None:
        super().__init__(preset, inputs)
        p = self.preset
        if len(p["stage_channels"]) != len(p["stage_repeats"]):
            raise ValueError("stage_channels and stage_repeats must have the same length")
        self.resolution: int = p.get("resolution") or inputs.size
        self.decisions = [Decision(f"layer{i}", CANDIDATES) for i in range(sum(p["stage_repeats"]))]

    def layer_shapes(self) -> list[tuple[int, int, int]]:
        """(main-branch input channels, output channels, stride) of every choice layer."""
        shapes = []
        cin = self.preset["stem_channels"]
        for cout, repeats in zip(self.preset["stage_channels"], self.preset["stage_repeats"]):
            for j in range(repeats):
                if j == 0:
                    if cout <= cin:
                        raise ValueError(f"a stage must widen its input ({cin} -> {cout} channels)")
                    shapes.append((cin, cout, 2))
                else:
                    shapes.append((cout // 2, cout, 1))
            cin = cout
        return shapes

    def build_supernet(self, one_stage: bool = False) -> ShuffleNetSupernet:
        return ShuffleNetSupernet(self)

    def build_child(self, arch: Sequence[int], supernet: Supernet | None = None) -> ShuffleNetChild:
        arch = self.validate(arch)
        net = supernet if supernet is not None else ShuffleNetSupernet(self, stand_alone=True)
        blocks = [layer.candidates[k] for layer, k in zip(net.layers, arch)]
        child = ShuffleNetChild(net.adapter, net.stem, blocks, net.head)
        # a fresh supernet is private to this call: no copy needed; an inherited one is copied
        return copy.deepcopy(child) if supernet is not None else child

    def candidate_macs(self) -> Tensor:
        table = torch.zeros(self.num_decisions, self.max_candidates, dtype=torch.float64)
        size = -(-self.resolution // self.preset["stem_stride"])  # 3x3 conv, padding 1
        cin = self.preset["stem_channels"]
        for i, (inp, out, stride) in enumerate(self.layer_shapes()):
            x = torch.zeros(1, cin, size, size)
            for k, block in enumerate(make_candidates(inp, out, stride)):
                table[i, k] = count_macs(block.eval(), x)
            size = -(-size // stride)
            cin = out
        return table
