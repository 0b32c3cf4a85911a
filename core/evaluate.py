"""Evaluate a checkpoint on ROOT/SPLIT: predictions, summary and (optionally) heatmaps.

With heatmaps, every image is explained (in batches) and, where a LabelMe outline exists,
scored against it. The folder's format belongs to core.evaluation_store.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from core.annotations import load_outline
from core.checkpoint import LoadedModel, checkpoint_sha256, load_checkpoint
from core.config import resolve_checkpoint
from core.dataset import Record, list_split
from core.evaluation_store import (
    FAITHFULNESS_COLUMNS,
    HEATMAP_SIDE,
    IOU_THRESHOLDS,
    SUMMARY_FILE,
    Evaluation,
    PredictionRow,
    cache_key,
    localisation_summary,
    outcome_of,
    write_evaluation,
)
from core.explain import apply_brain_mask, explain_batch
from core.explanation import ExplainSettings, Explanation
from core.faithfulness import check_heatmap
from core.image_input import ImageInputError, load_image
from core.inference import judged_scores
from core.localisation import bootstrap_mean, localisation_metrics, mass_inside, region_iou
from core.metrics import classification_summary, expected_calibration_error, softmax
from core.training.record import git_commit

DEFAULT_THRESHOLD = 0.5


def evaluate(
    checkpoint: str | Path,
    root: Path,
    split: str,
    out: Path,
    *,
    settings: ExplainSettings = ExplainSettings(),
    heatmaps: bool = False,
    threshold: float = DEFAULT_THRESHOLD,
    faithfulness: bool = False,
    per_class: int | None = None,
    batch_size: int = 32,
    progress: bool = True,
    on_progress: Callable[[int, int], None] | None = None,
    engine: str = "local",
    address: str | None = None,
    workers: int | None = None,
) -> dict:
    """Predict every image of ROOT/SPLIT (and explain it, with `heatmaps`) and summarise.

    Args:
        settings: masking (always) and, with heatmaps, method and layer.
        threshold: relative heatmap level for IoU.
        faithfulness: with heatmaps, also deletion and insertion curves per image (about a
            second each on a CPU; core.faithfulness).
        per_class: a seeded random sample of this many images per class instead of all (for
            expensive measurements); the summary says so.

    Returns:
        The summary written to OUT/summary.json.

    Raises:
        DatasetError: ROOT/SPLIT is missing or holds a class the checkpoint does not know.
        ExplainError: a layer the model does not have.
    """
    loaded = load_checkpoint(checkpoint)
    settings = settings.resolved(loaded.config)
    label_names = list(loaded.config.label_names)
    records = list_split(root, split, label_names)
    if per_class:
        records = sample_per_class(records, per_class)
    chunks = [records[start : start + batch_size] for start in range(0, len(records), batch_size)]
    options = {"settings": settings, "heatmaps": heatmaps, "threshold": threshold, "faithfulness": faithfulness}
    started = time.perf_counter()
    if engine == "ray":
        from core.distributed import evaluate_stream

        folder = resolve_checkpoint(checkpoint).resolve()
        stream = evaluate_stream(loaded, folder, Path(root).resolve(), chunks, options, address, workers)
    else:
        stream = ((index, score_chunk(loaded, Path(root), chunk, **options)) for index, chunk in enumerate(chunks))
    done: list[_Scored | None] = [None] * len(chunks)
    with tqdm(total=len(records), desc=f"evaluate {split}", unit="image", disable=not progress) as bar:
        for index, chunk_scores in stream:
            done[index] = chunk_scores
            bar.update(len(chunks[index]))
            if on_progress:
                on_progress(bar.n, len(records))
    scored = _Scored.merged(done, threshold)
    skipped = scored.skipped
    seconds = time.perf_counter() - started

    rows = scored.rows
    labels = np.array([label_names.index(r.label) for r in rows])
    logits = np.array(scored.logits).reshape(-1, len(label_names))
    calibrated = np.array([r.probabilities for r in rows]).reshape(-1, len(label_names))
    summary = {
        "checkpoint": loaded.name,
        "weights_sha256": loaded.weights_sha256,
        "data": str(Path(root).resolve()),  # the gallery matches summaries by resolved root
        "split": split,
        **(
            {"sample": f"{per_class} images per class, seeded random (seed 0)", "commit": git_commit()}
            if per_class
            else {}
        ),
        "brain_masked_input": settings.mask_input,
        **classification_summary(labels, calibrated, label_names),
        "ece_15_bins": {
            "before_temperature": expected_calibration_error(softmax(logits), labels),
            "after_temperature": expected_calibration_error(calibrated, labels),
            "temperature": loaded.config.temperature,
        },
        "seconds": round(seconds, 1),
        "images_per_second": round(len(rows) / seconds, 2) if seconds else None,
        "skipped": skipped,
    }
    if heatmaps:
        summary["heatmaps"] = heatmap_settings(settings, threshold)
        summary["localisation"] = localisation_summary(rows, label_names)
    if faithfulness and heatmaps:
        summary["faithfulness"] = {c: bootstrap_mean([getattr(r, c) for r in rows]) for c in FAITHFULNESS_COLUMNS}
    write_evaluation(out, Evaluation(rows, summary, scored.heatmaps, scored.iou_curves))
    return summary


def heatmap_settings(settings: ExplainSettings, threshold: float) -> dict:
    """How an evaluation's heatmaps were made, as its summary and cache key record it (None:
    the checkpoint's default, whose config.json is part of the cache key)."""
    return {
        "method": settings.method,
        "mask_input": settings.mask_input,
        "mask_heatmap": settings.mask_heatmap,
        "threshold": threshold,
        "target_layer": settings.target_layer,
    }


