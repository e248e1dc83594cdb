"""``greenllm load``: replay a request load against an OpenAI-compatible endpoint."""

from __future__ import annotations

from pathlib import Path

import click
from click.core import ParameterSource

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
from greenllm.serving.shapes import QUIET_FRACTION, SHAPES, shaped_load

#: One sentence per load shape, for ``--help`` (see :mod:`greenllm.serving.shapes`).
SHAPE_HELP = {
    "trace": "the conversation trace's own prompts and outputs",
    "prefill-heavy": "long prompts (1,000-4,000 tokens), short answers (5-50): code "
    "completion, RAG, summarisation",
    "decode-heavy": "short prompts (~100 tokens), long answers (~500)",
    "bursty": "the trace's mix, the rate swinging 10x every minute",
    "quiet": "the trace's mix at a tenth of --rate (a quiet hour)",
}


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
    help="Mean requests per second (with --process, or with --shape).",
)
@click.option(
    "--process",
    type=click.Choice(["poisson", "bursty"]),
    default="poisson",
    show_default=True,
    help="Arrival process for --rate alone.",
)
@click.option(
    "--shape",
    type=click.Choice(SHAPES),
    default=None,
    help="Send a load shape at --rate: the shipped conversation trace's arrival gaps "
    "(scaled to the rate, so its burstiness stays) with this shape's tokens: "
    + "; ".join(f"{name}: {what}" for name, what in SHAPE_HELP.items())
    + ". Prompts and outputs are fitted to the model's context.",
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
    help="Prompt length with --rate alone, tokens.",
)
@click.option(
    "--max-tokens",
    type=click.IntRange(min=1),
    default=None,
    help="Tokens per request with --rate alone (default 32); with --trace or --shape, a cap "
    "on each request's output tokens.",
)
@click.option(
    "--context",
    "context_tokens",
    type=click.IntRange(min=2),
    default=None,
    help="The model's context, tokens (default: the endpoint's max_model_len, if it gives one).",
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Seed of the arrival process (with --shape, of the token draws).",
)
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
    shape: str | None,
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
    byte-level built-in models). Give --rate (Poisson or bursty arrivals of one prompt and
    output length), --rate with --shape (a load shape), or --trace.
    """
    ctx = click.get_current_context()
    arrivals, what, notes, cap = choose_arrivals(
        rate=rate,
        process=process if _given(ctx, "process") else None,
        shape=shape,
        trace_file=trace_file,
        time_scale=time_scale if _given(ctx, "time_scale") else None,
        duration_s=duration,
        prompt_tokens=prompt_tokens if _given(ctx, "prompt_tokens") else None,
        max_tokens=max_tokens,
        seed=seed,
    )
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


def _given(ctx: click.Context, name: str) -> bool:
    """Whether the user gave option ``name`` (not its default)."""
    return ctx.get_parameter_source(name) not in (None, ParameterSource.DEFAULT)


def choose_arrivals(
    *,
    rate: float | None,
    process: str | None,
    shape: str | None,
    trace_file: Path | None,
    time_scale: float | None,
    duration_s: float,
    prompt_tokens: int | None,
    max_tokens: int | None,
    seed: int,
) -> tuple[list[Arrival], str, list[str], int | None]:
    """The arrivals a ``greenllm load`` command line asks for.

    Args:
        rate: ``--rate``, mean requests/s (None: not given).
        process: ``--process`` when given (None: the default, Poisson).
        shape: ``--shape`` (None: not given).
        trace_file: ``--trace`` (None: not given).
        time_scale: ``--time-scale`` when given (None: not given, 1).
        duration_s: ``--duration``, seconds.
        prompt_tokens: ``--prompt-tokens`` when given (None: the default, 32).
        max_tokens: ``--max-tokens`` (None: not given).
        seed: ``--seed``.

    Returns:
        The arrivals, what the load is in words, notes for the report, and the cap on
        each request's output tokens (None: none).

    Raises:
        click.UsageError: A combination of options that does not go together.
    """
    if trace_file is not None and shape is not None:
        raise click.UsageError("give --shape (with --rate) or --trace, not both")
    if (rate is None) == (trace_file is None):
        if shape is not None:
            raise click.UsageError(f"--shape {shape} needs --rate (mean requests/s)")
        raise click.UsageError("give exactly one of --rate and --trace")
    notes: list[str] = []
    if trace_file is not None:
        scale = time_scale or 1.0
        path = CONVERSATION_TRACE if str(trace_file) == "conversation" else trace_file
        arrivals = read_trace(path, scale)
        what = f"trace {path.name}" + (f", time compressed {scale:g}x" if scale != 1 else "")
        if scale != 1:
            notes.append(
                f"trace time compressed {scale:g}x: {duration_s:g} s replays "
                f"{duration_s * scale:g} s of the trace"
            )
        return arrivals, what, notes, max_tokens
    assert rate is not None
    if shape is not None:
        given = [
            name
            for name, value in (
                ("--process", process),
                ("--prompt-tokens", prompt_tokens),
                ("--time-scale", time_scale),
            )
            if value is not None
        ]
        if given:
            raise click.UsageError(
                f"--shape {shape} makes its own arrivals and prompts: "
                f"give no {' or '.join(given)} with it"
            )
        arrivals = shaped_load(shape, duration_s, rate, seed)
        asked = rate * (QUIET_FRACTION if shape == "quiet" else 1.0)
        what = f"shape {shape}, mean {asked:g} requests/s"
        if shape == "quiet":
            what += f" (a tenth of {rate:g})"
        notes.append(
            f"{len(arrivals)} requests in {duration_s:g} s ({len(arrivals) / duration_s:.3g}/s): "
            f"the trace's arrival gaps in order, scaled to {asked:g}/s over the whole trace "
            "(its first minutes run slower than its mean)"
        )
        return arrivals, what, notes, max_tokens
    kind = process or "poisson"
    make = poisson_arrivals if kind == "poisson" else bursty_arrivals
    arrivals = make(rate, duration_s, prompt_tokens or 32, max_tokens or 32, seed)
    return arrivals, f"{kind} {rate:g} requests/s", notes, None


def register(group: click.Group) -> None:
    """Add ``load`` to the CLI."""
    group.add_command(load)
