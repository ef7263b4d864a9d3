"""Side-by-side step benchmark: every configuration's training step against the child's.

    python experiments/bench.py space=shufflenet                  # CPU, the cpu-scale space
    python experiments/bench.py space=shufflenet scale=paper device=cuda batch_size=128

For each configuration (``child``, the stand-alone network of one architecture, is the floor;
the others are the search steps of every method, with its default estimator, or of
``<method>/<estimator>`` with any estimator, a plug-in included, forced onto that same
architecture) it measures, in a fresh process, the median wall time of a training step
(bilevel methods' alpha steps amortised over ``alpha_every``; experiments/bench_step.py), images
per second and the peak memory, on the same random batch. A search step's time ratio is taken
against the child timed alternately with it in that process (``paired_child_ms``), so a machine
slowing down between processes does not bias it; the memory ratio is against the child's own
process. Configurations are interleaved over ``repeats`` rounds. With ``loader=true`` the
training loader of a run (the real data set and augmentation) is timed too, as the row
``loader`` (ms per batch, images per second), so that it can be checked against the steps it
feeds. It prints a table and writes it as CSV (``out=``).

A bench is a long job that must not lose or hide work: each row is written to the CSV as soon as
it is measured, with a progress line on stderr; a configuration that fails (or an unknown name)
becomes a row with its one-line error and the bench goes on (exit status 2 at the end); the
bench stops starting configurations when its own time cap (``max_minutes``) runs out; its
measuring processes die with it, even under SIGKILL (experiments/bench_jobs.py). Every row
records the torch thread count and the load average, and the bench warns when the machine is
oversubscribed.
"""

from __future__ import annotations

import csv
import statistics
import sys
import time

import hydra
import torch
import yaml
from omegaconf import DictConfig, OmegaConf

import cli
from bench_jobs import JobFailed, load_average, oversubscription, run_job
from bench_step import method_config
from methods.base import METHODS
from methods.estimators.base import build_estimator
from nasbench.data import input_spec, load_data, on_device
from nasbench.device import configure, resolve_device
from nasbench.errors import UserError, unknown_choice
from nasbench.loaders import make_loader
from nasbench.provenance import set_threads
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
    "threads",
    "load_avg",
    "error",
    "space",
    "scale",
    "batch_size",
    "device",
    "precision",
)


class RowSink:
    """The CSV, written a row at a time as each is measured (a bench stopped half-way keeps
    what it measured)."""

    def __init__(self, path: str | None) -> None:
        self.file = open(path, "w", newline="") if path else None  # noqa: SIM115 (closed by close())
        self.writer = csv.DictWriter(self.file, fieldnames=FIELDS) if self.file else None
        if self.writer:
            self.writer.writeheader()
            self.file.flush()

    def add(self, row: dict) -> None:
        if self.writer:
            self.writer.writerow(row)
            self.file.flush()

    def close(self) -> None:
        if self.file:
            self.file.close()


def measured_row(r: int, config: str, res: dict, floor: dict | None, batch: int) -> dict:
    """A row of the table from a measurement (``floor``: the child's of this round, if any)."""
    mem = res["peak_mem_bytes"]
    if "paired_step_ms" in res:  # a search step: against the child timed alternately in its own process
        ratio = res["paired_step_ms"] / res["child_step_ms"]
    else:
        ratio = res["step_ms"] / floor["step_ms"] if floor else None
    return {
        "round": r,
        "method": config,
        "step_ms": round(res["step_ms"], 3),
        "step_ms_mean": round(res["step_ms_mean"], 3),
        "img_per_s": round(1000 * batch / res["step_ms"], 1),
        "peak_mem_bytes": mem,
        "time_ratio": None if ratio is None else round(ratio, 3),
        "mem_ratio": None if mem is None or not floor else round(mem / max(floor["peak_mem_bytes"], 1), 3),
        "paired_child_ms": round(res["child_step_ms"], 3) if "child_step_ms" in res else None,
        "threads": res.get("threads", torch.get_num_threads()),
        "load_avg": load_average(),
        "error": None,
    }


def failed_row(r: int, config: str, error: str) -> dict:
    return {**dict.fromkeys(FIELDS), "round": r, "method": config, "load_avg": load_average(), "error": error}


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
        device=device,
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


def method_overrides(parts: list[str]) -> dict:
    """``key:value`` items of a row (``dsnas@paths_per_step:8``) as method-config overrides; the
    value is read as YAML (8 -> int, skip -> str)."""
    overrides = {}
    for part in parts:
        key, sep, value = part.partition(":")
        if not sep or not key:
            raise JobFailed(f"row option {part!r}: write it as key:value (dsnas@paths_per_step:8)")
        overrides[key] = yaml.safe_load(value)
    return overrides


def resolve_config(name: str, argv: list[str], space: type | None = None) -> dict:
    """A bench configuration: ``child``, ``<method>`` (its default estimator) or
    ``<method>/<estimator>``, where the estimator may be a plug-in whose config lives in a
    ``hydra.searchpath`` folder (docs/estimators.md), each optionally followed by ``@key:value``
    items that override the method's config for that row (``dsnas@paths_per_step:8``). Returns
    the job fields; raises :class:`JobFailed` with the one-line reason for an unknown name or a
    combination the method refuses (checked here, before a process starts)."""
    if name == "child":
        return {}
    head, *options = name.split("@")
    method, _, estimator = head.partition("/")
    if method not in METHODS:
        raise JobFailed(str(unknown_choice("benchmark method", method, METHODS.names())))
    if space is not None and not METHODS.get(method).supports(space):
        raise JobFailed(f"method {method} does not run on space {space.name}")
    overrides = method_overrides(options)
    method_cfg, default_estimator = method_config(method)
    unknown = sorted(set(overrides) - set(method_cfg))
    if unknown:
        raise JobFailed(f"method {method} has no key {', '.join(unknown)}; its keys: {', '.join(sorted(method_cfg))}")
    method_cfg.update(overrides)
    fields: dict = {"method": method, "method_overrides": overrides}
    try:
        estimator_cfg = cli.group_config("estimator", estimator, argv) if estimator else default_estimator
        METHODS.get(method).check_estimator(method_cfg, build_estimator(estimator_cfg))
    except UserError as err:
        raise JobFailed(str(err)) from None
    if estimator:
        fields["estimator"] = estimator_cfg
    return fields