def sample_per_class(records: list[Record], count: int, seed: int = 0, labels: list[str] | None = None) -> list[Record]:
    """A seeded random sample of `count` records of each class (all of a smaller class), in listing
    order; the classes are drawn in the order of `labels` (default: sorted)."""
    rng = np.random.default_rng(seed)
    chosen = set()
    for label in labels if labels is not None else sorted({record.label for record in records}):
        indices = [i for i, record in enumerate(records) if record.label == label]
        chosen.update(rng.choice(indices, size=min(count, len(indices)), replace=False).tolist())
    return [record for i, record in enumerate(records) if i in chosen]


def score_chunk(
    loaded: LoadedModel,
    root: Path,
    records: list[Record],
    *,
    settings: ExplainSettings,
    heatmaps: bool,
    threshold: float,
    faithfulness: bool,
) -> _Scored:
    """Read and score one batch of records: the unit of work of every engine."""
    scored = _Scored(threshold, faithfulness and heatmaps)
    images, kept = [], []
    for record in records:
        path = root / record.image
        try:
            images.append(load_image(path.read_bytes(), path.name).pixels)
            kept.append(record)
        except ImageInputError as error:
            scored.skipped.append({"image": record.image, "error": str(error)})
    if images:
        scored.add(loaded, root, kept, images, settings, heatmaps)
    return scored


