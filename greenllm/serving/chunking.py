"""Chunked prefill: how many tokens one engine step may process.

Every serious serving engine (vLLM, SGLang, TensorRT-LLM) bounds the tokens of one step: a
step decodes one token of every running sequence and prefills waiting prompts with what is
left of its budget, a long prompt in chunks over several steps. One long prompt then delays
each decode of its batch by a chunk, not by its whole prefill. greenllm's engine
(:mod:`workers.serve.engine`) and the simulator's replica model
(:mod:`scheduler.sim.replica`) use the same budget, from :func:`step_token_budget`.

The default is vLLM's OpenAI server's (``max_num_batched_tokens``): 8,192 tokens on GPUs with
70 GiB of memory or more (80 GB-class: H100, A100-80GB, H200), 2,048 otherwise.
"""

from __future__ import annotations

#: Tokens per step on GPUs with at least :data:`LARGE_GPU_MIB` of memory.
LARGE_GPU_STEP_TOKENS = 8192
#: Tokens per step on smaller GPUs.
SMALL_GPU_STEP_TOKENS = 2048
#: Memory from which a GPU counts as 80 GB-class, MiB (vLLM: 70 GiB).
LARGE_GPU_MIB = 70 * 1024


def step_token_budget(memory_mib: float, configured: int | None = None) -> int:
    """Tokens one engine step may process (decodes plus prefill chunks).

    Args:
        memory_mib: The GPU's memory, MiB.
        configured: The job's ``infer.max_num_batched_tokens`` (None: the default).

    Returns:
        The budget, tokens (at least 1).
    """
    if configured is not None:
        return max(1, int(configured))
    return LARGE_GPU_STEP_TOKENS if memory_mib >= LARGE_GPU_MIB else SMALL_GPU_STEP_TOKENS
