"""The CLI as a user runs it, for the e2e tests: ``greenllm ...`` in a subprocess from the
repository, its output checked, and waits on conditions (never fixed sleeps)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def greenllm(*args: str, timeout_s: float = 180) -> subprocess.CompletedProcess[str]:
    """Run ``greenllm ARGS`` from the repository."""
    return subprocess.run(
        [sys.executable, "-m", "greenllm.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=REPO,
    )


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    """Its standard output, after checking it succeeded (else its standard error)."""
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def wait_for(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``check`` every second until it holds; fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(1.0)
    raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
