"""Browse an evaluation: filter by class and outcome, sort, and draw cards and panels."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from core.annotations import load_outline
from core.evaluation_store import PredictionRow
from core.image_input import load_image
from core.render import REGION_RGB, explanation_panels

DATA_VARIABLE = "BRAIN_XAI_DATA"
DEFAULT_DATA_ROOTS = (Path("data/brain-tumor-mri"), Path(__file__).resolve().parents[2] / "shared/data/brain-tumor-mri")
OUTCOMES = ("TP", "FP", "FN")
SORTS = ("confidence, high first", "confidence, low first", "IoU, high first", "IoU, low first")


def find_dataset(field: str = "") -> Path | None:
    """The dataset root: the sidebar field when one is typed (None when that folder does not
    exist: never silently another dataset), else the first existing of $BRAIN_XAI_DATA and
    the defaults."""
    if field.strip():
        typed = Path(field.strip()).expanduser()
        return typed.resolve() if typed.is_dir() else None
    candidates = [os.environ.get(DATA_VARIABLE, ""), *map(str, DEFAULT_DATA_ROOTS)]
    for candidate in candidates:
        if candidate and Path(candidate).expanduser().is_dir():
            return Path(candidate).expanduser().resolve()
    return None


def splits_in(root: Path) -> list[str]:
    """Sub-folders of ROOT that hold class folders (annotations excluded)."""
    return sorted(
        p.name for p in root.iterdir()
        if p.is_dir() and p.name != "annotations" and any(c.is_dir() for c in p.iterdir())
    )  # fmt: skip


def select(rows: list[PredictionRow], label: str, outcome: str, sort: str) -> list[PredictionRow]:
    """Rows of one outcome for one class: TP (right), FP (wrongly called `label`), FN (missed)."""
    if outcome == "TP":
        chosen = [r for r in rows if r.label == label and r.predicted == label]
    elif outcome == "FP":
        chosen = [r for r in rows if r.predicted == label and r.label != label]
    elif outcome == "FN":
        chosen = [r for r in rows if r.label == label and r.predicted != label]
    else:
        raise ValueError(f"Unknown outcome {outcome!r}; choose one of {OUTCOMES}.")
    key, descending = ("confidence" if sort.startswith("confidence") else "iou"), sort.endswith("high first")

    def value(row: PredictionRow) -> float:
        found = getattr(row, key)
        return float(found) if found is not None else (-1.0 if descending else 2.0)

    return sorted(chosen, key=value, reverse=descending)


@dataclass(frozen=True)
class Panels:
    original: np.ndarray
    annotation: np.ndarray
    heatmap: np.ndarray
    overlay: np.ndarray
    has_outline: bool


def panels(
    root: Path, row: PredictionRow, small_heatmap: np.ndarray, threshold: float, opacity: float = 0.4,
    colormap: str = "Jet",
) -> Panels:  # fmt: skip
    """Original, annotation mask, heatmap and overlay (tumour outline in green) for one row."""
    path = Path(root) / row.image
    image = load_image(path.read_bytes(), path.name).pixels
    heatmap = cv2.resize(small_heatmap.astype(np.float32) / 255, image.shape[::-1], interpolation=cv2.INTER_LINEAR)
    outline = load_outline(root, row.image, image.shape)
    tumour = outline.mask if outline.mask is not None else np.zeros(image.shape, dtype=bool)
    pictures = explanation_panels(
        image, heatmap, threshold=threshold, opacity=opacity, tumour_mask=tumour, region_rgb=REGION_RGB,
        colormap=colormap,
    )  # fmt: skip
    return Panels(
        original=pictures.original,
        annotation=np.uint8(np.repeat(tumour[..., None], 3, axis=2) * 255),
        heatmap=pictures.heatmap,
        overlay=pictures.overlay,
        has_outline=outline.mask is not None,
    )
