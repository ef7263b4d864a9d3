"""The one training loop every method uses.

Every method gets the same weight optimizer (SGD with momentum, no weight decay on BatchNorm
and bias parameters, as in the official DSNAS/SPOS code), the same schedule (linear warm-up,
cosine to zero; DSNAS Sec. 5: lr 0.5 at batch 1024, 5 warm-up epochs of 240), the same loss
(cross-entropy with label smoothing 0.1) and the same data. A method supplies only its step
function: what one training batch does to the weights and to alpha.
"""

from __future__ import annotations

import json
import math
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from nasbench import distributed
from nasbench.budget import BudgetMeter, PhaseRecord
from nasbench.checkpoint import Checkpointer
from nasbench.data import DataBundle, TensorImages, on_device, split, subset
from nasbench.device import autocast, compiled
from nasbench.errors import UserError
from nasbench.loaders import make_loader


@dataclass
class StepOutput:
    """What a step reports: the batch loss (detached), correct predictions, batch size."""

    loss: Tensor
    correct: Tensor
    batch: int


StepFn = Callable[[Tensor, Tensor], StepOutput]


def train_batch(
    forward: Callable[[Tensor], Tensor],
    x: Tensor,
    y: Tensor,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    optimizer: torch.optim.Optimizer,
    also_zero: Sequence[torch.optim.Optimizer] = (),
    set_to_none: bool = True,
    grad_clip: float | None = None,
) -> StepOutput:
    """Forward, loss, one backward, one optimizer step; ``also_zero`` optimizers (alpha's) get
    their gradients cleared before the backward so that it fills them afresh.

    ``set_to_none=False`` zeroes ``optimizer``'s gradients instead of dropping them, so that a
    parameter the forward did not use (a supernet candidate that was not sampled) still gets its
    weight decay and momentum step, as PyTorch's ``zero_grad`` did before 2.0 and the official
    DSNAS, SPOS and GDAS code relied on. Gradients that do not exist yet are created as zeros,
    so every candidate decays from the first step (the official code: from its first sample, a
    difference of the first few steps) and a resumed run equals an uninterrupted one.
    ``grad_clip``: the weights' gradient norm is clipped to it before the step
    (``clip_grad_norm_``; the budget's ``grad_clip``, as DARTS, GDAS and SNAS)."""
    with autocast(x.device.type):  # bf16 on GPUs by default (``precision``); off on the CPU
        out = forward(x)
        loss = loss_fn(out, y)
    logits = out[0] if isinstance(out, tuple) else out  # (logits, auxiliary logits): DARTS's evaluation network
    optimizer.zero_grad(set_to_none=set_to_none)
    if not set_to_none:  # every gradient exists from the first step: a resumed run (whose gradients
        # were not saved) then decays exactly what the uninterrupted run decays
        for group in optimizer.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    param.grad = torch.zeros_like(param)
    for opt in also_zero:
        opt.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip is not None:
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        nn.utils.clip_grad_norm_(params, float(grad_clip))
    optimizer.step()
    return StepOutput(loss.detach(), (logits.argmax(1) == y).sum(), y.shape[0])


def plain_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    grad_clip: float | None = None,
) -> StepFn:
    """One training step of a stand-alone network (finetune, retrain, the benchmark's floor);
    through ``torch.compile`` with ``compile=true`` (nasbench.device.compiled)."""
    forward = compiled(model)

    def step(x: Tensor, y: Tensor) -> StepOutput:
        return train_batch(forward, x, y, loss_fn, optimizer, grad_clip=grad_clip)

    return step


class NonFiniteLoss(UserError):
    """The loss became NaN or infinite; the message names phase, epoch and step."""


def weights_finite(model: nn.Module) -> bool:
    """Whether every parameter of ``model`` is finite (one device sync)."""
    sums = [p.detach().float().abs().sum() for p in model.parameters()]
    return not sums or bool(torch.isfinite(torch.stack(sums).sum()))


