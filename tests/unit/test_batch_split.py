"""The built-in trainer's split of the global batch among ranks of different speeds."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]


def _trainer() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "train_gpt2", REPO / "examples/train/train_gpt2.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_counts_follow_the_shares_of_the_whole_batch() -> None:
    split = _trainer().batch_split
    # four H100 ranks at 6.2 samples/s and an A100 at 1.9: equal step times need ~9.3 and ~2.9
    shares = [6.2] * 4 + [1.9]
    assert split(shares, 40) == [10, 9, 9, 9, 3]
    assert split([1.0, 1.0], 16) == [8, 8]
    assert split([0.97, 0.01, 0.01, 0.01], 4) == [1, 1, 1, 1]  # at least one each
    assert split([1.0, 0.0, float("nan")], 6) == [4, 1, 1]  # unusable shares count as 1/n
    for shares, batch in (([3.0, 1.0, 1.0], 7), ([0.9, 0.05, 0.05], 5), ([1.0] * 5, 12)):
        assert sum(split(shares, batch)) == batch
