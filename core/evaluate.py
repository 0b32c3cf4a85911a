"""Evaluate a checkpoint on ROOT/SPLIT: predictions.csv and summary.json.

With a CAM method, every image also gets a heatmap (computed in batches) and, where a
LabelMe outline exists, localisation metrics against it; results can be cached on disk.
"""

from __future__ import annotations

import csv
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from core.annotations import load_outline
from core.checkpoint import LoadedModel, checkpoint_sha256, load_checkpoint
from core.dataset import Record, list_split
from core.explain import apply_brain_mask, explain_batch
from core.image_input import ImageInputError, load_image
from core.localisation import bootstrap_mean, localisation_metrics, mass_inside, region_iou
from core.metrics import classification_summary, expected_calibration_error, softmax
from core.preprocess import prepare_for_model, to_tensor

DEFAULT_CACHE_DIR = Path(__file__).resolve().parent.parent / "cache" / "evaluations"
HEATMAP_SIDE = 128  # stored heatmaps are downsampled to this side for the gallery
CACHE_VERSION = 2  # bump when the evaluation's output changes
IOU_THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(1, 20))  # the Gallery's slider steps
LOCALISATION_COLUMNS = ("iou", "iou_otsu", "pointing_game", "mass_inside_tumour", "mass_outside_brain")


@dataclass(frozen=True)
class HeatmapSettings:
    method: str = "Grad-CAM"
    mask_input: bool = True
    mask_heatmap: bool = True
    threshold: float = 0.5
    target_layer: str | None = None


