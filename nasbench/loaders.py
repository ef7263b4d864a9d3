"""Loaders: batches of a data set of :mod:`nasbench.data`, reproducible per (seed, epoch).

Loaders yield float images in [0, 1] at the data set's native size and channels; networks
normalise and resize themselves (:mod:`nasbench.preprocess`). Small data sets live in memory as
uint8 tensors and are batched and augmented with tensor ops (random crop with padding and
horizontal flip), so that loading never bounds a CPU step. ImageFolder data go through a
``DataLoader`` with workers: torchvision transforms in the workers (``data.decode=cpu``), or the
files' bytes from the workers, decoded and augmented on the run's device
(``data.decode=device``, :mod:`nasbench.jpeg_batches`).
"""

from __future__ import annotations

import math
import signal
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import Tensor

from nasbench import distributed
from nasbench.data import TensorImages
from nasbench.jpeg_batches import collate_encoded, decode_batch, encoded


class TensorLoader:
    """Batches of an in-memory :class:`TensorImages`, shuffled by a seeded generator.

    Augmentation runs on whole batches: random crops of a zero-padded copy (``crop_padding``
    pixels each side) and horizontal flips (``hflip``), the usual CIFAR/MNIST recipe, and, for an
    evaluation protocol that asks for it, DARTS's cutout (``cutout`` pixels, filled with
    ``cutout_fill``, the data set's mean).
    """

    def __init__(
        self,
        data: TensorImages,
        batch_size: int,
        *,
        shuffle: bool,
        augment: Mapping[str, Any] | None = None,
        drop_last: bool = False,
        seed: int = 0,
        shard: bool = False,
    ) -> None:
        self.data = data
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.augment = dict(augment or {})
        self.drop_last = drop_last
        self.seed = seed
        self.epoch = 0
        self.shard = distributed.shards(shard, drop_last)
        self._skip = 0

    def __len__(self) -> int:
        n = len(self.data)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Shuffle order and augmentation depend on (seed, epoch) only: reproducible and resumable."""
        self.epoch = epoch

    def skip(self, batches: int) -> None:
        """The next pass starts at batch ``batches`` with the same images and the same augmentation
        draws as an unbroken pass (a run resumed in the middle of an epoch)."""
        self._skip = batches

    def _advance(self, b: int, gen: torch.Generator) -> None:
        """Draw what :meth:`_augment` draws for a batch of ``b``, without touching images."""
        if int(self.augment.get("crop_padding", 0)) > 0:
            torch.randint(0, 2, (b,), generator=gen)
            torch.randint(0, 2, (b,), generator=gen)
        if self.augment.get("hflip", False):
            torch.rand(b, generator=gen)
        if int(self.augment.get("cutout", 0)) > 0:
            h, w = self.data.images.shape[-2:]
            torch.randint(0, h, (b,), generator=gen)
            torch.randint(0, w, (b,), generator=gen)

    def _augment(self, x: Tensor, gen: torch.Generator) -> Tensor:
        pad = int(self.augment.get("crop_padding", 0))
        b, _, h, w = x.shape
        if pad > 0:
            padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
            oy = torch.randint(0, 2 * pad + 1, (b,), generator=gen).to(x.device)
            ox = torch.randint(0, 2 * pad + 1, (b,), generator=gen).to(x.device)
            rows = (oy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
            cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
            bidx = torch.arange(b, device=x.device)[:, None, None, None]
            cidx = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
            x = padded[bidx, cidx, rows, cols]
        if self.augment.get("hflip", False):
            flip = (torch.rand(b, generator=gen) < 0.5).to(x.device)
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        cut = int(self.augment.get("cutout", 0))
        if cut > 0:  # DARTS's Cutout: a square of side ``cut`` around a uniform centre, clipped
            cy = torch.randint(0, h, (b,), generator=gen).to(x.device)
            cx = torch.randint(0, w, (b,), generator=gen).to(x.device)
            ys, xs = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
            rows = (ys >= (cy - cut // 2)[:, None]) & (ys < (cy + cut // 2)[:, None])
            cols = (xs >= (cx - cut // 2)[:, None]) & (xs < (cx + cut // 2)[:, None])
            inside = rows[:, None, :, None] & cols[:, None, None, :]
            # the official mask zeroes the normalised image: the data set's mean in [0, 1] pixels
            fill = torch.tensor(self.augment.get("cutout_fill", [0.0]), dtype=x.dtype, device=x.device)
            x = torch.where(inside, fill.view(1, -1, 1, 1), x)
        return x

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        n = len(self.data)
        order = torch.randperm(n, generator=gen) if self.shuffle else torch.arange(n)
        order = order.to(self.data.labels.device)
        batches = batch_indices(order, self.batch_size, self.drop_last, self.shard)
        if self.shard:  # this rank's part of each global batch; its own augmentation draws
            gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch + 7_919 * distributed.current().rank)
        skip, self._skip = self._skip, 0
        for i, idx in enumerate(batches):
            if i < skip:
                if self.augment:
                    self._advance(len(idx), gen)
                continue
            x = self.data.images[idx].float().div_(255.0)
            if self.augment:
                x = self._augment(x, gen)
            yield x, self.data.labels[idx]


def batch_indices(order: Tensor, batch_size: int, drop_last: bool, shard: bool) -> list[Tensor]:
    """``order`` cut into batches (the last one dropped if short and ``drop_last``); ``shard``:
    this rank's equal part of each global batch (nasbench.distributed.shard_batches)."""
    if shard:
        return distributed.shard_batches(order, batch_size, drop_last)
    batches = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
    if drop_last and batches and len(batches[-1]) < batch_size:
        batches.pop()
    return batches


