"""Serving parts without a model: energy ledger, routing pool, text assembly, bodies."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from greenllm.workloads import ByteTokenizer, Tokenizer
from workers.serve.pool import ReplicaPool
from workers.serve.replica_metrics import ReplicaMetrics
from workers.serve.request_energy import RequestEnergySplit
from workers.serve.schemas import ChatCompletionRequest, CompletionRequest
from workers.serve.stream import (
    InvalidRequestError,
    ModelNotFoundError,
    QueueFullError,
    ReplicaStoppedError,
    RequestStream,
    Sampling,
)
from workers.serve.text import TextAssembler


def test_ledger_splits_each_step_by_tokens_and_books_idle_time() -> None:
    counter = [100.0]
    ledger = RequestEnergySplit(lambda: counter[0])
    counter[0] += 5.0
    assert ledger.idle() == 5.0
    counter[0] += 30.0
    shares = ledger.step({"a": 10, "b": 20})
    assert shares == {"a": 10.0, "b": 20.0}
    counter[0] += 4.0
    assert ledger.step({"a": 1, "b": 1}) == {"a": 2.0, "b": 2.0}
    counter[0] += 1.0
    assert ledger.step({}) == {}  # no request: idle
    totals = ledger.totals()
    assert (totals.metered_j, totals.attributed_j, totals.idle_j) == (40.0, 34.0, 6.0)
    counter[0] -= 3.0  # a counter that goes back (wrap, reset) adds nothing
    assert ledger.idle() == 0.0 and ledger.totals().metered_j == 40.0


@dataclass
class FakeReplica:
    name: str
    model_id: str = "m"
    context_tokens: int = 64
    tokenizer: Tokenizer = field(default_factory=ByteTokenizer)
    max_queue: int = 2
    queued: int = 0
    in_batch: int = 0
    running: bool = True
    taken: int = 0

    def load_now(self) -> tuple[int, int]:
        return self.queued, self.in_batch

    def check(self, prompt_tokens: int, max_tokens: int) -> None:
        pass

    def submit(
        self,
        prompt_ids: Sequence[int],
        max_tokens: int,
        sampling: Sampling | None = None,
        request_id: str | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        tokens: bool = True,
    ) -> RequestStream:
        if not self.running:
            raise ReplicaStoppedError("stopped")
        if self.queued >= self.max_queue:
            raise QueueFullError("full", retry_after_s=3.0)
        self.taken += 1
        self.in_batch += 1  # it never finishes
        return RequestStream(request_id or "r")

    def metrics(self) -> ReplicaMetrics:
        raise NotImplementedError

    def stop(self, reason: str = "", timeout_s: float = 0.0) -> None:
        self.running = False


def test_requests_spread_in_proportion_to_weights_as_load_builds() -> None:
    a, b, c = FakeReplica("a"), FakeReplica("b"), FakeReplica("c")
    pool = ReplicaPool([a, b, c])
    pool.set_weights({"a": 3.0, "b": 1.0, "c": 0.0, "unknown": 5.0})
    for _ in range(40):
        pool.submit("m", [1], 1)
    assert (a.taken, b.taken, c.taken) == (30, 10, 0)
    assert pool.weights() == {"a": 3.0, "b": 1.0, "c": 0.0}
    with pytest.raises(ValueError):
        pool.set_weights({"a": -1.0})


def test_busy_pool_goes_to_the_least_loaded_per_weight_and_skips_full_queues() -> None:
    a, b = FakeReplica("a", in_batch=6), FakeReplica("b", in_batch=1)
    pool = ReplicaPool([a, b])
    pool.set_weights({"a": 2.0, "b": 1.0})
    assert pool.submit("m", [1], 1)[0] is b  # (1+1)/1 < (6+1)/2
    a.in_batch = b.in_batch = 0
    assert [pool.submit("m", [1], 1)[0].name for _ in range(3)] == ["a", "a", "b"]
    b.queued = b.max_queue
    assert pool.submit("m", [1], 1)[0] is a  # b's queue is full
    a.queued = a.max_queue
    with pytest.raises(QueueFullError) as full:
        pool.submit("m", [1], 1)
    assert full.value.status == 429 and full.value.retry_after_s == 3.0
    a.running = b.running = False
    with pytest.raises(ReplicaStoppedError):
        pool.submit("m", [1], 1)
    with pytest.raises(ModelNotFoundError) as missing:
        pool.submit("other", [1], 1)
    assert missing.value.status == 404 and missing.value.param == "model"
    assert pool.remove("a") is a and pool.remove("a") is None


def test_text_assembler_holds_back_stop_prefixes_and_cuts_at_the_stop() -> None:
    tok = ByteTokenizer()
    text = TextAssembler(tok, ["END"])
    out = [text.feed(tok.encode(ch)) for ch in "abEN"]
    assert "".join(out) == "ab" and not text.stopped  # "EN" might start "END"
    assert text.feed(tok.encode("Dxyz")) == "" and text.stopped and text.text == "ab"
    plain = TextAssembler(tok)
    euro = tok.encode("€")  # three bytes: nothing until the character is whole
    assert [plain.feed([b]) for b in euro] == ["", "", "€"]
    assert plain.flush() == ""


def test_request_bodies_give_prompt_ids_and_refuse_what_is_unsupported() -> None:
    tok = ByteTokenizer()
    assert CompletionRequest(model="m", prompt="hi").prompt_ids(tok) == [104, 105]
    assert CompletionRequest(model="m", prompt=[[1, 2]]).prompt_ids(tok) == [1, 2]
    for bad in ({"prompt": ["a", "b"]}, {"prompt": [999]}, {"prompt": "x", "n": 2}):
        with pytest.raises(InvalidRequestError):
            CompletionRequest.model_validate({"model": "m", **bad}).prompt_ids(tok)
    chat = ChatCompletionRequest.model_validate(
        {
            "model": "m",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
            ],
        }
    )
    assert tok.decode(chat.prompt_ids(tok)) == "system: Be brief.\nuser: Hi\nassistant:"
    assert chat.sampling() == Sampling(temperature=1.0)
