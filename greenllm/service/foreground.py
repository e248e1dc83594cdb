"""Run a long-lived service (controller, agent) in the foreground until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Coroutine
from typing import Any

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(verbose: bool = False) -> None:
    """Log to stderr (INFO, or DEBUG when ``verbose``)."""
    logging.basicConfig(
        stream=sys.stderr, level=logging.DEBUG if verbose else logging.INFO, format=LOG_FORMAT
    )


async def _until_signalled(main: Coroutine[Any, Any, None]) -> None:
    task = asyncio.create_task(main)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        await task
    except asyncio.CancelledError:
        logging.getLogger(__name__).info("stopped by signal")


def run_foreground(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` on a fresh event loop; SIGINT or SIGTERM cancel it cleanly."""
    asyncio.run(_until_signalled(main))
