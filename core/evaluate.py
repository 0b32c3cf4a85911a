"""Evaluate a checkpoint on ROOT/SPLIT: predictions.csv and summary.json."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from core.checkpoint import load_checkpoint
from core.dataset import list_split
from core.image_input import ImageInputError, load_image
from core.metrics import classification_summary, expected_calibration_error, softmax
from core.preprocess import prepare_for_model, to_tensor


def evaluate(
    checkpoint: str | Path,
    root: Path,
    split: str,
    out: Path,
    *,
    mask_input: bool = True,
    batch_size: int = 32,
    progress: bool = True,
) -> dict:
    """Predict every image of ROOT/SPLIT and summarise.

    Returns:
        The summary written to OUT/summary.json.

    Raises:
        DatasetError: ROOT/SPLIT is missing or holds a class the checkpoint does not know.
    """
    loaded = load_checkpoint(checkpoint)
    config = loaded.config
    label_names = list(config.label_names)
    records = list_split(root, split, label_names)
    logits, kept, skipped = [], [], []
    batch, batch_records = [], []

    def flush():
        if batch:
            with torch.no_grad():
                logits.append(loaded.model(to_tensor(np.stack(batch), config.preprocessing)).numpy())
            kept.extend(batch_records)
            batch.clear()
            batch_records.clear()

    for record in tqdm(records, desc=f"evaluate {split}", disable=not progress):
        path = Path(root) / record.image
        try:
            image = load_image(path.read_bytes(), path.name).pixels
        except ImageInputError as error:
            skipped.append({"image": record.image, "error": str(error)})
            continue
        batch.append(prepare_for_model(image, config.preprocessing, mask_input).square)
        batch_records.append(record)
        if len(batch) == batch_size:
            flush()
    flush()

    all_logits = np.concatenate(logits) if logits else np.zeros((0, len(label_names)))
    labels = np.array([label_names.index(r.label) for r in kept])
    raw = softmax(all_logits)
    calibrated = softmax(all_logits, config.temperature)
    out.mkdir(parents=True, exist_ok=True)
    _write_predictions(out / "predictions.csv", kept, labels, calibrated, label_names)
    summary = {
        "checkpoint": loaded.name,
        "weights_sha256": loaded.weights_sha256,
        "data": str(root),
        "split": split,
        "brain_masked_input": mask_input,
        **classification_summary(labels, calibrated, label_names),
        "ece_15_bins": {
            "before_temperature": expected_calibration_error(raw, labels),
            "after_temperature": expected_calibration_error(calibrated, labels),
            "temperature": config.temperature,
        },
        "skipped": skipped,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _write_predictions(path: Path, records, labels, probabilities, label_names) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "label", "predicted", "confidence", *(f"p_{name}" for name in label_names)])
        for record, label, row in zip(records, labels, probabilities):
            predicted = int(row.argmax())
            writer.writerow(
                [record.image, label_names[label], label_names[predicted], f"{row[predicted]:.6f}",
                 *(f"{p:.6f}" for p in row)]
            )  # fmt: skip
