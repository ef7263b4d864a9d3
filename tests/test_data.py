"""Data: Fashion-MNIST from Debian's files, CIFAR and ImageFolder fixtures in the real on-disk
format, and the in-memory loader's batching and augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from conftest import ROOT, write_cifar10, write_image_folder
from nasbench.data import DEBIAN_FASHION_MNIST, TensorImages, load_data
from nasbench.errors import UserError
from nasbench.loaders import TensorLoader, make_loader

CONF = ROOT / "experiments" / "conf" / "data"


def data_cfg(name: str, **overrides):
    cfg = OmegaConf.load(CONF / f"{name}.yaml")
    return OmegaConf.merge(cfg, overrides)


@pytest.mark.skipif(not DEBIAN_FASHION_MNIST.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_loads_from_debian_files(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("NASBENCH_CACHE", str(tmp_path / "cache"))
    data = load_data(data_cfg("fashion_mnist"))
    assert data.train.images.shape == (60000, 1, 28, 28) and data.train.images.dtype == torch.uint8
    assert data.test.images.shape == (10000, 1, 28, 28)
    assert sorted(data.train.labels.unique().tolist()) == list(range(10))
    assert torch.bincount(data.test.labels).tolist() == [1000] * 10
    assert (tmp_path / "cache" / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").stat().st_size == 47040016
    # mean and std in the config are the data set's own (to 3 decimals)
    x = data.train.images.float() / 255
    assert x.mean().item() == pytest.approx(0.2860, abs=1e-3)
    assert x.std().item() == pytest.approx(0.3530, abs=1e-3)


def test_missing_data_root_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(UserError, match="holds no Fashion-MNIST"):
        load_data(data_cfg("fashion_mnist", root=str(tmp_path)))
    with pytest.raises(UserError, match="needs data.root"):
        load_data(data_cfg("cifar10"))


def test_cifar10_fixture_in_the_real_format(tmp_path) -> None:
    write_cifar10(tmp_path)
    data = load_data(data_cfg("cifar10", root=str(tmp_path)))
    assert data.train.images.shape == (100, 3, 32, 32) and data.test.images.shape == (20, 3, 32, 32)
    # channel 0, pixel (0, 0) carries the label: the layout (N, 3, 32, 32) is right
    assert torch.equal(data.train.images[:, 0, 0, 0].long(), data.train.labels * 20)
    x, y = next(iter(make_loader(data.train, 16, shuffle=True, augment=data.augment)))
    assert x.shape == (16, 3, 32, 32) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1


def test_image_folder_fixture(tmp_path) -> None:
    from PIL import Image

    for split in ("train", "val"):
        for c in range(3):
            folder = tmp_path / split / f"n0000{c}"
            folder.mkdir(parents=True)
            for i in range(4):
                Image.fromarray(np.full((40, 48, 3), 40 * c + i, dtype=np.uint8)).save(folder / f"img{i}.JPEG")
    data = load_data(data_cfg("imagenet", root=str(tmp_path), size=32, num_classes=3))
    assert data.spec.num_classes == 3 and len(data.train) == 12 and len(data.test) == 12
    x, y = next(iter(make_loader(data.test, 12, shuffle=False, workers=0)))
    assert x.shape == (12, 3, 32, 32) and y.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert x[4].mean().item() == pytest.approx(40 / 255, abs=0.01)


def test_tensor_loader_is_reproducible_and_augments_by_shifting() -> None:
    images = torch.arange(64, dtype=torch.uint8).view(1, 1, 8, 8).repeat(10, 1, 1, 1)
    data = TensorImages(images, torch.arange(10))
    loader = TensorLoader(data, 4, shuffle=True, drop_last=True, seed=3, augment={"crop_padding": 2})
    assert len(loader) == 2
    loader.set_epoch(1)
    first = [(x.clone(), y.clone()) for x, y in loader]
    again = [(x.clone(), y.clone()) for x, y in loader]
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again))
    loader.set_epoch(2)
    assert not all(torch.equal(a[1], b[1]) for a, b in zip(first, loader))
    source = images[0, 0].float() / 255
    padded = torch.nn.functional.pad(source, (2, 2, 2, 2))
    for x, _ in first:
        for img in x[:, 0]:  # every image is some 8x8 window of the zero-padded original
            windows = [padded[i : i + 8, j : j + 8] for i in range(5) for j in range(5)]
            assert any(torch.equal(img, w) for w in windows)


def test_device_decoding_matches_the_cpu_transforms(tmp_path) -> None:
    """``data.decode=device``: the workers read bytes, the main process decodes and augments a
    batch at a time on the run's device (the CPU here); test images match the PIL path."""
    write_image_folder(tmp_path, classes=3, per_class={"train": 6, "val": 4}, size=(48, 40))
    on_cpu = load_data(data_cfg("imagenet", root=str(tmp_path), size=32))
    on_device = load_data(data_cfg("imagenet", root=str(tmp_path), size=32, decode="device"))
    cpu = torch.device("cpu")
    x_ref, y_ref = next(iter(make_loader(on_cpu.test, 12, shuffle=False, workers=0)))
    x, y = next(iter(make_loader(on_device.test, 12, shuffle=False, workers=2, device=cpu)))
    assert x.shape == x_ref.shape == (12, 3, 32, 32) and x.dtype == torch.float32 and torch.equal(y, y_ref)
    assert (x - x_ref).abs().mean() < 0.02  # the same resize and centre crop (antialiased bilinear vs PIL)
    train = make_loader(on_device.train, 6, shuffle=True, drop_last=True, seed=1, workers=0, device=cpu)
    train.set_epoch(3)
    first = list(train)
    second = list(train)
    assert all(b.shape == (6, 3, 32, 32) and 0 <= b.min() and b.max() <= 1 for b, _ in first)
    assert all(torch.equal(a, b) and torch.equal(ya, yb) for (a, ya), (b, yb) in zip(first, second))  # reproducible
    train.skip(1)
    resumed = list(train)  # a resumed epoch: the same images and the same augmentation draws
    assert len(resumed) == 2 and all(torch.equal(a, b) for (a, _), (b, _) in zip(resumed, first[1:]))
    train.set_epoch(4)
    assert not torch.equal(next(iter(train))[0], first[0][0])  # another epoch, other crops
    with pytest.raises(UserError, match="unknown data.decode 'gpu'; choose one of: cpu, device"):
        load_data(data_cfg("imagenet", root=str(tmp_path), size=32, decode="gpu"))
