"""Tokenizers the workloads use: a byte-level one that needs no download, and a thin
adapter around Hugging Face tokenizers (SmolLM2's comes out of its GGUF file).

Both satisfy :class:`Tokenizer`, and both save into a model directory beside its weights
and load back from it (:func:`load_tokenizer`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

from greenllm.errors import GreenllmError

#: File that marks a model directory as using the byte tokenizer.
BYTE_TOKENIZER_FILE = "greenllm_tokenizer.json"


class Tokenizer(Protocol):
    """What the workloads need from a tokenizer."""

    @property
    def eos_token_id(self) -> int:
        """Id that ends a text (also used for padding)."""
        ...

    @property
    def vocab_size(self) -> int:
        """Number of token ids."""
        ...

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (no special tokens added)."""
        ...

    def decode(self, ids: list[int]) -> str:
        """Text of ``ids``."""
        ...

    def save(self, directory: Path) -> None:
        """Write the tokenizer's files into ``directory``."""
        ...


class ByteTokenizer:
    """UTF-8 bytes as tokens 0-255, plus one end-of-text token (256)."""

    eos_token_id = 256
    vocab_size = 257

    def encode(self, text: str) -> list[int]:
        """The UTF-8 bytes of ``text``."""
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        """Text of the byte ids (the end-of-text token and invalid UTF-8 are dropped)."""
        return bytes(i for i in ids if 0 <= i < 256).decode("utf-8", errors="ignore")

    def save(self, directory: Path) -> None:
        """Write the marker file ``greenllm_tokenizer.json``."""
        doc = {"kind": "byte", "vocab_size": self.vocab_size, "eos_token_id": self.eos_token_id}
        (directory / BYTE_TOKENIZER_FILE).write_text(json.dumps(doc) + "\n")


class HFTokenizer:
    """A Hugging Face tokenizer seen through :class:`Tokenizer`.

    Args:
        tokenizer: A ``transformers`` tokenizer (``PreTrainedTokenizerBase``).
    """

    def __init__(self, tokenizer: Any) -> None:
        self.hf = tokenizer

    @property
    def eos_token_id(self) -> int:
        """The tokenizer's EOS id (0 when it has none)."""
        eos = self.hf.eos_token_id
        return int(eos) if eos is not None else 0

    @property
    def vocab_size(self) -> int:
        """Size of the vocabulary including added tokens."""
        return len(self.hf)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without special tokens."""
        return list(self.hf.encode(text, add_special_tokens=False))

    def decode(self, ids: list[int]) -> str:
        """Text of ``ids`` without special tokens."""
        return str(self.hf.decode(ids, skip_special_tokens=True))

    def save(self, directory: Path) -> None:
        """``save_pretrained`` into ``directory``."""
        self.hf.save_pretrained(str(directory))


def load_tokenizer(directory: Path) -> Tokenizer:
    """The tokenizer saved in a model directory.

    Raises:
        GreenllmError: The directory holds no tokenizer greenllm can read.
    """
    if (directory / BYTE_TOKENIZER_FILE).is_file():
        return ByteTokenizer()
    from transformers import AutoTokenizer

    try:
        return HFTokenizer(AutoTokenizer.from_pretrained(str(directory), local_files_only=True))
    except (OSError, ValueError) as exc:
        raise GreenllmError(
            f"{directory}: no tokenizer found (expected {BYTE_TOKENIZER_FILE} or Hugging Face "
            f"tokenizer files): {exc}"
        ) from exc
