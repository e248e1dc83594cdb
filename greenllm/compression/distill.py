"""Knowledge distillation: a teacher LM trains a smaller student on the shipped corpus.

The student has fewer layers and/or (GPT-2 only) a narrower width. Loss per batch:

    alpha * KL(softmax(teacher / T) || softmax(student / T)) * T^2 + (1 - alpha) * CE

with ``T`` the temperature and CE the student's next-token cross-entropy. A student as wide
as its teacher starts from the teacher's embeddings, final norm and evenly spaced layers
(as DistilBERT does); a narrower one starts from random weights.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModelForCausalLM, PretrainedConfig, PreTrainedModel

from greenllm.errors import GreenllmError
from greenllm.workloads.training import TrainConfig, TrainResult, train

_LAYER_KEY = re.compile(r"^(.*\.(?:h|layers))\.(\d+)\.(.*)$")


@dataclass(frozen=True)
class DistillConfig:
    """How to distill.

    Attributes:
        layers: Student depth (None: half the teacher's, at least 1).
        width_factor: Student width / teacher width (GPT-2 only; 1.0 keeps the width).
        alpha: Weight of the KL term; ``1 - alpha`` weighs the cross-entropy.
        temperature: Softening temperature ``T`` (> 0).
        init_from_teacher: Start an equally wide student from the teacher's layers.
        train: Steps, batch shape, learning rate and seed of the student's training.
    """

    layers: int | None = None
    width_factor: float = 1.0
    alpha: float = 0.5
    temperature: float = 2.0
    init_from_teacher: bool = True
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=200, lr=2e-3))


@dataclass
class DistillResult:
    """What a distillation run did.

    Attributes:
        teacher_layers: Teacher depth.
        student_layers: Student depth.
        teacher_width: Teacher hidden size.
        student_width: Student hidden size.
        initialised_from_teacher: Whether the student started from teacher weights.
        run: The student's training run.
    """

    teacher_layers: int
    student_layers: int
    teacher_width: int
    student_width: int
    initialised_from_teacher: bool
    run: TrainResult


def student_config(teacher: PretrainedConfig, layers: int | None, width_factor: float) -> Any:
    """The teacher's config with fewer layers and (GPT-2) a narrower width.

    Raises:
        GreenllmError: A narrower width for a non-GPT-2 model, or a width that the head
            count does not divide.
    """
    config = teacher.__class__.from_dict(teacher.to_dict())
    depth = layers if layers is not None else max(1, teacher.num_hidden_layers // 2)
    if not 1 <= depth <= teacher.num_hidden_layers:
        raise GreenllmError(
            f"student layers must be in 1..{teacher.num_hidden_layers}, got {depth}"
        )
    config.num_hidden_layers = depth
    if width_factor != 1.0:
        if config.model_type != "gpt2":
            raise GreenllmError(
                f"a narrower student is supported for gpt2 models only, not {config.model_type}"
            )
        width = round(teacher.n_embd * width_factor)
        heads = teacher.n_head
        if width < heads or width % heads:
            raise GreenllmError(f"student width {width} is not a multiple of {heads} heads")
        config.n_embd = width
        config.n_inner = None
    return config


def _teacher_layer_map(teacher_layers: int, student_layers: int) -> list[int]:
    """Evenly spaced teacher layers for each student layer (first and last kept; a
    one-layer student keeps the first, which leaves it far closer to the teacher than the
    last does)."""
    if student_layers == 1:
        return [0]
    step = (teacher_layers - 1) / (student_layers - 1)
    return [round(i * step) for i in range(student_layers)]


def _init_from_teacher(student: nn.Module, teacher: PreTrainedModel, depth: int) -> None:
    source = teacher.state_dict()
    chosen = _teacher_layer_map(teacher.config.num_hidden_layers, depth)
    target = student.state_dict()
    for key in target:
        match = _LAYER_KEY.match(key)
        src_key = key
        if match:
            prefix, index, rest = match.groups()
            src_key = f"{prefix}.{chosen[int(index)]}.{rest}"
        if src_key in source and source[src_key].shape == target[key].shape:
            target[key] = source[src_key].clone()
    student.load_state_dict(target)


def build_student(
    teacher: PreTrainedModel, config: DistillConfig, seed: int = 0
) -> PreTrainedModel:
    """A student for ``teacher`` per ``config`` (seeded random init, or teacher layers)."""
    s_config = student_config(teacher.config, config.layers, config.width_factor)
    torch.manual_seed(seed)
    student = AutoModelForCausalLM.from_config(s_config)
    if config.init_from_teacher and config.width_factor == 1.0:
        _init_from_teacher(student, teacher, s_config.num_hidden_layers)
    student.eval()
    return student


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    input_ids: torch.Tensor,
    alpha: float,
    temperature: float,
) -> torch.Tensor:
    """``alpha * KL(teacher/T || student/T) * T^2 + (1 - alpha) * CE`` over next tokens.

    Args:
        student_logits: ``[batch, seq, vocab]``.
        teacher_logits: ``[batch, seq, vocab]`` (no gradient needed).
        input_ids: ``[batch, seq]``; position ``i`` predicts token ``i + 1``.
        alpha: KL weight in [0, 1].
        temperature: Softening temperature (> 0).
    """
    vocab = student_logits.shape[-1]
    s = student_logits[:, :-1].reshape(-1, vocab)
    t = teacher_logits[:, :-1].reshape(-1, vocab)
    labels = input_ids[:, 1:].reshape(-1)
    ce = F.cross_entropy(s, labels)
    if alpha == 0.0:
        return ce
    kl = F.kl_div(
        F.log_softmax(s / temperature, dim=-1),
        F.log_softmax(t / temperature, dim=-1),
        log_target=True,
        reduction="batchmean",
    )
    return alpha * kl * temperature**2 + (1.0 - alpha) * ce


def distill(
    teacher: PreTrainedModel,
    train_ids: torch.Tensor,
    config: DistillConfig,
    student: PreTrainedModel | None = None,
) -> tuple[PreTrainedModel, DistillResult]:
    """Train a student on ``train_ids`` against ``teacher``.

    Args:
        teacher: The trained model (kept frozen, in eval mode).
        train_ids: 1-D token ids of the training text.
        config: Student shape, loss weights and training settings.
        student: Start from this student instead of building one.

    Returns:
        The trained student and what was done.
    """
    if not 0.0 <= config.alpha <= 1.0:
        raise GreenllmError(f"alpha must be in [0, 1], got {config.alpha}")
    if not config.temperature > 0:
        raise GreenllmError(f"temperature must be > 0, got {config.temperature}")
    if student is None:
        student = build_student(teacher, config, seed=config.train.seed)
    teacher.eval()

    def loss_fn(model: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            teacher_logits = teacher(input_ids=input_ids).logits
        student_logits = model(input_ids=input_ids).logits
        return distillation_loss(
            student_logits, teacher_logits, input_ids, config.alpha, config.temperature
        )

    run = train(student, train_ids, config.train, loss_fn=loss_fn, label="distill")
    result = DistillResult(
        teacher_layers=teacher.config.num_hidden_layers,
        student_layers=student.config.num_hidden_layers,
        teacher_width=teacher.config.hidden_size,
        student_width=student.config.hidden_size,
        initialised_from_teacher=config.init_from_teacher and config.width_factor == 1.0,
        run=run,
    )
    return student, result
