"""Data-parallel runs over several processes (``torchrun``; README, "One run on several devices:
torchrun").

    torchrun --standalone --nproc_per_node=2 experiments/run.py method=dsnas space=shufflenet

Every rank builds the same supernet, alpha and path sampler from the same seed, so the sampled
paths agree without communication. Each training batch of the budget (``batch_size`` images) is
split evenly over the ranks; the weights' gradients are averaged by DistributedDataParallel
(gloo on the CPU, nccl on GPUs), and alpha's gradient, which lives outside the network, is
averaged here: the averaged gradient is the gradient of the whole batch's mean loss, as in one
process, and alpha stays identical on every rank. BatchNorm statistics are per rank during a
step (as with plain DDP) and rank 0's are broadcast at the end of every phase. Held-out scoring,
BatchNorm recalibration and evaluation read whole data sets on every rank (identical results);
rank 0 writes the run record. The budget meter multiplies wall time by the number of ranks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from nasbench.errors import UserError


@dataclass(frozen=True)
class DistEnv:
    """This process's place in a distributed run (one process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


_ENV = DistEnv()


def launched_env() -> DistEnv:
    """What torchrun's environment variables say (before any process group exists)."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise UserError("WORLD_SIZE, RANK and LOCAL_RANK must be integers (as torchrun sets them)") from None
    return DistEnv(rank, world, local)


def current() -> DistEnv:
    """The distributed set-up of this process (rank 0 of 1 unless :func:`init` joined a group)."""
    return _ENV


def init(device: torch.device, timeout_s: float = 600.0) -> tuple[DistEnv, torch.device]:
    """Join torchrun's process group when there is one; returns the set-up and the rank's device
    (``cuda:LOCAL_RANK`` for a GPU run). Without torchrun: rank 0 of 1, the device unchanged."""
    global _ENV
    env = launched_env()
    if not env.enabled:
        return _ENV, device
    if device.type == "cuda":
        if env.local_rank >= torch.cuda.device_count():
            raise UserError(
                f"LOCAL_RANK={env.local_rank} but this machine has {torch.cuda.device_count()} CUDA device(s):"
                " use at most that many processes per node"
            )
        device = torch.device("cuda", env.local_rank)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    _ENV = DistEnv(dist.get_rank(), dist.get_world_size(), env.local_rank, backend)
    return _ENV, device


def shutdown() -> None:
    global _ENV
    if dist.is_initialized():
        dist.destroy_process_group()
    _ENV = DistEnv()


def wrap(model: nn.Module, find_unused: bool) -> nn.Module:
    """``model`` under DistributedDataParallel in a distributed run, else ``model`` itself.

    ``find_unused=True`` for supernets: a single-path step leaves the other candidates without
    gradients (all ranks sample the same path, so they agree on which)."""
    if not _ENV.enabled:
        return model
    return nn.parallel.DistributedDataParallel(model, device_ids=None, find_unused_parameters=find_unused)


def average_(tensor: Tensor) -> Tensor:
    """Average ``tensor`` over the ranks, in place (no-op in one process)."""
    if _ENV.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        tensor.div_(_ENV.world_size)
    return tensor


def sum_(tensor: Tensor) -> Tensor:
    if _ENV.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def max_int(value: int) -> int:
    """The largest of every rank's ``value`` (peak memory over the ranks)."""
    if not _ENV.enabled:
        return value
    t = torch.tensor([value], dtype=torch.long, device=_collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def mean_float(value: float) -> float:
    if not _ENV.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=_collective_device())
    return float(average_(t).item())


def broadcast_buffers(model: nn.Module) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics) at the end of a phase."""
    if _ENV.enabled:
        for buf in model.buffers():
            dist.broadcast(buf.data, src=0)


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not _ENV.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not _ENV.enabled:
        return [obj]
    out: list[Any] = [None] * _ENV.world_size
    dist.all_gather_object(out, obj)
    return out


def shards(shard: bool, drop_last: bool) -> bool:
    """Whether a loader asked to ``shard`` does so: only in a distributed run, and only when it
    drops the last partial batch (every rank must take the same number of steps)."""
    if not (shard and _ENV.enabled):
        return False
    if not drop_last:
        raise ValueError("a sharded loader drops the last partial batch (every rank takes equal steps)")
    return True


def shard_batches(indices: Tensor, batch_size: int, drop_last: bool) -> list[Tensor]:
    """This rank's part of every batch: the global batches of ``batch_size`` (the budget's, in the
    order every rank computes alike), each split into ``world_size`` equal contiguous parts."""
    world, rank = _ENV.world_size, _ENV.rank
    if batch_size % world:
        raise UserError(
            f"batch_size={batch_size} does not split evenly over {world} processes: use a multiple of {world}"
        )
    part = batch_size // world
    out = []
    for start in range(0, len(indices), batch_size):
        idx = indices[start : start + batch_size]
        if drop_last and len(idx) < batch_size:
            break
        out.append(idx[rank * part : (rank + 1) * part])
    return out


def _collective_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if _ENV.backend == "nccl" else torch.device("cpu")