def bench(cfg: DictConfig) -> list[dict]:
    threads = set_threads(cfg.get("threads"))  # the measuring processes take the same count
    device = resolve_device(cfg.device)
    precision = configure(device, cfg.precision, bool(cfg.compile))
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
    # the floor first; by default every method that runs on this space
    every = [m for m in METHODS.names() if METHODS.get(m).supports(type(space))]
    configs = ["child", *[str(c) for c in (cfg.configs or every) if c != "child"]]
    cap = float(cfg.max_minutes or 0) * 60
    deadline = time.monotonic() + cap if cap > 0 else None
    warning = oversubscription(torch.get_num_threads())
    if warning:
        print(warning, file=sys.stderr)
    sink, rows = RowSink(cfg.out), []
    jobs = int(cfg.repeats) * (len(configs) + bool(cfg.loader))
    started = time.monotonic()

    setting = {"space": space.name, "scale": cfg.scale.name, "batch_size": batch, "device": str(device)}

    def add(row: dict) -> None:
        row.update(setting, precision=precision)
        rows.append(row)
        sink.add(row)
        done = f"{row['step_ms']:.2f} ms/step" if row["error"] is None else f"FAILED: {row['error']}"
        ratio = "" if row["time_ratio"] is None else f", time x{row['time_ratio']:.3f}"
        where = f"[{len(rows)}/{jobs}] round {row['round']} {row['method']}"
        print(f"{where}: {done}{ratio} ({time.monotonic() - started:.0f} s)", file=sys.stderr, flush=True)

    job = {
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
        "compile": bool(cfg.compile),
        "threads": threads,
    }
    try:
        for r in range(int(cfg.repeats)):
            floor = None
            for config in configs:
                try:
                    fields = resolve_config(config, sys.argv[1:], type(space))
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        raise JobFailed(f"not run: the bench's time cap (max_minutes={cfg.max_minutes}) ran out")
                    res = run_job({**job, "config": config, **fields}, left)
                except JobFailed as err:
                    add(failed_row(r, config, str(err)))
                    continue
                floor = res if config == "child" else floor
                add(measured_row(r, config, res, floor, batch))
            if cfg.loader:
                try:
                    res = {**loader_throughput(cfg, device, batch), "peak_mem_bytes": None}
                except (UserError, RuntimeError, OSError) as err:
                    add(failed_row(r, "loader", " ".join(str(err).split())))
                else:
                    add(measured_row(r, "loader", res, floor, batch))
    finally:
        sink.close()
    report(cfg, space, arch, batch, device, precision, rows)
    failed = [r["method"] for r in rows if r["error"] is not None]
    if failed:
        raise UserError(f"{len(failed)} of {len(rows)} rows failed ({', '.join(failed)}); the table says why")
    return rows


def report(cfg: DictConfig, space, arch, batch: int, device: torch.device, precision: str, rows: list[dict]) -> None:
    """The table, then medians over rounds of each ratio, and the loader against the steps."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(
        f"space={space.name} scale={cfg.scale.name} arch={space.encode(arch)} batch={batch} device={device}"
        f" ({name}, {precision}, channels_last={bool(cfg.channels_last)}, compile={bool(cfg.compile)},"
        f" torch {torch.__version__})"
    )
    head = ("round", "method", "step_ms", "img/s", "peak_MiB", "time_ratio", "mem_ratio")
    print(" ".join(f"{h:>{w}}" for h, w in zip(head, (5, 10, 9, 9, 9, 10, 9))))
    for row in rows:
        if row["error"] is not None:
            print(f"{row['round']:>5} {row['method']:>10} FAILED: {row['error']}")
            continue
        mem = "-" if row["peak_mem_bytes"] is None else f"{row['peak_mem_bytes'] / 2**20:.1f}"
        ratio = "-" if row["mem_ratio"] is None else f"{row['mem_ratio']:.3f}"
        print(
            f"{row['round']:>5} {row['method']:>10} {row['step_ms']:>9.2f} {row['img_per_s']:>9.0f} {mem:>9}"
            f" {'-' if row['time_ratio'] is None else format(row['time_ratio'], '.3f'):>10} {ratio:>9}"
        )
    if int(cfg.repeats) > 1:
        print("median over rounds:")
        for method in dict.fromkeys(r["method"] for r in rows):
            mine = [r for r in rows if r["method"] == method and r["time_ratio"] is not None]
            if not mine:
                continue
            time_ratio = statistics.median(r["time_ratio"] for r in mine)
            mem = [r["mem_ratio"] for r in mine if r["mem_ratio"] is not None]
            mem_text = f", memory x{statistics.median(mem):.3f}" if mem else ""
            print(f"  {method:>10}: time x{time_ratio:.3f}{mem_text}")
    loader = [r for r in rows if r["method"] == "loader" and r["error"] is None]
    steps = [r for r in rows if r["method"] != "loader" and r["error"] is None]
    if loader and steps:
        load = statistics.median(r["img_per_s"] for r in loader)
        fastest = max(steps, key=lambda r: r["img_per_s"])
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
