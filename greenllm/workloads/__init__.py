"""Workloads: the built-in models, the shipped corpus, tokenizers and a training loop.

from greenllm.workloads import load_model
loaded = load_model("tiny")   # trained on the corpus on first use, then cached
"""

from greenllm.workloads.corpus import corpus_ids, corpus_text, eval_windows, random_batch
from greenllm.workloads.models import BUILTINS, BuiltinSpec, build_untrained
from greenllm.workloads.registry import (
    LoadedModel,
    cache_root,
    load_local_dir,
    load_model,
    model_names,
    pretrained_builtin,
)
from greenllm.workloads.tokenizer import ByteTokenizer, HFTokenizer, Tokenizer, load_tokenizer
from greenllm.workloads.training import TrainConfig, TrainResult, causal_lm_loss, train

__all__ = [
    "BUILTINS",
    "BuiltinSpec",
    "ByteTokenizer",
    "HFTokenizer",
    "LoadedModel",
    "Tokenizer",
    "TrainConfig",
    "TrainResult",
    "build_untrained",
    "cache_root",
    "causal_lm_loss",
    "corpus_ids",
    "corpus_text",
    "eval_windows",
    "load_local_dir",
    "load_model",
    "load_tokenizer",
    "model_names",
    "pretrained_builtin",
    "random_batch",
    "train",
]
