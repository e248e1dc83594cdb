"""The running batch of a replica: rows join and leave between forward passes.

Continuous batching over a Hugging Face causal LM with a KV cache. Rows are kept
right-aligned (left padding), so every row's next token sits in the last column:

- :meth:`KVBatch.prefill_chunk` prefills a long prompt a chunk at a time in a cache of its
  own, and :meth:`KVBatch.join_cache` adds it as a row once done (chunked prefill);
- :meth:`KVBatch.join` prefills new prompts in one forward (left-padded, as
  :func:`workers.shards.decode.left_pad` does), then pads the running cache or the new one
  on the left to the same length and concatenates them along the batch;
- :meth:`KVBatch.decode` feeds every row its pending token (one forward for all rows);
- :meth:`KVBatch.leave` drops rows and trims the columns that only padding still uses.

The attention mask hides the padding and position ids count only real tokens, so each row
decodes as it would alone.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import torch
from torch import nn
from transformers import DynamicCache

from greenllm.errors import GreenllmError
from workers.shards.decode import left_pad


def _layers(cache: object) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(keys, values)`` of every layer, each ``[batch, heads, tokens, dim]``."""
    layers = getattr(cache, "layers", None)
    if layers is None:
        raise GreenllmError(
            f"continuous batching needs a DynamicCache, the model returned {type(cache).__name__}"
        )
    return [(layer.keys, layer.values) for layer in layers]


def _pad_left(t: torch.Tensor, tokens: int, dim: int) -> torch.Tensor:
    """``t`` with ``tokens`` zero columns added before the start of dimension ``dim``."""
    if tokens == 0:
        return t
    shape = list(t.shape)
    shape[dim] = tokens
    return torch.cat([t.new_zeros(shape), t], dim=dim)


