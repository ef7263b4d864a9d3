"""Data sets and loaders: Fashion-MNIST (default), CIFAR-10/100, ImageFolder (ImageNet).

Small data sets live in memory as uint8 tensors; ImageFolder data stay on disk. The loaders
that batch both are in :mod:`nasbench.loaders`.

Fashion-MNIST is looked for in this order (README, "Data is found as follows"): an explicit
``data.root``; the IDX files of Debian's ``dataset-fashion-mnist`` under /usr/share/datasets/fashion-mnist;
torchvision's download, where the machine has the internet.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from nasbench.errors import UserError, unknown_choice
from nasbench.jpeg_batches import DECODES, EncodedImageFolder
from nasbench.spaces.base import InputSpec

log = logging.getLogger(__name__)
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


@dataclass
class TensorImages:
    """An in-memory image set: uint8 images (N, C, H, W) and int64 labels (N,)."""

    images: Tensor
    labels: Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, n: int | None) -> TensorImages:
        """The first ``n`` images (in the data set's own order), or all when ``n`` is None."""
        if n is None or n >= len(self):
            return self
        return TensorImages(self.images[:n], self.labels[:n])

    def to(self, device: torch.device) -> TensorImages:
        return TensorImages(self.images.to(device), self.labels.to(device))


@dataclass
class DataBundle:
    name: str
    spec: InputSpec
    train: Any
    test: Any
    augment: Mapping[str, Any]


def cache_dir() -> Path:
    base = os.environ.get("NASBENCH_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "nasbench"
    )
    return Path(base)


def _stage_idx_files(source: Path, target_root: Path) -> bool:
    """Copy (decompressing .gz) Fashion-MNIST IDX files into torchvision's layout. Atomic per file."""
    import gzip
    import shutil

    raw = target_root / "FashionMNIST" / "raw"
    found = {}
    for name in FASHION_FILES:
        for candidate in (source / name, source / f"{name}.gz"):
            if candidate.is_file():
                found[name] = candidate
                break
    if len(found) != len(FASHION_FILES):
        return False
    raw.mkdir(parents=True, exist_ok=True)
    for name, src in found.items():
        dst = raw / name
        if dst.is_file() and dst.stat().st_size > 0:
            continue
        tmp = raw / f".{name}.{os.getpid()}.tmp"
        opener = gzip.open if src.suffix == ".gz" else open
        with opener(src, "rb") as fin, open(tmp, "wb") as fout:
            shutil.copyfileobj(fin, fout)
        os.replace(tmp, dst)
    return True


def _fashion_mnist_root(cfg: Mapping[str, Any]) -> tuple[Path, bool]:
    """(torchvision root, download?) following the look-up order of the module docstring."""
    root = cfg.get("root")
    if root:
        root = Path(os.path.expanduser(str(root)))
        if (root / "FashionMNIST" / "raw").is_dir():
            return root, False
        if root.is_dir() and _stage_idx_files(root, cache_dir()):
            return cache_dir(), False
        raise UserError(
            f"data.root={root} holds no Fashion-MNIST: expected the four IDX files ({FASHION_FILES[0]}[.gz], ...)"
            " or torchvision's FashionMNIST/raw folder"
        )
    if _stage_idx_files(DEBIAN_FASHION_MNIST, cache_dir()):
        return cache_dir(), False
    if (cache_dir() / "FashionMNIST" / "raw").is_dir():
        return cache_dir(), False
    if not cfg.get("download", False):
        raise UserError(
            "Fashion-MNIST not found: install Debian's dataset-fashion-mnist, pass data.root=..., or data.download=true"
        )
    return cache_dir(), True


def _load_fashion_mnist(cfg: Mapping[str, Any]) -> tuple[TensorImages, TensorImages]:
    from torchvision.datasets import FashionMNIST

    root, download = _fashion_mnist_root(cfg)
    try:
        sets = [FashionMNIST(str(root), train=t, download=download) for t in (True, False)]
    except RuntimeError as err:  # torchvision: "Dataset not found" or a failed download
        raise UserError(f"cannot load Fashion-MNIST from {root}: {err}") from None
    return tuple(TensorImages(s.data.unsqueeze(1).contiguous(), s.targets.long()) for s in sets)


def _load_cifar(cfg: Mapping[str, Any], classes: int) -> tuple[TensorImages, TensorImages]:
    from torchvision.datasets import CIFAR10, CIFAR100

    base = CIFAR10 if classes == 10 else CIFAR100

    class _Cifar(base):
        """torchvision's reader without its md5 checks: any copy in the real on-disk layout loads
        (a subset, a re-packed copy, a test fixture); a missing file still fails."""

        def _check_integrity(self) -> bool:
            folder = Path(self.root) / self.base_folder
            return all((folder / name).is_file() for name, _ in self.train_list + self.test_list)

        def _load_meta(self) -> None:
            import pickle

            path = Path(self.root) / self.base_folder / self.meta["filename"]
            if not path.is_file():
                raise RuntimeError(f"{path} is missing")
            with open(path, "rb") as f:
                self.classes = pickle.load(f, encoding="latin1")[self.meta["key"]]
            self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

    root = cfg.get("root")
    if not root:
        raise UserError(f"data={cfg['name']} needs data.root=<folder holding {base.base_folder}/>")
    try:
        sets = [
            _Cifar(os.path.expanduser(str(root)), train=t, download=bool(cfg.get("download"))) for t in (True, False)
        ]
    except (RuntimeError, OSError, ValueError, KeyError) as err:
        raise UserError(f"cannot load {cfg['name']} from {root}: {err}") from None
    return tuple(
        TensorImages(torch.from_numpy(s.data).permute(0, 3, 1, 2).contiguous(), torch.tensor(s.targets)) for s in sets
    )


def _load_image_folder(cfg: Mapping[str, Any]) -> tuple[Any, Any]:
    from torchvision import datasets, transforms

    root = cfg.get("root")
    if not root or not (Path(root) / "train").is_dir() or not (Path(root) / cfg.get("test_split", "val")).is_dir():
        raise UserError(f"data={cfg['name']} needs data.root=<folder with train/ and {cfg.get('test_split', 'val')}/>")
    size, decode = int(cfg["size"]), str(cfg.get("decode", "cpu"))
    test_dir = Path(root) / cfg.get("test_split", "val")
    if decode == "device":  # the workers read bytes; the run's device decodes and augments
        train = EncodedImageFolder(Path(root) / "train", train=True, size=size)
        test = EncodedImageFolder(test_dir, train=False, size=size)
    elif decode == "cpu":
        train_tf = transforms.Compose(
            [transforms.RandomResizedCrop(size), transforms.RandomHorizontalFlip(), transforms.ToTensor()]
        )
        test_tf = transforms.Compose(
            [transforms.Resize(int(math.ceil(size * 256 / 224))), transforms.CenterCrop(size), transforms.ToTensor()]
        )
        train = datasets.ImageFolder(str(Path(root) / "train"), transform=train_tf)
        test = datasets.ImageFolder(str(test_dir), transform=test_tf)
    else:
        raise unknown_choice("data.decode", decode, DECODES)
    if train.classes != test.classes:
        raise UserError(f"{root}: train/ and {cfg.get('test_split', 'val')}/ have different class folders")
    return train, test


LOADERS = ("fashion_mnist", "cifar10", "cifar100", "image_folder")


def load_data(cfg: Mapping[str, Any]) -> DataBundle:
    """Load the data set a ``data`` config describes (see experiments/conf/data/)."""
    kind = cfg.get("loader", cfg["name"])
    if kind == "fashion_mnist":
        train, test = _load_fashion_mnist(cfg)
    elif kind in ("cifar10", "cifar100"):
        train, test = _load_cifar(cfg, 10 if kind == "cifar10" else 100)
    elif kind == "image_folder":
        train, test = _load_image_folder(cfg)
    else:
        raise unknown_choice("data loader", kind, LOADERS)
    classes = len(train.classes) if kind == "image_folder" else None  # the folder decides
    if classes is not None and cfg.get("num_classes") and int(cfg["num_classes"]) != classes:
        log.warning(
            "%s has %d class folders: the classifier gets %d outputs (data.num_classes=%s is only assumed where"
            " no data is read: inspect_arch, bench)",
            Path(str(cfg["root"])) / "train",
            classes,
            classes,
            cfg["num_classes"],
        )
    spec = input_spec(cfg, num_classes=classes)
    return DataBundle(cfg["name"], spec, train, test, dict(cfg.get("augment") or {}))


def input_spec(cfg: Mapping[str, Any], num_classes: int | None = None) -> InputSpec:
    """The input spec from a data config alone, without loading data (for inspection)."""
    return InputSpec(
        channels=int(cfg["channels"]),
        size=int(cfg["size"]),
        num_classes=int(num_classes if num_classes is not None else cfg["num_classes"]),
        mean=tuple(float(m) for m in cfg["mean"]),
        std=tuple(float(s) for s in cfg["std"]),
    )


def on_device(data: Any, device: torch.device) -> Any:
    """An in-memory set on ``device`` (a torch Dataset stays where it is: its loader moves batches)."""
    return data.to(device) if isinstance(data, TensorImages) else data


def split(data: Any, fraction: float, seed: int) -> tuple[Any, Any]:
    """(kept part, held-out part): a random ``fraction`` of ``data`` held out, fixed by ``seed``.

    The held-out part is the validation split of search (DARTS Sec. 3: half of the training set;
    SPOS and ProxylessNAS: 50k ImageNet training images); the test set is never used in search.
    """
    if not 0.0 < fraction < 1.0:
        raise UserError(f"valid_fraction={fraction}: must lie strictly between 0 and 1")
    n = len(data)
    held = max(1, round(n * fraction))
    if held >= n:
        raise UserError(f"valid_fraction={fraction} leaves no training images out of {n}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    keep, out = order[held:].sort().values, order[:held].sort().values
    if isinstance(data, TensorImages):
        return TensorImages(data.images[keep], data.labels[keep]), TensorImages(data.images[out], data.labels[out])
    return torch.utils.data.Subset(data, keep.tolist()), torch.utils.data.Subset(data, out.tolist())


def subset(data: Any, n: int | None) -> Any:
    """``n`` items of a data set, or all of it when ``n`` is None.

    In-memory sets (stored in random order) keep their first ``n`` images, so a plain-torch
    user can rebuild the same evaluation set; a class-sorted ImageFolder takes every k-th image.
    """
    if n is None or n >= len(data):
        return data
    if isinstance(data, TensorImages):
        return data.subset(n)
    step = len(data) / n
    return torch.utils.data.Subset(data, [int(i * step) for i in range(n)])
