"""The compression report: per method, size, quality, speed and energy, each also as a
ratio to the uncompressed model; as JSON, as table rows, and as a Pareto plot.

A ratio below 1 means smaller/faster-per-joule for bytes, parameters and J/token, and
better for perplexity; ``tokens_per_s_ratio`` above 1 means faster. Speed and energy ratios
are taken against the uncompressed model's generation runs that alternated with the
method's own (``paired_baseline``), so load from other processes that changes over the
report's run does not skew them; size and perplexity ratios are against ``baseline``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from greenllm.compression.evaluate import Evaluation, Generation

REPORT_FILE = "report.json"
PLOT_FILE = "pareto.png"
FIGURE_COLUMNS = ("method", "params", "MB", "perplexity", "tokens/s", "J/token", "J source")
RATIO_COLUMNS = ("method", "params x", "bytes x", "perplexity x", "tokens/s x", "J/token x")
MB = 1e6


@dataclass
class MethodResult:
    """One compressed (or the uncompressed) model's figures.

    Attributes:
        method: Method name (``baseline`` for the uncompressed model).
        parameters: Parameters, quantized weights included.
        weight_bytes: Size of the saved weights file, bytes.
        evaluation: Perplexity, tokens/s, J/token and their sources.
        kernels: Matmul paths of quantized layers (says "fake/dequantized" where so).
        artifact: Directory of the saved, loadable model.
        details: What the method did (sparsity, ranks, student shape...).
        paired_baseline: The uncompressed model's generation figures from runs alternating
            with this model's (None for the baseline itself).
    """

    method: str
    parameters: int
    weight_bytes: int
    evaluation: Evaluation
    kernels: list[str] = field(default_factory=list)
    artifact: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    paired_baseline: Generation | None = None

    def figures(self) -> dict[str, Any]:
        """The absolute figures as a JSON-ready mapping."""
        ev = self.evaluation
        return {
            "method": self.method,
            "parameters": self.parameters,
            "bytes": self.weight_bytes,
            "perplexity": ev.perplexity,
            "tokens_per_s": ev.tokens_per_s,
            "joules_per_token": ev.joules_per_token,
            "energy_source": ev.energy_source,
            "energy_is_estimate": ev.energy_is_estimate,
            "eval_tokens": ev.eval_tokens,
            "generated_tokens": ev.generated_tokens,
            "generation_duration_s": ev.duration_s,
            "kernels": self.kernels,
            "artifact": self.artifact,
            "details": self.details,
            "paired_baseline": asdict(self.paired_baseline) if self.paired_baseline else None,
        }


def _ratio(value: float | None, reference: float | None) -> float | None:
    if value is None or reference is None or reference == 0:
        return None
    return value / reference


def build_report(
    model: str, device: str, baseline: MethodResult, results: list[MethodResult]
) -> dict[str, Any]:
    """The report document: the baseline's figures and each method's, with ratios."""
    base = baseline.figures()
    rows = []
    for result in results:
        row = result.figures()
        for key in ("parameters", "bytes", "perplexity"):
            row[f"{key}_ratio"] = _ratio(row[key], base[key])
        reference = row["paired_baseline"] or base
        for key in ("tokens_per_s", "joules_per_token"):
            row[f"{key}_ratio"] = _ratio(row[key], reference[key])
        rows.append(row)
    sources = sorted({r["energy_source"] for r in [base, *rows]})
    estimated = any(r["energy_is_estimate"] for r in [base, *rows])
    note = (
        "J/token is an ESTIMATE (process CPU time x watts per core), not a measurement: "
        "RAPL is not readable here"
        if estimated
        else "J/token is measured by energy counters"
    )
    return {
        "model": model,
        "device": device,
        "energy_sources": sources,
        "energy_note": note,
        "baseline": base,
        "results": rows,
    }


def figure_rows(report: dict[str, Any]) -> list[list[Any]]:
    """Rows for :data:`FIGURE_COLUMNS`: the baseline, then every method."""
    return [
        [
            r["method"],
            r["parameters"],
            r["bytes"] / MB,
            r["perplexity"],
            r["tokens_per_s"],
            r["joules_per_token"],
            r["energy_source"],
        ]
        for r in [report["baseline"], *report["results"]]
    ]


def ratio_rows(report: dict[str, Any]) -> list[list[Any]]:
    """Rows for :data:`RATIO_COLUMNS`, one per method."""
    return [
        [
            r["method"],
            r["parameters_ratio"],
            r["bytes_ratio"],
            r["perplexity_ratio"],
            r["tokens_per_s_ratio"],
            r["joules_per_token_ratio"],
        ]
        for r in report["results"]
    ]


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both coordinates (lower is better)."""
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any(
            (ox <= x and oy <= y) and (ox < x or oy < y)
            for j, (ox, oy) in enumerate(points)
            if j != i
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def plot_pareto(report: dict[str, Any], path: Path) -> None:
    """Perplexity against J/token for every model, the Pareto front joined (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = [
        r for r in [report["baseline"], *report["results"]] if r["joules_per_token"] is not None
    ]
    points = [(r["joules_per_token"], r["perplexity"]) for r in entries]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r, (x, y) in zip(entries, points, strict=True):
        ax.scatter([x], [y], color="black" if r["method"] == "baseline" else "tab:green")
        ax.annotate(r["method"], (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    front = pareto_front(points)
    if len(front) > 1:
        ax.plot([points[i][0] for i in front], [points[i][1] for i in front], "--", color="gray")
    source = "+".join(report["energy_sources"])
    kind = "ESTIMATE" if "estimate" in source else "measured"
    ax.set_xlabel(f"J/token ({kind}; source: {source})")
    ax.set_ylabel("held-out perplexity")
    ax.set_title(f"{report['model']}: quality vs energy per token (lower-left is better)")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(report: dict[str, Any], out_dir: Path) -> None:
    """Write ``report.json`` and ``pareto.png`` into ``out_dir``; adds their paths."""
    report["plot"] = str(out_dir / PLOT_FILE)
    report["report"] = str(out_dir / REPORT_FILE)
    plot_pareto(report, out_dir / PLOT_FILE)
    (out_dir / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
