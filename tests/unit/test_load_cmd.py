"""``greenllm load``'s options: the arrivals each command line sends, and one clear line for
combinations that do not go together (the load itself is stubbed out: no socket)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest

from greenllm.cli import load_cmd
from greenllm.cli.main import main
from greenllm.serving.arrivals import Arrival, poisson_arrivals
from greenllm.serving.loadclient import LoadOptions
from greenllm.serving.report import LoadReport
from greenllm.serving.shapes import SHAPES, shaped_load

ENDPOINT = ["load", "--endpoint", "http://127.0.0.1:9/v1"]


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """What ``greenllm load`` hands the load client (arrivals, duration, options, label)."""
    seen: dict[str, Any] = {}

    def fake_run_load(
        arrivals: Sequence[Arrival],
        duration_s: float,
        options: LoadOptions,
        load: str,
        progress: Callable[[str], None] | None = None,
    ) -> LoadReport:
        seen.update(arrivals=list(arrivals), duration_s=duration_s, options=options, load=load)
        return LoadReport.from_records(
            [], 0.0, endpoint=options.endpoint, model="m", api=options.api, load=load,
            duration_s=duration_s, notes=[],
        )  # fmt: skip

    monkeypatch.setattr(load_cmd, "run_load", fake_run_load)
    return seen


def test_shape_sends_that_shapes_requests_at_the_rate(
    sent: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--shape", "prefill-heavy", "--rate", "4", "--duration", "30", "--seed", "3"]
    assert main([*ENDPOINT, *args]) == 0, capsys.readouterr().err
    arrivals = sent["arrivals"]
    assert arrivals == shaped_load("prefill-heavy", 30.0, 4.0, seed=3)
    assert arrivals and all(a.time_s < 30 for a in arrivals)
    assert all(1000 <= a.prompt_tokens <= 4000 and 5 <= a.max_tokens <= 50 for a in arrivals)
    assert sent["load"] == "shape prefill-heavy, mean 4 requests/s"
    assert sent["options"].max_tokens_cap is None
    out = capsys.readouterr().out
    assert "shape prefill-heavy" in out
    # The rate really sent is printed: the trace's first minutes run below its mean.
    assert f"{len(arrivals)} requests in 30 s ({len(arrivals) / 30:.3g}/s)" in out


@pytest.mark.parametrize("shape", SHAPES)
def test_every_shape_is_offered_and_max_tokens_caps_its_outputs(
    shape: str, sent: dict[str, Any]
) -> None:
    assert main([*ENDPOINT, "--shape", shape, "--rate", "20", "--duration", "20",
                 "--max-tokens", "7"]) == 0  # fmt: skip
    assert sent["arrivals"] == shaped_load(shape, 20.0, 20.0)
    assert sent["options"].max_tokens_cap == 7
    assert shape in sent["load"]


def test_rate_alone_is_poisson_as_before(sent: dict[str, Any]) -> None:
    assert main([*ENDPOINT, "--rate", "3", "--duration", "20", "--time-scale", "2"]) == 0
    assert sent["arrivals"] == poisson_arrivals(3.0, 20.0, 32, 32, 0)
    assert sent["load"] == "poisson 3 requests/s"
    assert sent["options"].max_tokens_cap is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--shape", "trace", "--duration", "5"], "--shape trace needs --rate"),
        (["--shape", "bursty", "--trace", "conversation", "--duration", "5"],
         "give --shape (with --rate) or --trace, not both"),
        (["--shape", "bursty", "--rate", "2", "--trace", "conversation", "--duration", "5"],
         "give --shape (with --rate) or --trace, not both"),
        (["--shape", "quiet", "--rate", "2", "--process", "bursty", "--duration", "5"],
         "give no --process with it"),
        (["--shape", "quiet", "--rate", "2", "--prompt-tokens", "9", "--duration", "5"],
         "give no --prompt-tokens with it"),
        (["--shape", "quiet", "--rate", "2", "--time-scale", "3", "--duration", "5"],
         "give no --time-scale with it"),
        (["--shape", "heavy", "--rate", "2", "--duration", "5"], "'heavy' is not one of"),
        (["--duration", "5"], "give exactly one of --rate and --trace"),
    ],
)  # fmt: skip
def test_bad_combinations_are_one_line(
    args: list[str], message: str, sent: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*ENDPOINT, *args]) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert out == "" and len(lines) == 1 and lines[0].startswith("greenllm: error:"), err
    assert message in lines[0]
    assert not sent  # nothing was sent


def test_random_loads_are_reproducible_and_keep_the_fleet_as_busy_as_drawn() -> None:
    """random_load: the same seed gives the same requests; the mean load takes a share of
    the fleet's GPU time inside the range asked (Poisson noise allowed), and seeds differ."""
    from greenllm.serving.shapes import random_load

    prefill, decode = 300_000.0, 9_000.0
    loads = [random_load(seed, 600.0, prefill, decode, load=(0.1, 0.3)) for seed in range(6)]
    again = random_load(0, 600.0, prefill, decode, load=(0.1, 0.3))
    assert again.arrivals == loads[0].arrivals
    for load in loads:
        times = [a.time_s for a in load.arrivals]
        assert times == sorted(times) and times[0] >= 0 and times[-1] < 600.0
        busy = sum(a.prompt_tokens / prefill + a.max_tokens / decode for a in load.arrivals)
        assert 0.05 < busy / 600.0 < 0.45, (load.describe(), busy / 600.0)
    assert len({round(x.prompt_median) for x in loads}) == len(loads)
