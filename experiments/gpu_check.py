"""The GPU check: run this first on a GPU host (README, "On a GPU").

    python experiments/gpu_check.py                       # everything, on cuda (sized for 8 minutes on one GPU)
    python experiments/gpu_check.py --only tiny,main      # some groups
    python experiments/gpu_check.py --data-root DIR       # Fashion-MNIST IDX files, where Debian's package is absent

It runs, each as a user would run it and in its own process:
- ``tiny``: every registered method x space at tiny scale, in fp32 and in bf16;
- ``main``: the README's main command (``method=dsnas space=shufflenet``, cpu scale), with cudnn
  autotuning (the default) and without (``cudnn_benchmark=false``), to measure what it costs;
- ``bench``: the step benchmark at paper scale for both spaces (batch ``--bench-batch``): the child,
  DSNAS, SPOS, ProxylessNAS and SNAS;
- ``cells``: the step benchmark on the DARTS cell space (cpu scale): DARTS, EnTranNAS (top-2 and
  DST) and DSNAS against the child;
- ``lab``: the estimator lab (experiments/estimator_lab.py) on nb201, every estimator, 60 samples;
- ``imagefolder``: a paper-scale DSNAS run end to end on a small synthetic ImageFolder of JPEGs
  that it writes itself (ImageNet's layout; one short epoch per phase), with loader workers;
- ``torchrun``: the tiny DSNAS run on every GPU of the host with torchrun (two or more GPUs).

It prints one table (check, status, seconds, what it measured or why it failed), writes it as
``gpu_check.csv`` with every check's log under ``--out``, and exits 1 if any check failed.
``--device cpu`` runs the same checks on the CPU (the suite's tests use that to check this script).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cli
from methods.base import METHODS
from nasbench.spaces import SPACES

GROUPS = ("tiny", "main", "bench", "cells", "lab", "imagefolder", "torchrun")
EXPERIMENTS = Path(__file__).resolve().parent


@dataclass
class Check:
    name: str
    command: list[str]
    timeout: float
    summary: Path | None = None  # a run's summary.json, read for the table
    csv: Path | None = None  # a bench's CSV
    lab: Path | None = None  # an estimator lab's lab.csv
    result: dict = field(default_factory=dict)


def run_command(script: str, *args: str) -> list[str]:
    return [sys.executable, str(EXPERIMENTS / script), *args]


def plan(opts: argparse.Namespace, out: Path) -> list[Check]:
    """The checks of the chosen groups, in the order they run."""
    dev, data = f"device={opts.device}", [f"data.root={opts.data_root}"] if opts.data_root else []
    common = [dev, "progress=false", "overwrite=true"]
    checks: list[Check] = []
    groups = set(opts.only.split(","))
    if "tiny" in groups:
        for precision in opts.precisions.split(","):
            for space in opts.spaces.split(",") if opts.spaces else SPACES.names():
                for method in opts.methods.split(",") if opts.methods else METHODS.names():
                    if not METHODS.get(method).supports(SPACES.get(space)):
                        continue
                    name = f"tiny/{method}/{space}/{precision}"
                    folder = out / "runs" / name.replace("/", "_")
                    args = [f"method={method}", f"space={space}", "scale=tiny", f"precision={precision}"]
                    command = run_command("run.py", *args, *common, *data, f"hydra.run.dir={folder}")
                    checks.append(Check(name, command, 300, summary=folder / "summary.json"))
    if "main" in groups:
        folder = out / "runs" / "main"
        command = run_command("run.py", "method=dsnas", "space=shufflenet", *common, *data)
        checks.append(Check("main", [*command, f"hydra.run.dir={folder}"], 600, summary=folder / "summary.json"))
        folder = out / "runs" / "main_untuned"  # what cudnn autotuning costs and gives over a whole run
        command = [*command, "cudnn_benchmark=false", f"hydra.run.dir={folder}"]
        checks.append(Check("main/cudnn_benchmark=false", command, 600, summary=folder / "summary.json"))
    if "bench" in groups:
        for space, paper_data in (("shufflenet", "imagenet"), ("nb201", "cifar10")):  # the published inputs
            path = out / f"bench_{space}_paper.csv"
            args = [f"space={space}", "scale=paper", f"data={paper_data}", dev, f"batch_size={opts.bench_batch}"]
            args += ["configs=[dsnas,spos,proxyless,snas]", "steps=10", "warmup=3", "loader=false", "max_minutes=2"]
            command = run_command("bench.py", *args, f"out={path}")
            checks.append(Check(f"bench/{space}/paper", command, 150, csv=path))
    if "cells" in groups:
        path = out / "bench_darts_cpu.csv"
        args = ["space=darts", "scale=cpu", dev, "configs=[darts,entrannas,entrannas@derivation:dst,dsnas]"]
        args += ["steps=10", "warmup=3", "loader=false", "max_minutes=5"]  # one round: each row is a CUDA start
        checks.append(Check("bench/darts/cpu", run_command("bench.py", *args, f"out={path}"), 330, csv=path))
    if "lab" in groups:
        folder = out / "lab_nb201"
        args = ["space=nb201", "samples=60", "bootstrap=50", dev, *data, "overwrite=true", f"hydra.run.dir={folder}"]
        checks.append(Check("lab/nb201", run_command("estimator_lab.py", *args), 300, lab=folder / "lab.csv"))
    if "imagefolder" in groups:
        root = write_jpeg_folder(out / "imagefolder_data")
        folder = out / "runs" / "imagefolder"
        budget = ["budget.search_epochs=1", "budget.finetune_epochs=1", "budget.warmup_epochs=0"]
        budget += [f"budget.batch_size={opts.image_batch}", "budget.eval_batch_size=50", "budget.workers=4"]
        args = ["method=dsnas", "space=shufflenet", "scale=paper", "data=imagenet", f"data.root={root}", *budget]
        command = run_command("run.py", *args, *common, f"hydra.run.dir={folder}")
        checks.append(Check("imagefolder/dsnas/paper", command, 420, summary=folder / "summary.json"))
    n = gpu_count(opts.device) if "torchrun" in groups else 0
    if n >= 2:
        folder = out / "runs" / "torchrun"
        launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}"]
        args = ["method=dsnas", "space=shufflenet", "scale=tiny", *common, *data, f"hydra.run.dir={folder}"]
        checks.append(
            Check(f"torchrun/{n}", [*launch, str(EXPERIMENTS / "run.py"), *args], 300, folder / "summary.json")
        )
    return checks


def gpu_count(device: str) -> int:
    import torch

    return torch.cuda.device_count() if device.startswith("cuda") and torch.cuda.is_available() else 0


def write_jpeg_folder(root: Path, classes: int = 4, train: int = 48, val: int = 12) -> Path:
    """A small ImageNet-layout folder of 256x320 JPEGs whose colour tells the class."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", train), ("val", val)):
        for c in range(classes):
            folder = root / split / f"n{c:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                if not (folder / f"img{i}.JPEG").exists():
                    pixels = rng.integers(0, 80, (256, 320, 3), dtype=np.uint8)
                    pixels[..., c % 3] += np.uint8(120)
                    Image.fromarray(pixels).save(folder / f"img{i}.JPEG", quality=90)
    return root


