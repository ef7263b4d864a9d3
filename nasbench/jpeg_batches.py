"""ImageFolder batches decoded and augmented on the run's device (``data.decode=device``).

With ``data.decode=cpu`` (the default) the DataLoader workers decode JPEGs with PIL and augment
them with torchvision transforms, one image at a time: about 340 images/s from 2 workers on this
2-core machine (docs/benchmarks.md), far below what one GPU trains at paper scale. With
``data.decode=device`` the workers only read the files' bytes; the main process then decodes the
whole batch on the device (``torchvision.io.decode_jpeg`` with a list and ``device="cuda"``: nvJPEG,
batched) and applies the same augmentation there: RandomResizedCrop (scale 0.08-1, ratio 3/4-4/3,
bilinear with antialias) and a horizontal flip for training images; resize of the shorter side to
``size * 256 / 224`` and a centre crop for test images (nasbench.data._load_image_folder's
transforms). Crop and flip parameters come from a CPU generator seeded by (seed, epoch, batch), so
a pass is reproducible and a resumed epoch draws what an unbroken one drew. On the CPU (and for
images nvJPEG refuses, such as CMYK JPEGs or PNGs), ``torchvision.io.decode_image`` decodes one
image at a time.

torchvision 0.29 deprecates its image decoders in favour of TorchCodec; they still work there,
across the whole torch range the suite supports (2.4-2.14), and the warning is silenced here.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F
from torchvision import datasets
from torchvision.io import ImageReadMode, decode_image, decode_jpeg

DECODES = ("cpu", "device")


def read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


class EncodedImageFolder(datasets.ImageFolder):
    """An ImageFolder whose items are (the file's bytes, label); ``train`` chooses the
    augmentation that :func:`decode_batch` applies, ``size`` the output size. Items are plain
    ``bytes``, not tensors: a batch of many small tensors sent from a worker would take one
    shared-memory file descriptor each."""

    def __init__(self, root: str | Path, train: bool, size: int) -> None:
        super().__init__(str(root), loader=read_bytes)
        self.train, self.size = train, size


def encoded(dataset: Any) -> EncodedImageFolder | None:
    """The :class:`EncodedImageFolder` under ``dataset`` (through Subsets), or None."""
    while isinstance(dataset, torch.utils.data.Subset):
        dataset = dataset.dataset
    return dataset if isinstance(dataset, EncodedImageFolder) else None


def collate_encoded(items: list[tuple[bytes, int]]) -> tuple[list[bytes], Tensor]:
    """A batch of encoded files: their bytes as a list (their lengths differ), labels stacked."""
    return [data for data, _ in items], torch.tensor([label for _, label in items])


def decode(encoded_files: list[bytes], device: torch.device) -> list[Tensor]:
    """uint8 RGB images (3, H, W) on ``device``: one batched nvJPEG call on a GPU, else one by one."""
    files = [torch.frombuffer(bytearray(data), dtype=torch.uint8) for data in encoded_files]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision")
        if device.type == "cuda":
            try:
                return decode_jpeg(files, mode=ImageReadMode.RGB, device=device)
            except RuntimeError:  # a file nvJPEG cannot decode: the whole batch on the CPU
                pass
        return [decode_image(f, mode=ImageReadMode.RGB).to(device, non_blocking=True) for f in files]


def crop_box(height: int, width: int, gen: torch.Generator) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a random-resized crop: torchvision's RandomResizedCrop.get_params
    (scale 0.08-1 of the area, log-uniform aspect ratio 3/4-4/3, 10 tries, then the centre crop
    of the clamped ratio), drawn from ``gen``."""
    area = height * width
    log_lo, log_hi = math.log(3 / 4), math.log(4 / 3)
    for _ in range(10):
        target = area * (0.08 + 0.92 * float(torch.rand((), generator=gen)))
        ratio = math.exp(log_lo + (log_hi - log_lo) * float(torch.rand((), generator=gen)))
        w, h = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (), generator=gen))
            left = int(torch.randint(0, width - w + 1, (), generator=gen))
            return top, left, h, w
    ratio = width / height
    if ratio < 3 / 4:
        w, h = width, round(width / (3 / 4))
    elif ratio > 4 / 3:
        h, w = height, round(height * (4 / 3))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def _resize(image: Tensor, size: tuple[int, int]) -> Tensor:
    return F.interpolate(image[None].float(), size=size, mode="bilinear", antialias=True, align_corners=False)[0]


def decode_batch(files: list[bytes], dataset: EncodedImageFolder, device: torch.device, gen: torch.Generator) -> Tensor:
    """Float images in [0, 1], (B, 3, size, size), on ``device``, augmented as the dataset's split is."""
    size = dataset.size
    out = []
    for image in decode(files, device):
        _, height, width = image.shape
        if dataset.train:
            top, left, h, w = crop_box(height, width, gen)
            image = _resize(image[:, top : top + h, left : left + w], (size, size))
            if float(torch.rand((), generator=gen)) < 0.5:
                image = image.flip(-1)
        else:
            short = math.ceil(size * 256 / 224)
            scale = short / min(height, width)
            image = _resize(image, (max(short, round(height * scale)), max(short, round(width * scale))))
            top, left = (image.shape[1] - size) // 2, (image.shape[2] - size) // 2
            image = image[:, top : top + size, left : left + size]
        out.append(image)
    return torch.stack(out).div_(255.0).clamp_(0.0, 1.0)