def weight_optimizer(model: nn.Module, cfg: Mapping[str, Any]) -> torch.optim.SGD:
    """SGD with momentum; weight decay on conv and linear weights only."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    return torch.optim.SGD(
        [{"params": decay, "weight_decay": float(cfg["weight_decay"])}, {"params": no_decay, "weight_decay": 0.0}],
        lr=float(cfg["lr"]),
        momentum=float(cfg["momentum"]),
        nesterov=bool(cfg.get("nesterov", False)),
    )


def grad_clip(cfg: Mapping[str, Any]) -> float | None:
    """The budget's ``grad_clip`` (None: no clipping)."""
    value = cfg.get("grad_clip")
    return None if value is None else float(value)


class WarmupCosine:
    """Linear warm-up from ``start_lr`` over ``warmup_steps``, then cosine from ``base_lr`` to
    ``final_lr`` (the budget's ``lr_min``: 0 for DSNAS's recipe, 0.001 for NAS-Bench-201's).

    ``horizon_steps`` may exceed the steps a phase actually runs: DSNAS searches for 80 epochs of
    a 240-epoch cosine and forks there (official code), so its search phase stops a third of the way.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        base_lr: float,
        horizon_steps: int,
        warmup_steps: int = 0,
        start_lr: float = 1e-4,
        final_lr: float = 0.0,
    ) -> None:
        self.optimizer, self.base_lr, self.final_lr = optimizer, base_lr, float(final_lr)
        self.horizon, self.warmup, self.start_lr = max(1, horizon_steps), warmup_steps, start_lr
        self.step_count = 0
        self._apply()

    def lr(self) -> float:
        t = self.step_count
        if t < self.warmup:
            return self.start_lr + (self.base_lr - self.start_lr) * t / self.warmup
        progress = min(1.0, (t - self.warmup) / max(1, self.horizon - self.warmup))
        return self.final_lr + 0.5 * (self.base_lr - self.final_lr) * (1.0 + math.cos(math.pi * progress))

    def _apply(self) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr()

    def step(self) -> None:
        self.step_count += 1
        self._apply()

    def state_dict(self) -> dict[str, int]:
        return {"step_count": self.step_count}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        self.step_count = int(state["step_count"])
        self._apply()


class ValidStream:
    """Held-out batches without end, reshuffled each pass (``valid:<pass>``); its position is part
    of a checkpoint, so a resumed bilevel search draws the same held-out batches."""

    def __init__(self, loader: Any, device: torch.device) -> None:
        self.loader, self.device = loader, device
        self.passes, self.taken = 0, 0  # finished passes; batches taken from the current one
        self._batches: Iterator[tuple[Tensor, Tensor]] | None = None

    def __iter__(self) -> ValidStream:
        return self

    def __next__(self) -> tuple[Tensor, Tensor]:
        while True:
            if self._batches is None:
                self.loader.set_epoch(zlib.crc32(f"valid:{self.passes}".encode()))
                self.loader.skip(self.taken)
                self._batches = iter(self.loader)
            try:
                x, y = next(self._batches)
            except StopIteration:
                self.passes, self.taken, self._batches = self.passes + 1, 0, None
                continue
            self.taken += 1
            return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def state_dict(self) -> dict[str, int]:
        return {"passes": self.passes, "taken": self.taken}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        self.passes, self.taken, self._batches = int(state["passes"]), int(state["taken"]), None


class Trainer:
    """Loaders, loss, epochs and metrics for one run, shared by every phase of every method."""

    def __init__(
        self,
        cfg: Mapping[str, Any],
        data: DataBundle,
        device: torch.device,
        meter: BudgetMeter,
        metrics_path: Any = None,
        seed: int = 0,
        progress: bool = True,
    ) -> None:
        self.cfg, self.data, self.device, self.meter = cfg, data, device, meter
        self.metrics_path, self.seed, self.progress = metrics_path, seed, progress
        self.sinks: list[Any] = []  # more places each metrics line goes (nasbench.tensorboard_log)
        # in-memory sets move to the device once; every loader of the run shares them
        self.train_set = on_device(subset(data.train, cfg.get("train_subset")), device)
        self.test_set = on_device(subset(data.test, cfg.get("test_subset")), device)
        # search trains the weights on one part of the training set and holds the other out for
        # alpha steps, rewards and candidate scoring; finetune and retrain use all of it
        self.search_set, self.valid_set = split(
            self.train_set, float(cfg.get("valid_fraction", 0.2)), int(cfg.get("split_seed", 0))
        )
        self.criterion = nn.CrossEntropyLoss(label_smoothing=float(cfg.get("label_smoothing", 0.0)))
        self._loaders: dict[str, Any] = {}
        #: the run's checkpoints (experiments/run.py sets one for its run folder; none by default)
        self.checkpoint = Checkpointer(None)

    # ----- data ----------------------------------------------------------------------------
    def _loader(
        self,
        part: str,
        augment: bool,
        shuffle: bool = True,
        shard: bool = False,
        batch_size: int | None = None,
        cutout: int = 0,
    ) -> Any:
        """``shard``: in a distributed run, this rank's part of every batch (training phases
        only; scoring, BatchNorm recalibration and evaluation read whole sets on every rank).
        ``batch_size`` (default: the budget's) and ``cutout``: an evaluation protocol's retrain
        (nasbench/retrain_recipe.py)."""
        shard = shard and distributed.current().enabled
        batch = int(batch_size or self.cfg["batch_size"])
        key = f"{part}-{augment}-{shuffle}" + ("-shard" if shard else "")
        key += f"-b{batch}" if batch_size else ""
        key += f"-cutout{cutout}" if cutout else ""
        if key not in self._loaders:
            data = {"train": self.train_set, "search": self.search_set, "valid": self.valid_set}[part]
            extra = dict(self.data.augment) if augment and self.cfg.get("augment", True) else None
            if cutout and extra is not None:
                if not isinstance(data, TensorImages):
                    raise UserError(
                        f"cutout={cutout}: cutout is implemented for in-memory data sets (CIFAR, Fashion-MNIST),"
                        f" not for {self.data.name}; set the space's cutout to 0"
                    )
                extra.update(cutout=cutout, cutout_fill=list(self.data.spec.mean))
            self._loaders[key] = make_loader(
                data,
                batch,
                shuffle=shuffle,
                drop_last=shuffle,
                seed=self.seed + {"train": 0, "search": 0, "valid": 7919}[part],
                augment=extra,
                workers=int(self.cfg.get("workers", 2)),
                shard=shard,
                device=self.device,
            )
        return self._loaders[key]

    def train_loader(self, augment: bool = True) -> Any:
        """The whole training set: finetune, retrain, BatchNorm recalibration of a final child."""
        return self._loader("train", augment)

    def search_loader(self, augment: bool = True) -> Any:
        """The training part of the search split: supernet weights of every method."""
        return self._loader("search", augment)

    def valid_loader(self, augment: bool = False, shuffle: bool = False) -> Any:
        """The held-out part of the search split (alpha steps augment it, as DARTS does)."""
        return self._loader("valid", augment, shuffle)

    def valid_stream(self, augment: bool = True) -> ValidStream:
        """Held-out batches without end, reshuffled each pass: one per alpha step (bilevel)."""
        return ValidStream(self._loader("valid", augment, True, shard=True), self.device)

    def test_loader(self) -> Any:
        if "test" not in self._loaders:
            self._loaders["test"] = make_loader(
                self.test_set,
                int(self.cfg.get("eval_batch_size", 500)),
                shuffle=False,
                workers=int(self.cfg.get("workers", 2)),
                device=self.device,
            )
        return self._loaders["test"]

    def steps_per_epoch(self, search: bool = False, batch_size: int | None = None) -> int:
        if batch_size:
            return len(self._loader("search" if search else "train", True, batch_size=batch_size))
        return len(self.search_loader() if search else self.train_loader())

    def loss(self, logits: Tensor, target: Tensor) -> Tensor:
        return self.criterion(logits, target)

    # ----- the loop ------------------------------------------------------------------------
    def log(self, record: Mapping[str, Any]) -> None:
        """Append one line to metrics.jsonl (rank 0), and hand it to every extra sink (TensorBoard)."""
        if self.metrics_path is not None and distributed.current().is_main:
            with open(self.metrics_path, "a") as f:
                f.write(json.dumps(record) + "\n")
                f.flush()
            for sink in self.sinks:
                sink.add(record)

    def run_phase(
        self,
        name: str,
        epochs: int,
        step: StepFn,
        model: nn.Module,
        schedule: WarmupCosine | None = None,
        on_epoch_start: Callable[[int], Mapping[str, Any] | None] | None = None,
        epoch_info: Callable[[], Mapping[str, Any]] | None = None,
        search: bool = False,
        counted: bool = True,
        optimizer: torch.optim.Optimizer | None = None,
        state: Mapping[str, Any] | None = None,
        loader_options: Mapping[str, Any] | None = None,
    ) -> None:
        """Train ``epochs`` epochs of ``step`` over the training set, metered as phase ``name``
        (``counted=False``: a measurement of the benchmark, left out of the run's device-hours).

        ``on_epoch_start(epoch)`` may return fields for the epoch's metrics record (early fix);
        ``epoch_info()`` adds fields at the epoch's end (temperature, alpha entropy).
        ``search=True`` trains on the search split's training part instead of the whole set;
        ``loader_options`` (``batch_size``, ``cutout``) change its loader (an evaluation recipe).

        Every epoch is a checkpoint unit (nasbench.checkpoint): ``model``, ``schedule``,
        ``optimizer``, ``step`` (if it keeps state) and the named objects of ``state`` go into the
        run's checkpoint, and a resumed run skips the epochs it lists as done.
        """
        ck = self.checkpoint
        for key, obj in {"model": model, "schedule": schedule, "optimizer": optimizer, "step": step}.items():
            if obj is not None and (key != "step" or hasattr(obj, "state_dict")):
                ck.track(f"{name}.{key}", obj)
        for key, obj in (state or {}).items():
            ck.track(key, obj)
        first = next((e for e in range(epochs) if not ck.skip(f"{name}/{e + 1}")), epochs)
        if first == epochs:  # done before the interruption
            record = ck.open_phase(name)
            if record is not None and epochs > 0:  # saved before the phase closed
                self.meter.phases.append(PhaseRecord(**record))
            return
        loader = self._loader("search" if search else "train", True, shard=True, **(loader_options or {}))
        with self.meter.phase(name, counted, resume=ck.open_phase(name)) as record:
            for epoch in range(first, epochs):
                ck.begin_unit()
                self._epoch(name, epoch, epochs, step, model, schedule, on_epoch_start, epoch_info, loader, record)
                if ck.enabled and not weights_finite(model):  # never save a diverged state
                    raise NonFiniteLoss(f"the weights became non-finite in phase {name!r}, epoch {epoch + 1}")
                ck.done.append(f"{name}/{epoch + 1}")
                ck.save(f"after phase {name!r}, epoch {epoch + 1} of {epochs}")
                ck.stop_if_asked(f"after phase {name!r}, epoch {epoch + 1} of {epochs}")
            distributed.broadcast_buffers(model)  # rank 0's BatchNorm statistics on every rank

    def _epoch(
        self,
        name: str,
        epoch: int,
        epochs: int,
        step: StepFn,
        model: nn.Module,
        schedule: WarmupCosine | None,
        on_epoch_start: Callable[[int], Mapping[str, Any] | None] | None,
        epoch_info: Callable[[], Mapping[str, Any]] | None,
        loader: Any,
        record: PhaseRecord,
    ) -> None:
        """One epoch of :meth:`run_phase`, from its first batch or from where a checkpoint saved it."""
        ck = self.checkpoint
        main, world = distributed.current().is_main, distributed.current().world_size
        part = ck.partial(name, epoch)
        start = time.perf_counter()
        loader.set_epoch(zlib.crc32(f"{name}:{epoch}".encode()))
        model.train()
        if part is None:
            extra = dict((on_epoch_start(epoch) if on_epoch_start else None) or {})
            first_step, wall_before = 0, 0.0
            loss_sum = torch.zeros((), device=self.device)
            correct = torch.zeros((), dtype=torch.long, device=self.device)
            seen = 0
        else:  # the epoch's start hook ran before the interruption; its state is restored
            extra, first_step, wall_before = dict(part["extra"]), int(part["step"]), float(part["wall_s"])
            loss_sum = part["loss_sum"].to(self.device)
            correct = part["correct"].to(self.device)
            seen = int(part["seen"])
        loader.skip(first_step)
        bar = tqdm(
            loader,
            total=len(loader),
            initial=first_step,
            desc=f"{name} {epoch + 1}/{epochs}",
            unit="batch",
            disable=not (self.progress and main),
            leave=True,
            mininterval=1.0,
            dynamic_ncols=True,
        )
        for i, (x, y) in enumerate(bar, start=first_step):
            try:
                out = step(x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True))
            except NonFiniteLoss as err:  # found inside the step (alpha): say where
                raise NonFiniteLoss(f"{err} in phase {name!r}, epoch {epoch + 1}, at step {i + 1}") from None
            if schedule is not None:
                schedule.step()
            loss_sum += out.loss * out.batch
            correct += out.correct
            seen += out.batch
            record.add_batch(out.batch * world)
            if i % 50 == 0 or i == len(loader) - 1:
                mean_loss = (loss_sum / max(seen, 1)).item()
                if not math.isfinite(mean_loss):
                    raise NonFiniteLoss(
                        f"the loss became {mean_loss} in phase {name!r}, epoch {epoch + 1}, by step {i + 1}"
                    )
                bar.set_postfix(loss=f"{mean_loss:.3f}", acc=f"{correct.item() / max(seen, 1):.3f}")
            due = ck.due() if i < len(loader) - 1 else 0  # the epoch's end saves anyway
            if due:
                if not math.isfinite(float(loss_sum)):  # never save a diverged state
                    raise NonFiniteLoss(f"the loss became nan in phase {name!r}, epoch {epoch + 1}, by step {i + 1}")
                where = f"in phase {name!r}, epoch {epoch + 1} of {epochs}, at step {i + 1} of {len(loader)}"
                ck.save(
                    where,
                    partial={
                        "phase": name,
                        "epoch": epoch,
                        "step": i + 1,
                        "extra": extra,
                        "loss_sum": loss_sum.detach().cpu(),
                        "correct": correct.detach().cpu(),
                        "seen": seen,
                        "wall_s": wall_before + time.perf_counter() - start,
                    },
                )
                if due == 2:
                    bar.close()
                    ck.stop_if_asked(where)
        bar.close()
        record.epochs += 1
        # the epoch's figures over every rank's images
        images = torch.tensor(float(seen), device=loss_sum.device).double()
        totals = distributed.sum_(torch.stack([loss_sum.double(), correct.double(), images]))
        loss_total, correct_total, seen_total = totals.tolist()
        self.log(
            {
                "phase": name,
                "epoch": epoch + 1,
                "loss": loss_total / max(seen_total, 1),
                "train_acc": correct_total / max(seen_total, 1),
                "images": int(seen_total),
                "lr": schedule.lr() if schedule is not None else None,
                "wall_s": wall_before + time.perf_counter() - start,
                **extra,
                **(epoch_info() if epoch_info else {}),
            }
        )
