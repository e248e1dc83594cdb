"""The OpenAI-compatible HTTP API over a :class:`~workers.serve.pool.ReplicaPool`.

``create_app(pool)`` returns a FastAPI app: run it under uvicorn, or hand it to Ray Serve
(``@serve.ingress(app)``, see :mod:`workers.serve.cluster_ingress`). Routes:

- ``GET /v1/models``; ``POST /v1/completions``; ``POST /v1/chat/completions``, with
  ``stream: true`` as server-sent events (chunks; a usage chunk when
  ``stream_options.include_usage``; ``data: [DONE]``);
- ``GET /v1/greenllm/replicas``: every replica's figures and weight (not part of OpenAI's API);
- ``GET /health``.

Each ``usage`` carries ``energy_j``, the GPU energy the request used (measured). Errors are
OpenAI error bodies: unknown model 404, prompt too long 400 (with the token counts),
malformed body 400, body above the cap 413 (before it is read), every
queue full 429 with ``Retry-After``, replica stopped 503 (in a stream: an error event, after
which the stream ends without ``[DONE]``).
"""

from __future__ import annotations

import asyncio
import json
import math
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException

from workers.serve.bodylimit import DEFAULT_MAX_BODY_BYTES, BodyLimit
from workers.serve.pool import ModelInfo, ReplicaPool
from workers.serve.schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    ResponseShape,
    error_body,
)
from workers.serve.stream import (
    FinishEvent,
    QueueFullError,
    RequestResult,
    RequestStream,
    ServeError,
)
from workers.serve.text import TextAssembler

#: Output tokens when a request gives no max_tokens and the model's context is unknown.
DEFAULT_MAX_TOKENS = 256
#: Default max_tokens of a text completion (as OpenAI's legacy endpoint).
DEFAULT_COMPLETION_TOKENS = 16


def _error_response(exc: ServeError) -> JSONResponse:
    headers = {}
    if isinstance(exc, QueueFullError):
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after_s)))
    body = error_body(str(exc), exc.type, exc.param, exc.code)
    return JSONResponse(body, status_code=exc.status, headers=headers)


def _sse(data: Any) -> bytes:
    return f"data: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def create_app(
    pool: ReplicaPool, title: str = "greenllm", max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
) -> FastAPI:
    """The API app serving ``pool``'s replicas (see module doc); a request body above
    ``max_body_bytes`` is answered 413 before it is read (:class:`BodyLimit`)."""
    app = FastAPI(title=title, docs_url=None, redoc_url=None)
    app.state.pool = pool
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)

    @app.exception_handler(ServeError)
    async def serve_error(_: Request, exc: ServeError) -> JSONResponse:
        return _error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {}
        if first.get("type") == "json_invalid":
            message = "We could not parse the JSON body of your request: it is not valid JSON."
            return JSONResponse(error_body(message, "invalid_request_error", None, None), 400)
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        param = ".".join(loc) or None
        message = f"{param or 'body'}: {first.get('msg', 'invalid request')}"
        return JSONResponse(error_body(message, "invalid_request_error", param, None), 400)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        message = str(exc.detail)
        if exc.status_code == 404:
            message = f"Unknown request URL: {request.method} {request.url.path}."
        code = "unknown_url" if exc.status_code == 404 else None
        body = error_body(message, "invalid_request_error", None, code)
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def internal(_: Request, exc: Exception) -> JSONResponse:
        message = f"internal error: {type(exc).__name__}: {exc}"
        return JSONResponse(error_body(message, "server_error", None, "internal_error"), 500)

    @app.get("/health")
    async def health() -> JSONResponse:
        up = any(r.running for r in pool.replicas().values())
        return JSONResponse({"status": "ok" if up else "unavailable"}, 200 if up else 503)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [_model_card(m) for m in pool.models()]}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str) -> dict[str, Any]:
        return _model_card(pool.model(model_id))

    @app.get("/v1/greenllm/replicas")
    async def replicas() -> dict[str, Any]:
        weights = pool.weights()
        figures = await asyncio.to_thread(pool.metrics)
        return {
            "object": "list",
            "data": [{**m.to_dict(), "weight": weights.get(n)} for n, m in figures.items()],
        }

    @app.post("/v1/completions", response_model=None)
    async def completions(body: CompletionRequest) -> JSONResponse | StreamingResponse:
        info = pool.model(body.model)
        ids = body.prompt_ids(info.tokenizer)
        max_tokens = body.max_tokens or DEFAULT_COMPLETION_TOKENS
        return await _generate(pool, info, body, ids, max_tokens, chat=False)

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(body: ChatCompletionRequest) -> JSONResponse | StreamingResponse:
        info = pool.model(body.model)
        ids = body.prompt_ids(info.tokenizer)
        max_tokens = body.max_completion_tokens or body.max_tokens
        if max_tokens is None:
            context = info.context_tokens
            max_tokens = max(1, context - len(ids)) if context else DEFAULT_MAX_TOKENS
        return await _generate(pool, info, body, ids, max_tokens, chat=True)

    return app


