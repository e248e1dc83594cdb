"""A thin proxy in front of an OpenAI-compatible engine (vLLM) that keeps greenllm's
energy books for it.

It listens where the replica is reached (the node's address) and forwards to the engine
on loopback. For ``POST /v1/completions`` and ``/v1/chat/completions`` it asks the engine
for a stream with usage (``stream_options: {include_usage, continuous_usage_stats}``: exact
prompt and output token counts with every chunk), so it sees each request's tokens as they
come (:class:`~workers.serve.proxy_books.ProxyBooks` splits the GPU's energy by them), and
answers the client as it asked:

- a stream: the engine's chunks, as the client would get them from the engine (usage only
  where it asked for it); the last chunk carries ``usage.energy_j`` (the usage chunk with
  ``include_usage``, else the chunk with the ``finish_reason``);
- no stream: one response assembled from the chunks (text, finish reason, usage with
  ``energy_j``). A request asking for ``logprobs``, ``tools`` or ``echo`` is forwarded as
  it is (not streamed): its tokens are seen when it ends.

Errors from the engine pass through unchanged. Everything else (``/v1/models``,
``/health``, ``/metrics``) is forwarded as it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import threading
from itertools import count
from typing import Any

import aiohttp
from aiohttp import web

from workers.serve.proxy_books import ProxyBooks

log = logging.getLogger(__name__)

#: Longest a request to the engine may take, seconds.
REQUEST_TIMEOUT_S = 3600.0
#: Request fields that make the proxy forward a request unchanged (not as a stream).
PASS_THROUGH_FIELDS = ("logprobs", "top_logprobs", "tools", "functions", "echo", "prompt_logprobs")
_HOP_HEADERS = {"content-length", "transfer-encoding", "connection", "content-encoding", "host"}
_IDS = count()


def _usage_tokens(usage: Any) -> tuple[int | None, int | None]:
    if not isinstance(usage, dict):
        return None, None
    prompt, out = usage.get("prompt_tokens"), usage.get("completion_tokens")
    return (
        int(prompt) if isinstance(prompt, int) else None,
        int(out) if isinstance(out, int) else None,
    )


class _Assembly:
    """A non-streamed answer built from a stream's chunks."""

    def __init__(self, chat: bool) -> None:
        self.chat = chat
        self.head: dict[str, Any] = {}
        self.texts: dict[int, list[str]] = {}
        self.finish: dict[int, Any] = {}
        self.stop_reason: dict[int, Any] = {}

    def add(self, chunk: dict[str, Any]) -> None:
        if not self.head:
            self.head = {k: chunk.get(k) for k in ("id", "created", "model")}
        for choice in chunk.get("choices") or []:
            i = int(choice.get("index", 0))
            part = (choice.get("delta") or {}).get("content") if self.chat else choice.get("text")
            self.texts.setdefault(i, [])
            if part:
                self.texts[i].append(part)
            if choice.get("finish_reason") is not None:
                self.finish[i] = choice["finish_reason"]
                self.stop_reason[i] = choice.get("stop_reason")

    def document(self, usage: dict[str, Any] | None) -> dict[str, Any]:
        choices = []
        for i in sorted(self.texts):
            text = "".join(self.texts[i])
            if self.chat:
                message = {"role": "assistant", "content": text}
                choices.append(
                    {
                        "index": i,
                        "message": message,
                        "logprobs": None,
                        "finish_reason": self.finish.get(i),
                        "stop_reason": self.stop_reason.get(i),
                    }
                )
            else:
                choices.append(
                    {
                        "index": i,
                        "text": text,
                        "logprobs": None,
                        "finish_reason": self.finish.get(i),
                        "stop_reason": self.stop_reason.get(i),
                    }
                )
        return {
            **self.head,
            "object": "chat.completion" if self.chat else "text_completion",
            "choices": choices,
            "usage": usage,
        }


def _sse(doc: dict[str, Any] | str) -> bytes:
    data = doc if isinstance(doc, str) else json.dumps(doc, separators=(",", ":"))
    return f"data: {data}\n\n".encode()


