"""Load a model by name: a built-in (``tiny``, ``small``: trained on first use and cached),
``smollm2-135m``, a local ``save_pretrained`` directory, or a compressed artifact.

The cache lives under ``$GREENLLM_CACHE`` (default ``~/.cache/greenllm``), one directory per
recipe (architecture, training settings, corpus digest), so changing any of them retrains.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from transformers import AutoModelForCausalLM, PreTrainedModel

from greenllm.errors import GreenllmError
from greenllm.workloads import smollm2
from greenllm.workloads.corpus import corpus_digest, corpus_ids
from greenllm.workloads.models import BUILTINS, BuiltinSpec, build_untrained
from greenllm.workloads.tokenizer import ByteTokenizer, Tokenizer, load_tokenizer
from greenllm.workloads.training import train

#: Manifest file of a compressed artifact (see greenllm.compression.artifacts).
MANIFEST_FILE = "greenllm_compression.json"
TRAINING_FILE = "greenllm_training.json"


@dataclass
class LoadedModel:
    """A causal LM ready for evaluation or compression.

    Attributes:
        model: The transformers model, in eval mode, on the CPU.
        tokenizer: Its tokenizer.
        name: What the user asked for (``tiny``, a path...).
        source: ``builtin``, ``smollm2``, ``local`` or ``compressed``.
        manifest: The compression manifest of a compressed artifact, else None.
    """

    model: PreTrainedModel
    tokenizer: Tokenizer
    name: str
    source: str
    manifest: dict[str, Any] | None = field(default=None)


def model_names() -> list[str]:
    """Names accepted besides a directory path."""
    return [*BUILTINS, smollm2.NAME]


def cache_root() -> Path:
    """``$GREENLLM_CACHE`` or ``~/.cache/greenllm``."""
    env = os.environ.get("GREENLLM_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "greenllm"


def builtin_cache_dir(name: str, train_steps: int | None = None) -> Path:
    """Where the trained built-in ``name`` is cached (for ``train_steps`` steps if given)."""
    spec = _builtin_spec(name, train_steps)
    recipe = {**spec.recipe(), "corpus_sha256": corpus_digest()}
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]
    return cache_root() / "models" / f"{name}-{key}"


def _builtin_spec(name: str, train_steps: int | None) -> BuiltinSpec:
    if name not in BUILTINS:
        raise GreenllmError(f"unknown built-in model {name!r} (have: {', '.join(BUILTINS)})")
    spec = BUILTINS[name]
    if train_steps is not None:
        spec = replace(spec, train=replace(spec.train, steps=train_steps))
    return spec


def pretrained_builtin(name: str, train_steps: int | None = None) -> LoadedModel:
    """The built-in ``name`` trained on the corpus; trains and caches it on first use.

    Args:
        name: ``tiny`` or ``small``.
        train_steps: Override the recipe's step count (tests use a few steps).
    """
    target = builtin_cache_dir(name, train_steps)
    if not (target / "config.json").is_file():
        spec = _builtin_spec(name, train_steps)
        print(f"training built-in model {name!r} (cached in {target})", file=sys.stderr)
        model = build_untrained(spec, seed=spec.train.seed)
        tokenizer = ByteTokenizer()
        result = train(model, corpus_ids(tokenizer, "train"), spec.train, label=f"train {name}")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
        try:
            model.save_pretrained(str(tmp))
            tokenizer.save(tmp)
            doc = {
                "recipe": spec.recipe(),
                "final_loss": result.losses[-1],
                "duration_s": result.duration_s,
            }
            (tmp / TRAINING_FILE).write_text(json.dumps(doc, indent=2) + "\n")
            os.replace(tmp, target)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if not (target / "config.json").is_file():
                raise
    loaded = load_local_dir(target)
    return replace(loaded, name=name, source="builtin")


def load_local_dir(path: Path) -> LoadedModel:
    """A ``save_pretrained`` directory (weights, config, tokenizer files), or a compressed
    artifact when it holds a greenllm compression manifest.

    Raises:
        GreenllmError: Not a directory, or not a model transformers can load.
    """
    if not path.is_dir():
        raise GreenllmError(f"{path}: not a directory")
    if (path / MANIFEST_FILE).is_file():
        from greenllm.compression.artifacts import load_compressed

        return load_compressed(path)
    if not (path / "config.json").is_file():
        raise GreenllmError(f"{path}: no config.json (not a save_pretrained model directory)")
    tokenizer = load_tokenizer(path)
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise GreenllmError(f"{path}: cannot load model: {' '.join(str(exc).split())}") from exc
    model.eval()
    return LoadedModel(model=model, tokenizer=tokenizer, name=str(path), source="local")


def load_model(name: str) -> LoadedModel:
    """Load ``tiny``, ``small``, ``smollm2-135m`` or a model directory.

    Raises:
        GreenllmError: Unknown name, missing extra, or unreadable directory.
    """
    if name in BUILTINS:
        return pretrained_builtin(name)
    if name == smollm2.NAME:
        model, tokenizer = smollm2.load_smollm2()
        return LoadedModel(model=model, tokenizer=tokenizer, name=name, source="smollm2")
    path = Path(name).expanduser()
    if path.exists():
        return load_local_dir(path)
    raise GreenllmError(
        f"unknown model {name!r}: use one of {', '.join(model_names())} or a model directory"
    )
