"""Quality, speed and energy of a causal LM: held-out perplexity, generation tokens/s and
J/token from the energy meter.

J/token comes from the GPU energy counters when the model runs on a GPU, plus the CPU's
RAPL counters where readable; where RAPL is not readable it comes from the meter's labelled
CPU-time ESTIMATE. Every figure carries its source (``nvml-counter``, ``rapl``,
``estimate``, joined by ``+``), and ``energy_is_estimate`` says whether any part of it is
modelled rather than measured.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from greenllm.energy import EnergyMeter, Measurement
from greenllm.energy.measurement import SOURCE_ESTIMATE, SOURCE_RAPL
from greenllm.workloads.corpus import eval_windows
from greenllm.workloads.tokenizer import Tokenizer


@dataclass(frozen=True)
class EvalConfig:
    """How to evaluate.

    Attributes:
        seq_len: Tokens per perplexity window.
        max_eval_tokens: Held-out tokens scored at most (None: all).
        eval_batch_size: Windows per forward pass.
        gen_batch_size: Sequences generated at once.
        prompt_tokens: Prompt length of each generated sequence.
        new_tokens: Tokens generated per sequence (greedy, never stopped early).
        repeats: Timed generation runs per model (after one untimed warm-up run of the same
            size); the run of median duration gives tokens/s and J/token.
    """

    seq_len: int = 128
    max_eval_tokens: int | None = None
    eval_batch_size: int = 8
    gen_batch_size: int = 4
    prompt_tokens: int = 32
    new_tokens: int = 64
    repeats: int = 5


@dataclass(frozen=True)
class Evaluation:
    """One model's figures.

    Attributes:
        perplexity: exp(mean next-token cross-entropy) on the held-out split.
        eval_tokens: Tokens predicted to get it.
        tokens_per_s: Generated tokens per second.
        joules_per_token: Energy per generated token, joules.
        energy_source: Where the joules come from (``estimate``, ``rapl``,
            ``nvml-counter+rapl``...).
        energy_is_estimate: True when any part of the joules is modelled, not measured.
        generated_tokens: Tokens generated in the median run.
        duration_s: Length of the median run, seconds.
    """

    perplexity: float
    eval_tokens: int
    tokens_per_s: float
    joules_per_token: float | None
    energy_source: str
    energy_is_estimate: bool
    generated_tokens: int
    duration_s: float


def model_device(model: nn.Module) -> torch.device:
    """Device of the model's first parameter or buffer (CPU when it has none)."""
    for tensor in [*model.parameters(), *model.buffers()]:
        return tensor.device
    return torch.device("cpu")


@torch.no_grad()
def perplexity(model: nn.Module, ids: torch.Tensor, config: EvalConfig) -> tuple[float, int]:
    """Perplexity of ``model`` over non-overlapping windows of ``ids``.

    Returns:
        ``(perplexity, tokens predicted)``.
    """
    model.eval()
    device = model_device(model)
    windows = eval_windows(ids, config.seq_len, config.max_eval_tokens)
    total_nats = 0.0
    total_tokens = 0
    for batch in windows.split(config.eval_batch_size):
        batch = batch.to(device)
        logits = model(input_ids=batch).logits.float()
        targets = batch[:, 1:]
        nats = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum"
        )
        total_nats += float(nats)
        total_tokens += targets.numel()
    return math.exp(total_nats / total_tokens), total_tokens


