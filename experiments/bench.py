"""Side-by-side step benchmark: every configuration's training step against the child's.

    python experiments/bench.py space=shufflenet                  # CPU, the cpu-scale space
    python experiments/bench.py space=shufflenet scale=paper device=cuda batch_size=128

For each configuration (``child``, the stand-alone network of one architecture, is the floor;
the others are the search steps of every method, with its default estimator, forced onto that
same architecture) it measures, in a fresh process, the mean wall time of a training step
(bilevel methods' alpha steps amortised over ``alpha_every``) and the peak memory, on the same
random batch; it prints a table with the ratios to the child and writes it as CSV (``out=``).
Configurations are interleaved over ``repeats`` rounds, and ratios are taken within a round.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

import cli
from methods.base import METHODS
from nasbench.data import input_spec
from nasbench.device import resolve_device
from nasbench.errors import UserError, unknown_choice
from run import build_space

FIELDS = ("round", "method", "step_ms", "step_ms_min", "peak_mem_bytes", "time_ratio", "mem_ratio")


def bench(cfg: DictConfig) -> list[dict]:
    device = resolve_device(cfg.device)
    spec = input_spec(cfg.data)
    space = build_space(cfg, spec)
    arch = space.parse_arch(
        OmegaConf.to_container(cfg.arch)
        if cfg.arch is not None
        else ",".join(map(str, space.sample(torch.Generator().manual_seed(int(cfg.seed)))))
    )
    batch = int(cfg.batch_size or cfg.budget.batch_size)
    if batch < 1 or int(cfg.steps) < 1:
        raise UserError("batch_size and steps must be at least 1")
    configs = list(cfg.configs) if cfg.configs else METHODS.names()
    for config in configs:
        if config != "child" and config not in METHODS:
            raise unknown_choice("benchmark configuration", config, ["child", *METHODS.names()])
    if "child" not in configs:
        configs.insert(0, "child")
    rows = []
    for r in range(int(cfg.repeats)):
        results = {}
        for config in configs:
            job = {
                "config": config,
                "device": str(device),
                "space": space.name,
                "preset": space.preset,
                "spec": {k: list(v) if isinstance(v, tuple) else v for k, v in vars(spec).items()},
                "arch": list(arch),
                "batch_size": batch,
                "steps": int(cfg.steps),
                "warmup": int(cfg.warmup),
                "seed": int(cfg.seed),
                "channels_last": bool(cfg.channels_last),
            }
            proc = subprocess.run(
                [sys.executable, str(Path(__file__).with_name("bench_step.py")), json.dumps(job)],
                capture_output=True,
                text=True,
            )
            if proc.returncode != 0:
                raise UserError(f"benchmark of {config} failed: {proc.stderr.strip().splitlines()[-1]}")
            results[config] = json.loads(proc.stdout.strip().splitlines()[-1])
        floor = results["child"]
        for config in configs:
            res = results[config]
            rows.append(
                {
                    "round": r,
                    "method": config,
                    "step_ms": round(res["step_ms"], 3),
                    "step_ms_min": round(res["step_ms_min"], 3),
                    "peak_mem_bytes": res["peak_mem_bytes"],
                    "time_ratio": round(res["step_ms"] / floor["step_ms"], 3),
                    "mem_ratio": round(res["peak_mem_bytes"] / max(floor["peak_mem_bytes"], 1), 3),
                }
            )
    print(
        f"space={space.name} scale={cfg.scale.name} arch={space.encode(arch)} batch={batch} device={device}"
        f" ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}, torch {torch.__version__})"
    )
    print(f"{'round':>5} {'method':>10} {'step_ms':>9} {'peak_MiB':>9} {'time_ratio':>10} {'mem_ratio':>9}")
    for row in rows:
        print(
            f"{row['round']:>5} {row['method']:>10} {row['step_ms']:>9.2f} {row['peak_mem_bytes'] / 2**20:>9.1f}"
            f" {row['time_ratio']:>10.3f} {row['mem_ratio']:>9.3f}"
        )
    if cfg.out:
        with open(cfg.out, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=FIELDS)
            writer.writeheader()
            writer.writerows(rows)
    return rows


@hydra.main(version_base=None, config_path="conf", config_name="bench")
def main(cfg: DictConfig) -> None:
    with cli.user_errors():
        bench(cfg)


if __name__ == "__main__":
    cli.entry(main, groups=("space", "data", "scale"))
