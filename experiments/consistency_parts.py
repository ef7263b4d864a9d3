"""The pieces of the consistency experiment (experiments/consistency.py) that need no training:
which architectures, which ground truth, which earlier retrains may be reused, the table."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig

from analysis.protocols import binned_sample, unique_cells
from nasbench.context import RunContext
from nasbench.errors import UserError
from nasbench.nb201_truth import DATASETS, NB201Truth, ground_truth_path, load_ground_truth
from nasbench.records import atomic_write
from nasbench.spaces.base import Arch, SearchSpace

#: the budget keys that decide a stand-alone retrain; two experiments may share retrains only
#: when these, the space, scale and seed agree (``retrain_from=``)
RETRAIN_KEYS = (
    "data",
    "batch_size",
    "lr",
    "momentum",
    "nesterov",
    "weight_decay",
    "label_smoothing",
    "warmup_epochs",
    "lr_min",
    "grad_clip",
    "retrain_epochs",
    "train_subset",
    "test_subset",
    "augment",
    "augmentation",
)
#: retrain keys added later, left out of a recipe at these values so older records still match
RECIPE_DEFAULTS = {"lr_min": 0.0, "grad_clip": None}
SAMPLINGS = ("uniform", "stratified", "unique", "binned", "table")
COLUMNS = (
    "arch",
    "sampled",
    "picked",
    "params",
    "flops",
    "search_acc",
    "retrain_acc",
    "retrain_source",
    "retrain_wall_s",
    "gt_rank",
    "retrain_accs",
)


@dataclass
class Row:
    """One architecture of the experiment."""

    arch: Arch
    sampled: bool
    picked: bool
    params: int | None = None
    flops: int | None = None
    search_acc: float | None = None
    retrain_acc: float | None = None
    retrain_source: str = ""
    retrain_wall_s: float | None = None
    gt_rank: int | None = None
    #: per retrain seed, when the architecture was retrained with several (the noise ceiling);
    #: ``retrain_acc`` is their mean
    retrain_accs: list[float] | None = None


def truth_file(cfg: DictConfig) -> Path | None:
    """The ground-truth file of this run: ``ground_truth=auto`` (the default) is NAS-Bench-201's
    shipped table for space=nb201 on its data sets and none (retrain) elsewhere; null is none."""
    return ground_truth_path(cfg.ground_truth, str(cfg.space.name), str(cfg.data.name))


def truth_for(cfg: DictConfig, ctx: RunContext) -> NB201Truth | None:
    """The ground truth ``ground_truth=`` names, when it has this run's data set: NAS-Bench-201's
    table (space=nb201, its data sets; the shipped one by default), or a table the suite built for
    this space and data set (experiments/ground_truth.py)."""
    path = truth_file(cfg)
    if path is None:
        return None
    truth = load_ground_truth(path)
    if ctx.data.name in truth.datasets() and (ctx.space.name == "nb201" or ctx.data.name not in DATASETS):
        return truth
    if ctx.space.name != "nb201":
        raise UserError(
            f"ground_truth {cfg.ground_truth} has no {ctx.data.name} column for space={ctx.space.name}: NAS-Bench-201's"
            " table needs space=nb201; a table built by experiments/ground_truth.py names its data set in its"
            " columns; drop ground_truth to retrain each architecture"
        )
    if ctx.data.name not in DATASETS:
        raise UserError(
            f"NAS-Bench-201 has ground truth for data sets {', '.join(DATASETS)}, not {ctx.data.name}, and"
            f" {cfg.ground_truth} has no {ctx.data.name}_test_acc_<epochs> column; pass data=... or drop ground_truth"
        )
    raise UserError(
        f"{cfg.ground_truth} has no 200-epoch test accuracy for {ctx.data.name}; it has: {', '.join(truth.datasets())}"
    )


def sample_archs(
    space: SearchSpace, n: int, seed: int, sampling: str, truth: NB201Truth | None, data: str
) -> list[Arch]:
    """``n`` distinct architectures fixed by ``seed``: uniform over the space, or one per
    ground-truth accuracy quantile (``stratified``: the whole accuracy range, not its dense middle);
    or, ignoring ``n``, NAS-Bench-201's published sets (``unique``, ``binned``) or every cell of
    the ground truth (``table``: the sample of a table experiments/ground_truth.py built)."""
    if sampling not in SAMPLINGS:
        raise UserError(f"unknown sampling {sampling!r}; choose one of: {', '.join(SAMPLINGS)}")
    if n > space.size():
        raise UserError(f"n_archs={n}: the {space.name} space has only {space.size()} architectures")
    gen = torch.Generator().manual_seed(seed)
    if sampling == "table":  # every cell of the ground truth: a suite-built table's whole sample
        if truth is None:
            raise UserError("sampling=table takes every architecture of the ground truth: give ground_truth=")
        return [space.decode(str(a)) for a in truth.table(data).index]
    if sampling in ("unique", "binned"):
        return published_set(space, sampling, truth, data)
    if sampling == "stratified":
        if truth is None:
            raise UserError("sampling=stratified spreads architectures over ground-truth accuracy: give ground_truth=")
        ordered = truth.table(data).sort_values(kind="stable").index.to_numpy()
        bins = np.array_split(ordered, n)
        return [space.decode(str(b[int(torch.randint(len(b), (1,), generator=gen))])) for b in bins]
    archs: list[Arch] = []
    while len(archs) < n:
        arch = space.sample(gen)
        if arch not in archs:
            archs.append(arch)
    return archs


def published_set(space: SearchSpace, sampling: str, truth: NB201Truth | None, data: str) -> list[Arch]:
    """NAS-Bench-201's published architecture sets (``n_archs`` does not apply): ``unique``, one
    cell per isomorphism class (6,466; Ning et al.); ``binned``, the best of those cells in each
    non-empty bin of 400 equal bins of the ground truth's accuracy range (SUMNAS, DYNAS)."""
    if truth is None or truth.classes is None:
        raise UserError(
            f"sampling={sampling} is a NAS-Bench-201 protocol: give ground_truth= a table with a unique_str column"
            " (space=nb201 on cifar10, cifar100 or imagenet16 reads the shipped one by default)"
        )
    accuracy = truth.table(data)
    frame = pd.DataFrame({"arch_str": accuracy.index, "acc": accuracy.to_numpy()})
    frame["unique_str"] = truth.classes.reindex(frame["arch_str"]).to_numpy()
    chosen = unique_cells(frame)
    if sampling == "binned":
        chosen = binned_sample(chosen, "acc", bins=400)
    return [space.decode(a) for a in chosen["arch_str"]]


