"""Build a ground-truth table for a space and data set the suite can train.

    python experiments/ground_truth.py space=nb201 data=fashion_mnist n_archs=120 seeds=2
    python experiments/ground_truth.py -m space=nb201 n_archs=120 jobs=2 job=0,1 hydra/launcher=joblib   # two at once
    python experiments/consistency.py method=spos space=nb201 \
        ground_truth=outputs/ground_truth/nb201_fashion_mnist_cpu/ground_truth.csv

``n_archs`` architectures (``sampling``: uniform, or stratified/unique/binned over the ground
truth ``stratify_by`` names: by default, for space=nb201, NAS-Bench-201's CIFAR-10 accuracies in
the table shipped in nasbench/tables/, so that the sample spans the accuracy range) are trained
stand-alone with the shared retrain recipe, each with ``seeds`` seeds
(experiments/consistency.py's replicas: replica 0 is the retrain every consistency run makes).
The table is in the format of ``nb201_accuracies.csv``: ``index, arch_str, unique_str``, the mean
test accuracy in percent as ``<data>_test_acc_<retrain epochs>``, one
``..._seed<k>`` column per seed, ``params``, ``retrain_wall_s``. It loads as ``ground_truth=``
for that space and data set.

Resumable: every finished architecture rewrites this job's part file whole (a temporary file
renamed: never a half row), and the same command continues where a kill left it. Parallel:
``jobs=N job=k`` takes every N-th architecture from the k-th; each job merges the parts into
``ground_truth.csv`` once every architecture is in one of them. ``ground_truth.json`` records the
recipe, the sample and the hours.
"""

from __future__ import annotations

import json
import logging
import time
import zlib
from pathlib import Path

import hydra
import pandas as pd
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

import cli
from consistency import retrain_accuracy
from consistency_parts import SAMPLINGS, retrain_recipe, sample_archs
from nasbench.errors import UserError
from nasbench.flops import count_params
from nasbench.nb201_truth import ground_truth_path, load_ground_truth
from nasbench.records import RunRecord, atomic_write, atomic_write_json
from run import prepare

log = logging.getLogger("ground_truth")


def column(data: str, epochs: int) -> str:
    return f"{data}_test_acc_{epochs}"


def read_part(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"arch_str": str}) if path.exists() else pd.DataFrame()


def write_csv(path: Path, frame: pd.DataFrame) -> None:
    atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False))


def check_meta(path: Path, meta: dict) -> None:
    """A folder already holding a table of another recipe or sample is refused, not mixed."""
    if not path.exists():
        return
    old = json.loads(path.read_text())
    for key in ("space", "data", "scale", "recipe", "sample"):
        if old.get(key) != meta[key]:
            raise UserError(
                f"{path.parent} holds a ground-truth table made with another {key} ({old.get(key)!r}); give another"
                " out= folder, or the same settings to continue it"
            )


