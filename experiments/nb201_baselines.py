"""NAS-Bench-201's zero-training baselines on a ground-truth table (methods/table_baselines.py).

    python experiments/nb201_baselines.py                     # NAS-Bench-201's table shipped in nasbench/tables/
    python experiments/nb201_baselines.py ground_truth=NAS-Bench-201-v1_1-096897.pth dataset=cifar100 seeds=100

Runs each algorithm (``algos``: rea, reinforce, random) ``seeds`` times with ``queries`` table
rewards each (the 12-epoch validation accuracy) and looks up each pick's 200-epoch test accuracy.
Writes ``runs.csv`` (one row per search) and ``summary.json`` (mean and standard deviation per
algorithm, the table's best, the settings) to ``out``, and prints the summary table: the line a
supernet method on space=nb201 has to beat, as in NAS-Bench-201's Table 5. Takes seconds.
"""

from __future__ import annotations

import csv
import sys
import time
from pathlib import Path

import hydra
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

import cli
from methods.table_baselines import ALGORITHMS
from nasbench.data import input_spec
from nasbench.errors import UserError, unknown_choice
from nasbench.nb201_truth import DATASETS, ground_truth_path, load_ground_truth
from nasbench.records import atomic_write, atomic_write_json
from nasbench.spaces import SPACES

FIELDS = ("algo", "seed", "arch", "reward_valid12", "test_acc_200", "rank", "queries", "distinct")


def nb201_space():
    """The NAS-Bench-201 cell (only its decisions and strings are used: nothing is built)."""
    cfg = OmegaConf.load(cli.CONF_DIR / "space" / "nb201.yaml")
    spec = input_spec(OmegaConf.load(cli.CONF_DIR / "data" / "cifar10.yaml"))
    return SPACES.get("nb201")(OmegaConf.to_container(cfg.presets.tiny), spec)


def check(cfg: DictConfig) -> None:
    if ground_truth_path(cfg.ground_truth, "nb201") is None:
        raise UserError("give ground_truth=auto (the shipped table), a NAS-Bench-201 CSV or an official .pth file")
    if cfg.dataset not in DATASETS:
        raise unknown_choice("dataset", cfg.dataset, DATASETS)
    for algo in cfg.algos:
        if algo not in ALGORITHMS:
            raise unknown_choice("algo", algo, ALGORITHMS)
    if int(cfg.queries) < 1 or int(cfg.seeds) < 1:
        raise UserError(f"queries={cfg.queries} and seeds={cfg.seeds} must be at least 1")


def baselines(cfg: DictConfig) -> pd.DataFrame:
    check(cfg)
    truth = load_ground_truth(ground_truth_path(cfg.ground_truth, "nb201"))
    space, data = nb201_space(), str(cfg.dataset)
    rewards = truth.table(data, "valid12")
    truth.table(data, "test")  # both columns must be there before anything runs

    def reward(arch) -> float:
        return float(rewards[space.encode(arch)])

    options = {"rea": dict(cfg.rea), "reinforce": dict(cfg.reinforce), "random": {}}
    out = Path(cfg.out or f"outputs/nb201_baselines/{time.strftime('%Y-%m-%d_%H-%M-%S')}")
    if (out / "runs.csv").exists():
        raise UserError(f"{out} already holds runs.csv; give another out= (nothing was overwritten)")
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for algo in cfg.algos:
        start = time.perf_counter()
        for seed in range(int(cfg.seeds)):
            gen = torch.Generator().manual_seed(seed)
            found = ALGORITHMS[algo](space, reward, int(cfg.queries), gen, **options[algo])
            text = space.encode(found["arch"])
            rows.append(
                {
                    "algo": algo,
                    "seed": seed,
                    "arch": text,
                    "reward_valid12": found["reward"],
                    "test_acc_200": truth.accuracy(text, data),
                    "rank": truth.rank(text, data),
                    "queries": found["queries"],
                    "distinct": found["distinct"],
                }
            )
        print(f"{algo}: {cfg.seeds} searches in {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    frame = pd.DataFrame(rows, columns=FIELDS)
    table = frame.groupby("algo", sort=False)["test_acc_200"].agg(["mean", "std", "count"])
    best = truth.table(data, "test")
    summary = {
        "dataset": data,
        "ground_truth": truth.source,
        "reward": truth.column(data, "valid12"),
        "accuracy": truth.column(data, "test"),
        "queries": int(cfg.queries),
        "seeds": int(cfg.seeds),
        "settings": OmegaConf.to_container(cfg, resolve=True),
        "table_best": {"arch": str(best.idxmax()), "test_acc_200": float(best.max())},
        "algos": {a: {k: float(v) for k, v in r.items()} for a, r in table.iterrows()},
    }

    def write_rows(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=FIELDS)
            writer.writeheader()
            writer.writerows(rows)

    atomic_write(out / "runs.csv", write_rows)
    atomic_write_json(out / "summary.json", summary)
    print(f"{data}, {cfg.queries} queries, {cfg.seeds} seeds; 200-epoch test accuracy of the pick (%):")
    for algo, r in table.iterrows():
        print(f"  {algo:<10} {100 * r['mean']:6.2f} +- {100 * (r['std'] if r['count'] > 1 else 0):.2f}")
    print(f"  {'best cell':<10} {100 * best.max():6.2f}")
    print(f"wrote {out / 'runs.csv'} and {out / 'summary.json'}")
    return frame


@hydra.main(version_base=None, config_path="conf", config_name="nb201_baselines")
def main(cfg: DictConfig) -> None:
    with cli.user_errors():
        baselines(cfg)


if __name__ == "__main__":
    cli.entry(main)
