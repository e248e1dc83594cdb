"""The cluster's inference ingress: one OpenAI-compatible API per inference job, routed to
the job's replicas by the controller's load weights.

Job ``J`` is served at ``<ingress>/jobs/J/v1`` (``GET /models``, ``POST /completions``,
``POST /chat/completions``, streamed or not). The ingress asks the controller (``GetJob``,
cached for :data:`DIRECTORY_TTL_S`) where the job's replicas serve and their weights, and
sends each request to the replica with the fewest requests in flight per unit of weight
(weights follow each replica's measured throughput at its power limit and clocks; a
drained replica has weight 0). Each replica is a full OpenAI API of its own
(:mod:`workers.shards.served`): it validates, tokenizes, generates and meters the request,
so ``usage.energy_j`` and error bodies pass through unchanged.

A replica that answers 429 (its queue is full) or cannot be reached is left alone for a
moment and the next one is tried; when none takes the request the client gets 429 with
``Retry-After`` (or 503 when none serves at all). A replica lost in the middle of a
stream ends the stream with an error event. Nothing is retried once bytes have reached
the client.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import aiohttp
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from greenllm.proto.v1 import cluster_pb2
from greenllm.serving.routing import route_key
from workers.serve.bodylimit import DEFAULT_MAX_BODY_BYTES, BodyLimit
from workers.serve.schemas import error_body

log = logging.getLogger(__name__)

#: How long the ingress trusts what the controller said about a job's replicas, seconds.
DIRECTORY_TTL_S = 1.0
#: How long a replica that could not be reached is skipped, seconds.
UNREACHABLE_PAUSE_S = 2.0
#: How long a replica that answered 429 (queue full) is skipped, seconds.
BUSY_PAUSE_S = 0.25
#: Longest a request may take end to end, seconds.
REQUEST_TIMEOUT_S = 600.0
#: Headers passed back from a replica.
PASSED_HEADERS = ("content-type", "retry-after")


@dataclass(frozen=True)
class Upstream:
    """One replica of a job, as the controller describes it.

    Attributes:
        shard_id: The replica's shard.
        url: Its API's base URL (``http://host:port/v1``).
        weight: Its share of the job's requests (0: drained).
    """

    shard_id: str
    url: str
    weight: float


def upstreams_of(job: cluster_pb2.Job) -> list[Upstream]:
    """The replicas of ``job`` that serve (an endpoint reported, not ended)."""
    return [
        Upstream(r.shard_id, r.endpoint, r.load_weight)
        for r in job.replicas
        if r.endpoint and r.state in ("starting", "started", "running")
    ]


class ReplicaDirectory:
    """The replicas of each job, from the controller, cached for :data:`DIRECTORY_TTL_S`.

    Args:
        get_job: Returns a job by id, None when the controller knows no such job
            (blocking: it runs on a worker thread).
        clock: Returns the time, seconds.
    """

    def __init__(
        self,
        get_job: Callable[[str], cluster_pb2.Job | None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._get_job = get_job
        self._clock = clock
        self._cache: dict[str, tuple[float, cluster_pb2.Job | None]] = {}

    async def job(self, job_id: str) -> cluster_pb2.Job | None:
        """The job as the controller last described it (None: unknown)."""
        hit = self._cache.get(job_id)
        if hit is not None and self._clock() - hit[0] < DIRECTORY_TTL_S:
            return hit[1]
        job = await asyncio.to_thread(self._get_job, job_id)
        self._cache[job_id] = (self._clock(), job)
        return job


class Router:
    """Picks replicas by :func:`~greenllm.serving.routing.route_key` (fewest requests in
    flight per unit of weight first, as the simulator routes); replicas that refused (429)
    or could not be reached are skipped until their pause ends."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.in_flight: dict[str, int] = defaultdict(int)
        self._paused_until: dict[str, float] = {}
        self._retry_after_s: dict[str, float] = {}

    def order(self, upstreams: list[Upstream]) -> list[Upstream]:
        """The replicas to try, best first (drained and paused ones left out)."""
        now = self._clock()
        ready = [u for u in upstreams if u.weight > 0 and self._paused_until.get(u.url, 0.0) <= now]
        return sorted(ready, key=lambda u: route_key(self.in_flight[u.url], u.weight, u.shard_id))

    def pause(self, url: str, seconds: float, retry_after_s: float | None = None) -> None:
        """Skip ``url`` for ``seconds``; ``retry_after_s``: it refused, being full, and said
        when to come back."""
        self._paused_until[url] = self._clock() + seconds
        if retry_after_s is None:
            self._retry_after_s.pop(url, None)
        else:
            self._retry_after_s[url] = retry_after_s

    def busy_retry_after_s(self, upstreams: list[Upstream]) -> float | None:
        """When every serving replica is paused for being full: the soonest they said to
        come back, seconds (None: some were unreachable instead, or none is paused)."""
        now = self._clock()
        told = []
        for u in upstreams:
            if u.weight <= 0:
                continue
            if self._paused_until.get(u.url, 0.0) <= now or u.url not in self._retry_after_s:
                return None
            told.append(self._retry_after_s[u.url])
        return min(told, default=None)


