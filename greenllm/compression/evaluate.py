"""Quality, speed and energy of a causal LM: held-out perplexity, generation tokens/s and
J/token from the energy meter.

J/token comes from the GPU energy counters when the model runs on a GPU, plus the CPU's
RAPL counters where readable; where RAPL is not readable it comes from the meter's labelled
CPU-time ESTIMATE. All models of a report are timed in one interleaved session (so they
share one baseline and the same background load), each run long enough that counter and
clock resolution are a small part of it; every figure carries its median, min and max,
and its source (``nvml-counter``, ``rapl``, ``estimate``, joined by ``+``);
``energy_is_estimate`` says whether any part of it is modelled rather than measured.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
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
        repeats: Timed runs per model; the median gives tokens/s and J/token, and the
            spread (max - min) / median over them is reported.
        min_run_s: Each timed run repeats generation until it lasts at least this long,
            seconds, so that the CPU-time clock's 10 ms tick is a small part of it.
        max_run_s: While a figure's spread is above ``max_spread``, every model is timed
            again with runs twice as long, up to this length, seconds.
        max_spread: Spread above which a figure is marked noisy (fraction).
        cpu_threads: Torch CPU threads while timing (None: torch's default). One thread
            by default: with several, threads spin-waiting on each other make speed and
            CPU time per token swing by 10x when other processes share the cores.
    """

    seq_len: int = 128
    max_eval_tokens: int | None = None
    eval_batch_size: int = 8
    gen_batch_size: int = 4
    prompt_tokens: int = 32
    new_tokens: int = 64
    repeats: int = 5
    min_run_s: float = 1.0
    max_run_s: float = 4.0
    max_spread: float = 0.05
    cpu_threads: int | None = 1


@dataclass(frozen=True)
class Stat:
    """One figure over repeated runs.

    Attributes:
        median: Median over the runs.
        low: Smallest run.
        high: Largest run.
        runs: How many runs.
    """

    median: float
    low: float
    high: float
    runs: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat:
        """The median, min and max of ``values``."""
        return cls(statistics.median(values), min(values), max(values), len(values))

    @property
    def spread(self) -> float | None:
        """``(high - low) / median``; None from fewer than two runs."""
        if self.runs < 2 or self.median <= 0:
            return None
        return (self.high - self.low) / self.median

    def noisy(self, max_spread: float) -> bool:
        """True when the spread is above ``max_spread`` or unknown (a single run)."""
        return self.spread is None or self.spread > max_spread


@dataclass(frozen=True)
class Generation:
    """Speed and energy of one model's timed generation.

    Attributes:
        tokens_per_s: Generated tokens per second, over the runs.
        joules_per_token: Energy per generated token over the runs, joules (None when no
            energy source is available).
        energy_source: Where the joules come from.
        energy_is_estimate: True when any part of the joules is modelled.
        tokens_per_run: Median tokens generated in a run.
        run_s: Median length of a run, seconds.
    """

    tokens_per_s: Stat
    joules_per_token: Stat | None
    energy_source: str
    energy_is_estimate: bool
    tokens_per_run: int
    run_s: float

    def noisy(self, max_spread: float) -> bool:
        """True when its speed or its energy figure is noisy."""
        jpt = self.joules_per_token
        return self.tokens_per_s.noisy(max_spread) or (jpt is not None and jpt.noisy(max_spread))


@dataclass(frozen=True)
class Evaluation:
    """One model's figures.

    Attributes:
        perplexity: exp(mean next-token cross-entropy) on the held-out split.
        eval_tokens: Tokens predicted to get it.
        generation: Its timed generation (None until measured).
    """

    perplexity: float
    eval_tokens: int
    generation: Generation | None = None


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
class _Run:
    duration_s: float
    joules: float | None
    tokens: int
    source: str
    is_estimate: bool


def _timed_run(
    model: nn.Module,
    batch: torch.Tensor,
    run_s: float,
    tokenizer: Tokenizer,
    meter: EnergyMeter,
    config: EvalConfig,
) -> _Run:
    """Generate until at least ``run_s`` seconds have passed, inside one meter window."""
    tokens = 0
    start_s = time.perf_counter()
    with meter.window("generate") as window:
        while tokens == 0 or time.perf_counter() - start_s < run_s:
            tokens += generate(model, batch, config.new_tokens, tokenizer).numel()
    duration_s = time.perf_counter() - start_s
    measurement = window.result
    assert measurement is not None
    source, is_estimate = energy_source(measurement)
    joules = measurement.total_energy_j if source != "none" else None
    return _Run(duration_s, joules, tokens, source, is_estimate)


def _time_all(
    models: Sequence[nn.Module],
    tokenizer: Tokenizer,
    batch: torch.Tensor,
    meter: EnergyMeter,
    config: EvalConfig,
    run_s: float,
) -> list[Generation]:
    """Every model's runs, interleaved: round r starts at model r (mod n)."""
    for model in models:
        generate(model, batch, config.new_tokens, tokenizer)  # warm-up, not measured
    runs: list[list[_Run]] = [[] for _ in models]
    n = len(models)
    for r in range(config.repeats):
        for k in range(n):
            i = (r + k) % n
            runs[i].append(_timed_run(models[i], batch, run_s, tokenizer, meter, config))
    figures = []
    for model_runs in runs:
        first = model_runs[0]
        joules = [run.joules for run in model_runs if run.joules is not None]
        energy = None
        if len(joules) == len(model_runs):
            energy = Stat.of([j / run.tokens for j, run in zip(joules, model_runs, strict=True)])
        figures.append(
            Generation(
                tokens_per_s=Stat.of([run.tokens / run.duration_s for run in model_runs]),
                joules_per_token=energy,
                energy_source=first.source,
                energy_is_estimate=first.is_estimate,
                tokens_per_run=int(statistics.median(run.tokens for run in model_runs)),
                run_s=statistics.median(run.duration_s for run in model_runs),
            )
        )
    return figures


def measure_generation(
    models: Sequence[nn.Module],
    tokenizer: Tokenizer,
    heldout_ids: torch.Tensor,
    meter: EnergyMeter,
    config: EvalConfig,
    log: Callable[[str], None] | None = None,
) -> list[Generation]:
    """Timed, metered greedy generation of every model, in one interleaved session.

    Each model is warmed up; then ``repeats`` rounds run every model once in turn (each
    round starting one model later), each run generating until it lasts ``min_run_s``.
    While any figure's spread is above ``max_spread``, all models are timed again with
    runs twice as long, up to ``max_run_s``; figures still above it are marked noisy by
    :meth:`Generation.noisy`.
    """
    batch = prompts(heldout_ids, config)
    run_s = config.min_run_s
    threads = torch.get_num_threads()
    if config.cpu_threads:
        torch.set_num_threads(config.cpu_threads)
    try:
        while True:
            figures = _time_all(models, tokenizer, batch, meter, config, run_s)
            noisy = [g for g in figures if g.noisy(config.max_spread)]
            if not noisy or config.repeats < 2 or run_s * 2 > config.max_run_s:
                return figures
            run_s *= 2
            if log is not None:
                log(f"timing: spread above {config.max_spread:.0%}; again with {run_s:g} s runs")
    finally:
        torch.set_num_threads(threads)
