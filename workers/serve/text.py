"""Turning a request's tokens into text deltas, honouring stop strings.

Each call to :meth:`TextAssembler.feed` decodes the tokens so far and returns the text not
yet handed out. Text that might still change is held back: a trailing replacement
character (an incomplete multi-byte sequence) and, when stop strings are given, a tail that
could be the start of one. Once a stop string appears, the text before it is final and
:attr:`TextAssembler.stopped` is set.
"""

from __future__ import annotations

from collections.abc import Sequence

from greenllm.workloads import Tokenizer


class TextAssembler:
    """Incremental detokenizer with stop strings.

    Args:
        tokenizer: Decodes the ids.
        stops: Stop strings (the output ends before the first one found).
    """

    def __init__(self, tokenizer: Tokenizer, stops: Sequence[str] = ()) -> None:
        self._tokenizer = tokenizer
        self._stops = [s for s in stops if s]
        self._hold = max((len(s) for s in self._stops), default=1) - 1
        self._ids: list[int] = []
        self._sent = 0
        self.text = ""
        self.stopped = False

    def feed(self, ids: Sequence[int]) -> str:
        """Add tokens; return the new text that is safe to hand out ("" if none)."""
        if self.stopped:
            return ""
        self._ids.extend(ids)
        self.text = self._tokenizer.decode(self._ids)
        for stop in self._stops:
            at = self.text.find(stop)
            if at >= 0:
                self.text = self.text[:at]
                self.stopped = True
        if self.stopped:
            return self._take(len(self.text))
        end = len(self.text) - self._hold
        while end > self._sent and self.text[end - 1] == "\ufffd":
            end -= 1
        return self._take(end)

    def flush(self) -> str:
        """The text still held back (call when the request has finished)."""
        return self._take(len(self.text))

    def _take(self, end: int) -> str:
        if end <= self._sent:
            return ""
        delta = self.text[self._sent : end]
        self._sent = end
        return delta