def make_loader(
    data: Any,
    batch_size: int,
    *,
    shuffle: bool,
    augment: Mapping[str, Any] | None = None,
    drop_last: bool = False,
    seed: int = 0,
    workers: int = 2,
    shard: bool = False,
    device: torch.device | None = None,
) -> Any:
    """A loader for either an in-memory set or a torch Dataset (ImageFolder). ``shard=True``: in
    a distributed run, this rank's equal part of every global batch (nasbench.distributed).
    ``device``: where an ImageFolder of encoded files (``data.decode=device``) is decoded, and
    whether batches are pinned for a GPU."""
    if isinstance(data, TensorImages):
        return TensorLoader(
            data, batch_size, shuffle=shuffle, augment=augment, drop_last=drop_last, seed=seed, shard=shard
        )
    return _DatasetLoader(
        data, batch_size, shuffle=shuffle, drop_last=drop_last, seed=seed, workers=workers, shard=shard, device=device
    )


def ignore_stop_signals(_worker_id: int) -> None:
    """In a DataLoader worker: leave SIGTERM and SIGINT to the main process. A stop sent to the
    whole process group (SLURM preemption, ``timeout``, Ctrl-C) would otherwise kill the workers
    first, and the main process would die of "DataLoader worker ... is killed by signal" before
    it could finish its step and write the checkpoint. The workers still end with the main
    process (the DataLoader shuts them down, or they notice that their parent is gone)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class _DatasetLoader:
    """A torch DataLoader whose shuffle order depends on (seed, epoch), like TensorLoader."""

    def __init__(
        self,
        dataset: Any,
        batch_size: int,
        *,
        shuffle: bool,
        drop_last: bool,
        seed: int,
        workers: int,
        shard: bool = False,
        device: torch.device | None = None,
    ) -> None:
        self.dataset, self.batch_size, self.shuffle = dataset, batch_size, shuffle
        self.device = device or torch.device("cpu")
        self.drop_last, self.seed, self.workers, self.epoch = drop_last, seed, workers, 0
        self.shard = distributed.shards(shard, drop_last)
        self._skip = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def skip(self, batches: int) -> None:
        """The next pass starts at batch ``batches``: the same images in the same order; the
        augmentation draws of the worker processes differ from an unbroken pass (with
        ``data.decode=device`` they are the same: drawn per batch in the main process)."""
        self._skip = batches

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        skip, self._skip = self._skip, 0
        files = encoded(self.dataset)  # data.decode=device: the workers read bytes only
        common = {
            "num_workers": self.workers,
            "persistent_workers": False,
            "worker_init_fn": ignore_stop_signals,
            "collate_fn": collate_encoded if files is not None else None,
            "pin_memory": self.device.type == "cuda" and files is None,
        }
        if self.shard or skip:
            n = len(self.dataset)
            if skip and not self.shard and self.shuffle:  # the draw an unsharded DataLoader makes first
                torch.empty((), dtype=torch.int64).random_(generator=gen)
            order = torch.randperm(n, generator=gen) if self.shuffle else torch.arange(n)
            parts = [idx.tolist() for idx in batch_indices(order, self.batch_size, self.drop_last, self.shard)]
            batches = torch.utils.data.DataLoader(self.dataset, batch_sampler=parts[skip:], **common)
        else:
            batches = torch.utils.data.DataLoader(
                self.dataset,
                batch_size=self.batch_size,
                shuffle=self.shuffle,
                drop_last=self.drop_last,
                generator=gen,
                **common,
            )
        if files is None:
            yield from batches
            return
        rank = distributed.current().rank
        for i, (data, labels) in enumerate(batches, start=skip):  # augmentation drawn per (epoch, batch, rank)
            draws = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch * 1_009 + i * 7_919 + rank)
            yield decode_batch(data, files, self.device, draws), labels
