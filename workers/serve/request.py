"""One request inside a replica: its sampler, its tokens, its timings and its energy."""

from __future__ import annotations

import torch

from workers.serve.stream import (
    ContextLengthError,
    FinishEvent,
    InvalidRequestError,
    RequestResult,
    RequestStream,
    Sampling,
    ServeError,
    TokenEvent,
)


class Request:
    """A request from submission to finish (used by the serving thread only).

    Args:
        stream: Where its events go.
        prompt_ids: Prompt token ids.
        max_tokens: Most tokens to generate.
        sampling: How tokens are chosen.
    """

    def __init__(
        self, stream: RequestStream, prompt_ids: list[int], max_tokens: int, sampling: Sampling
    ) -> None:
        self.stream = stream
        self.prompt_ids = prompt_ids
        self.max_tokens = max_tokens
        self.sampling = sampling
        self.output_ids: list[int] = []
        self.energy_j = 0.0
        self.submitted_s = 0.0
        self.started_s: float | None = None
        self.first_token_s: float | None = None
        self.last_token_s: float | None = None
        self.done_reason: str | None = None
        self._generator: torch.Generator | None = None
        if sampling.temperature > 0:
            self._generator = torch.Generator()
            if sampling.seed is not None:
                self._generator.manual_seed(sampling.seed)
            else:
                self._generator.seed()

    def sample(self, logits: torch.Tensor) -> int:
        """The next token from this row's logits ``[vocab]``."""
        if self._generator is None:
            return int(logits.argmax())
        probs = torch.softmax(logits.float().cpu() / self.sampling.temperature, dim=-1)
        if self.sampling.top_p < 1.0:
            ordered, index = probs.sort(descending=True)
            keep = ordered.cumsum(0) - ordered < self.sampling.top_p
            probs = torch.zeros_like(probs).scatter(0, index[keep], ordered[keep])
        return int(torch.multinomial(probs, 1, generator=self._generator))

    def deliver(self, token: int, now_s: float, eos_id: int) -> None:
        """Take the token a step produced; mark the request done at EOS or max tokens."""
        if self.done_reason or self.stream.cancelled:
            return
        if token == eos_id and not self.sampling.ignore_eos:
            self.done_reason = "stop"
            return
        self.output_ids.append(token)
        if self.first_token_s is None:
            self.first_token_s = now_s
        self.last_token_s = now_s
        self.stream.push(TokenEvent((token,)))
        if len(self.output_ids) >= self.max_tokens:
            self.done_reason = "length"

    def finish(self, reason: str, now_s: float, error: ServeError | None = None) -> RequestResult:
        """Build the result, deliver the final event, and return the result."""
        n = len(self.output_ids)
        first, last = self.first_token_s, self.last_token_s
        result = RequestResult(
            request_id=self.stream.request_id,
            prompt_tokens=len(self.prompt_ids),
            output_ids=list(self.output_ids),
            finish_reason="error" if error is not None else reason,
            energy_j=self.energy_j,
            latency_s=now_s - self.submitted_s,
            queue_s=None if self.started_s is None else self.started_s - self.submitted_s,
            ttft_s=None if first is None else first - self.submitted_s,
            tpot_s=(last - first) / (n - 1) if first is not None and last and n > 1 else None,
            error=error,
        )
        self.stream.push(FinishEvent(result))
        return result


def check_sizes(context_tokens: int, prompt_tokens: int, max_tokens: int) -> None:
    """Raise the 400 a request of these sizes gets (empty prompt, no output, too long for a
    context of ``context_tokens``; 0: unknown, not checked)."""
    if prompt_tokens < 1:
        raise InvalidRequestError("the prompt is empty", param="prompt")
    if max_tokens < 1:
        raise InvalidRequestError("max_tokens must be at least 1", param="max_tokens")
    total = prompt_tokens + max_tokens
    if context_tokens and total > context_tokens:
        raise ContextLengthError(
            f"This model's maximum context length is {context_tokens} tokens. However, you "
            f"requested {total} tokens ({prompt_tokens} in the prompt, {max_tokens} for the "
            "completion). Please reduce the prompt or max_tokens.",
            param="prompt" if prompt_tokens >= context_tokens else "max_tokens",
        )
