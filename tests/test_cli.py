"""Entry points as a user meets them: inspect_arch, the benchmark, and one-line errors."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import ROOT, child_pids, command_line, process_running, run_entry


def one_line_error(proc) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def group_names(group: str) -> str:
    """The config group's options as the error lists them: sorted, comma-separated."""
    return ", ".join(sorted(p.stem for p in (ROOT / "experiments" / "conf" / group).glob("*.yaml")))


METHOD_NAMES = group_names("method")


@pytest.mark.parametrize(
    "override, expected",
    [
        ("method=foo", f"error: unknown method 'foo'; choose one of: {METHOD_NAMES}"),
        ("space=foo", "error: unknown space 'foo'; choose one of: darts, dsonas, nb201, shufflenet"),
        ("estimator=foo", f"error: unknown estimator 'foo'; choose one of: {group_names('estimator')}"),
        ("data=foo", "error: unknown data set 'foo'; choose one of: cifar10, cifar100, fashion_mnist, imagenet"),
        ("scale=huge", "error: unknown scale 'huge'; choose one of: cpu, paper, tiny"),
    ],
)
def test_unknown_names_give_one_line_with_the_valid_ones(override: str, expected: str, tmp_path) -> None:
    proc = run_entry("run.py", override, f"hydra.run.dir={tmp_path / 'run'}")
    assert one_line_error(proc) == expected
    assert not (tmp_path / "run").exists()


def test_unknown_name_in_a_sweep_list(tmp_path) -> None:
    proc = run_entry("run.py", "-m", "method=dsnas,snsa", cwd=tmp_path)
    assert one_line_error(proc) == f"error: unknown method 'snsa'; choose one of: {METHOD_NAMES}"


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["budget.search_epochs=0"], "search_epochs=0: must be at least 1"),
        (["budget.batch_size=0"], "budget.batch_size=0: must be at least 1"),
        (["method.alpha_warmup_epochs=1"], "alpha_warmup_epochs=1: must be at least 0 and less than search_epochs=1"),
        (["data.root=/nonexistent/fmnist"], "data.root=/nonexistent/fmnist holds no Fashion-MNIST"),
        (["data=cifar10"], "data=cifar10 needs data.root="),
        (["device=tpu"], "unknown device 'tpu'; choose one of: auto, cpu, cuda, cuda:N"),
    ],
)
def test_bad_values_give_one_line(overrides, message, tmp_path) -> None:
    proc = run_entry("run.py", "scale=tiny", f"hydra.run.dir={tmp_path / 'run'}", *overrides)
    assert message in one_line_error(proc)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_where_there_is_none(tmp_path) -> None:
    proc = run_entry("run.py", "scale=tiny", "device=cuda", f"hydra.run.dir={tmp_path / 'run'}")
    assert "no CUDA GPU" in one_line_error(proc)


