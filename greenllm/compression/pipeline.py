"""``compress``: apply methods to a model, measure each result against the original, save
every result as a loadable artifact and write the report.

Methods (``METHODS``); ``a+b`` applies ``a`` then ``b`` to one model (distillation first,
quantization last):

- ``int8-dynamic``, ``int8``, ``int4``: see :mod:`greenllm.compression.quantize`;
- ``prune`` (unstructured magnitude), ``prune-2:4``: see :mod:`greenllm.compression.prune`;
- ``distill``: see :mod:`greenllm.compression.distill`;
- ``lowrank``: see :mod:`greenllm.compression.lowrank`.
"""

from __future__ import annotations

import copy
import re
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel

from greenllm.compression import distill as distill_mod
from greenllm.compression import lowrank, prune, quantize
from greenllm.compression.artifacts import save_compressed
from greenllm.compression.evaluate import EvalConfig, Evaluation, measure_generation, perplexity
from greenllm.compression.layers import conv1d_to_linear, count_parameters, target_linears
from greenllm.compression.report import MethodResult, build_report, write_report
from greenllm.energy import EnergyMeter
from greenllm.errors import GreenllmError
from greenllm.workloads.corpus import corpus_ids
from greenllm.workloads.registry import LoadedModel, load_model
from greenllm.workloads.training import TrainConfig

QUANT_METHODS = ("int8-dynamic", "int8", "int4")
METHODS = (*QUANT_METHODS, "prune", "prune-2:4", "distill", "lowrank")
Log = Callable[[str], None]


