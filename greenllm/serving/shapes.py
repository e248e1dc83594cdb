"""Load shapes nobody tuned to: request loads built from the shipped conversation trace's
arrival times (:data:`~greenllm.serving.arrivals.CONVERSATION_TRACE`, Azure 2023, CC-BY 4.0)
with other token mixes and rates, to judge serving policies on more than the one trace.

* ``trace``: the trace's own prompts and outputs (conversation: ~1,000 prompt, ~200 output
  tokens on average);
* ``prefill-heavy``: code completion, RAG, summarisation: prompts 1,000-4,000 tokens,
  outputs 5-50 (log-uniform);
* ``decode-heavy``: short prompts (~100 tokens), long answers (~500);
* ``bursty``: the trace's mix, the rate swinging 10x every minute (30 s low, 30 s high);
* ``quiet``: the trace's mix at a tenth of the rate asked (a quiet hour).

The trace's inter-arrival gaps are replayed in order (repeated as often as the duration
needs) and scaled to the mean rate asked, so the load keeps the trace's burstiness.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from greenllm.serving.arrivals import CONVERSATION_TRACE, TRACE_COLUMNS, Arrival, read_trace

#: The shapes, in the order benchmarks print them.
SHAPES = ("trace", "prefill-heavy", "decode-heavy", "bursty", "quiet")
#: ``bursty``: rate of the high half-minute over the low one.
BURST_SWING = 10.0
#: ``bursty``: length of one low + high cycle, seconds.
BURST_PERIOD_S = 60.0
#: ``quiet``: share of the rate asked.
QUIET_FRACTION = 0.1


def shaped_load(
    shape: str,
    duration_s: float,
    rate_per_s: float,
    seed: int = 0,
    trace: Path = CONVERSATION_TRACE,
) -> list[Arrival]:
    """The requests of one load shape.

    Args:
        shape: One of :data:`SHAPES`.
        duration_s: How long requests arrive, seconds.
        rate_per_s: Mean request rate, requests/s (``quiet``: a tenth of it).
        seed: Seed of the token draws.
        trace: The trace whose arrival gaps (and, for ``trace``, ``bursty`` and ``quiet``,
            tokens) are replayed.

    Returns:
        The arrivals, in time order.

    Raises:
        ValueError: Unknown shape, or a duration or rate that is not positive.
    """
    if shape not in SHAPES:
        raise ValueError(f"unknown load shape {shape!r} (one of {', '.join(SHAPES)})")
    if not (duration_s > 0 and rate_per_s > 0):
        raise ValueError("duration_s and rate_per_s must be positive")
    base = read_trace(trace)
    times = np.array([a.time_s for a in base])
    gaps = np.diff(times)
    gaps = gaps[gaps >= 0]
    rate = rate_per_s * (QUIET_FRACTION if shape == "quiet" else 1.0)
    # the gaps this run replays (from the trace's start, cyclic) set the time scale, so the
    # run's mean rate is the one asked however quiet or busy that part of the trace is
    used = np.resize(gaps, max(1, math.ceil(duration_s * rate))) if len(gaps) else gaps
    mean_gap_s = float(np.mean(used)) if len(used) and np.mean(used) > 0 else 1.0
    out_t: list[float] = []
    t, k = 0.0, 0
    low = 2.0 * rate / (1.0 + BURST_SWING)  # bursty: mean of low and high is the rate
    half_s = BURST_PERIOD_S / 2
    while True:
        # the trace's next gap in units of its mean gap, spent at the rate of each phase
        # it spans (time rescaling: a gap that starts in a quiet phase ends in the burst)
        need = float(gaps[k % len(gaps)]) / mean_gap_s if len(gaps) else 1.0
        while need > 0:
            if shape != "bursty":
                t += need / rate
                break
            high = (t % BURST_PERIOD_S) >= half_s
            r = low * (BURST_SWING if high else 1.0)
            phase_end = (math.floor(t / half_s) + 1) * half_s
            if t + need / r <= phase_end:
                t += need / r
                break
            need -= (phase_end - t) * r
            t = phase_end
        if t >= duration_s:
            break
        out_t.append(t)
        k += 1
    n = len(out_t)
    rng = np.random.default_rng(seed)
    if shape == "prefill-heavy":
        prompts = np.exp(rng.uniform(np.log(1000), np.log(4000), n))
        outputs = np.exp(rng.uniform(np.log(5), np.log(50), n))
    elif shape == "decode-heavy":
        prompts = np.clip(rng.lognormal(np.log(100), 0.3, n), 20, 400)
        outputs = np.clip(rng.lognormal(np.log(500), 0.3, n), 100, 1500)
    else:
        prompts = np.array([base[i % len(base)].prompt_tokens for i in range(n)], dtype=float)
        outputs = np.array([base[i % len(base)].max_tokens for i in range(n)], dtype=float)
    return [
        Arrival(t_s, max(1, round(p)), max(1, round(o)))
        for t_s, p, o in zip(out_t, prompts, outputs, strict=True)
    ]


def write_load(arrivals: list[Arrival], path: Path) -> Path:
    """Write arrivals as a trace CSV in the Azure format, times in plain seconds (what
    ``infer.load``'s ``trace_file`` and ``greenllm load --trace`` read); returns ``path``."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(TRACE_COLUMNS)
        for a in arrivals:
            w.writerow([f"{a.time_s:.4f}", a.prompt_tokens, a.max_tokens])
    return path


@dataclass(frozen=True)
class RandomLoad:
    """A random load shape (:func:`random_load`): what was drawn, and its requests.

    Attributes:
        prompt_median: Median prompt, tokens.
        output_median: Median output, tokens.
        rate_per_s: Mean request rate, requests/s.
        swing: Rate of the high half-period over the low one (1: steady).
        period_s: Length of one low + high period, seconds.
        arrivals: The requests, in time order.
    """

    prompt_median: float
    output_median: float
    rate_per_s: float
    swing: float
    period_s: float
    arrivals: list[Arrival]

    def describe(self) -> str:
        """One line: token mix, rate, swing."""
        return (
            f"prompt ~{self.prompt_median:.0f} / output ~{self.output_median:.0f} tokens, "
            f"{self.rate_per_s:.1f}/s, {self.swing:.1f}x swing per {self.period_s:.0f} s"
        )


def random_load(
    seed: int,
    duration_s: float,
    prefill_tokens_per_s: float,
    decode_tokens_per_s: float,
    load: tuple[float, float] = (0.05, 0.5),
) -> RandomLoad:
    """A load shape nobody tuned to, drawn from ``seed``: Poisson arrivals whose rate
    swings between a low and a high half-period (square wave), prompt and output lengths
    log-normal (sigma 0.6) around medians drawn log-uniformly from 50-4,000 and 5-800
    tokens; the mean rate keeps the fleet busy a share drawn uniformly from ``load`` of
    its GPU time (prompts at ``prefill_tokens_per_s``, outputs at
    ``decode_tokens_per_s``, both the fleet's at full power).

    Args:
        seed: Seed of every draw.
        duration_s: How long requests arrive, seconds.
        prefill_tokens_per_s: The fleet's prefill rate, prompt tokens/s.
        decode_tokens_per_s: The fleet's decode rate at full batch, output tokens/s.
        load: Range of the share of the fleet's GPU time the mean load takes.

    Raises:
        ValueError: A duration or rate that is not positive.
    """
    if not (duration_s > 0 and prefill_tokens_per_s > 0 and decode_tokens_per_s > 0):
        raise ValueError("duration_s and the fleet's rates must be positive")
    rng = np.random.default_rng([seed, 18])
    sigma = 0.6
    prompt_median = float(np.exp(rng.uniform(np.log(50), np.log(4000))))
    output_median = float(np.exp(rng.uniform(np.log(5), np.log(800))))
    mean_factor = float(np.exp(sigma**2 / 2))  # log-normal mean over median
    fleet_s = mean_factor * (
        prompt_median / prefill_tokens_per_s + output_median / decode_tokens_per_s
    )  # fleet-seconds per request
    rate = float(rng.uniform(*load)) / fleet_s
    swing = float(np.exp(rng.uniform(0.0, np.log(12.0))))
    period_s = float(rng.uniform(20.0, 120.0))
    low = 2.0 * rate / (1.0 + swing)
    out: list[Arrival] = []
    t = 0.0
    while True:
        r = low * (swing if (t % period_s) >= period_s / 2 else 1.0)
        t += float(rng.exponential(1.0 / r))
        if t >= duration_s:
            break
        prompt = max(1, round(float(rng.lognormal(np.log(prompt_median), sigma))))
        output = max(1, round(float(rng.lognormal(np.log(output_median), sigma))))
        out.append(Arrival(t, prompt, output))
    return RandomLoad(prompt_median, output_median, rate, swing, period_s, out)
