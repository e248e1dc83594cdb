"""The OpenAI API's request bodies (validated) and response bodies (built as dicts).

Requests accept the fields the OpenAI API defines; unknown fields are ignored, fields this
server cannot honour (``n`` > 1, ``logprobs``, ``echo``, several prompts) are refused with a
400. ``ignore_eos`` (as in vLLM) keeps generating past the end-of-text token.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from greenllm.workloads import HFTokenizer, Tokenizer
from workers.serve.stream import InvalidRequestError, RequestResult, Sampling


class StreamOptions(BaseModel):
    """``stream_options``: ``include_usage`` adds a last chunk carrying the usage."""

    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class _Generation(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    n: int = Field(default=1, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    user: str | None = None
    ignore_eos: bool = False

    def sampling(self) -> Sampling:
        """The replica's sampling settings."""
        return Sampling(self.temperature, self.top_p, self.seed, self.ignore_eos)

    def stops(self) -> list[str]:
        """Stop strings (empty ones dropped)."""
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return [s for s in stops if s]

    def include_usage(self) -> bool:
        """Whether a stream ends with a usage chunk."""
        return bool(self.stream_options and self.stream_options.include_usage)

    def refuse_unsupported(self) -> None:
        """Raise for fields this server cannot honour."""
        if self.n != 1:
            raise InvalidRequestError("only n=1 is supported", param="n")
        if len(self.stops()) > 4:
            raise InvalidRequestError("at most 4 stop sequences are allowed", param="stop")


class CompletionRequest(_Generation):
    """``POST /v1/completions``."""

    prompt: str | list[str] | list[int] | list[list[int]]
    echo: bool = False
    logprobs: int | None = None
    suffix: str | None = None

    def prompt_ids(self, tokenizer: Tokenizer) -> list[int]:
        """The prompt as token ids (text is encoded, ids are taken as they are).

        Raises:
            InvalidRequestError: Several prompts, or an unsupported option.
        """
        self.refuse_unsupported()
        for name in ("echo", "logprobs", "suffix"):
            if getattr(self, name):
                raise InvalidRequestError(f"{name} is not supported", param=name)
        prompt = self.prompt
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], (str, list)):
            if len(prompt) != 1:
                raise InvalidRequestError("only one prompt per request is supported", "prompt")
            prompt = prompt[0]
        if isinstance(prompt, str):
            return tokenizer.encode(prompt)
        ids = [int(i) for i in prompt]  # type: ignore[arg-type]
        if any(not 0 <= i < tokenizer.vocab_size for i in ids):
            raise InvalidRequestError("prompt token ids outside the vocabulary", param="prompt")
        return ids


class ChatMessage(BaseModel):
    """One message of a conversation (text content, or a list of text parts)."""

    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        """The message's text (text parts joined)."""
        if isinstance(self.content, list):
            parts = []
            for part in self.content:
                if part.get("type") != "text" or not isinstance(part.get("text"), str):
                    raise InvalidRequestError("only text content parts are supported", "messages")
                parts.append(part["text"])
            return "".join(parts)
        return self.content or ""


class ChatCompletionRequest(_Generation):
    """``POST /v1/chat/completions``."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)

    def prompt_ids(self, tokenizer: Tokenizer) -> list[int]:
        """The conversation as prompt token ids: the tokenizer's chat template when it has
        one, else ``role: text`` lines ending in ``assistant:``."""
        self.refuse_unsupported()
        messages = [{"role": m.role, "content": m.text()} for m in self.messages]
        hf = tokenizer.hf if isinstance(tokenizer, HFTokenizer) else None
        if hf is not None and getattr(hf, "chat_template", None):
            ids = hf.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
            return [int(i) for i in (ids["input_ids"] if isinstance(ids, dict) else ids)]
        text = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"
        return tokenizer.encode(text)


def usage(result: RequestResult) -> dict[str, Any]:
    """The ``usage`` object, with the request's measured energy ``energy_j``."""
    return {
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "total_tokens": result.prompt_tokens + result.completion_tokens,
        "energy_j": result.energy_j,
    }


def error_body(message: str, type_: str, param: str | None, code: str | None) -> dict[str, Any]:
    """An OpenAI error body."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


class ResponseShape:
    """Builds the bodies and stream chunks of one response.

    Args:
        chat: Chat completion (else text completion).
        request_id: ``chatcmpl-...`` or ``cmpl-...``.
        model: Model id.
        include_usage: Stream chunks carry ``"usage": null`` and a usage chunk ends them.
    """

    def __init__(self, chat: bool, request_id: str, model: str, include_usage: bool) -> None:
        self.chat, self.id, self.model = chat, request_id, model
        self.include_usage = include_usage
        self.created = int(time.time())

    def _head(self, obj: str) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}

    def body(self, text: str, finish_reason: str, result: RequestResult) -> dict[str, Any]:
        """The whole (non-streamed) response."""
        if self.chat:
            choice: dict[str, Any] = {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
            head = self._head("chat.completion")
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
            head = self._head("text_completion")
        return {**head, "choices": [choice], "usage": usage(result), "system_fingerprint": None}

    def chunk(self, delta: str | None, finish_reason: str | None = None) -> dict[str, Any]:
        """One stream chunk: a text delta (chat: None for the opening role chunk, "" with
        the finish reason for the last one)."""
        if self.chat:
            head = self._head("chat.completion.chunk")
            d: dict[str, Any] = {"role": "assistant", "content": ""} if delta is None else {}
            if delta:
                d["content"] = delta
            choice: dict[str, Any] = {"index": 0, "delta": d, "logprobs": None}
        else:
            head = self._head("text_completion")
            choice = {"index": 0, "text": delta or "", "logprobs": None}
        choice["finish_reason"] = finish_reason
        out = {**head, "choices": [choice], "system_fingerprint": None}
        if self.include_usage:
            out["usage"] = None
        return out

    def usage_chunk(self, result: RequestResult) -> dict[str, Any]:
        """The last chunk of a stream with ``include_usage``: no choices, the usage."""
        obj = "chat.completion.chunk" if self.chat else "text_completion"
        return {**self._head(obj), "choices": [], "usage": usage(result)}
