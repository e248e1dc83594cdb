"""Runs a rank's command so that it dies with the thread that started it (Linux).

Started as ``python rankexec.py CMD ARGS...`` (by path: it needs nothing but the standard
library). It asks the kernel for SIGKILL when its parent thread ends (``PR_SET_PDEATHSIG``,
kept across ``exec``), checks the parent is still the one that started it, then becomes
``CMD``. So a rank whose agent or Ray worker is killed (its node lost) never keeps training
nor writing checkpoints for a stale placement.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

#: The pid of the process that started the rank (set by the runner).
PARENT_PID_ENV = "GREENLLM_RANK_PARENT_PID"
PR_SET_PDEATHSIG = 1


def main() -> None:
    """Arm the parent-death signal and exec the command in ``sys.argv[1:]``."""
    parent = int(os.environ.pop(PARENT_PID_ENV, "0") or 0)
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if parent and os.getppid() != parent:
            os._exit(1)
    argv = sys.argv[1:]
    if not argv:
        print("greenllm: no command to run", file=sys.stderr)
        os._exit(2)
    try:
        os.execvp(argv[0], argv)
    except OSError as exc:
        print(f"greenllm: cannot run {argv[0]!r}: {exc.strerror}", file=sys.stderr, flush=True)
        os._exit(127)


if __name__ == "__main__":
    main()