class KVBatch:
    """Rows decoded together, each keyed by its request.

    Args:
        model: A Hugging Face causal LM (already on ``device``, in eval mode).
        pad_id: Token id used for the padding (masked out).
        device: Where the model lives.
    """

    def __init__(self, model: nn.Module, pad_id: int, device: torch.device) -> None:
        self.model = model
        self.pad_id = pad_id
        self.device = device
        self.keys: list[Hashable] = []
        self._cache: DynamicCache | None = None
        self._mask = torch.zeros((0, 0), dtype=torch.long, device=device)
        self._positions = torch.zeros((0,), dtype=torch.long, device=device)
        self._pending = torch.zeros((0,), dtype=torch.long, device=device)

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def width_tokens(self) -> int:
        """Columns of the cache (the longest row, padding included), tokens."""
        return int(self._mask.shape[1])

    @torch.inference_mode()
    def join(self, keys: Sequence[Hashable], prompts: Sequence[Sequence[int]]) -> torch.Tensor:
        """Prefill ``prompts`` (one forward) and add them as rows keyed by ``keys``.

        Returns:
            The next-token logits of the new rows, ``[len(prompts), vocab]``; give each
            new row its sampled token with :meth:`set_pending` before the next decode.
        """
        ids, mask = left_pad(prompts, self.pad_id, self.device)
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,
        )
        self._add(keys, _layers(out.cache), mask)
        return out.logits[:, -1, :]

    @torch.inference_mode()
    def prefill_chunk(
        self, chunk: Sequence[int], done_tokens: int, cache: DynamicCache | None
    ) -> tuple[DynamicCache, torch.Tensor]:
        """Prefill the next ``chunk`` of one prompt whose first ``done_tokens`` tokens are in
        ``cache`` (chunked prefill: a long prompt over several steps, outside the batch).

        Returns:
            The prompt's cache so far, and the logits after the chunk's last token ``[1,
            vocab]`` (the next token's, once the chunk ends the prompt).
        """
        n = len(chunk)
        out = self.model(
            input_ids=torch.tensor([list(chunk)], dtype=torch.long, device=self.device),
            attention_mask=torch.ones((1, done_tokens + n), dtype=torch.long, device=self.device),
            position_ids=torch.arange(done_tokens, done_tokens + n, device=self.device)[None],
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        return out.cache, out.logits[:, -1, :]

    @torch.inference_mode()
    def join_cache(self, key: Hashable, cache: DynamicCache, tokens: int) -> None:
        """Add one row whose prompt of ``tokens`` tokens :meth:`prefill_chunk` prefilled."""
        mask = torch.ones((1, tokens), dtype=torch.long, device=self.device)
        self._add([key], _layers(cache), mask)

    def _add(
        self,
        keys: Sequence[Hashable],
        new_layers: list[tuple[torch.Tensor, torch.Tensor]],
        mask: torch.Tensor,
    ) -> None:
        """Append prefilled rows (their layers and left-padded mask) to the batch."""
        lengths = mask.sum(dim=1)
        if self._cache is None or not self.keys:
            layers = new_layers
            self._mask, self._positions = mask, lengths
            self._pending = torch.full_like(lengths, self.pad_id)
        else:
            width = max(self.width_tokens, int(mask.shape[1]))
            grow_old, grow_new = width - self.width_tokens, width - int(mask.shape[1])
            layers = [
                (
                    torch.cat([_pad_left(k0, grow_old, 2), _pad_left(k1, grow_new, 2)]),
                    torch.cat([_pad_left(v0, grow_old, 2), _pad_left(v1, grow_new, 2)]),
                )
                for (k0, v0), (k1, v1) in zip(_layers(self._cache), new_layers, strict=True)
            ]
            self._mask = torch.cat(
                [_pad_left(self._mask, grow_old, 1), _pad_left(mask, grow_new, 1)]
            )
            self._positions = torch.cat([self._positions, lengths])
            self._pending = torch.cat([self._pending, torch.full_like(lengths, self.pad_id)])
        self._cache = DynamicCache(ddp_cache_data=layers)
        self.keys.extend(keys)

    @torch.inference_mode()
    def set_pending(self, tokens: Sequence[int], rows: Sequence[int] | None = None) -> None:
        """Set the token each row (or each of ``rows``) feeds at the next decode."""
        values = torch.tensor(list(tokens), dtype=torch.long, device=self.device)
        if rows is None:
            self._pending = values
        else:
            self._pending[torch.tensor(list(rows), dtype=torch.long, device=self.device)] = values

    @torch.inference_mode()
    def decode(self) -> torch.Tensor:
        """Feed every row its pending token (one forward).

        Returns:
            Next-token logits by row, ``[len(self), vocab]``.

        Raises:
            GreenllmError: The batch is empty.
        """
        if self._cache is None or not self.keys:
            raise GreenllmError("decode on an empty batch")
        self._mask = torch.cat([self._mask, torch.ones_like(self._mask[:, :1])], dim=1)
        out = self.model(
            input_ids=self._pending[:, None],
            attention_mask=self._mask,
            position_ids=self._positions[:, None],
            cache=self._cache,
            use_cache=True,
            logits_to_keep=1,
        )
        self._cache = out.cache
        self._positions = self._positions + 1
        return out.logits[:, -1, :]

    @torch.inference_mode()
    def leave(self, keys: Sequence[Hashable]) -> None:
        """Drop the rows of ``keys`` (unknown keys are ignored); trim unused columns."""
        gone = set(keys)
        keep = [i for i, key in enumerate(self.keys) if key not in gone]
        if len(keep) == len(self.keys):
            return
        self.keys = [self.keys[i] for i in keep]
        if not keep or self._cache is None:
            self.keys, self._cache = [], None
            self._mask = self._mask[:0, :0]
            self._positions, self._pending = self._positions[:0], self._pending[:0]
            return
        index = torch.tensor(keep, dtype=torch.long, device=self.device)
        mask = self._mask[index]
        used = mask.any(dim=0).nonzero()
        start = int(used[0]) if len(used) else mask.shape[1]
        self._cache = DynamicCache(
            ddp_cache_data=[
                (k[index, :, start:, :], v[index, :, start:, :]) for k, v in _layers(self._cache)
            ]
        )
        self._mask = mask[:, start:]
        self._positions, self._pending = self._positions[index], self._pending[index]