class _Scored:
    """What an evaluation collects batch by batch: rows, logits and, with heatmaps, a small
    heatmap per image and its IoU with the outline at every IOU_THRESHOLDS step."""

    def __init__(self, threshold: float, faithfulness: bool = False):
        self.threshold = threshold
        self.faithfulness = faithfulness
        self.rows: list[PredictionRow] = []
        self.logits: list[np.ndarray] = []
        self.heatmaps: dict[str, np.ndarray] = {}
        self.iou_curves: dict[str, np.ndarray] = {}
        self.skipped: list[dict] = []

    @classmethod
    def merged(cls, parts: list[_Scored], threshold: float) -> _Scored:
        """The parts' contents, in the parts' order."""
        whole = cls(threshold)
        for part in parts:
            whole.rows += part.rows
            whole.logits += part.logits
            whole.heatmaps.update(part.heatmaps)
            whole.iou_curves.update(part.iou_curves)
            whole.skipped += part.skipped
        return whole

    def add(
        self, loaded: LoadedModel, root: Path, records: list[Record], images, settings: ExplainSettings, heatmaps: bool
    ) -> None:
        label_names = loaded.config.label_names
        if not heatmaps:
            logits, probabilities, verdicts = judged_scores(loaded, images, settings.mask_input)
            explanations = [None] * len(images)
        else:
            # The raw heatmap gives the mass outside the brain; the masked one is what the app shows.
            explanations = explain_batch(loaded, images, replace(settings, mask_heatmap=False))
            logits = np.stack([e.logits for e in explanations])
            probabilities = np.stack([e.probabilities for e in explanations])
            verdicts = [e.reliability for e in explanations]
        for record, image, scores, row, explanation, trust in zip(
            records, images, logits, probabilities, explanations, verdicts
        ):
            predicted = int(row.argmax())
            entry = PredictionRow(
                image=record.image,
                label=record.label,
                predicted=label_names[predicted],
                confidence=float(row[predicted]),
                probabilities=tuple(float(p) for p in row),
                outcome=outcome_of(record.label, label_names[predicted]),
                familiarity=trust.familiarity,
                unfamiliar=trust.unfamiliar if trust.familiarity is not None else None,
                uncertain=trust.uncertain,
            )
            if explanation is not None:
                # The raw heatmap gives the mass outside the brain; the shown one, everything else.
                raw, brain = explanation.heatmap, explanation.brain_mask
                shown = apply_brain_mask(raw, brain) if settings.mask_heatmap else raw
                entry = self._with_heatmap(root, entry, image, explanation, shown)
                if self.faithfulness:
                    entry = _with_faithfulness(loaded, entry, image, replace(explanation, heatmap=shown), settings)
            self.rows.append(entry)
            self.logits.append(scores)

    def _with_heatmap(
        self, root: Path, row: PredictionRow, image: np.ndarray, explanation: Explanation, shown: np.ndarray
    ) -> PredictionRow:
        raw, brain = explanation.heatmap, explanation.brain_mask
        outline = load_outline(root, row.image, image.shape)
        row = replace(
            row,
            mass_outside_brain=mass_inside(raw, ~brain) if brain is not None else None,
            annotation=outline.kind,
        )
        if outline.mask is not None:
            metrics = localisation_metrics(shown, outline.mask, self.threshold, head=brain)
            row = replace(row, **{k: metrics[k] for k in ("iou", "iou_otsu", "pointing_game", "mass_inside_tumour")})
            curve = [region_iou(shown, outline.mask, threshold) for threshold in IOU_THRESHOLDS]
            self.iou_curves[row.image] = np.array(curve, dtype=np.float32)
        self.heatmaps[row.image] = np.uint8(
            np.round(255 * cv2.resize(shown, (HEATMAP_SIDE, HEATMAP_SIDE), interpolation=cv2.INTER_AREA))
        )
        return row


def _with_faithfulness(
    loaded: LoadedModel, row: PredictionRow, image: np.ndarray, explanation: Explanation, settings: ExplainSettings
) -> PredictionRow:
    shown = (
        apply_brain_mask(explanation.heatmap, explanation.brain_mask) if settings.mask_heatmap else explanation.heatmap
    )
    check = check_heatmap(loaded, image, replace(explanation, heatmap=shown), settings)
    return replace(
        row,
        deletion_auc=check.deletion_auc,
        insertion_auc=check.insertion_auc,
        random_deletion_auc=check.random_deletion_auc,
        random_insertion_auc=check.random_insertion_auc,
    )


def evaluation_folder(
    checkpoint: str | Path,
    root: Path,
    split: str,
    cache: Path,
    *,
    settings: ExplainSettings = ExplainSettings(),
    heatmaps: bool = True,
    threshold: float = DEFAULT_THRESHOLD,
) -> Path:
    """Where the evaluation of these inputs lives in the cache (hashes the checkpoint's files)."""
    key_settings = heatmap_settings(settings, threshold) if heatmaps else {"mask_input": settings.mask_input}
    return Path(cache) / cache_key(checkpoint_sha256(checkpoint), root, split, key_settings)


def cached_evaluation(
    checkpoint: str | Path,
    root: Path,
    split: str,
    cache: Path,
    *,
    settings: ExplainSettings = ExplainSettings(),
    heatmaps: bool = True,
    threshold: float = DEFAULT_THRESHOLD,
    folder: Path | None = None,
    **kwargs,
) -> Path:
    """Folder holding the evaluation's outputs; computed only when not cached yet.

    Args:
        folder: evaluation_folder() of the same inputs, when the caller already has it.
        kwargs: for evaluate() (batch_size, progress, on_progress).
    """
    options = {"settings": settings, "heatmaps": heatmaps, "threshold": threshold}
    folder = folder or evaluation_folder(checkpoint, root, split, cache, **options)
    if not (folder / SUMMARY_FILE).is_file():
        partial = folder.with_name(folder.name + ".partial")
        evaluate(checkpoint, root, split, partial, **options, **kwargs)
        partial.replace(folder)  # atomic: a half-written result is never read as cached
    return folder