def build(cfg: DictConfig) -> Path:
    started = time.perf_counter()
    n, seeds, jobs, job = int(cfg.n_archs), int(cfg.seeds), int(cfg.jobs), int(cfg.job)
    if n < 3 or seeds < 1 or jobs < 1 or not 0 <= job < jobs:
        raise UserError(
            f"n_archs={n}, seeds={seeds}, jobs={jobs}, job={job}: n_archs >= 3, seeds >= 1, 0 <= job < jobs"
        )
    if cfg.sampling not in SAMPLINGS:
        raise UserError(f"unknown sampling {cfg.sampling!r}; choose one of: {', '.join(SAMPLINGS)}")
    out = Path(str(cfg.out)).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    record = RunRecord(HydraConfig.get().runtime.output_dir)
    _, ctx = prepare(cfg, record)
    space, data = ctx.space, ctx.data.name
    table = ground_truth_path(cfg.stratify_by, space.name)  # auto: NAS-Bench-201's shipped table for nb201
    truth = load_ground_truth(table) if table else None
    archs = sample_archs(space, n, int(cfg.sample_seed), str(cfg.sampling), truth, str(cfg.stratify_data))
    texts = [space.encode(a) for a in archs]
    epochs = int(ctx.budget["retrain_epochs"])
    meta = {
        "kind": "ground_truth",
        "space": space.name,
        "data": data,
        "scale": cfg.scale.name,
        "recipe": retrain_recipe(ctx, cfg),
        "sample": {
            "n_archs": len(archs),
            "sampling": str(cfg.sampling),
            "sample_seed": int(cfg.sample_seed),
            "stratify_by": str(cfg.stratify_by) if table else None,  # as given (auto, or a path)
            "seeds": seeds,
            "checksum": zlib.crc32("\n".join(texts).encode()),
        },
    }
    check_meta(out / "ground_truth.json", meta)
    atomic_write_json(out / "ground_truth.json", {**meta, "status": "building"})
    part_path = out / f"ground_truth.part{job}.csv"
    part = read_part(part_path)
    done = set(part["arch_str"]) if not part.empty else set()
    mine = [i for i in range(len(archs)) if i % jobs == job]
    log.info(
        "job %d/%d: %d architectures, %d already done -> %s",
        job,
        jobs,
        len(mine),
        len(done & {texts[i] for i in mine}),
        part_path,
    )
    acc_col = column(data, epochs)
    for count, i in enumerate(mine, 1):
        if texts[i] in done:
            continue
        accs, walls = zip(*(retrain_accuracy(ctx, archs[i], k) for k in range(seeds)))
        row = {"index": i, "arch_str": texts[i]}
        if truth is not None and truth.classes is not None and texts[i] in truth.classes.index:
            row["unique_str"] = truth.classes[texts[i]]
        row[acc_col] = 100 * sum(accs) / len(accs)
        row.update({f"{acc_col}_seed{k}": 100 * a for k, a in enumerate(accs)})
        row.update(params=count_params(space.build_eval_network(archs[i])), retrain_wall_s=sum(walls))
        part = pd.concat([part, pd.DataFrame([row])], ignore_index=True)
        write_csv(part_path, part)  # whole, renamed into place: a kill never leaves half a row
        log.info(
            "%d/%d %s: %.2f%% (%s)", count, len(mine), texts[i], row[acc_col], ", ".join(f"{100 * a:.2f}" for a in accs)
        )
    merge(out, texts, meta, started)
    return out / "ground_truth.csv"


def merge(out: Path, texts: list[str], meta: dict, started: float) -> None:
    """ground_truth.csv from every part, once they hold every architecture; until then nothing."""
    parts = [read_part(p) for p in sorted(out.glob("ground_truth.part*.csv"))]
    table = pd.concat([p for p in parts if not p.empty], ignore_index=True) if parts else pd.DataFrame()
    have = set(table["arch_str"]) if not table.empty else set()
    if not set(texts) <= have:
        log.info(
            "%d of %d architectures done in all parts; the table is merged when every job has finished",
            len(have & set(texts)),
            len(texts),
        )
        return
    table = table[table["arch_str"].isin(texts)].drop_duplicates("arch_str").sort_values("index")
    write_csv(out / "ground_truth.csv", table)
    hours = float(table["retrain_wall_s"].sum()) / 3600
    atomic_write_json(
        out / "ground_truth.json",
        {
            **meta,
            "status": "complete",
            "rows": len(table),
            "retrain_hours": hours,
            "wall_s_last_job": time.perf_counter() - started,
        },
    )
    log.info(
        "ground truth complete: %d architectures, %.2f retrain hours -> %s", len(table), hours, out / "ground_truth.csv"
    )


@hydra.main(version_base=None, config_path="conf", config_name="ground_truth")
def main(cfg: DictConfig) -> None:
    with cli.user_errors():
        build(cfg)


if __name__ == "__main__":
    cli.entry(main)
