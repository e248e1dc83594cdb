"""ShardReport's burst rates: read every step, recomputed only when a sample arrives."""

from __future__ import annotations

import pytest

from greenllm.proto.v1 import agent_pb2
from scheduler.shell.nodes import BURST_SPAN_S, ShardReport


def sample(t_s: float, offered: float, prompt: float) -> agent_pb2.ShardSample:
    return agent_pb2.ShardSample(
        shard_id="s", timestamp_s=t_s, offered_units=offered, offered_prompt_tokens=prompt
    )


def test_recent_rates_follow_each_new_sample() -> None:
    report = ShardReport(sample(0.0, 0.0, 0.0))
    report.add(sample(0.0, 0.0, 0.0))
    assert report.recent_offered_rates() == (0.0, 0.0)  # one sample: no rate
    report.add(sample(BURST_SPAN_S, 10.0 * BURST_SPAN_S, 40.0 * BURST_SPAN_S))
    assert report.recent_offered_rates() == pytest.approx((10.0, 40.0))
    assert report.recent_offered_rates() == pytest.approx((10.0, 40.0))  # read again
    # a burst: the next span brings 3x the arrivals, and the rate read next shows it
    report.add(sample(2 * BURST_SPAN_S, 40.0 * BURST_SPAN_S, 160.0 * BURST_SPAN_S))
    assert report.recent_offered_rates() == pytest.approx((30.0, 120.0))