def _model_card(info: ModelInfo) -> dict[str, Any]:
    card: dict[str, Any] = {
        "id": info.model_id,
        "object": "model",
        "created": 0,
        "owned_by": "greenllm",
    }
    if info.context_tokens:
        card["max_model_len"] = info.context_tokens
    return card


async def _generate(
    pool: ReplicaPool,
    info: ModelInfo,
    body: ChatCompletionRequest | CompletionRequest,
    ids: list[int],
    max_tokens: int,
    chat: bool,
) -> JSONResponse | StreamingResponse:
    rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
    loop = asyncio.get_running_loop()
    stops = body.stops()
    tokens = body.stream or bool(stops)  # else only the finish is needed: fewer wake-ups
    _, stream = pool.submit(body.model, ids, max_tokens, body.sampling(), rid, loop, tokens)
    shape = ResponseShape(chat, rid, info.model_id, body.include_usage())
    text = TextAssembler(info.tokenizer, stops)
    if body.stream:
        return StreamingResponse(
            _events(stream, shape, text),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    try:
        result = await _collect(stream, text)
    finally:
        stream.cancel()  # a no-op once finished; frees the slot if the client went away
    if result.error is not None:
        return _error_response(result.error)
    return JSONResponse(shape.body(text.text, _finish_reason(result, text), result))


def _finish_reason(result: RequestResult, text: TextAssembler) -> str:
    return "stop" if text.stopped or result.finish_reason == "cancelled" else result.finish_reason


async def _collect(stream: RequestStream, text: TextAssembler) -> RequestResult:
    async for event in stream:
        if isinstance(event, FinishEvent):
            if not stream.tokens:
                text.feed(event.result.output_ids)
            text.flush()
            return event.result
        text.feed(event.ids)
        if text.stopped:
            stream.cancel()
    raise AssertionError("a request stream ended without its finish event")


async def _events(
    stream: RequestStream, shape: ResponseShape, text: TextAssembler
) -> AsyncIterator[bytes]:
    try:
        if shape.chat:
            yield _sse(shape.chunk(None))
        async for event in stream:
            if not isinstance(event, FinishEvent):
                delta = text.feed(event.ids)
                if delta:
                    yield _sse(shape.chunk(delta))
                if text.stopped:
                    stream.cancel()
                continue
            result = event.result
            if result.error is not None:
                exc = result.error
                yield _sse(error_body(str(exc), exc.type, exc.param, exc.code))
                return
            tail = text.flush()
            if tail:
                yield _sse(shape.chunk(tail))
            yield _sse(shape.chunk("", _finish_reason(result, text)))
            if shape.include_usage:
                yield _sse(shape.usage_chunk(result))
            yield b"data: [DONE]\n\n"
            return
    finally:
        stream.cancel()  # the client went away: free the replica's slot
