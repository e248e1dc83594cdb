"""Run a long-lived coroutine (controller, agent) on its own event-loop thread.

Ray actors wrap services this way: the actor's ``__init__`` starts the service, so an
actor that Ray restarts after a failure comes back serving with no further call.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class BackgroundService:
    """A coroutine running on a daemon thread with its own event loop.

    Args:
        make: Builds the coroutine; called on the service thread.
        name: Thread name.
    """

    def __init__(self, make: Callable[[], Coroutine[Any, Any, None]], name: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._task: asyncio.Task[None] | None = None
        self._started = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(make,), name=name, daemon=True)
        self._thread.start()
        self._started.wait()

    def _run(self, make: Callable[[], Coroutine[Any, Any, None]]) -> None:
        asyncio.set_event_loop(self._loop)
        self._task = self._loop.create_task(make())
        self._started.set()
        try:
            self._loop.run_until_complete(self._task)
        except asyncio.CancelledError:
            pass
        except BaseException as exc:
            self.error = exc
        finally:
            self._loop.close()

    def call(self, fn: Callable[[], T], timeout_s: float = 10.0) -> T:
        """Run ``fn`` on the service's event loop (where its objects may be touched) and
        return its result.

        Raises:
            TimeoutError: It did not run within ``timeout_s``.
        """

        async def run() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout_s)

    def alive(self) -> bool:
        """True while the coroutine runs."""
        return self._thread.is_alive()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Cancel the coroutine and wait up to ``timeout_s`` for it to finish."""
        if self._task is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._task.cancel)
        self._thread.join(timeout_s)
