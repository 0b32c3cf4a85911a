"""How well a heatmap matches a tumour outline, and how much of it falls outside the brain."""

from __future__ import annotations

import cv2
import numpy as np


def region_iou(heatmap: np.ndarray, tumour: np.ndarray, threshold: float, strict: bool = False) -> float:
    """IoU of {heatmap >= threshold} (or > when strict) with the tumour mask; 0 for an empty union."""
    if heatmap.max() <= 0:
        region = np.zeros(heatmap.shape, dtype=bool)
    else:
        region = heatmap > threshold if strict else heatmap >= threshold
    union = np.logical_or(region, tumour).sum()
    return float(np.logical_and(region, tumour).sum() / union) if union else 0.0


def otsu_threshold(heatmap: np.ndarray, head: np.ndarray | None = None) -> float:
    """Otsu's threshold of the heatmap's values inside the head (all values without a head mask),
    in [0, 1]; the region is the values above it. Inside the head, so the zeros of the background
    do not pull the threshold down."""
    values = heatmap[head] if head is not None and head.any() else heatmap.ravel()
    level, _ = cv2.threshold(np.uint8(np.clip(values, 0, 1) * 255), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return float(level) / 255.0


def pointing_game(heatmap: np.ndarray, tumour: np.ndarray) -> bool:
    """Is the heatmap's maximum inside the tumour? (Zhang et al. 2018)"""
    if heatmap.max() <= 0:
        return False
    return bool(tumour.flat[int(np.argmax(heatmap))])


def mass_inside(heatmap: np.ndarray, region: np.ndarray) -> float:
    """Share of the heatmap's total energy inside `region` (relevance mass, Arras et al. 2022)."""
    total = float(heatmap.sum())
    return float(heatmap[region].sum() / total) if total > 0 else 0.0


def localisation_metrics(
    heatmap: np.ndarray, tumour: np.ndarray, threshold: float, head: np.ndarray | None = None
) -> dict:
    """IoU at `threshold` and at Otsu's threshold (inside `head`), pointing game, mass inside."""
    otsu = otsu_threshold(heatmap, head)
    return {
        "iou": region_iou(heatmap, tumour, threshold),
        "iou_otsu": region_iou(heatmap, tumour, otsu, strict=True),
        "otsu_threshold": otsu,
        "pointing_game": pointing_game(heatmap, tumour),
        "mass_inside_tumour": mass_inside(heatmap, tumour),
    }


def bootstrap_mean(values, resamples: int = 1000, seed: int = 0) -> dict:
    """Mean with a 95 % percentile bootstrap interval; None entries are ignored."""
    data = np.asarray([v for v in values if v is not None and not np.isnan(v)], dtype=np.float64)
    if data.size == 0:
        return {"mean": None, "ci95": [None, None], "n": 0}
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, (resamples, data.size))].mean(axis=1)
    return {"mean": float(data.mean()), "ci95": [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))],
            "n": int(data.size)}  # fmt: skip