def execute(check: Check, logs: Path) -> Check:
    """Run one check; fill ``check.result`` with its status, seconds and a note."""
    start = time.perf_counter()
    log = logs / (check.name.replace("/", "_") + ".log")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    try:
        proc = subprocess.run(check.command, capture_output=True, text=True, timeout=check.timeout, env=env)
        log.write_text(f"$ {' '.join(check.command)}\n{proc.stdout}\n{proc.stderr}")
        ok, note = proc.returncode == 0, last_line(proc.stderr) or f"exit status {proc.returncode}"
    except subprocess.TimeoutExpired:
        ok, note = False, f"timed out after {check.timeout:.0f} s"
    seconds = time.perf_counter() - start
    if ok:
        note = describe(check)
    check.result = {"check": check.name, "status": "ok" if ok else "FAILED", "seconds": round(seconds, 1), "note": note}
    return check


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def describe(check: Check) -> str:
    """What a passing check measured: a run's accuracy and phases, a bench's ratios."""
    if check.summary is not None:
        s = json.loads(check.summary.read_text())
        phases = ", ".join(f"{p['name']} {p['wall_s']:.0f}s" for p in s["phases"] if p["counted"])
        peak = s["peak_mem_bytes"] / 2**30
        return (
            f"final_acc {s['final_acc']:.3f}, {s['precision']}, {phases}, peak {peak:.2f} GiB, wall {s['wall_s']:.0f}s"
        )
    if check.csv is not None:
        rows = list(csv.DictReader(check.csv.open()))
        child = next(r for r in rows if r["method"] == "child")
        parts = [f"child {float(child['img_per_s']):.0f} img/s"]
        for r in rows:
            if r["method"] not in ("child", "loader") and r["time_ratio"]:
                parts.append(f"{r['method']} x{float(r['time_ratio']):.2f}/mem x{float(r['mem_ratio'] or 'nan'):.2f}")
        return ", ".join(parts)
    if check.lab is not None:
        rows = [r for r in csv.DictReader(check.lab.open()) if r["point"] == "uniform"]
        return "uniform alpha, cos to exact: " + ", ".join(f"{r['estimator']} {float(r['cos']):.2f}" for r in rows)
    return ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    parser.add_argument("--only", default=",".join(GROUPS), help=f"groups to run, comma-separated: {','.join(GROUPS)}")
    parser.add_argument("--methods", default="", help="tiny group: methods (default: every registered one)")
    parser.add_argument("--spaces", default="", help="tiny group: spaces (default: every registered one)")
    parser.add_argument("--precisions", default="fp32,bf16", help="tiny group: precisions")
    parser.add_argument("--jobs", type=int, default=6, help="tiny runs at once (they share the GPU)")
    parser.add_argument("--bench-batch", type=int, default=128)
    parser.add_argument("--image-batch", type=int, default=32)
    parser.add_argument("--data-root", default="", help="Fashion-MNIST folder (data.root) for the runs that read it")
    parser.add_argument("--out", default="outputs/gpu_check", help="folder for the table, the logs and the runs")
    opts = parser.parse_args(argv)
    unknown = set(opts.only.split(",")) - set(GROUPS)
    if unknown:
        cli.fail(f"unknown check group(s) {', '.join(sorted(unknown))}; choose from: {', '.join(GROUPS)}")
    out = Path(opts.out)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    checks = plan(opts, out)
    print(f"gpu_check: {len(checks)} checks on {opts.device}; logs in {out / 'logs'}", file=sys.stderr, flush=True)
    started = time.perf_counter()
    tiny = [c for c in checks if c.name.startswith("tiny/")]
    with ThreadPoolExecutor(max_workers=max(1, opts.jobs)) as pool:  # tiny runs share the device
        for check in pool.map(lambda c: execute(c, out / "logs"), tiny):
            progress(check, started)
    for check in checks[len(tiny) :]:  # the measured ones run alone
        progress(execute(check, out / "logs"), started)
    write_table(checks, out / "gpu_check.csv", time.perf_counter() - started)
    return 0 if all(c.result["status"] == "ok" for c in checks) else 1


def progress(check: Check, started: float) -> None:
    r = check.result
    print(f"  {r['status']:>6} {r['check']} ({r['seconds']:.0f} s; {time.perf_counter() - started:.0f} s in all)",
          file=sys.stderr, flush=True)  # fmt: skip


def write_table(checks: list[Check], path: Path, total: float) -> None:
    import torch

    rows = [c.result for c in checks]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["check", "status", "seconds", "note"])
        writer.writeheader()
        writer.writerows(rows)
    name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
    print(f"GPU check: torch {torch.__version__}, {name}, {len(rows)} checks in {total:.0f} s")
    width = max((len(r["check"]) for r in rows), default=5)
    for r in rows:
        print(f"{r['check']:<{width}}  {r['status']:>6}  {r['seconds']:>6.1f}s  {r['note']}")
    failed = [r["check"] for r in rows if r["status"] != "ok"]
    print(f"{len(rows) - len(failed)} passed, {len(failed)} failed" + (f": {', '.join(failed)}" if failed else ""))


if __name__ == "__main__":
    with cli.user_errors():
        sys.exit(main())