@dataclass(frozen=True)
class CompressOptions:
    """Settings of every method.

    Attributes:
        sparsity: Unstructured pruning: fraction of weights zeroed.
        prune_scope: ``global`` or ``layer``.
        finetune_steps: Recovery fine-tune steps after pruning (0: none).
        finetune: Batch shape, learning rate and seed of that fine-tune.
        rank: Low-rank: fixed rank per layer; or, when None,
        energy: the fraction of squared singular values kept.
        group_size: int4: input elements per scale/zero group.
        distill: Student shape, loss and training of ``distill``.
        eval: Perplexity and generation settings.
        device: ``cpu`` or ``cuda[:N]``: where models are evaluated.
    """

    sparsity: float = 0.5
    prune_scope: str = "global"
    finetune_steps: int = 0
    finetune: TrainConfig = field(
        default_factory=lambda: TrainConfig(steps=0, lr=5e-4, log_every=25)
    )
    rank: int | None = None
    energy: float = 0.9
    group_size: int = 32
    distill: distill_mod.DistillConfig = field(default_factory=distill_mod.DistillConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    device: str = "cpu"


def parse_methods(spec: str) -> list[list[str]]:
    """``"int8,prune+int4"`` -> ``[["int8"], ["prune", "int4"]]``, validated.

    Raises:
        GreenllmError: Unknown method, or an order that cannot be applied.
    """
    chains = []
    for item in spec.split(","):
        chain = [step.strip() for step in item.split("+") if step.strip()]
        if not chain:
            raise GreenllmError(f"empty method in {spec!r}")
        for step in chain:
            if step not in METHODS:
                raise GreenllmError(f"unknown method {step!r} (have: {', '.join(METHODS)})")
        if "distill" in chain[1:]:
            raise GreenllmError(f"{item}: distill must come first in a chain")
        quant = [s for s in chain if s in QUANT_METHODS]
        if len(quant) > 1 or (quant and chain[-1] != quant[0]):
            raise GreenllmError(f"{item}: at most one quantization, and it must come last")
        if len(set(chain)) != len(chain):
            raise GreenllmError(f"{item}: a method appears twice")
        chains.append(chain)
    return chains


def check_device(device: str) -> None:
    """Raise a clear error unless ``device`` is ``cpu`` or a present ``cuda[:N]``."""
    if not re.fullmatch(r"cpu|cuda(:\d+)?", device):
        raise GreenllmError(f"device must be cpu or cuda[:N], not {device!r}")
    if device.startswith("cuda"):
        index = int(device.partition(":")[2] or 0)
        if not torch.cuda.is_available() or index >= torch.cuda.device_count():
            raise GreenllmError(f"device {device}: no such CUDA device on this machine")


def make_meter(device: torch.device) -> EnergyMeter:
    """A meter over the GPU ``device`` runs on (if any), RAPL, and the CPU estimate."""
    gpus = []
    if device.type == "cuda":
        from greenllm.devices.nvml import discover_nvml_gpus

        index = device.index or 0
        gpus = [g for g in discover_nvml_gpus() if g.index == index]
    return EnergyMeter(gpus=gpus, rapl="auto", cpu_estimate=True)


def _apply_step(
    step: str,
    model: PreTrainedModel,
    teacher: PreTrainedModel,
    train_ids: torch.Tensor,
    options: CompressOptions,
) -> tuple[PreTrainedModel, dict[str, Any]]:
    """Apply one method; returns the (possibly new) model and what was done."""
    detail: dict[str, Any]
    if step == "distill":
        student, result = distill_mod.distill(teacher, train_ids, options.distill)
        run = result.run
        detail = {k: v for k, v in asdict(result).items() if k != "run"}
        detail.update(
            alpha=options.distill.alpha,
            temperature=options.distill.temperature,
            steps=options.distill.train.steps,
            final_loss=run.losses[-1] if run.losses else None,
            train_duration_s=run.duration_s,
        )
        return student, detail
    conv1d_to_linear(model)
    if not target_linears(model):
        raise GreenllmError(f"{step}: the model has no float Linear layers left to compress")
    if step == "int8-dynamic":
        if options.device != "cpu":
            raise GreenllmError("int8-dynamic runs on the CPU only (use --device cpu)")
        q = quantize.quantize_dynamic_int8(model)
        return model, {"layers": len(q.layers)}
    if step in ("int8", "int4"):
        q = quantize.quantize_weight_only(model, int(step[3:]), options.group_size)
        return model, {"layers": len(q.layers), "skipped": q.skipped, "group_size": q.group_size}
    if step in ("prune", "prune-2:4"):
        if step == "prune":
            scope = options.prune_scope
            if scope not in ("global", "layer"):
                raise GreenllmError(f"prune scope must be global or layer, not {scope!r}")
            p = prune.prune_magnitude(model, options.sparsity, scope)  # type: ignore[arg-type]
        else:
            p = prune.prune_2_4(model)
        detail = {
            "target_sparsity": p.target_sparsity,
            "scope": p.scope,
            "storage": "dense: zeros are stored and the CPU matmul does not skip them",
        }
        if options.finetune_steps > 0:
            config = replace(options.finetune, steps=options.finetune_steps)
            run = prune.finetune_pruned(model, p, train_ids, config)
            detail.update(finetune_steps=config.steps, finetune_final_loss=run.losses[-1])
        detail["sparsity"] = prune.sparsity(model)
        return model, detail
    if step == "lowrank":
        rank, energy = options.rank, None if options.rank is not None else options.energy
        lr = lowrank.factorize(model, rank=rank, energy=energy)
        ranks = list(lr.ranks.values())
        detail = {"rank": rank, "energy": energy, "layers": len(ranks), "skipped": lr.skipped}
        detail["mean_rank"] = sum(ranks) / len(ranks) if ranks else None
        return model, detail
    raise GreenllmError(f"unknown method {step!r}")


def _describe(
    name: str,
    model: PreTrainedModel,
    loaded: LoadedModel,
    heldout_ids: torch.Tensor,
    options: CompressOptions,
    out_dir: Path,
    manifest: dict[str, Any],
    details: dict[str, Any],
) -> MethodResult:
    """Save ``model`` as an artifact, move it to the device and score its perplexity (its
    generation is timed later, with every other model's)."""
    device = torch.device(options.device)
    weight_bytes = save_compressed(model, loaded.tokenizer, out_dir / _dir_name(name), manifest)
    model.to(device)  # type: ignore[arg-type]
    ppl, n_tokens = perplexity(model, heldout_ids, options.eval)
    return MethodResult(
        method=name,
        parameters=count_parameters(model),
        weight_bytes=weight_bytes,
        evaluation=Evaluation(perplexity=ppl, eval_tokens=n_tokens),
        kernels=quantize.kernels_used(model, device),
        artifact=str(out_dir / _dir_name(name)),
        details=details,
    )


def _dir_name(method: str) -> str:
    return method.replace(":", "_").replace("+", "_then_")


def compress(
    model_name: str,
    chains: list[list[str]],
    out_dir: Path,
    options: CompressOptions,
    log: Log | None = None,
) -> dict[str, Any]:
    """Compress ``model_name`` by each chain, measure, save artifacts, write the report.

    Returns:
        The report document (also written to ``out_dir/report.json``, with
        ``out_dir/pareto.png``).
    """
    say = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    check_device(options.device)
    say(f"loading {model_name}")
    loaded = load_model(model_name)
    base = loaded.model
    train_ids = corpus_ids(loaded.tokenizer, "train")
    heldout_ids = corpus_ids(loaded.tokenizer, "heldout")
    positions = getattr(base.config, "max_position_embeddings", None)
    if positions is not None and options.eval.seq_len > positions:
        raise GreenllmError(f"seq_len {options.eval.seq_len} exceeds the model's {positions}")
    meter = make_meter(torch.device(options.device))
    out_dir.mkdir(parents=True, exist_ok=True)
    say("scoring the uncompressed model")
    models = [copy.deepcopy(base)]
    baseline = _describe(
        "baseline",
        models[0],
        loaded,
        heldout_ids,
        options,
        out_dir,
        {"base_model": model_name, "steps": []},
        {},
    )
    results = []
    for chain in chains:
        name = "+".join(chain)
        say(f"applying {name}")
        model = copy.deepcopy(base)
        steps = []
        for step in chain:
            model, detail = _apply_step(step, model, base, train_ids, options)
            steps.append({"method": step, **detail})
        say(f"scoring {name}")
        manifest = {"base_model": model_name, "steps": steps}
        details = steps[0] if len(steps) == 1 else {"steps": steps}
        results.append(
            _describe(name, model, loaded, heldout_ids, options, out_dir, manifest, details)
        )
        models.append(model)
    ev = options.eval
    say(
        f"timing generation: {len(models)} models interleaved, {ev.repeats} runs of "
        f">= {ev.min_run_s:g} s each"
    )
    generations = measure_generation(models, loaded.tokenizer, heldout_ids, meter, ev, say)
    for result, generation in zip([baseline, *results], generations, strict=True):
        result.evaluation = replace(result.evaluation, generation=generation)
    report = build_report(
        model_name, options.device, baseline, results, ev.max_spread, ev.cpu_threads
    )
    write_report(report, out_dir)
    say(f"report written to {out_dir}")
    return report