def _error(status: int, message: str, kind: str, retry_after_s: float | None = None) -> Response:
    headers = {"Retry-After": str(max(1, math.ceil(retry_after_s)))} if retry_after_s else {}
    return JSONResponse(error_body(message, kind, None, None), status_code=status, headers=headers)


def _retry_after_s(response: aiohttp.ClientResponse) -> float:
    try:
        return max(0.5, float(response.headers.get("retry-after", "1")))
    except ValueError:
        return 1.0


def _sse_error(message: str) -> bytes:
    body = error_body(message, "server_error", None, "replica_lost")
    return f"data: {json.dumps(body, separators=(',', ':'))}\n\n".encode()


def create_ingress_app(
    directory: ReplicaDirectory, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
) -> FastAPI:
    """The ingress app (see module doc); a request body above ``max_body_bytes`` is
    answered 413 before it is read (:class:`~workers.serve.bodylimit.BodyLimit`)."""
    app = FastAPI(title="greenllm ingress", docs_url=None, redoc_url=None)
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    router = Router()
    state: dict[str, aiohttp.ClientSession] = {}

    def client() -> aiohttp.ClientSession:  # made in the loop that serves (aiohttp's rule)
        if "http" not in state:
            state["http"] = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0),
                timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
                auto_decompress=False,
            )
        return state["http"]

    async def upstreams(job_id: str) -> list[Upstream] | Response:
        job = await directory.job(job_id)
        if job is None:
            return _error(404, f"no inference job {job_id!r}", "invalid_request_error")
        if job.spec.kind != "infer":
            return _error(404, f"job {job_id} is not an inference job", "invalid_request_error")
        found = upstreams_of(job)
        if not found:
            why = job.reason or f"job {job_id} is {job.state}"
            return _error(503, f"no replica of job {job_id} serves now ({why})", "server_error")
        return found

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/jobs/{job_id}/v1/models")
    async def models(job_id: str) -> Response:
        found = await upstreams(job_id)
        if isinstance(found, Response):
            return found
        for u in found:
            try:
                async with client().get(
                    f"{u.url}/models", timeout=aiohttp.ClientTimeout(total=10.0)
                ) as reply:
                    content = await reply.read()
            except (aiohttp.ClientError, TimeoutError):
                router.pause(u.url, UNREACHABLE_PAUSE_S)
                continue
            return Response(content, reply.status, media_type="application/json")
        return _error(503, f"no replica of job {job_id} answered", "server_error")

    @app.post("/jobs/{job_id}/v1/{api:path}")
    async def generate(job_id: str, api: str, request: Request) -> Response:
        if api not in ("completions", "chat/completions"):
            return _error(404, f"unknown route /v1/{api}", "invalid_request_error")
        found = await upstreams(job_id)
        if isinstance(found, Response):
            return found
        body = await request.body()
        refused_for: list[float] = []
        for u in router.order(found):
            router.in_flight[u.url] += 1
            sent = False
            try:
                reply = await client().post(
                    f"{u.url}/{api}", data=body, headers={"content-type": "application/json"}
                )
                if reply.status == 429:
                    refused_for.append(_retry_after_s(reply))
                    router.pause(u.url, BUSY_PAUSE_S, refused_for[-1])
                    reply.release()
                    continue
                if not reply.headers.get("content-type", "").startswith("text/event-stream"):
                    content = await reply.read()  # whole, or not at all (then: next replica)
                    reply.release()
                    return Response(content, reply.status, headers=_passed(reply))
                sent = True
                return _relay(reply, router, u.url)
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.warning("ingress: replica %s of job %s: %r", u.shard_id, job_id, exc)
                router.pause(u.url, UNREACHABLE_PAUSE_S)
            finally:
                if not sent:
                    router.in_flight[u.url] -= 1
        busy_s = router.busy_retry_after_s(found)
        if busy_s is not None:
            refused_for.append(busy_s)
        if refused_for:
            return _error(
                429,
                f"every replica of job {job_id} is busy; retry later",
                "rate_limit_error",
                min(refused_for),
            )
        return _error(503, f"no replica of job {job_id} could be reached", "server_error")

    return app


def _passed(reply: aiohttp.ClientResponse) -> dict[str, str]:
    return {k: v for k, v in reply.headers.items() if k.lower() in PASSED_HEADERS}


def _relay(reply: aiohttp.ClientResponse, router: Router, url: str) -> Response:
    """A replica's event stream, passed through as it arrives; if the replica is lost on
    the way, the stream ends with an error event. The in-flight count drops when it has
    all been sent or the client went away."""

    async def body() -> AsyncIterator[bytes]:
        try:
            async for chunk in reply.content.iter_any():
                yield chunk
        except (aiohttp.ClientError, TimeoutError) as exc:
            yield _sse_error(f"the replica serving this request was lost: {exc!r}")
        finally:
            reply.release()
            router.in_flight[url] -= 1

    return StreamingResponse(body(), status_code=reply.status, headers=_passed(reply))
