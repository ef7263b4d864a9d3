"""The tests' way of starting a script (tests/entry_process.py): a process forked from the
pre-imported tests/zygote.py must behave as ``python script args`` in a new interpreter, which
is checked here against ``subprocess.run`` on the things a script can see or do (a second of
work in all; tests/test_reliability.py compares a whole tiny run made both ways)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

import entry_process
from entry_process import run_script

PROBE = """
import json, os, sys, tempfile
import torch
print(json.dumps({
    "argv": sys.argv, "cwd": os.getcwd(), "path0": sys.path[0], "x": os.environ.get("PROBE_X"),
    "plugin": __import__("probe_plugin").VALUE, "threads": torch.get_num_threads(),
    "tmp": tempfile.gettempdir(), "name": __name__, "file": __file__,
}))
print("to stderr", file=sys.stderr)
sys.exit(int(sys.argv[1]))
"""


def both(script: Path, *args: str, **kwargs) -> tuple[subprocess.CompletedProcess, subprocess.CompletedProcess]:
    """The command forked from the zygote, then in a new interpreter."""
    forked = run_script(script, *args, **kwargs)
    os.environ["NASBENCH_TESTS_FRESH"] = "1"
    try:
        fresh = run_script(script, *args, **kwargs)
    finally:
        del os.environ["NASBENCH_TESTS_FRESH"]
    return forked, fresh


def test_a_forked_command_sees_what_a_new_interpreter_sees(tmp_path: Path) -> None:
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "probe_plugin.py").write_text("VALUE = 7\n")
    (tmp_path / "tmp").mkdir()
    (tmp_path / "bin").mkdir()
    script = tmp_path / "bin" / "probe.py"
    script.write_text(PROBE)
    env = {"PROBE_X": "seen", "PYTHONPATH": str(tmp_path / "lib"), "TMPDIR": str(tmp_path / "tmp")}
    forked, fresh = both(script, "3", cwd=tmp_path, env=env)
    assert (forked.returncode, forked.stderr) == (fresh.returncode, fresh.stderr) == (3, "to stderr\n")
    assert json.loads(forked.stdout) == json.loads(fresh.stdout)
    seen = json.loads(forked.stdout)
    assert seen["argv"] == [str(script), "3"] and seen["path0"] == str(script.parent) and seen["x"] == "seen"
    assert seen["plugin"] == 7 and seen["tmp"] == str(tmp_path / "tmp") and seen["name"] == "__main__"


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ("raise ValueError('boom')", 1),  # an uncaught exception: its traceback, status 1
        ("import sys; sys.exit('a message')", 1),
        ("import os, signal; os.kill(os.getpid(), signal.SIGTERM)", -15),  # as Popen: minus the signal
        ("print('done')", 0),
        # exit waits for the threads, as the interpreter's does (joblib's pool hung a fork 300 s without)
        ("import threading, time; threading.Thread(target=lambda: (time.sleep(0.3), print('joined'))).start()", 0),
    ],
)
def test_exit_status_and_output_as_a_new_interpreter(tmp_path: Path, body: str, status: int) -> None:
    script = tmp_path / "s.py"
    script.write_text(body + "\n")
    forked, fresh = both(script, cwd=tmp_path)
    assert forked.returncode == fresh.returncode == status
    assert (forked.stdout, forked.stderr) == (fresh.stdout, fresh.stderr)


def test_a_command_past_its_timeout_is_killed_and_the_next_one_runs(tmp_path: Path) -> None:
    script = tmp_path / "sleep.py"
    script.write_text("import time\nprint('started', flush=True)\ntime.sleep(60)\n")
    with pytest.raises(subprocess.TimeoutExpired):
        run_script(script, cwd=tmp_path, timeout=1)
    ok = tmp_path / "ok.py"
    ok.write_text("print('next')\n")
    assert run_script(ok, cwd=tmp_path).stdout == "next\n"
    assert entry_process._zygote is not None and entry_process._zygote.proc.poll() is None
