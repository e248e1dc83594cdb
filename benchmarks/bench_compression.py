"""Compression: size, held-out perplexity, tokens/s and J/token per method on ``tiny``,
``small`` and ``smollm2-135m``, each as a ratio to the uncompressed model (one run).

J/token comes from the energy meter: GPU counters on a GPU, RAPL where readable, else the
labelled CPU-time ESTIMATE; the source is printed beside every figure.
"""

from __future__ import annotations

import importlib.util
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from transformers.utils import logging as hf_logging

from greenllm.compression.distill import DistillConfig
from greenllm.compression.evaluate import EvalConfig
from greenllm.compression.pipeline import CompressOptions, compress, parse_methods
from greenllm.workloads import smollm2
from greenllm.workloads.training import TrainConfig

METHODS = "int8-dynamic,int8,int4,prune,prune-2:4,lowrank,distill"
#: Per model: distillation steps and generation settings (SmolLM2 is ~300x bigger).
SETTINGS: dict[str, dict[str, Any]] = {
    "tiny": {"distill_steps": 150, "new_tokens": 64, "repeats": 5},
    "small": {"distill_steps": 150, "new_tokens": 64, "repeats": 5},
    smollm2.NAME: {"distill_steps": 20, "new_tokens": 16, "repeats": 3},
}
MODELS = ("tiny", "small", smollm2.NAME)


def _fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def _print_report(report: dict[str, Any]) -> None:
    print(f"\nmodel {report['model']} on {report['device']}: {report['energy_note']}")
    header = (
        f"{'method':<13} {'MB':>8} {'ppl':>8} {'tok/s':>8} {'J/token':>9} {'source':<9}"
        f" | {'size x':>7} {'ppl x':>7} {'tok/s x':>7} {'J/tok x':>7}"
    )
    print(header)
    print("-" * len(header))
    for r in [report["baseline"], *report["results"]]:
        ratios = [
            _fmt(r.get(key, 1.0), 3)
            for key in (
                "bytes_ratio",
                "perplexity_ratio",
                "tokens_per_s_ratio",
                "joules_per_token_ratio",
            )
        ]
        print(
            f"{r['method']:<13} {r['bytes'] / 1e6:>8.3f} {r['perplexity']:>8.3f}"
            f" {r['tokens_per_s']:>8.1f} {_fmt(r['joules_per_token']):>9} {r['energy_source']:<9}"
            " | " + " ".join(f"{v:>7}" for v in ratios)
        )
    kernels = sorted({k for r in report["results"] for k in r["kernels"]})
    print("quantized matmul paths: " + "; ".join(kernels))


def main() -> None:
    """Run every method on every model and print one table per model."""
    hf_logging.disable_progress_bar()
    models = list(MODELS)
    if smollm2.NAME in models and importlib.util.find_spec(smollm2.PACKAGE) is None:
        print(f"note: skipping {smollm2.NAME}: extra not installed ({smollm2.INSTALL_HINT})")
        models.remove(smollm2.NAME)
    for name in models:
        settings = SETTINGS[name]
        distill = DistillConfig()
        distill = replace(
            distill,
            train=TrainConfig(
                steps=settings["distill_steps"], lr=1e-3 if name == smollm2.NAME else 2e-3
            ),
        )
        options = CompressOptions(
            sparsity=0.5,
            energy=0.9,
            distill=distill,
            eval=EvalConfig(new_tokens=settings["new_tokens"], repeats=settings["repeats"]),
        )
        with tempfile.TemporaryDirectory(prefix=f"bench-compress-{name}-") as tmp:
            report = compress(
                name,
                parse_methods(METHODS),
                Path(tmp),
                options,
                log=lambda msg: print(f"  [{msg}]", file=sys.stderr, flush=True),
            )
        _print_report(report)


if __name__ == "__main__":
    main()
