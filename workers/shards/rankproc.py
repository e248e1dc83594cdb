"""A training rank's process, started here (:class:`LocalRank`) or through Ray on this node
(:class:`workers.shards.rayrank.RayRank`); both look like :class:`RankProcess`.

The process runs in its own session (its whole process group is signalled on stop), its
stdout and stderr go to one log file, and it is killed with the thread that started it
(:mod:`workers.shards.rankexec`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Protocol

from workers.shards.rankexec import PARENT_PID_ENV

#: The launcher that ties the rank's life to its parent's.
RANKEXEC = Path(__file__).with_name("rankexec.py")


class RankProcess(Protocol):
    """One running rank."""

    def start(self) -> None:
        """Start it (raises GreenllmError when it cannot)."""
        ...

    def poll(self) -> int | None:
        """Its exit status once it ended (negative: killed by that signal), else None."""
        ...

    def terminate(self) -> None:
        """Ask it to stop (SIGTERM to its process group)."""
        ...

    def kill(self) -> None:
        """Stop it now (SIGKILL to its process group)."""
        ...

    def failure(self) -> str | None:
        """Why it could not run at all (e.g. its working directory could not be set up)."""
        ...


class LocalRank:
    """A rank started as a child of this process.

    Args:
        command: The command (first word resolved through PATH).
        env: Its whole environment.
        cwd: Its working directory.
        log_path: Where its stdout and stderr go (appended).
    """

    def __init__(self, command: list[str], env: dict[str, str], cwd: Path, log_path: Path) -> None:
        self.command = command
        self.env = env
        self.cwd = cwd
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self._error: str | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start the process (a missing working directory is a failure, not an error)."""
        if not self.cwd.is_dir():
            self._error = f"working directory {self.cwd} does not exist on this node"
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**self.env, PARENT_PID_ENV: str(os.getpid())}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(RANKEXEC), *self.command],
                cwd=self.cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def poll(self) -> int | None:
        """Exit status, or None while it runs (-1 when it never started)."""
        if self.process is None:
            return -1 if self._error is not None else None
        return self.process.poll()

    def wait(self) -> int:
        """Wait for it to end; its exit status."""
        if self.process is None:
            return -1
        return self.process.wait()

    def _signal(self, sig: int) -> None:
        with self._lock:
            if self.process is None or self.process.returncode is not None:
                return
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, sig)

    def terminate(self) -> None:
        """SIGTERM to its process group."""
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL to its process group."""
        self._signal(signal.SIGKILL)

    def failure(self) -> str | None:
        """Why it never started (None when it did)."""
        return self._error
