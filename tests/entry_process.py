"""How the tests run a script of the repository as a user would: ``python <script> args...``.

Every command is its own process with its own exit status and output. By default the process is
forked from tests/zygote.py, an interpreter that imported torch, torchvision, pandas, scipy,
matplotlib and seaborn once per test session (one per pytest-xdist worker), which saves about 4 s
per command; ``NASBENCH_TESTS_FRESH=1`` starts every command in a new interpreter instead
(``subprocess.run``), and tests/test_entry_process.py checks that both give the same run.
"""

from __future__ import annotations

import atexit
import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

ZYGOTE = Path(__file__).resolve().parent / "zygote.py"


class Zygote:
    """The pre-imported interpreter (tests/zygote.py) and its one command at a time."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(ZYGOTE)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def _answer(self, timeout: float | None) -> dict | None:
        """The zygote's next line, or None when ``timeout`` passed first."""
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout):
                return None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"tests/zygote.py ended (status {self.proc.wait()}); its stderr is above")
        return json.loads(line)

    def run(self, argv: list[str], cwd: Path, env: dict, timeout: float) -> subprocess.CompletedProcess:
        with tempfile.TemporaryDirectory(prefix="entry-") as folder:
            out, err = Path(folder) / "stdout", Path(folder) / "stderr"
            request = {"argv": argv, "cwd": str(cwd), "env": env, "out": str(out), "err": str(err)}
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
            pid = self._answer(None)["pid"]
            done = self._answer(timeout)
            if done is None:  # as subprocess.run: kill the command, then raise
                os.kill(pid, signal.SIGKILL)
                self._answer(None)
                raise subprocess.TimeoutExpired(argv, timeout, out.read_text(), err.read_text())
            return subprocess.CompletedProcess(
                [sys.executable, *argv],
                done["status"],
                out.read_text(errors="replace"),
                err.read_text(errors="replace"),
            )

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)


_zygote: Zygote | None = None


def run_script(
    script: Path, *args: str, cwd: Path, timeout: float = 600, env: dict | None = None
) -> subprocess.CompletedProcess:
    """``python script args...`` in ``cwd`` with ``os.environ`` plus ``env`` and PYTHONUNBUFFERED,
    capturing stdout and stderr as text; raises subprocess.TimeoutExpired after ``timeout`` s."""
    global _zygote
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    argv = [str(script), *args]
    if os.environ.get("NASBENCH_TESTS_FRESH"):
        return subprocess.run(
            [sys.executable, *argv], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env
        )
    if _zygote is None or _zygote.proc.poll() is not None:
        _zygote = Zygote()
        atexit.register(_zygote.close)
    return _zygote.run(argv, cwd, full_env, timeout)
