"""Compressed models on disk, and back.

An artifact is a directory:

- ``config.json``: the transformers config of the (possibly distilled) architecture;
- ``model.safetensors``: every weight as a plain tensor, in its compressed form (int8 or
  packed int4 values with their scales, low-rank factors, pruned dense weights); weights
  tied to another (GPT-2's and SmolLM2's LM head) are stored once;
- the tokenizer's files;
- ``greenllm_compression.json``: the manifest: what was applied, in order, and the kind and
  shape of every replaced layer, which is what :func:`load_compressed` rebuilds.

Any model directory that holds the manifest can be named wherever a model is (e.g.
``load_model(path)``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantLinear
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel

from greenllm.compression.layers import conv1d_to_linear, set_module
from greenllm.compression.lowrank import LowRankLinear
from greenllm.compression.quantize import Int4WeightOnlyLinear, Int8WeightOnlyLinear
from greenllm.errors import GreenllmError
from greenllm.workloads.registry import MANIFEST_FILE, LoadedModel
from greenllm.workloads.tokenizer import Tokenizer, load_tokenizer

FORMAT = "greenllm-compressed/1"
WEIGHTS_FILE = "model.safetensors"


def describe_modules(model: nn.Module) -> dict[str, dict[str, Any]]:
    """Kind and shape of every compressed layer, parents before children."""
    found: dict[str, dict[str, Any]] = {}
    for name, module in model.named_modules():
        if isinstance(module, LowRankLinear):
            spec = {"kind": "lowrank", "rank": module.rank, "bias": module.up.bias is not None}
        elif isinstance(module, Int8WeightOnlyLinear):
            spec = {"kind": "int8", "bias": module.bias is not None}
        elif isinstance(module, Int4WeightOnlyLinear):
            spec = {"kind": "int4", "bias": module.bias is not None}
            spec["group_size"] = module.group_size
        elif isinstance(module, DynamicQuantLinear):
            spec = {"kind": "int8-dynamic", "bias": module.bias() is not None}
        else:
            continue
        spec["in_features"] = module.in_features
        spec["out_features"] = module.out_features
        found[name] = spec
    return found


def _empty_module(spec: dict[str, Any]) -> nn.Module:
    in_f, out_f, bias = spec["in_features"], spec["out_features"], spec["bias"]
    kind = spec["kind"]
    if kind == "lowrank":
        return LowRankLinear(in_f, out_f, spec["rank"], bias)
    if kind == "int8":
        return Int8WeightOnlyLinear(in_f, out_f, bias)
    if kind == "int4":
        return Int4WeightOnlyLinear(in_f, out_f, bias, spec["group_size"])
    if kind == "int8-dynamic":
        return DynamicQuantLinear(in_f, out_f, bias_=bias, dtype=torch.qint8)
    raise GreenllmError(f"unknown compressed layer kind {kind!r} in manifest")


def _tensors(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Plain tensors to save, and ``{dropped key: key it is tied to}``."""
    tensors: dict[str, torch.Tensor] = {}
    tied: dict[str, str] = {}
    by_storage: dict[tuple[int, tuple[int, ...]], str] = {}
    dynamic = {n: m for n, m in model.named_modules() if isinstance(m, DynamicQuantLinear)}
    for key, value in model.state_dict().items():
        if not isinstance(value, torch.Tensor) or any(key.startswith(f"{n}.") for n in dynamic):
            continue
        ident = (value.data_ptr(), tuple(value.shape))
        if ident in by_storage:
            tied[key] = by_storage[ident]
            continue
        by_storage[ident] = key
        tensors[key] = value.detach().contiguous().cpu()
    for name, module in dynamic.items():
        qweight = module.weight()
        tensors[f"{name}.weight_int8"] = qweight.int_repr().contiguous()
        tensors[f"{name}.weight_scales"] = qweight.q_per_channel_scales().float().contiguous()
        tensors[f"{name}.weight_zero_points"] = qweight.q_per_channel_zero_points().contiguous()
        bias = module.bias()
        if bias is not None:
            tensors[f"{name}.bias"] = bias.detach().contiguous()
    return tensors, tied


def save_compressed(
    model: PreTrainedModel,
    tokenizer: Tokenizer,
    directory: Path,
    manifest: dict[str, Any],
) -> int:
    """Write ``model`` as an artifact into ``directory`` (created if needed).

    Args:
        model: The compressed model.
        tokenizer: Its tokenizer.
        directory: Target directory.
        manifest: What was applied (``base_model``, ``steps`` ...); the layer layout is added.

    Returns:
        Size of the weights file, bytes.
    """
    directory.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(str(directory))
    tokenizer.save(directory)
    tensors, tied = _tensors(model)
    save_file(tensors, str(directory / WEIGHTS_FILE), metadata={"format": "pt"})
    doc = {
        **manifest,
        "format": FORMAT,
        "weights_file": WEIGHTS_FILE,
        "conv1d_to_linear": not any(type(m).__name__ == "Conv1D" for m in model.modules()),
        "modules": describe_modules(model),
        "tied": tied,
    }
    (directory / MANIFEST_FILE).write_text(json.dumps(doc, indent=2) + "\n")
    return (directory / WEIGHTS_FILE).stat().st_size


def read_manifest(directory: Path) -> dict[str, Any]:
    """The manifest of an artifact.

    Raises:
        GreenllmError: Missing, unreadable, or of an unknown format.
    """
    path = directory / MANIFEST_FILE
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise GreenllmError(f"{path}: cannot read manifest: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise GreenllmError(f"{path}: format: expected {FORMAT!r}")
    return doc


def load_compressed(path: Path | str) -> LoadedModel:
    """Rebuild a compressed model from its artifact directory.

    Raises:
        GreenllmError: The directory is not a readable artifact.
    """
    directory = Path(path)
    manifest = read_manifest(directory)
    config = AutoConfig.from_pretrained(str(directory), local_files_only=True)
    model = AutoModelForCausalLM.from_config(config)
    if manifest["conv1d_to_linear"]:
        conv1d_to_linear(model)
    dynamic: dict[str, nn.Module] = {}
    for name, spec in manifest["modules"].items():
        module = _empty_module(spec)
        if isinstance(module, DynamicQuantLinear):
            dynamic[name] = module  # swapped in after the plain weights are loaded
        else:
            set_module(model, name, module)
    tensors = load_file(str(directory / manifest["weights_file"]))
    for dropped, kept in manifest["tied"].items():
        tensors[dropped] = tensors[kept]
    dynamic_state = {
        k: tensors.pop(k) for k in list(tensors) if any(k.startswith(f"{n}.") for n in dynamic)
    }
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    placeholders = {f"{n}.{k}" for n in dynamic for k in ("weight", "bias")}
    missing = [k for k in missing if k not in placeholders]
    if missing or unexpected:
        raise GreenllmError(
            f"{directory}: weights do not match the manifest (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]})"
        )
    for name, module in dynamic.items():
        qweight = torch._make_per_channel_quantized_tensor(
            dynamic_state[f"{name}.weight_int8"],
            dynamic_state[f"{name}.weight_scales"].double(),
            dynamic_state[f"{name}.weight_zero_points"],
            0,
        )
        module.set_weight_bias(qweight, dynamic_state.get(f"{name}.bias"))  # type: ignore[operator]
        set_module(model, name, module)
    model.eval()
    return LoadedModel(
        model=model,
        tokenizer=load_tokenizer(directory),
        name=str(directory),
        source="compressed",
        manifest=manifest,
    )
