"""The training splits, decoded and preprocessed once into memory, with the teacher's part."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np

from core.checkpoint import LoadedModel, load_checkpoint
from core.dataset import Record, decode_records, list_splits
from core.inference import batched_logits
from core.metrics import softmax
from core.preprocess import Preprocessing
from core.training.distillation import DISTILL_TEMPERATURE
from core.training.options import TrainOptions


@dataclass(frozen=True)
class TrainingData:
    """The training splits, decoded once: labels, plain and brain-masked images, and either
    fixed teacher targets or the teacher itself (consistent distillation)."""

    records: list[Record]
    label_names: list[str]
    labels: np.ndarray
    plain: np.ndarray
    masked: np.ndarray
    teacher_probs: np.ndarray | None = None
    teacher: LoadedModel | None = None


def load_training_data(options: TrainOptions) -> TrainingData:
    started = time.time()
    settings = Preprocessing(input_size=options.image_size)
    records = list_splits(options.data, options.splits)
    label_names = sorted({r.label for r in records})
    if options.limit:
        records = [r for name in label_names for r in [x for x in records if x.label == name][: options.limit]]
    labels = np.array([label_names.index(r.label) for r in records])
    plain, masked = decode_records(options.data, records, settings, options.progress)
    print(f"decoded {len(records)} images in {time.time() - started:.0f}s", flush=True)
    data = TrainingData(records, label_names, labels, plain, masked)
    if not options.teacher:
        return data
    teacher = load_checkpoint(options.teacher)
    if list(teacher.config.label_names) != label_names:
        raise ValueError(f"Teacher classes {list(teacher.config.label_names)} differ from {label_names}.")
    teacher.model.eval().to(options.device)
    if options.consistent_teacher:
        return replace(data, teacher=teacher)
    logits = batched_logits(teacher.model, masked, teacher.config.preprocessing)
    return replace(data, teacher_probs=softmax(logits, DISTILL_TEMPERATURE).astype(np.float32))