def evaluate(
    checkpoint: str | Path,
    root: Path,
    split: str,
    out: Path,
    *,
    heatmaps: HeatmapSettings | None = None,
    mask_input: bool = True,
    batch_size: int = 32,
    progress: bool = True,
    on_progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Predict every image of ROOT/SPLIT (and explain it, given `heatmaps`) and summarise.

    Returns:
        The summary written to OUT/summary.json.

    Raises:
        DatasetError: ROOT/SPLIT is missing or holds a class the checkpoint does not know.
    """
    loaded = load_checkpoint(checkpoint)
    label_names = list(loaded.config.label_names)
    records = list_split(root, split, label_names)
    started = time.perf_counter()
    rows, skipped, stored = [], [], StoredHeatmaps({}, {})
    batches = [records[i : i + batch_size] for i in range(0, len(records), batch_size)]
    with tqdm(total=len(records), desc=f"evaluate {split}", unit="image", disable=not progress) as bar:
        for batch in batches:
            images, kept = [], []
            for record in batch:
                path = Path(root) / record.image
                try:
                    images.append(load_image(path.read_bytes(), path.name).pixels)
                    kept.append(record)
                except ImageInputError as error:
                    skipped.append({"image": record.image, "error": str(error)})
            if images:
                rows.extend(_score_batch(loaded, Path(root), kept, images, heatmaps, mask_input, stored))
            bar.update(len(batch))
            if on_progress:
                on_progress(bar.n, len(records))
    seconds = time.perf_counter() - started

    labels = np.array([label_names.index(r["label"]) for r in rows])
    calibrated = np.array([[r[f"p_{n}"] for n in label_names] for r in rows]).reshape(-1, len(label_names))
    raw = softmax(np.log(np.clip(calibrated, 1e-12, None)) * loaded.config.temperature)  # undo the temperature
    out.mkdir(parents=True, exist_ok=True)
    _write_csv(out / "predictions.csv", rows)
    summary = {
        "checkpoint": loaded.name,
        "weights_sha256": loaded.weights_sha256,
        "data": str(Path(root).resolve()),  # the gallery matches summaries by resolved root
        "split": split,
        "brain_masked_input": heatmaps.mask_input if heatmaps else mask_input,
        **classification_summary(labels, calibrated, label_names),
        "ece_15_bins": {
            "before_temperature": expected_calibration_error(raw, labels),
            "after_temperature": expected_calibration_error(calibrated, labels),
            "temperature": loaded.config.temperature,
        },
        "seconds": round(seconds, 1),
        "images_per_second": round(len(rows) / seconds, 2) if seconds else None,
        "skipped": skipped,
    }
    if heatmaps:
        summary["heatmaps"] = {
            **asdict(heatmaps),
            "target_layer": heatmaps.target_layer or loaded.config.default_target_layer,
        }
        summary["localisation"] = localisation_summary(rows, label_names)
        np.savez_compressed(out / "heatmaps.npz", **stored.heatmaps)
        np.savez_compressed(out / "iou_curves.npz", **stored.iou_curves)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


@dataclass(frozen=True)
class StoredHeatmaps:
    """What an evaluation keeps per image for the Gallery: a small heatmap, and the IoU with
    the outline at every IOU_THRESHOLDS step (so moving the threshold needs no model call)."""

    heatmaps: dict[str, np.ndarray]
    iou_curves: dict[str, np.ndarray]


def _score_batch(loaded: LoadedModel, root: Path, records: list[Record], images, heatmaps, mask_input, stored):
    config = loaded.config
    label_names = list(config.label_names)
    if heatmaps is None:
        squares = np.stack([prepare_for_model(im, config.preprocessing, mask_input).square for im in images])
        with torch.no_grad():
            logits = loaded.model(to_tensor(squares, config.preprocessing)).numpy()
        probabilities = softmax(logits, config.temperature)
        explanations = [None] * len(images)
    else:
        # The raw heatmap gives the mass outside the brain; the masked one is what the app shows.
        explanations = explain_batch(
            loaded, images, method=heatmaps.method, target_layer=heatmaps.target_layer,
            mask_input=heatmaps.mask_input, mask_heatmap=False,
        )  # fmt: skip
        probabilities = np.stack([e.probabilities for e in explanations])
    rows = []
    for record, image, row, explanation in zip(records, images, probabilities, explanations):
        predicted = int(row.argmax())
        entry = {
            "image": record.image,
            "label": record.label,
            "predicted": label_names[predicted],
            "confidence": float(row[predicted]),
            **{f"p_{name}": float(p) for name, p in zip(label_names, row)},
            "outcome": "TP" if label_names[predicted] == record.label else "FN",
        }
        if explanation is not None:
            entry.update(_heatmap_columns(root, record, image, explanation, heatmaps, stored))
        rows.append(entry)
    return rows


def _heatmap_columns(
    root: Path, record: Record, image, explanation, heatmaps: HeatmapSettings, stored: StoredHeatmaps
) -> dict:
    raw, brain = explanation.heatmap, explanation.brain_mask
    columns = {"mass_outside_brain": mass_inside(raw, ~brain) if brain is not None else None}
    shown = apply_brain_mask(raw, brain) if heatmaps.mask_heatmap else raw
    outline = load_outline(root, record.image, image.shape)
    columns["annotation"] = outline.kind
    if outline.mask is not None:
        metrics = localisation_metrics(shown, outline.mask, heatmaps.threshold)
        columns.update({k: metrics[k] for k in ("iou", "iou_otsu", "pointing_game", "mass_inside_tumour")})
        curve = [region_iou(shown, outline.mask, threshold) for threshold in IOU_THRESHOLDS]
        stored.iou_curves[record.image] = np.array(curve, dtype=np.float32)
    stored.heatmaps[record.image] = np.uint8(
        np.round(255 * cv2.resize(shown, (HEATMAP_SIDE, HEATMAP_SIDE), interpolation=cv2.INTER_AREA))
    )
    return columns


def localisation_summary(rows: list[dict], label_names: list[str], columns=LOCALISATION_COLUMNS) -> dict:
    """Bootstrap means of the columns over all rows, per class and per outcome. Rows may be
    fresh (None where a value is missing) or read back from predictions.csv ("")."""

    def means(subset):
        return {c: bootstrap_mean([float(r[c]) if r.get(c) not in (None, "") else None for r in subset])
                for c in columns}  # fmt: skip

    return {
        "all": means(rows),
        "per_class": {name: means([r for r in rows if r["label"] == name]) for name in label_names},
        "per_outcome": {o: means([r for r in rows if r["outcome"] == o]) for o in ("TP", "FN")},
    }


def _write_csv(path: Path, rows: list[dict]) -> None:
    columns = list(dict.fromkeys(key for row in rows for key in row)) or ["image"]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})


def cache_key(checkpoint_sha: str, root: Path, split: str, heatmaps: HeatmapSettings | None) -> str:
    """Stable key of everything an evaluation's result depends on."""
    parts = {
        "version": CACHE_VERSION,
        "checkpoint": checkpoint_sha,
        "data": str(Path(root).resolve()),
        "split": split,
        "heatmaps": asdict(heatmaps) if heatmaps else None,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def cached_evaluation(
    checkpoint: str | Path, root: Path, split: str, heatmaps: HeatmapSettings | None, cache_dir: Path, **kwargs
) -> Path:
    """Folder holding the evaluation's outputs; computed only when not cached yet."""
    folder = Path(cache_dir) / cache_key(checkpoint_sha256(checkpoint), root, split, heatmaps)
    if not (folder / "summary.json").is_file():
        partial = folder.with_name(folder.name + ".partial")
        evaluate(checkpoint, root, split, partial, heatmaps=heatmaps, **kwargs)
        partial.replace(folder)  # atomic: a half-written result is never read as cached
    return folder