class EnergyProxy:
    """The proxy (see module doc) on a daemon thread of its own.

    Args:
        upstream: The engine's root URL (``http://127.0.0.1:PORT``).
        books: The replica's energy books.
        host: Address to listen on.
        port: Port (0: a free one).
    """

    def __init__(self, upstream: str, books: ProxyBooks, host: str = "127.0.0.1", port: int = 0):
        self.upstream = upstream.rstrip("/")
        self.books = books
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self.host, self.port = host, int(self._sock.getsockname()[1])
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._started = threading.Event()
        self._stopped: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="energy-proxy", daemon=True)

    @property
    def root_url(self) -> str:
        """``http://HOST:PORT``."""
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT/v1``: what OpenAI clients take as ``base_url``."""
        return f"{self.root_url}/v1"

    def start(self, timeout_s: float = 10.0) -> EnergyProxy:
        """Serve; returns once it listens.

        Raises:
            TimeoutError: It did not start within ``timeout_s``.
        """
        self._thread.start()
        if not self._started.wait(timeout_s):
            raise TimeoutError(f"the energy proxy did not start within {timeout_s} s")
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop serving (requests in flight are cut)."""
        loop, stopped = self._loop, self._stopped
        if loop is not None and stopped is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stopped.set)
        self._thread.join(timeout_s)
        self._sock.close()

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
        )
        app = web.Application(client_max_size=64 * 2**20)
        app.router.add_post("/v1/completions", self._generate)
        app.router.add_post("/v1/chat/completions", self._generate)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.SockSite(self._runner, self._sock)
        await site.start()
        self._started.set()
        try:
            await self._stopped.wait()
        finally:
            await self._runner.cleanup()
            await self._session.close()

    # -- handlers -------------------------------------------------------------------------
    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        try:
            async with self._session.request(
                request.method,
                f"{self.upstream}{request.rel_url}",
                data=await request.read(),
                headers=headers,
            ) as reply:
                body = await reply.read()
                out = {k: v for k, v in reply.headers.items() if k.lower() not in _HOP_HEADERS}
                return web.Response(body=body, status=reply.status, headers=out)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return _error(502, f"the engine did not answer: {exc!r}")

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return await self._forward(request)  # the engine says what is wrong
        chat = request.path.endswith("chat/completions")
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
        key = f"proxy-{next(_IDS)}"
        self.books.begin(key, max_tokens if isinstance(max_tokens, int) else None)
        try:
            if any(body.get(f) for f in PASS_THROUGH_FIELDS):
                return await self._whole(request, key, raw)
            return await self._streamed(request, key, body, chat)
        finally:
            self.books.finish(key, failed=True)  # no-op when it was finished already

    async def _whole(self, request: web.Request, key: str, raw: bytes) -> web.StreamResponse:
        """Forward unchanged; the tokens are seen in the answer's usage."""
        assert self._session is not None
        path = f"{self.upstream}{request.rel_url}"
        headers = {"content-type": "application/json"}
        try:
            async with self._session.post(path, data=raw, headers=headers) as reply:
                body = await reply.read()
                status, ctype = reply.status, reply.headers.get("content-type", "")
        except (aiohttp.ClientError, TimeoutError) as exc:
            return _error(502, f"the engine did not answer: {exc!r}")
        doc: Any = None
        if status == 200 and ctype.startswith("application/json"):
            try:
                doc = json.loads(body)
            except ValueError:
                doc = None
        if not isinstance(doc, dict):
            self.books.finish(key, failed=status != 200)
            return web.Response(body=body, status=status, content_type=ctype.split(";")[0])
        usage = doc.get("usage")
        prompt, out = _usage_tokens(usage)
        done = self.books.finish(key, prompt, out)
        if isinstance(usage, dict):
            usage["energy_j"] = done.energy_j
        return web.json_response(doc)

    async def _streamed(
        self, request: web.Request, key: str, body: dict[str, Any], chat: bool
    ) -> web.StreamResponse:
        assert self._session is not None
        client_stream = bool(body.get("stream"))
        options = body.get("stream_options") if isinstance(body.get("stream_options"), dict) else {}
        client_usage = bool(client_stream and options and options.get("include_usage"))
        upstream_body = {
            **body,
            "stream": True,
            "stream_options": {"include_usage": True, "continuous_usage_stats": True},
        }
        try:
            reply = await self._session.post(
                f"{self.upstream}{request.rel_url}",
                json=upstream_body,
                headers={"accept": "text/event-stream"},
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            return _error(502, f"the engine did not answer: {exc!r}")
        async with reply:
            if reply.status != 200 or not reply.headers.get("content-type", "").startswith(
                "text/event-stream"
            ):
                content = await reply.read()
                self.books.finish(key, failed=True)
                ctype = reply.headers.get("content-type", "application/json").split(";")[0]
                return web.Response(body=content, status=reply.status, content_type=ctype)
            if client_stream:
                return await self._relay(request, reply, key, client_usage)
            return await self._assemble(reply, key, chat)

    async def _events(self, reply: aiohttp.ClientResponse) -> Any:
        """The engine's server-sent events: each ``data:`` payload, decoded."""
        buffer = b""
        async for chunk in reply.content.iter_any():
            buffer += chunk
            while b"\n\n" in buffer:
                event, buffer = buffer.split(b"\n\n", 1)
                for line in event.split(b"\n"):
                    if line.startswith(b"data:"):
                        payload = line[5:].strip().decode()
                        yield payload if payload == "[DONE]" else json.loads(payload)

    def _seen(self, key: str, doc: dict[str, Any]) -> dict[str, Any] | None:
        """Count a chunk's tokens; returns its usage (None: it has none)."""
        usage = doc.get("usage")
        prompt, out = _usage_tokens(usage)
        if out is not None:
            self.books.tokens(key, out, prompt)
        return usage if isinstance(usage, dict) else None

    async def _assemble(self, reply: aiohttp.ClientResponse, key: str, chat: bool) -> web.Response:
        assembly = _Assembly(chat)
        usage: dict[str, Any] | None = None
        try:
            async for doc in self._events(reply):
                if doc == "[DONE]":
                    break
                if "error" in doc and not doc.get("choices"):
                    self.books.finish(key, failed=True)
                    return web.json_response(doc, status=500)
                usage = self._seen(key, doc) or usage
                assembly.add(doc)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            self.books.finish(key, failed=True)
            return _error(502, f"the engine's answer broke off: {exc!r}")
        prompt, out = _usage_tokens(usage)
        done = self.books.finish(key, prompt, out)
        final = dict(usage or {})
        final["energy_j"] = done.energy_j
        return web.json_response(assembly.document(final))

    async def _relay(
        self, request: web.Request, reply: aiohttp.ClientResponse, key: str, client_usage: bool
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            status=200, headers={"content-type": "text/event-stream", "cache-control": "no-cache"}
        )
        await response.prepare(request)
        held: dict[str, Any] | None = None  # the finish chunk, until the energy is known
        usage: dict[str, Any] | None = None
        try:
            async for doc in self._events(reply):
                if doc == "[DONE]":
                    break
                if "error" in doc and not doc.get("choices"):
                    self.books.finish(key, failed=True)
                    await response.write(_sse(doc))
                    continue
                usage = self._seen(key, doc) or usage
                choices = doc.get("choices") or []
                if not choices:  # the engine's usage chunk: the request is done
                    continue
                if client_usage:
                    doc["usage"] = None
                else:
                    doc.pop("usage", None)
                if held is not None:
                    await response.write(_sse(held))
                    held = None
                if any(c.get("finish_reason") is not None for c in choices):
                    held = doc
                else:
                    await response.write(_sse(doc))
            prompt, out = _usage_tokens(usage)
            done = self.books.finish(key, prompt, out)
            final = {**(usage or {}), "energy_j": done.energy_j}
            if client_usage:
                if held is not None:
                    await response.write(_sse(held))
                tail = {k: v for k, v in (held or {}).items() if k in ("id", "object", "created")}
                await response.write(_sse({**tail, "choices": [], "usage": final}))
            elif held is not None:
                held["usage"] = final
                await response.write(_sse(held))
            await response.write(_sse("[DONE]"))
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            self.books.finish(key, failed=True)
            message = f"the engine's stream broke off: {exc!r}"
            error = {"error": {"message": message, "type": "server_error", "code": 502}}
            with contextlib.suppress(ConnectionError, aiohttp.ClientError):
                await response.write(_sse(error))
        except ConnectionError:  # the client went away: stop the engine's work too
            self.books.finish(key, failed=True)
        return response


def _error(status: int, message: str) -> web.Response:
    kind = "server_error" if status >= 500 else "invalid_request_error"
    return web.json_response(
        {"error": {"message": message, "type": kind, "code": status}}, status=status
    )
