"""``greenllm load``: replay a request load against an OpenAI-compatible endpoint."""

from __future__ import annotations

from pathlib import Path

import click

from greenllm.cli.output import emit_json
from greenllm.errors import GreenllmError
from greenllm.serving.arrivals import (
    CONVERSATION_TRACE,
    Arrival,
    bursty_arrivals,
    poisson_arrivals,
    read_trace,
)
from greenllm.serving.loadclient import LoadOptions, run_load


def _positive(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    if value is not None and not value > 0:
        raise click.BadParameter("must be positive", ctx=ctx, param=param)
    return value


@click.command("load")
@click.option(
    "--endpoint",
    required=True,
    metavar="URL",
    help="Base URL of the API, e.g. http://127.0.0.1:8000/v1.",
)
@click.option(
    "--rate",
    type=float,
    callback=_positive,
    metavar="R",
    help="Requests per second (with --process).",
)
@click.option(
    "--process",
    type=click.Choice(["poisson", "bursty"]),
    default="poisson",
    show_default=True,
    help="Arrival process for --rate.",
)
@click.option(
    "--trace",
    "trace_file",
    type=click.Path(path_type=Path),
    metavar="FILE",
    help="Replay an Azure LLM trace CSV (TIMESTAMP,ContextTokens,GeneratedTokens); "
    "'conversation' is the shipped 5-minute slice.",
)
@click.option(
    "--time-scale",
    type=float,
    default=1.0,
    show_default=True,
    callback=_positive,
    metavar="K",
    help="Compress trace time K-fold.",
)
@click.option(
    "--duration",
    type=float,
    required=True,
    callback=_positive,
    metavar="S",
    help="Send arrivals for S seconds (after time scaling), then wait for answers.",
)
@click.option("--model", default=None, help="Model to ask for (default: the endpoint's first).")
@click.option(
    "--api",
    type=click.Choice(["completions", "chat"]),
    default="completions",
    show_default=True,
    help="Which endpoint to call.",
)
@click.option(
    "--prompt-tokens",
    type=click.IntRange(min=1),
    default=32,
    show_default=True,
    help="Prompt length with --rate, tokens.",
)
@click.option(
    "--max-tokens",
    type=click.IntRange(min=1),
    default=None,
    help="Tokens per request with --rate (default 32); with --trace, a cap on GeneratedTokens.",
)
@click.option(
    "--context",
    "context_tokens",
    type=click.IntRange(min=2),
    default=None,
    help="The model's context, tokens (default: the endpoint's max_model_len, if it gives one).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the arrival process.")
@click.option(
    "--drain-timeout",
    type=float,
    default=120.0,
    show_default=True,
    callback=_positive,
    metavar="S",
    help="After the last arrival, wait this long for answers.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def load(
    endpoint: str,
    rate: float | None,
    process: str,
    trace_file: Path | None,
    time_scale: float,
    duration: float,
    model: str | None,
    api: str,
    prompt_tokens: int,
    max_tokens: int | None,
    context_tokens: int | None,
    seed: int,
    drain_timeout: float,
    as_json: bool,
) -> None:
    """Replay arrivals against any OpenAI-compatible endpoint and report what came back.

    Every request is streamed, so time to first token (TTFT) and time per output token
    (TPOT) are measured here. Reported: TTFT/TPOT p50/p99, tokens/s, errors by status, and
    J/token from the returned usage.energy_j (greenllm endpoints return it; "n/a"
    otherwise). Prompts are corpus text of the requested length in bytes (= tokens for the
    byte-level built-in models). Give either --rate or --trace.
    """
    if (rate is None) == (trace_file is None):
        raise click.UsageError("give exactly one of --rate and --trace")
    notes: list[str] = []
    arrivals: list[Arrival]
    if trace_file is not None:
        path = CONVERSATION_TRACE if str(trace_file) == "conversation" else trace_file
        arrivals = read_trace(path, time_scale)
        what = f"trace {path.name}" + (
            f", time compressed {time_scale:g}x" if time_scale != 1 else ""
        )
        if time_scale != 1:
            notes.append(
                f"trace time compressed {time_scale:g}x: {duration:g} s replays "
                f"{duration * time_scale:g} s of the trace"
            )
        cap = max_tokens
    else:
        assert rate is not None
        make = poisson_arrivals if process == "poisson" else bursty_arrivals
        arrivals = make(rate, duration, prompt_tokens, max_tokens or 32, seed)
        what = f"{process} {rate:g} requests/s"
        cap = None
    options = LoadOptions(
        endpoint=endpoint,
        model=model,
        api=api,
        context_tokens=context_tokens,
        max_tokens_cap=cap,
        drain_timeout_s=drain_timeout,
    )
    report = run_load(
        arrivals, duration, options, what, progress=lambda line: click.echo(line, err=True)
    )
    report.notes[:0] = notes
    if as_json:
        emit_json(report.to_dict())
    else:
        for line in report.lines():
            click.echo(line)
    if report.sent and report.ok == 0:
        raise GreenllmError(f"no request succeeded ({report.sent} sent): {report.errors}")


def register(group: click.Group) -> None:
    """Add ``load`` to the CLI."""
    group.add_command(load)
