"""The built-in model configurations (random init, byte vocabulary) and how they are
pre-trained on the shipped corpus.

``tiny`` and ``small`` are GPT-2 architectures small enough to train on a laptop CPU in
well under a minute and a couple of minutes respectively; their recipes fix the seed, so
the same corpus always gives the same model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from greenllm.workloads.tokenizer import ByteTokenizer
from greenllm.workloads.training import TrainConfig


@dataclass(frozen=True)
class BuiltinSpec:
    """A built-in model: its architecture and its pre-training recipe.

    Attributes:
        name: Model name (``tiny``, ``small``).
        n_layer: Transformer blocks.
        n_embd: Hidden width.
        n_head: Attention heads.
        n_positions: Longest sequence, tokens.
        train: The pre-training recipe on the corpus's train split.
    """

    name: str
    n_layer: int
    n_embd: int
    n_head: int
    n_positions: int
    train: TrainConfig

    def gpt2_config(self) -> GPT2Config:
        """The transformers config (byte vocabulary, no dropout)."""
        tok = ByteTokenizer()
        return GPT2Config(
            vocab_size=tok.vocab_size,
            n_positions=self.n_positions,
            n_embd=self.n_embd,
            n_layer=self.n_layer,
            n_head=self.n_head,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            bos_token_id=tok.eos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.eos_token_id,
        )

    def recipe(self) -> dict[str, object]:
        """Everything that determines the trained weights (part of the cache key)."""
        return {
            "name": self.name,
            "config": self.gpt2_config().to_dict(),
            "train": asdict(self.train),
        }


BUILTINS: dict[str, BuiltinSpec] = {
    "tiny": BuiltinSpec(
        name="tiny",
        n_layer=2,
        n_embd=128,
        n_head=4,
        n_positions=256,
        train=TrainConfig(steps=300, batch_size=8, seq_len=128, lr=3e-3, seed=0),
    ),
    "small": BuiltinSpec(
        name="small",
        n_layer=4,
        n_embd=256,
        n_head=4,
        n_positions=256,
        train=TrainConfig(steps=300, batch_size=8, seq_len=128, lr=2e-3, seed=0),
    ),
}


def build_untrained(spec: BuiltinSpec, seed: int = 0) -> GPT2LMHeadModel:
    """The architecture of ``spec`` with seeded random weights."""
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(spec.gpt2_config())
    model.eval()
    return model
