"""Distillation: the loss is the stated formula, students are smaller, and the teacher
helps: with fixed seeds the distilled student ends with a lower held-out loss than the same
student trained for the same steps without the teacher."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import LlamaConfig

from greenllm.compression.distill import (
    DistillConfig,
    build_student,
    distill,
    distillation_loss,
    student_config,
)
from greenllm.compression.evaluate import EvalConfig, generate, perplexity
from greenllm.errors import GreenllmError
from greenllm.workloads import LoadedModel, TrainConfig, corpus_ids, pretrained_builtin

#: A teacher and students trained here: ~80 s on 2 cores.
pytestmark = [pytest.mark.slow, pytest.mark.tiny_model]
TEACHER_STEPS = 300  # the `tiny` recipe: a teacher clearly better than a 30-step student
EVAL = EvalConfig(seq_len=128, max_eval_tokens=2048)


@pytest.fixture(scope="module")
def teacher(model_cache: Path) -> LoadedModel:
    """``tiny`` as trained by its recipe, in the run's model cache (tests/conftest.py)."""
    return pretrained_builtin("tiny", train_steps=TEACHER_STEPS)


def test_loss_is_alpha_kl_t2_plus_one_minus_alpha_ce() -> None:
    torch.manual_seed(0)
    student, teacher = torch.randn(2, 5, 7), torch.randn(2, 5, 7)
    ids = torch.randint(0, 7, (2, 5))
    s, t, labels = student[:, :-1].reshape(-1, 7), teacher[:, :-1].reshape(-1, 7), ids[:, 1:]
    ce = F.cross_entropy(s, labels.reshape(-1))
    p_t = F.softmax(t / 3.0, dim=-1)
    kl = (p_t * (p_t.log() - F.log_softmax(s / 3.0, dim=-1))).sum(-1).mean()
    got = distillation_loss(student, teacher, ids, alpha=0.25, temperature=3.0)
    assert float(got) == pytest.approx(float(0.25 * kl * 9.0 + 0.75 * ce), rel=1e-5)
    assert float(distillation_loss(student, teacher, ids, 0.0, 3.0)) == pytest.approx(float(ce))
    assert float(distillation_loss(student, student, ids, 1.0, 3.0)) == pytest.approx(0.0, abs=1e-6)


def test_students_are_smaller(teacher: LoadedModel) -> None:
    t = teacher.model
    shallow = build_student(t, DistillConfig(layers=1))
    assert shallow.config.n_layer == 1 and shallow.num_parameters() < t.num_parameters()
    # one layer kept: the teacher's first; embeddings copied too
    assert torch.equal(
        shallow.transformer.h[0].attn.c_attn.weight, t.transformer.h[0].attn.c_attn.weight
    )
    assert torch.equal(shallow.transformer.wte.weight, t.transformer.wte.weight)
    narrow = build_student(t, DistillConfig(width_factor=0.5))
    assert (narrow.config.n_layer, narrow.config.n_embd) == (1, 64)
    assert narrow.num_parameters() < shallow.num_parameters()
    with pytest.raises(GreenllmError, match="gpt2 models only"):
        student_config(LlamaConfig(num_hidden_layers=4), None, 0.5)
    with pytest.raises(GreenllmError, match="student layers"):
        student_config(t.config, 3, 1.0)


def test_the_teacher_lowers_the_students_heldout_loss(teacher: LoadedModel) -> None:
    train_ids = corpus_ids(teacher.tokenizer, "train")
    heldout = corpus_ids(teacher.tokenizer, "heldout")
    for seed in (0, 1):
        losses = {}
        for alpha in (0.0, 0.5):  # alpha 0: cross-entropy only, the teacher is ignored
            config = DistillConfig(
                layers=1,
                alpha=alpha,
                temperature=2.0,
                train=TrainConfig(
                    steps=30, batch_size=8, seq_len=64, lr=2e-3, seed=seed, log_every=0
                ),
            )
            student, result = distill(teacher.model, train_ids, config)
            assert result.student_layers == 1 and result.initialised_from_teacher
            losses[alpha] = math.log(perplexity(student, heldout, EVAL)[0])
        assert losses[0.5] < losses[0.0] - 0.005, (seed, losses)
    out = generate(student, heldout[:16][None], 8, teacher.tokenizer)
    assert out.shape == (1, 8)
