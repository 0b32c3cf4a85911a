"""Two models on one slice: do they agree on the class, and on where they look?"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from core.explanation import Explanation
from core.render import explanation_panels


@dataclass(frozen=True)
class Agreement:
    """How similar two heatmaps of the same slice are."""

    iou: float | None  # of the regions at or above the threshold; None when both are empty
    pearson: float | None  # None when either map is constant
    peak_distance: float
    peak_unit: str  # "mm" when the file gave pixel spacing, else "px"
    difference: np.ndarray  # heatmap_a - heatmap_b, in [-1, 1]

    def to_dict(self) -> dict:
        return {
            "iou": self.iou,
            "pearson": self.pearson,
            "peak_distance": self.peak_distance,
            "peak_unit": self.peak_unit,
        }


def heatmap_agreement(
    heatmap_a: np.ndarray,
    heatmap_b: np.ndarray,
    threshold: float = 0.5,
    spacing_mm: tuple[float, float] | None = None,
) -> Agreement:
    """IoU of thresholded regions, Pearson correlation, and distance between the peaks.

    Args:
        heatmap_a, heatmap_b: same-shape maps in [0, 1].
        threshold: relative level defining each map's region.
        spacing_mm: (row, column) pixel spacing; distances are in mm when given.
    """
    if heatmap_a.shape != heatmap_b.shape:
        raise ValueError(f"Heatmaps differ in shape: {heatmap_a.shape} vs {heatmap_b.shape}.")
    region_a, region_b = heatmap_a >= threshold, heatmap_b >= threshold
    if heatmap_a.max() <= 0:
        region_a = np.zeros_like(region_a)
    if heatmap_b.max() <= 0:
        region_b = np.zeros_like(region_b)
    union = np.logical_or(region_a, region_b).sum()
    iou = float(np.logical_and(region_a, region_b).sum() / union) if union else None

    a, b = heatmap_a.ravel().astype(np.float64), heatmap_b.ravel().astype(np.float64)
    pearson = float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else None

    peak_a = np.array(np.unravel_index(np.argmax(heatmap_a), heatmap_a.shape), dtype=np.float64)
    peak_b = np.array(np.unravel_index(np.argmax(heatmap_b), heatmap_b.shape), dtype=np.float64)
    scale = np.array(spacing_mm if spacing_mm else (1.0, 1.0))
    distance = float(np.linalg.norm((peak_a - peak_b) * scale))
    return Agreement(iou, pearson, distance, "mm" if spacing_mm else "px", (heatmap_a - heatmap_b).astype(np.float32))


@dataclass(frozen=True)
class CompareVerdict:
    kind: str  # "agree" (both confident and the scan familiar to both), "neutral" or "disagree"
    sentence: str


def verdict(
    names: tuple[str, str], first: Explanation, second: Explanation, records: dict[str, float] | None = None
) -> CompareVerdict:
    """What the two predictions say together. It is agreement only when both models name the
    same class, neither is uncertain and the scan is familiar to both; `records` (test
    accuracy per model, from the model cards) names the model with the better record."""
    results = dict(zip(names, (first, second)))
    shown = ", ".join(f"{name} {result.confidence:.0%}" for name, result in results.items())
    uncertain = [name for name, result in results.items() if result.uncertain]
    doubts = ["both are uncertain"] if len(uncertain) > 1 else [f"{name} is uncertain" for name in uncertain]
    unfamiliar = [name for name, result in results.items() if result.unfamiliar]
    if unfamiliar:
        doubts.append("the scan is unfamiliar to " + ("both" if len(unfamiliar) > 1 else unfamiliar[0]))
    if first.predicted_label != second.predicted_label:
        kind = "disagree"
        sentence = "The models disagree: " + ", ".join(
            f"{name} predicts {result.predicted_label} ({result.confidence:.0%})" for name, result in results.items()
        ) + (f"; and {' and '.join(doubts)}." if doubts else ".")  # fmt: skip
    elif doubts:
        kind = "neutral"
        sentence = (
            f"Both models lean to {first.predicted_label} ({shown}), but {' and '.join(doubts)}: "
            "do not read this as agreement."
        )
    else:
        kind = "agree"
        sentence = f"Both models predict {first.predicted_label} ({shown})."
    record = _better_record(records or {})
    if record and unfamiliar:
        record += " Those records come from scans like the training images, which this one is not."
    return CompareVerdict(kind, sentence + record)


def _better_record(records: dict[str, float]) -> str:
    known = {name: accuracy for name, accuracy in records.items() if accuracy is not None}
    if len(known) < 2:
        return ""
    (best, best_accuracy), (other, other_accuracy) = sorted(known.items(), key=lambda item: -item[1])[:2]
    if best_accuracy == other_accuracy:
        return f" Both have the same test accuracy ({best_accuracy:.1%})."
    return f" {best} has the better record (test accuracy {best_accuracy:.1%} against {other_accuracy:.1%})."


def side_by_side(
    image: np.ndarray, rows: list[tuple[str, Explanation]], opacity: float = 0.4, tile: int = 256
) -> np.ndarray:
    """One row per model: original | heatmap | overlay, with a title bar; uint8 RGB."""
    bars = []
    for name, result in rows:
        pictures = explanation_panels(image, result.heatmap, opacity=opacity)
        tiles = [pictures.original, pictures.heatmap, pictures.overlay]
        tiles = [cv2.resize(t, (tile, tile), interpolation=cv2.INTER_AREA) for t in tiles]
        title = np.full((28, tile * 3, 3), 255, dtype=np.uint8)
        text = f"{name}: {result.predicted_label} {result.confidence:.0%} ({result.method}, {result.target_label})"
        cv2.putText(title, text, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        bars.extend([title, np.hstack(tiles)])
    return np.vstack(bars)
