"""Counterfactual slices: the same slice with its outlined tumour removed, or with an
equal-area healthy region filled the same way (the control).

Training uses them as contrast-T1 "no tumour" slices in every view (the dataset's own
no-tumour images are all T2/FLAIR axial), and the stress test (core.stress) fills the
outline to ask whether the prediction depends on the tumour at all. Everything runs in
memory on the decoded slice; nothing is written.

Limits: inpainted texture is smooth, not anatomy, and the mirrored hemisphere is anatomy of
the other side (no use on sagittal slices, where `mirror` falls back to inpainting).
"""

from __future__ import annotations

import cv2
import numpy as np

# "telea" and "mirror" are used in training; "ns" (Navier-Stokes inpainting) is held out,
# so the stress test can check the model did not learn to spot the training fills.
REMOVAL_METHODS = ("telea", "mirror", "ns")
FILL_STYLES = ("median", "ns")


def dilate(mask: np.ndarray, pixels: int) -> np.ndarray:
    if pixels <= 0:
        return mask.astype(bool)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * pixels + 1, 2 * pixels + 1))
    return cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)


def remove_tumour(
    image: np.ndarray, outline: np.ndarray, method: str = "telea", margin: int | None = None
) -> np.ndarray:
    """The slice with the outlined region (grown by `margin` pixels, default 2 % of the side)
    replaced: by inpainting ("telea", "ns") or by the left-right mirrored slice blended in
    at a feathered border ("mirror"). Pixels farther than the margin from the outline are
    unchanged. `image` is 2-D in [0, 1] (float) or uint8; the result has its dtype."""
    if method not in REMOVAL_METHODS:
        raise ValueError(f"Unknown removal method {method!r}; choose from {', '.join(REMOVAL_METHODS)}.")
    if margin is None:
        margin = max(1, round(0.02 * max(image.shape)))
    region = dilate(outline, margin)
    if not region.any():
        return image.copy()
    as_uint8 = image if image.dtype == np.uint8 else np.uint8(np.clip(image, 0, 1) * 255 + 0.5)
    if method == "mirror" and _mirrors_itself(as_uint8) and not (region & region[:, ::-1]).any():
        mirrored = as_uint8[:, ::-1].astype(np.float32)
        weight = cv2.GaussianBlur(region.astype(np.float32), (0, 0), max(1.0, margin / 2)) * region
        filled = as_uint8 * (1 - weight) + mirrored * weight
        filled = np.uint8(np.clip(filled + 0.5, 0, 255))
    else:  # "telea", "ns", or a tumour that crosses the midline (its mirror image holds tumour)
        flag = cv2.INPAINT_NS if method == "ns" else cv2.INPAINT_TELEA
        filled = cv2.inpaint(as_uint8, region.astype(np.uint8), max(3, margin), flag)
    if image.dtype == np.uint8:
        return filled
    out = image.astype(np.float32).copy()
    out[region] = filled[region] / 255.0
    return out


def _mirrors_itself(image: np.ndarray) -> bool:
    """Whether the slice looks left-right symmetric (axial or coronal, head centred): only then
    is the other hemisphere a stand-in for the tumour's side. Sagittal slices are not."""
    flipped = image[:, ::-1].astype(np.float32)
    return float(np.corrcoef(image.astype(np.float32).ravel(), flipped.ravel())[0, 1]) > 0.6


def fill_region(image: np.ndarray, region: np.ndarray, head: np.ndarray, style: str) -> np.ndarray:
    """`region` filled with the median intensity inside the head ("median") or inpainted
    ("ns"), nothing else changed: the occlusion of the stress test."""
    if style not in FILL_STYLES:
        raise ValueError(f"Unknown fill style {style!r}; choose from {', '.join(FILL_STYLES)}.")
    if style == "ns":
        return remove_tumour(image, region, "ns", margin=0)
    out = image.copy()
    inside = image[head & ~region]
    out[region] = np.median(inside) if inside.size else np.median(image)
    return out


def random_region(
    region: np.ndarray, head: np.ndarray, rng: np.random.Generator, tries: int = 200
) -> np.ndarray | None:
    """The same shape moved to a random place wholly inside the head and off the original,
    or None when no such place is found in `tries` draws."""
    rows, cols = np.nonzero(region)
    if rows.size == 0:
        return None
    height, width = region.shape
    top, left = rows.min(), cols.min()
    span_rows, span_cols = rows.max() - top + 1, cols.max() - left + 1
    for _ in range(tries):
        new_top = int(rng.integers(0, max(1, height - span_rows + 1)))
        new_left = int(rng.integers(0, max(1, width - span_cols + 1)))
        moved_rows, moved_cols = rows - top + new_top, cols - left + new_left
        if head[moved_rows, moved_cols].all() and not region[moved_rows, moved_cols].any():
            moved = np.zeros_like(region, dtype=bool)
            moved[moved_rows, moved_cols] = True
            return moved
    return None
