"""Load generation: arrival rates (fixed seeds), burstiness, trace parsing and bad traces."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from greenllm.errors import ConfigError
from greenllm.jobspec import InferSection, LoadSection
from workers.shards.loadgen import (
    SAMPLE_TRACE,
    Arrival,
    PromptSource,
    arrivals_for,
    bursty_arrivals,
    fit_to_context,
    play,
    poisson_arrivals,
    read_trace,
)


def counts_per_s(arrivals: list[Arrival], duration_s: int) -> list[int]:
    counts = [0] * duration_s
    for a in arrivals:
        counts[int(a.time_s)] += 1
    return counts


def test_poisson_rate_and_dispersion() -> None:
    arrivals = poisson_arrivals(5.0, 2000.0, 32, 16, seed=1)
    # 10,000 expected: the count's standard deviation is 100.
    assert len(arrivals) == pytest.approx(10_000, abs=400)
    counts = counts_per_s(arrivals, 2000)
    assert statistics.variance(counts) / statistics.mean(counts) == pytest.approx(1.0, abs=0.1)
    assert all(0 <= a.time_s < 2000 for a in arrivals)
    assert [a.time_s for a in arrivals] == sorted(a.time_s for a in arrivals)
    assert {(a.prompt_tokens, a.max_new_tokens) for a in arrivals} == {(32, 16)}


def test_same_seed_same_load_other_seed_other_load() -> None:
    assert poisson_arrivals(2.0, 50.0, 8, 8, seed=3) == poisson_arrivals(2.0, 50.0, 8, 8, seed=3)
    assert poisson_arrivals(2.0, 50.0, 8, 8, seed=3) != poisson_arrivals(2.0, 50.0, 8, 8, seed=4)


def test_bursty_keeps_the_mean_rate_but_bunches_arrivals() -> None:
    # 2,500 ON/OFF cycles: the ON share, hence the rate, has a relative spread of ~2 %.
    arrivals = bursty_arrivals(5.0, 20_000.0, 32, 16, seed=2)
    assert len(arrivals) / 20_000.0 == pytest.approx(5.0, rel=0.1)
    counts = counts_per_s(arrivals, 20_000)
    assert statistics.variance(counts) / statistics.mean(counts) > 5.0
    # Most seconds are silent (OFF 75 % of the time).
    assert counts.count(0) / len(counts) > 0.6


def test_sample_trace_parses_relative_to_first() -> None:
    arrivals = read_trace(SAMPLE_TRACE)
    assert len(arrivals) == 40
    assert arrivals[0].time_s == 0.0
    assert arrivals[1].time_s == pytest.approx(47.1038550 - 46.8762470, abs=1e-6)
    assert (arrivals[0].prompt_tokens, arrivals[0].max_new_tokens) == (19, 9)
    assert [a.time_s for a in arrivals] == sorted(a.time_s for a in arrivals)


def test_trace_with_seconds_and_extra_columns(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    text = "TIMESTAMP,Extra,ContextTokens,GeneratedTokens\n12.5,x,10,3\n10.0,y,4,0\n"
    path.write_text(text, encoding="utf-8-sig")  # a byte-order mark, as spreadsheets write
    assert read_trace(path) == [Arrival(0.0, 4, 0), Arrival(2.5, 10, 3)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("TIMESTAMP,ContextTokens\n1,2\n", ":1: missing column(s) GeneratedTokens"),
        (
            "TIMESTAMP,ContextTokens,GeneratedTokens\n1,2,3\nsoon,2,3\n",
            ":3: TIMESTAMP 'soon' is neither",
        ),
        (
            "TIMESTAMP,ContextTokens,GeneratedTokens\n1,2,3\n2,2.5,3\n",
            ":3: ContextTokens must be a whole number",
        ),
        ("TIMESTAMP,ContextTokens,GeneratedTokens\n1,2,-3\n", ":2: GeneratedTokens must not"),
        ("TIMESTAMP,ContextTokens,GeneratedTokens\n1,0,3\n", ":2: ContextTokens must be at least"),
        ("TIMESTAMP,ContextTokens,GeneratedTokens\n1,2\n", ":2: GeneratedTokens must be a whole"),
        (
            "TIMESTAMP,ContextTokens,GeneratedTokens\n1,2,3\n2023-11-16 18:15:46,2,3\n",
            ":3: TIMESTAMP mixes",
        ),
        ("TIMESTAMP,ContextTokens,GeneratedTokens\n", ": the trace has no requests"),
        ("", ":1: missing column(s) TIMESTAMP, ContextTokens, GeneratedTokens"),
    ],
)
def test_bad_trace_names_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        read_trace(path)
    assert str(err.value).startswith(str(path))
    assert message in str(err.value)


def test_missing_and_binary_trace_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read trace"):
        read_trace(tmp_path / "absent.csv")
    binary = tmp_path / "bin.csv"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match=r"bin\.csv: not a CSV trace"):
        read_trace(binary)


def test_arrivals_for_job_sections(tmp_path: Path) -> None:
    poisson = InferSection(load=LoadSection(process="poisson", rate_per_s=4, duration_s=100))
    assert len(arrivals_for(poisson, seed=0)) == pytest.approx(400, abs=80)
    traced = InferSection(
        load=LoadSection(process="trace", trace_file=SAMPLE_TRACE, duration_s=5.0)
    )
    cut = arrivals_for(traced)
    assert 0 < len(cut) < 40 and all(a.time_s < 5.0 for a in cut)


def test_fit_to_context_shrinks_prompt_first() -> None:
    assert fit_to_context(Arrival(0, 100, 20), 256) == Arrival(0, 100, 20)
    assert fit_to_context(Arrival(0, 2000, 20), 256) == Arrival(0, 236, 20)
    assert fit_to_context(Arrival(0, 2000, 900), 256) == Arrival(0, 1, 255)


def test_prompt_source_lengths_and_wrap() -> None:
    source = PromptSource([1, 2, 3], seed=0)
    for n in (1, 3, 10):
        prompt = source.take(n)
        assert len(prompt) == n and set(prompt) <= {1, 2, 3}


def test_play_submits_at_arrival_times_until_stopped() -> None:
    now = [0.0]
    submitted: list[tuple[float, Arrival]] = []

    def sleep(dt: float) -> None:
        now[0] += dt

    arrivals = [Arrival(0.5, 1, 1), Arrival(1.25, 1, 1), Arrival(3.0, 1, 1)]
    assert play(arrivals, lambda a: submitted.append((now[0], a)), None, lambda: now[0], sleep) == 3
    assert [t for t, _ in submitted] == [0.5, 1.25, 3.0]
