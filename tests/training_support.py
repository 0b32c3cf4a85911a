"""Helpers for the training tests: a distilling recipe and a fit that records what each network saw."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from core.checkpoint import create_model
from core.config import Preprocessing
from core.preprocess import to_tensor
from core.training.distillation import AttentionTransfer
from core.training.loop import fit
from core.training.options import TrainOptions


def distilling_options(data: Path, checkpoint_root: Path, max_steps: int) -> TrainOptions:
    """A few 64 px steps of a ConvNeXt scored by the tiny EfficientNet on each augmented view."""
    return TrainOptions(arch="convnext_atto", data=data, out=Path("unused"), splits=("train",), image_size=64,
                        batch_size=8, max_steps=max_steps, teacher=checkpoint_root / "tiny_effnet",
                        consistent_teacher=True, progress=False)  # fmt: skip


@torch.no_grad()
def attention_distance(student: torch.nn.Module, teacher, x: torch.Tensor) -> float:
    """Mean squared distance (beta 2) between a 64 px student's attention maps and the teacher's."""
    transfer = AttentionTransfer(student.eval(), "convnext_atto", teacher, beta=2)
    student(to_tensor(x, Preprocessing(input_size=64)))
    teacher.model(to_tensor(x, teacher.config.preprocessing))
    transfer.remove()
    return transfer.loss().item()


def fit_watching(options: TrainOptions, data, monkeypatch, held=None, watch=lambda inputs, output: inputs[0].clone()):
    """Fit, recording watch(inputs, output) at each student and (consistent) teacher forward pass.
    Returns (student records, teacher records, fitted model)."""
    student, teacher = [], []
    hook = data.teacher.model.register_forward_hook(
        lambda module, inputs, output: teacher.append(watch(inputs, output))
    )

    def create_hooked(arch: str, num_classes: int, **timm_options):
        model = create_model(arch, num_classes, **timm_options)
        model.register_forward_hook(lambda module, inputs, output: student.append(watch(inputs, output)))
        return model

    monkeypatch.setattr("core.training.loop.create_model", create_hooked)
    model, _ = fit(options, data, np.zeros(len(data.records), dtype=bool) if held is None else held)
    hook.remove()
    return student, teacher, model