def prompts(ids: torch.Tensor, config: EvalConfig) -> torch.Tensor:
    """``gen_batch_size`` prompts of ``prompt_tokens`` tokens, evenly spread over ``ids``."""
    span = ids.numel() - config.prompt_tokens
    starts = [i * span // config.gen_batch_size for i in range(config.gen_batch_size)]
    return torch.stack([ids[s : s + config.prompt_tokens] for s in starts])


@torch.no_grad()
def generate(
    model: nn.Module, prompt_ids: torch.Tensor, new_tokens: int, tokenizer: Tokenizer
) -> torch.Tensor:
    """Greedy generation of exactly ``new_tokens`` tokens per prompt; returns them."""
    device = model_device(model)
    prompt_ids = prompt_ids.to(device)
    out = model.generate(  # type: ignore[operator]
        input_ids=prompt_ids,
        attention_mask=torch.ones_like(prompt_ids),
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
        pad_token_id=tokenizer.eos_token_id,
    )
    return out[:, prompt_ids.shape[1] :]


def energy_source(measurement: Measurement) -> tuple[str, bool]:
    """``(source label, is_estimate)`` of a measurement's total energy."""
    parts = sorted(set(measurement.gpu_sources.values()))
    estimate = False
    if measurement.cpu_energy_j is not None:
        parts.append(SOURCE_RAPL)
    elif measurement.cpu_estimate_j is not None:
        parts.append(SOURCE_ESTIMATE)
        estimate = True
    return "+".join(parts) or "none", estimate


@dataclass(frozen=True)
class Generation:
    """Speed and energy of one model's timed generation.

    Attributes:
        tokens_per_s: Generated tokens per second (median run).
        joules_per_token: Energy per generated token in that run, joules.
        energy_source: Where the joules come from.
        energy_is_estimate: True when any part of the joules is modelled.
        generated_tokens: Tokens generated in that run.
        duration_s: Length of that run, seconds.
    """

    tokens_per_s: float
    joules_per_token: float | None
    energy_source: str
    energy_is_estimate: bool
    generated_tokens: int
    duration_s: float


def measure_generation(
    models: Sequence[nn.Module],
    tokenizer: Tokenizer,
    heldout_ids: torch.Tensor,
    meter: EnergyMeter,
    config: EvalConfig,
) -> list[Generation]:
    """Timed, metered greedy generation of each model, in alternation.

    Each model is warmed up once; then ``repeats`` rounds run every model once in turn, so
    models compared with each other see the same background load. Per model, the run of
    median duration counts.
    """
    batch = prompts(heldout_ids, config)
    for model in models:
        generate(model, batch, config.new_tokens, tokenizer)  # warm-up, not measured
    runs: list[list[tuple[float, float | None, int, str, bool]]] = [[] for _ in models]
    for _ in range(config.repeats):
        for model, model_runs in zip(models, runs, strict=True):
            start_s = time.perf_counter()
            with meter.window("generate") as window:
                generated = generate(model, batch, config.new_tokens, tokenizer).numel()
            duration_s = time.perf_counter() - start_s
            measurement = window.result
            assert measurement is not None
            source, is_estimate = energy_source(measurement)
            joules = measurement.total_energy_j if source != "none" else None
            model_runs.append((duration_s, joules, generated, source, is_estimate))
    figures = []
    for model_runs in runs:
        duration_s, joules, generated, source, is_estimate = sorted(model_runs)[
            len(model_runs) // 2
        ]
        figures.append(
            Generation(
                tokens_per_s=generated / duration_s,
                joules_per_token=joules / generated if joules is not None else None,
                energy_source=source,
                energy_is_estimate=is_estimate,
                generated_tokens=generated,
                duration_s=duration_s,
            )
        )
    return figures


def evaluate(
    model: nn.Module,
    tokenizer: Tokenizer,
    heldout_ids: torch.Tensor,
    meter: EnergyMeter,
    config: EvalConfig,
    paired_with: nn.Module | None = None,
) -> tuple[Evaluation, Generation | None]:
    """Perplexity on ``heldout_ids``, then timed and metered greedy generation.

    Args:
        model: The model to evaluate.
        tokenizer: Its tokenizer.
        heldout_ids: Held-out token ids (perplexity and prompts).
        meter: The energy meter.
        config: Evaluation settings.
        paired_with: A reference model (the uncompressed one) whose generation runs
            alternate with ``model``'s, so their speed and energy ratio is not skewed by
            load that changes over time.

    Returns:
        ``model``'s figures, and the reference's generation figures from the paired runs
        (None without a reference).
    """
    ppl, n_tokens = perplexity(model, heldout_ids, config)
    models = [model] if paired_with is None else [model, paired_with]
    figures = measure_generation(models, tokenizer, heldout_ids, meter, config)
    gen = figures[0]
    evaluation = Evaluation(
        perplexity=ppl,
        eval_tokens=n_tokens,
        tokens_per_s=gen.tokens_per_s,
        joules_per_token=gen.joules_per_token,
        energy_source=gen.energy_source,
        energy_is_estimate=gen.energy_is_estimate,
        generated_tokens=gen.generated_tokens,
        duration_s=gen.duration_s,
    )
    return evaluation, figures[1] if paired_with is not None else None
