"""What a replica hands back for one request: a stream of events, and the errors it raises.

A :class:`RequestStream` carries :class:`TokenEvent` s as tokens come out of batched
steps, then exactly one :class:`FinishEvent` (completed, cancelled, or failed with a
:class:`ServeError`). It can be read from asyncio (``async for``, when created with an
event loop) or from a thread (``for``); ``result`` is a future of the final
:class:`RequestResult` either way.

Every :class:`ServeError` carries the HTTP status and the OpenAI error ``type``/``code``
that the API answers with.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field

from greenllm.errors import GreenllmError


class ServeError(GreenllmError):
    """A request the serving layer refuses or cannot finish.

    Attributes:
        status: HTTP status of the OpenAI-style error answer.
        type: OpenAI error ``type``.
        code: OpenAI error ``code`` (or None).
        param: The request field at fault (or None).
    """

    status: int = 500
    type: str = "server_error"
    code: str | None = "internal_error"

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class InvalidRequestError(ServeError):
    """The request is malformed or asks for something unsupported (400)."""

    status = 400
    type = "invalid_request_error"
    code: str | None = None


class ContextLengthError(InvalidRequestError):
    """Prompt plus output do not fit the model's context (400)."""

    code: str | None = "context_length_exceeded"


class ModelNotFoundError(ServeError):
    """No replica serves the model asked for (404)."""

    status = 404
    type = "invalid_request_error"
    code: str | None = "model_not_found"


class QueueFullError(ServeError):
    """Every queue that could take the request is full (429, retry later).

    Attributes:
        retry_after_s: Seconds after which a retry may succeed.
    """

    status = 429
    type = "rate_limit_exceeded"
    code: str | None = "queue_full"

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ReplicaStoppedError(ServeError):
    """The replica stopped before the request finished (503)."""

    status = 503
    type = "server_error"
    code: str | None = "replica_stopped"


class GenerationError(ServeError):
    """The model failed while generating (500)."""

    code: str | None = "generation_failed"


@dataclass(frozen=True)
class Sampling:
    """How the next token is chosen.

    Attributes:
        temperature: 0 for greedy decoding; otherwise logits are divided by it.
        top_p: Nucleus sampling mass (1: the whole distribution).
        seed: Seed of this request's sampler (None: unseeded).
        ignore_eos: Keep generating past the end-of-text token.
    """

    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    ignore_eos: bool = False


@dataclass(frozen=True)
class RequestResult:
    """How one request ended.

    Attributes:
        request_id: Id given at submission.
        prompt_tokens: Prompt length, tokens.
        output_ids: Tokens generated (also on error or cancellation: those produced).
        finish_reason: ``stop`` (end of text), ``length`` (max tokens), ``cancelled``, or
            ``error``.
        energy_j: GPU energy of the steps it took part in, its share by tokens, joules.
        latency_s: Submission to finish, seconds.
        queue_s: Submission to its prefill, seconds (None if it never started).
        ttft_s: Submission to first token, seconds (None if none came).
        tpot_s: Mean time per output token after the first, seconds (None below 2 tokens).
        error: Why it failed (finish_reason ``error``), else None.
    """

    request_id: str
    prompt_tokens: int
    output_ids: list[int]
    finish_reason: str
    energy_j: float
    latency_s: float
    queue_s: float | None = None
    ttft_s: float | None = None
    tpot_s: float | None = None
    error: ServeError | None = None

    @property
    def completion_tokens(self) -> int:
        """Tokens generated."""
        return len(self.output_ids)


@dataclass(frozen=True)
class TokenEvent:
    """Tokens a request got from one step."""

    ids: tuple[int, ...]


@dataclass(frozen=True)
class FinishEvent:
    """The last event of a request."""

    result: RequestResult


Event = TokenEvent | FinishEvent


@dataclass(eq=False)
class RequestStream:
    """Events of one request (see module doc).

    Args:
        request_id: The request's id.
        loop: Deliver events to this asyncio loop (``async for``); None: to threads.
        tokens: Deliver token events (False: only the finish event).
    """

    request_id: str
    loop: asyncio.AbstractEventLoop | None = None
    tokens: bool = True
    result: Future[RequestResult] = field(default_factory=Future)

    def __post_init__(self) -> None:
        self._cancelled = threading.Event()
        self._sync: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self._async: asyncio.Queue[Event] | None = asyncio.Queue() if self.loop else None

    def push(self, event: Event) -> None:
        """Deliver ``event`` (called by the replica, from any thread)."""
        if isinstance(event, FinishEvent):
            if not self.result.done():
                self.result.set_result(event.result)
        elif not self.tokens:
            return
        if self._async is not None and self.loop is not None:
            # A closed loop raises RuntimeError: nobody is listening any more.
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(self._async.put_nowait, event)
        else:
            self._sync.put(event)

    def cancel(self) -> None:
        """Ask the replica to drop the request at its next step (it then finishes with
        ``cancelled``)."""
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        """Whether :meth:`cancel` was called."""
        return self._cancelled.is_set()

    def __iter__(self) -> Iterator[Event]:
        """Events until the finish, blocking (streams created without a loop)."""
        while True:
            event = self._sync.get()
            yield event
            if isinstance(event, FinishEvent):
                return

    async def __aiter__(self) -> AsyncIterator[Event]:
        """Events until the finish (streams created with a loop)."""
        if self._async is None:
            raise RuntimeError("this stream was created without an event loop")
        while True:
            event = await self._async.get()
            yield event
            if isinstance(event, FinishEvent):
                return
