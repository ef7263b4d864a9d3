"""Side-by-side step benchmark: every configuration's training step against the child's.

    python experiments/bench.py space=shufflenet                  # CPU, the cpu-scale space
    python experiments/bench.py space=shufflenet scale=paper device=cuda batch_size=128

For each configuration (``child``, the stand-alone network of one architecture, is the floor;
the others are the search steps of every method, with its default estimator, forced onto that
same architecture) it measures, in a fresh process, the median wall time of a training step
(bilevel methods' alpha steps amortised over ``alpha_every``; experiments/bench_step.py), images
per second and the peak memory, on the same random batch. A search step's time ratio is taken
against the child timed alternately with it in that process (``paired_child_ms``), so a machine
slowing down between processes does not bias it; the memory ratio is against the child's own
process. Configurations are interleaved over ``repeats`` rounds. With ``loader=true`` the
training loader of a run (the real data set and augmentation) is timed too, as the row
``loader`` (ms per batch, images per second), so that it can be checked against the steps it
feeds. It prints a table and writes it as CSV (``out=``).
"""

from __future__ import annotations

import csv
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

import cli
from methods.base import METHODS
from nasbench.data import input_spec, load_data, make_loader, on_device
from nasbench.device import configure, resolve_device
from nasbench.errors import UserError, unknown_choice
from run import build_space

FIELDS = (
    "round",
    "method",
    "step_ms",
    "step_ms_mean",
    "img_per_s",
    "peak_mem_bytes",
    "time_ratio",
    "mem_ratio",
    "paired_child_ms",
)


def loader_throughput(cfg: DictConfig, device: torch.device, batch: int) -> dict:
    """Milliseconds per batch of the training loader as a run builds it (the real data set, the
    budget's augmentation, on the run's device), over ``loader_batches`` batches."""
    data = load_data(cfg.data)
    augment = data.augment if cfg.budget.get("augment", True) else None  # as nasbench.train.Trainer
    loader = make_loader(
        on_device(data.train, device),
        batch,
        shuffle=True,
        drop_last=True,
        augment=augment,
        workers=int(cfg.budget.get("workers", 2)),
    )
    n = min(int(cfg.loader_batches), len(loader))
    times, start = [], time.perf_counter()
    for i, (x, _) in enumerate(loader):
        x.to(device, non_blocking=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        now = time.perf_counter()
        times.append(now - start)
        start = now
        if i + 1 >= n:
            break
    return {"step_ms": 1000 * statistics.median(times), "step_ms_mean": 1000 * statistics.mean(times)}


def bench(cfg: DictConfig) -> list[dict]:
    device = resolve_device(cfg.device)
    precision = configure(device, cfg.precision)
    spec = input_spec(cfg.data)
    space = build_space(cfg, spec)
    arch = space.parse_arch(
        OmegaConf.to_container(cfg.arch)
        if cfg.arch is not None
        else ",".join(map(str, space.sample(torch.Generator().manual_seed(int(cfg.seed)))))
    )
    batch = int(cfg.batch_size or cfg.budget.batch_size)
    if batch < 1 or int(cfg.steps) < 1 or int(cfg.repeats) < 1:
        raise UserError("batch_size, steps and repeats must be at least 1")
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
                "precision": precision,
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
                lines = proc.stderr.strip().splitlines() or ["(no message)"]
                raise UserError(f"benchmark of {config} failed: {lines[-1]}")
            results[config] = json.loads(proc.stdout.strip().splitlines()[-1])
        if cfg.loader:
            results["loader"] = {**loader_throughput(cfg, device, batch), "peak_mem_bytes": None}
        floor = results["child"]
        for config, res in results.items():
            mem = res["peak_mem_bytes"]
            # a search step's ratio: against the child timed alternately in its own process
            ratio = res["paired_step_ms"] / res["child_step_ms"] if "paired_step_ms" in res else None
            rows.append(
                {
                    "round": r,
                    "method": config,
                    "step_ms": round(res["step_ms"], 3),
                    "step_ms_mean": round(res["step_ms_mean"], 3),
                    "img_per_s": round(1000 * batch / res["step_ms"], 1),
                    "peak_mem_bytes": mem,
                    "time_ratio": round(ratio if ratio is not None else res["step_ms"] / floor["step_ms"], 3),
                    "mem_ratio": None if mem is None else round(mem / max(floor["peak_mem_bytes"], 1), 3),
                    "paired_child_ms": round(res["child_step_ms"], 3) if "child_step_ms" in res else None,
                }
            )
    report(cfg, space, arch, batch, device, precision, rows)
    if cfg.out:
        with open(cfg.out, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=FIELDS)
            writer.writeheader()
            writer.writerows(rows)
    return rows


def report(cfg: DictConfig, space, arch, batch: int, device: torch.device, precision: str, rows: list[dict]) -> None:
    """The table, then medians over rounds of each ratio, and the loader against the steps."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(
        f"space={space.name} scale={cfg.scale.name} arch={space.encode(arch)} batch={batch} device={device}"
        f" ({name}, {precision}, channels_last={bool(cfg.channels_last)}, torch {torch.__version__})"
    )
    head = ("round", "method", "step_ms", "img/s", "peak_MiB", "time_ratio", "mem_ratio")
    print(" ".join(f"{h:>{w}}" for h, w in zip(head, (5, 10, 9, 9, 9, 10, 9))))
    for row in rows:
        mem = "-" if row["peak_mem_bytes"] is None else f"{row['peak_mem_bytes'] / 2**20:.1f}"
        ratio = "-" if row["mem_ratio"] is None else f"{row['mem_ratio']:.3f}"
        print(
            f"{row['round']:>5} {row['method']:>10} {row['step_ms']:>9.2f} {row['img_per_s']:>9.0f} {mem:>9}"
            f" {row['time_ratio']:>10.3f} {ratio:>9}"
        )
    if int(cfg.repeats) > 1:
        print("median over rounds:")
        for method in dict.fromkeys(r["method"] for r in rows):
            mine = [r for r in rows if r["method"] == method]
            time_ratio = statistics.median(r["time_ratio"] for r in mine)
            mem = [r["mem_ratio"] for r in mine if r["mem_ratio"] is not None]
            mem_text = f", memory x{statistics.median(mem):.3f}" if mem else ""
            print(f"  {method:>10}: time x{time_ratio:.3f}{mem_text}")
    loader = [r for r in rows if r["method"] == "loader"]
    if loader:
        load = statistics.median(r["img_per_s"] for r in loader)
        fastest = max((r for r in rows if r["method"] != "loader"), key=lambda r: r["img_per_s"])
        verdict = "not the bottleneck" if load > fastest["img_per_s"] else "THE BOTTLENECK"
        print(
            f"loader: {load:.0f} img/s against the fastest step ({fastest['method']}) {fastest['img_per_s']:.0f} img/s:"
            f" x{load / fastest['img_per_s']:.1f}, {verdict}"
        )


@hydra.main(version_base=None, config_path="conf", config_name="bench")
def main(cfg: DictConfig) -> None:
    with cli.user_errors():
        bench(cfg)


if __name__ == "__main__":
    cli.entry(main, groups=("space", "data", "scale"))