def test_inspect_arch_gives_the_published_flops(tmp_path) -> None:
    proc = run_entry(
        "inspect_arch.py",
        "space=shufflenet",
        "scale=paper",
        "arch=[0,0,3,0,3,2,0,0,3,3,2,3,3,3,2,0,0,3,3,0]",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["flops"] == pytest.approx(324e6, rel=0.02)
    assert result["input_shape"] == [3, 224, 224] and result["num_classes"] == 1000
    assert 3.0e6 < result["params"] < 4.0e6
    assert list(tmp_path.iterdir()) == [], "inspect_arch must not write files"


@pytest.mark.parametrize(
    "arch, message",
    [
        ("arch=[0,0,3]", "has 20 entries, got 3"),
        ("arch=[0,0,3,0,3,2,0,0,3,3,2,3,3,3,2,0,0,3,3,7]", "entry 19 of the architecture is 7"),
        ("arch=null", "give the architecture"),
    ],
)
def test_inspect_arch_refuses_bad_architectures(arch: str, message: str, tmp_path) -> None:
    proc = run_entry("inspect_arch.py", "space=shufflenet", "scale=paper", arch, cwd=tmp_path)
    assert message in one_line_error(proc)


@pytest.mark.slow
@pytest.mark.parametrize("space", ["shufflenet", "nb201"])
def test_bench_writes_its_table(space: str, tmp_path) -> None:
    out = tmp_path / "bench.csv"
    proc = run_entry(
        "bench.py",
        f"space={space}",
        "scale=tiny",
        "steps=2",
        "warmup=1",
        "configs=[dsnas,darts,proxyless,spos]",
        f"out={out}",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(out.open()))
    assert [r["method"] for r in rows] == ["child", "dsnas", "darts", "proxyless", "spos", "loader"]
    assert {"method", "step_ms", "img_per_s", "peak_mem_bytes", "time_ratio", "mem_ratio"} <= set(rows[0])
    assert float(rows[0]["time_ratio"]) == 1.0 and float(rows[0]["mem_ratio"]) == 1.0
    steps, loader = rows[:-1], rows[-1]
    assert all(float(r["step_ms"]) > 0 and int(r["peak_mem_bytes"]) > 0 for r in steps)
    for r in rows:  # tiny: batch 64; step_ms is rounded to 3 decimals (the loader's is well under 1 ms), img_per_s to 1
        step_ms = float(r["step_ms"])
        assert float(r["img_per_s"]) == pytest.approx(64 * 1000 / step_ms, rel=1e-3 + 1e-3 / step_ms, abs=0.05)
    for r in steps[1:]:  # search steps: timed against a child alternating with them in their process
        assert float(r["paired_child_ms"]) > 0 and float(r["time_ratio"]) > 0
    assert rows[0]["paired_child_ms"] == loader["paired_child_ms"] == ""
    assert float(loader["time_ratio"]) == pytest.approx(float(loader["step_ms"]) / float(rows[0]["step_ms"]), abs=2e-3)
    assert loader["peak_mem_bytes"] == "" and loader["mem_ratio"] == ""  # a loader has no step memory
    assert "loader:" in proc.stdout and "img/s against the fastest step" in proc.stdout


@pytest.mark.slow
def test_bench_times_an_image_folder_loader(tmp_path) -> None:
    """The loader row on JPEG files (ImageNet's format): decoding and random-resized crops."""
    from PIL import Image

    for split in ("train", "val"):
        for c in range(2):
            folder = tmp_path / "imagenet" / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(8):
                Image.new("RGB", (40, 48), (40 * c + i, 0, 0)).save(folder / f"img{i}.JPEG")
    out = tmp_path / "bench.csv"
    proc = run_entry(
        "bench.py",
        "space=shufflenet",
        "scale=tiny",
        "data=imagenet",
        f"data.root={tmp_path / 'imagenet'}",
        "data.size=32",
        "batch_size=4",
        "steps=2",
        "warmup=1",
        "loader_batches=3",
        "configs=[spos]",
        f"out={out}",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    rows = {r["method"]: r for r in csv.DictReader(out.open())}
    assert set(rows) == {"child", "spos", "loader"} and float(rows["loader"]["img_per_s"]) > 0


@pytest.mark.parametrize(
    "arch, params, mflops",
    [
        # NAS-Bench-201 api get_cost_info on cifar10 (see tests/test_nb201_space.py for the sources);
        # NAS-Bench-201's FLOPs add the classifier's 10 bias additions to the multiply-accumulates
        (
            "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|",
            1.531546,
            220.11969,
        ),
        (
            "|skip_connect~0|+|none~0|nor_conv_3x3~1|+|avg_pool_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|",
            0.802426,
            113.95137,
        ),
    ],
)
def test_inspect_arch_gives_nas_bench_201_counts_for_cifar10(arch: str, params: float, mflops: float, tmp_path) -> None:
    proc = run_entry("inspect_arch.py", "space=nb201", "scale=paper", f'arch="{arch}"', cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["input_shape"] == [3, 32, 32] and result["num_classes"] == 10 and result["arch"] == arch
    assert round(result["params"] / 1e6, 6) == params
    assert round((result["flops"] + 10) / 1e6, 5) == mflops


@pytest.mark.slow
def test_a_bench_with_a_bad_entry_still_writes_the_other_rows(tmp_path) -> None:
    out = tmp_path / "bench.csv"
    proc = run_entry(
        "bench.py", "space=nb201", "scale=tiny", "steps=2", "warmup=1", "threads=1", "loader=false",
        "configs=[dsnas,nosuch,dsnas/reinforce,darts/nosuch]", f"out={out}", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    failed = "nosuch, dsnas/reinforce, darts/nosuch"
    assert proc.stderr.strip().splitlines()[-1] == f"error: 3 of 5 rows failed ({failed}); the table says why"
    rows = {r["method"]: r for r in csv.DictReader(out.open())}
    assert list(rows) == ["child", "dsnas", "nosuch", "dsnas/reinforce", "darts/nosuch"]
    assert "reinforce" in rows["dsnas/reinforce"]["error"] and rows["dsnas/reinforce"]["step_ms"] == ""
    assert rows["darts/nosuch"]["error"].startswith("unknown estimator 'nosuch'; choose one of: binary_gate")
    assert rows["dsnas"]["space"] == "nb201" and rows["dsnas"]["scale"] == "tiny" and rows["dsnas"]["batch_size"]
    assert rows["nosuch"]["error"].startswith("unknown benchmark method 'nosuch'; choose one of: darts, dsnas")
    assert rows["nosuch"]["step_ms"] == "" and float(rows["dsnas"]["step_ms"]) > 0 and rows["dsnas"]["error"] == ""
    assert all(int(r["threads"]) == 1 for r in (rows["child"], rows["dsnas"]))  # threads=1 reached the processes
    assert "[2/5] round 0 dsnas:" in proc.stderr and "[3/5] round 0 nosuch: FAILED" in proc.stderr  # progress


@pytest.mark.slow
def test_the_bench_time_cap_turns_what_is_left_into_error_rows(tmp_path) -> None:
    out = tmp_path / "bench.csv"
    proc = run_entry(
        "bench.py", "space=nb201", "scale=tiny", "steps=100000", "configs=[spos]", "loader=false",
        "max_minutes=0.05", f"out={out}", cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    rows = list(csv.DictReader(out.open()))
    assert [r["method"] for r in rows] == ["child", "spos"]
    assert rows[0]["error"] == "stopped while measuring: the bench's time cap (max_minutes) ran out"
    assert rows[1]["error"] == "not run: the bench's time cap (max_minutes=0.05) ran out"


@pytest.mark.slow
def test_a_bench_killed_with_sigkill_leaves_no_process_behind(tmp_path) -> None:
    out = tmp_path / "bench.csv"
    args = ["space=nb201", "scale=tiny", "steps=100000", "configs=[spos]", "loader=false", f"out={out}"]
    bench = subprocess.Popen(
        [sys.executable, str(ROOT / "experiments" / "bench.py"), *args],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    children: list[int] = []
    deadline = time.monotonic() + 120
    while not children and time.monotonic() < deadline and bench.poll() is None:
        time.sleep(0.1)
        # the measuring process only: imports may start short-lived helpers (ldconfig) first
        children = [pid for pid in child_pids(bench.pid) if "bench_step.py" in command_line(pid)]
    assert children, "the bench started a measuring process"
    bench.send_signal(signal.SIGKILL)
    bench.wait(timeout=30)
    deadline = time.monotonic() + 10
    while any(process_running(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(process_running(pid) for pid in children), "the measuring process died with the bench"
    assert out.read_text().startswith("round,method,step_ms")  # the header was written at once
