"""``greenllm compress``: compress a model by one or more methods and report size, quality,
speed and J/token of each against the original."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import click

from greenllm.cli.output import emit_json, print_table

METHOD_HELP = (
    "Comma-separated methods: int8-dynamic, int8, int4, prune, prune-2:4, distill, lowrank; "
    "join with + to chain (e.g. prune+int8)."
)


@click.command("compress")
@click.option(
    "--model", "model_name", required=True, help="tiny, small, smollm2-135m or a model directory."
)
@click.option("--method", "methods", required=True, help=METHOD_HELP)
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for artifacts, report.json and pareto.png.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON document.")
@click.option(
    "--sparsity",
    type=click.FloatRange(0.0, 1.0, max_open=True),
    default=0.5,
    show_default=True,
    help="prune: fraction of weights zeroed.",
)
@click.option(
    "--prune-scope",
    type=click.Choice(["global", "layer"]),
    default="global",
    show_default=True,
    help="prune: rank weights over all layers or per layer.",
)
@click.option(
    "--finetune-steps",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="prune, prune-2:4: recovery fine-tune steps.",
)
@click.option(
    "--rank",
    type=click.IntRange(min=1),
    default=None,
    help="lowrank: fixed rank per layer (default: by --energy).",
)
@click.option(
    "--energy",
    type=click.FloatRange(0.0, 1.0, min_open=True),
    default=0.9,
    show_default=True,
    help="lowrank: fraction of squared singular values kept.",
)
@click.option(
    "--group-size",
    type=click.Choice(["32", "64", "128", "256"]),
    default="32",
    show_default=True,
    help="int4: input elements per scale.",
)
@click.option(
    "--student-layers",
    type=click.IntRange(min=1),
    default=None,
    help="distill: student depth (default: half the teacher's).",
)
@click.option(
    "--student-width",
    type=click.FloatRange(0.0, 1.0, min_open=True),
    default=1.0,
    show_default=True,
    help="distill: student width / teacher width (gpt2 only).",
)
@click.option(
    "--distill-steps",
    type=click.IntRange(min=1),
    default=200,
    show_default=True,
    help="distill: training steps.",
)
@click.option(
    "--alpha",
    type=click.FloatRange(0.0, 1.0),
    default=0.5,
    show_default=True,
    help="distill: weight of the KL term.",
)
@click.option(
    "--temperature",
    type=click.FloatRange(0.0, min_open=True),
    default=2.0,
    show_default=True,
    help="distill: softening temperature.",
)
@click.option(
    "--seq-len",
    type=click.IntRange(min=8),
    default=128,
    show_default=True,
    help="Tokens per perplexity window.",
)
@click.option(
    "--eval-tokens",
    type=click.IntRange(min=8),
    default=None,
    help="Score at most this many held-out tokens.",
)
@click.option(
    "--gen-batch",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Sequences generated at once.",
)
@click.option(
    "--gen-tokens",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="Tokens generated per sequence.",
)
@click.option(
    "--repeats",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="Timed generation runs per model: the median is reported with the spread "
    "(max - min) / median (one run: spread unknown, marked noisy).",
)
@click.option(
    "--run-s",
    "run_s",
    type=click.FloatRange(min=0.0, min_open=True),
    default=1.0,
    show_default=True,
    help="Each timed run generates until it lasts at least this long, seconds.",
)
@click.option(
    "--max-run-s",
    type=click.FloatRange(min=0.0, min_open=True),
    default=4.0,
    show_default=True,
    help="While a spread is above --max-spread, time every model again with runs twice "
    "as long, up to this length, seconds.",
)
@click.option(
    "--max-spread",
    type=click.FloatRange(min=0.0, min_open=True),
    default=0.05,
    show_default=True,
    help="Spread above which a figure (and ratios using it) is marked noisy, fraction.",
)
@click.option(
    "--threads",
    "cpu_threads",
    type=click.IntRange(min=0),
    default=1,
    show_default=True,
    help="Torch CPU threads while timing generation (0: torch's default). One thread keeps "
    "speed and CPU time per token steady when other processes share the cores.",
)
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda[:N].")
def compress_command(
    model_name: str,
    methods: str,
    out_dir: Path,
    as_json: bool,
    sparsity: float,
    prune_scope: str,
    finetune_steps: int,
    rank: int | None,
    energy: float,
    group_size: str,
    student_layers: int | None,
    student_width: float,
    distill_steps: int,
    alpha: float,
    temperature: float,
    seq_len: int,
    eval_tokens: int | None,
    gen_batch: int,
    gen_tokens: int,
    repeats: int,
    run_s: float,
    max_run_s: float,
    max_spread: float,
    cpu_threads: int,
    device: str,
) -> None:
    """Compress MODEL by each METHOD; report size, held-out perplexity, tokens/s and J/token
    (with its source and spread over runs), each also as a ratio to the uncompressed model,
    which is timed interleaved with the methods and shown as the tables' first row."""
    _quiet_transformers()

    from greenllm.compression.distill import DistillConfig
    from greenllm.compression.evaluate import EvalConfig
    from greenllm.compression.pipeline import CompressOptions, compress, parse_methods
    from greenllm.compression.report import (
        FIGURE_COLUMNS,
        RATIO_COLUMNS,
        figure_rows,
        ratio_rows,
    )

    chains = parse_methods(methods)
    distill = DistillConfig(
        layers=student_layers, width_factor=student_width, alpha=alpha, temperature=temperature
    )
    distill = replace(distill, train=replace(distill.train, steps=distill_steps))
    options = CompressOptions(
        sparsity=sparsity,
        prune_scope=prune_scope,
        finetune_steps=finetune_steps,
        rank=rank,
        energy=energy,
        group_size=int(group_size),
        distill=distill,
        eval=EvalConfig(
            seq_len=seq_len,
            max_eval_tokens=eval_tokens,
            gen_batch_size=gen_batch,
            new_tokens=gen_tokens,
            repeats=repeats,
            min_run_s=run_s,
            max_run_s=max(run_s, max_run_s),
            max_spread=max_spread,
            cpu_threads=cpu_threads or None,
        ),
        device=device,
    )
    report = compress(model_name, chains, out_dir, options)
    if as_json:
        emit_json(report)
        return
    print_table(f"compress {model_name} ({device})", FIGURE_COLUMNS, figure_rows(report))
    print_table("ratio to the baseline above", RATIO_COLUMNS, ratio_rows(report))
    click.echo(report["timing_note"])
    click.echo(report["energy_note"])
    click.echo(f"artifacts, report.json and pareto.png in {out_dir}")


def _quiet_transformers() -> None:
    """Keep transformers' notices (e.g. "`loss_type=None` was set in the config") and
    progress bars out of the report."""
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", module=r"transformers(\.|$)")


def register(cli: click.Group) -> None:
    """Add ``compress`` to the CLI."""
    cli.add_command(compress_command)
