"""The parts of resume, one at a time: loaders that skip, streams and generators that
restart where they stopped, atomic writes, the meter across an interruption, refused files."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from nasbench.arch_params import ArchParameters
from nasbench.budget import BudgetMeter
from nasbench.checkpoint import config_differences, load_checkpoint, rng_state, set_rng_state
from nasbench.data import TensorImages
from nasbench.errors import UserError
from nasbench.loaders import TensorLoader, make_loader
from nasbench.records import atomic_write
from nasbench.train import ValidStream, WarmupCosine


def _images(n: int = 50) -> TensorImages:
    g = torch.Generator().manual_seed(0)
    return TensorImages(torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8, generator=g), torch.arange(n) % 10)


def test_a_loader_that_skips_gives_the_rest_of_an_unbroken_pass_with_the_same_augmentation() -> None:
    loader = TensorLoader(_images(), 8, shuffle=True, augment={"crop_padding": 2, "hflip": True}, drop_last=True)
    loader.set_epoch(3)
    full = list(loader)
    loader.skip(4)
    rest = list(loader)
    assert len(rest) == len(full) - 4
    for (x, y), (xr, yr) in zip(full[4:], rest):
        assert torch.equal(x, xr) and torch.equal(y, yr)
    assert len(list(loader)) == len(full)  # a skip applies to one pass only


def test_a_dataset_loader_that_skips_keeps_the_shuffled_order() -> None:
    data = torch.utils.data.TensorDataset(torch.arange(50).float(), torch.arange(50))
    loader = make_loader(data, 8, shuffle=True, seed=2, workers=0)
    loader.set_epoch(1)
    full = [y for _, y in loader]
    loader.skip(3)
    rest = [y for _, y in loader]
    assert [t.tolist() for t in rest] == [t.tolist() for t in full[3:]]


def test_the_held_out_stream_restarts_where_it_stopped_even_across_passes() -> None:
    def stream() -> ValidStream:
        return ValidStream(TensorLoader(_images(20), 8, shuffle=True, drop_last=True), torch.device("cpu"))

    unbroken = stream()
    labels = [next(unbroken)[1].tolist() for _ in range(7)]  # 2 batches a pass: 3 passes and one more
    first = stream()
    for _ in range(3):
        next(first)
    second = stream()
    second.load_state_dict(first.state_dict())
    assert [next(second)[1].tolist() for _ in range(4)] == labels[3:]


def test_generators_schedules_and_fixed_decisions_round_trip() -> None:
    torch.manual_seed(5)
    random.seed(5)
    np.random.seed(5)
    saved = rng_state()
    expected = (torch.rand(3), random.random(), np.random.rand())
    set_rng_state(saved)
    assert torch.equal(torch.rand(3), expected[0]) and random.random() == expected[1]
    assert np.random.rand() == expected[2]

    arch = ArchParameters(torch.ones(4, 3, dtype=torch.bool), 0.0, 1.0, torch.Generator().manual_seed(0))
    arch.fix(2, 1)
    other = ArchParameters(torch.ones(4, 3, dtype=torch.bool))
    other.load_state_dict(arch.state_dict())
    assert other.fixed == {2: 1} and torch.equal(other.alpha, arch.alpha)
    with torch.no_grad():
        other.alpha[2] += 1.0
    other.restore_fixed()
    assert torch.equal(other.alpha[2], arch.alpha[2])  # the fixed row comes back as saved

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = WarmupCosine(opt, 1.0, 100, warmup_steps=10)
    for _ in range(37):
        schedule.step()
    opt2 = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    again = WarmupCosine(opt2, 1.0, 100, warmup_steps=10)
    again.load_state_dict(schedule.state_dict())
    assert again.lr() == schedule.lr() and opt2.param_groups[0]["lr"] == schedule.lr()


def test_the_meter_adds_the_parts_of_an_interrupted_phase() -> None:
    meter = BudgetMeter(torch.device("cpu"))
    with meter.phase("search") as record:
        record.add_batch(10)
        record.epochs += 1
        snapshot = meter.snapshot()
    assert snapshot["name"] == "search" and snapshot["images"] == 10 and snapshot["wall_s"] > 0
    resumed = BudgetMeter(torch.device("cpu"))
    snapshot["wall_s"] = 100.0
    with resumed.phase("search", resume=snapshot) as record:
        record.add_batch(10)
    (phase,) = resumed.phases
    assert phase.images == 20 and phase.steps == 2 and phase.epochs == 1
    assert 100.0 < phase.wall_s < 110.0 and phase.peak_mem_bytes >= snapshot["peak_mem_bytes"]
    assert phase.device_hours == pytest.approx(phase.wall_s / 3600)


def test_an_atomic_write_that_fails_keeps_the_previous_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    atomic_write(path, lambda tmp: torch.save({"good": 1}, tmp))

    def half_then_fail(tmp: str) -> None:
        Path(tmp).write_bytes(b"half a checkpoint")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, half_then_fail)
    assert torch.load(path, weights_only=True) == {"good": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_files_that_are_not_checkpoints_are_refused_in_one_line(tmp_path: Path) -> None:
    torch.save({"state_dict": {}}, tmp_path / "checkpoint.pt")  # a file of something else
    with pytest.raises(UserError, match="is not a checkpoint of this version of the suite; pass overwrite=true"):
        load_checkpoint(tmp_path)
    (tmp_path / "checkpoint.pt").write_bytes(b"")
    with pytest.raises(UserError, match=r"is damaged \(\w+\) and cannot be resumed"):
        load_checkpoint(tmp_path)


def test_config_differences_name_the_keys() -> None:
    saved = {"seed": 0, "budget": {"lr": 0.2, "batch_size": 64}, "method": {"name": "dsnas"}}
    current = {"seed": 0, "budget": {"lr": 0.1, "batch_size": 64}, "method": {"name": "dsnas"}, "new": 1}
    assert config_differences(saved, current) == ["budget.lr: 0.2 there, 0.1 here", "new: <unset> there, 1 here"]
    assert config_differences(saved, saved) == []