def retrain_recipe(ctx: RunContext, cfg: DictConfig) -> dict[str, Any]:
    """What decides a retrain's result, in the JSON form it is recorded in."""
    recipe = {k: ctx.budget.get(k) for k in RETRAIN_KEYS}
    for key, default in RECIPE_DEFAULTS.items():  # at their default, as records written before them
        if recipe.get(key, default) == default:
            recipe.pop(key, None)
    recipe.update(space=ctx.space.name, scale=cfg.scale.name, seed=int(cfg.seed))
    return json.loads(json.dumps(recipe))


def reused_retrains(folder: Any, ctx: RunContext, cfg: DictConfig) -> dict[str, float]:
    """Retrain accuracies of another consistency folder, by architecture string; refused in one
    line unless that folder used the same retrain recipe, space, scale and seed."""
    if not folder:
        return {}
    folder = Path(str(folder)).expanduser()
    try:
        other = json.loads((folder / "consistency.json").read_text())
        with open(folder / "consistency.csv", newline="") as f:
            table = list(csv.DictReader(f))
    except (OSError, ValueError):
        raise UserError(
            f"retrain_from={folder} holds no readable consistency.json and consistency.csv: give the folder of"
            " an earlier experiments/consistency.py run"
        ) from None
    theirs = {**other.get("protocol", {}).get("retrain_recipe", {})}
    theirs.update(space=other.get("space"), scale=other.get("scale"), seed=other.get("seed"))
    mine = retrain_recipe(ctx, cfg)
    for key in mine:
        if theirs.get(key) != mine[key]:
            raise UserError(
                f"retrain_from={folder} retrained with {key}={theirs.get(key)!r}, this run uses {mine[key]!r};"
                " retrains are reused only under the same recipe"
            )
    return {
        r["arch"]: float(r["retrain_acc"])
        for r in table
        if r.get("retrain_source") in ("retrained", "reused") and r.get("retrain_acc")
    }


def write_table(path: Path, space: SearchSpace, rows: list[Row]) -> None:
    """consistency.csv, written atomically (a reader never sees half a table)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS)
    writer.writeheader()
    for row in rows:
        values = {k: getattr(row, k) for k in COLUMNS if k != "arch"}
        if row.retrain_accs is not None:  # one cell: the seeds' accuracies, in seed order
            values["retrain_accs"] = ";".join(repr(float(a)) for a in row.retrain_accs)
        writer.writerow({"arch": space.encode(row.arch), **{k: "" if v is None else v for k, v in values.items()}})
    atomic_write(path, lambda tmp: Path(tmp).write_text(out.getvalue()))
