"""Browse an evaluation: filter by class and outcome, sort, and draw cards and panels."""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from core.annotations import load_outline
from core.brain_mask import mask_outline
from core.evaluate import IOU_THRESHOLDS, LOCALISATION_COLUMNS, localisation_summary
from core.image_input import load_image
from core.render import draw_contours, grey_to_rgb, heatmap_rgb, overlay

DATA_VARIABLE = "BRAIN_XAI_DATA"
DEFAULT_DATA_ROOTS = (Path("data/brain-tumor-mri"), Path(__file__).resolve().parents[2] / "shared/data/brain-tumor-mri")
OUTCOMES = ("TP", "FP", "FN")
SORTS = ("confidence, high first", "confidence, low first", "IoU, high first", "IoU, low first")
TUMOUR_RGB = (0, 255, 0)


def find_dataset(field: str = "") -> Path | None:
    """The first existing dataset root: the sidebar field, $BRAIN_XAI_DATA, then the defaults."""
    candidates = [field, os.environ.get(DATA_VARIABLE, ""), *map(str, DEFAULT_DATA_ROOTS)]
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


@dataclass(frozen=True)
class Evaluation:
    rows: list[dict]
    summary: dict
    heatmaps: dict[str, np.ndarray]
    iou_curves: dict[str, np.ndarray]


def read_evaluation(folder: Path) -> Evaluation:
    with (folder / "predictions.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    summary = json.loads((folder / "summary.json").read_text())
    return Evaluation(rows, summary, _read_arrays(folder / "heatmaps.npz"), _read_arrays(folder / "iou_curves.npz"))


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    return dict(np.load(path)) if path.is_file() else {}


def at_threshold(evaluation: Evaluation, threshold: float) -> Evaluation:
    """The evaluation with its IoU column and IoU summary at another heatmap threshold, read
    from the stored per-image IoU curves: no model call, nothing recomputed but the means."""
    step = int(np.argmin([abs(threshold - t) for t in IOU_THRESHOLDS]))
    curves = evaluation.iou_curves
    # Strings, as read from predictions.csv, so exports and "no outline" checks see one type.
    rows = [dict(r, iou=str(float(curves[r["image"]][step]))) if r["image"] in curves else r for r in evaluation.rows]

    summary = json.loads(json.dumps(evaluation.summary))
    localisation = summary.get("localisation")
    if localisation and curves:
        ious = localisation_summary(rows, list(localisation["per_class"]), columns=("iou",))
        localisation["all"]["iou"] = ious["all"]["iou"]
        for group in ("per_class", "per_outcome"):
            for name, values in localisation[group].items():
                values["iou"] = ious[group][name]["iou"]
        summary["heatmaps"]["threshold"] = IOU_THRESHOLDS[step]
    return Evaluation(rows, summary, evaluation.heatmaps, curves)


def select(rows: list[dict], label: str, outcome: str, sort: str) -> list[dict]:
    """Rows of one outcome for one class: TP (right), FP (wrongly called `label`), FN (missed)."""
    if outcome == "TP":
        chosen = [r for r in rows if r["label"] == label and r["predicted"] == label]
    elif outcome == "FP":
        chosen = [r for r in rows if r["predicted"] == label and r["label"] != label]
    elif outcome == "FN":
        chosen = [r for r in rows if r["label"] == label and r["predicted"] != label]
    else:
        raise ValueError(f"Unknown outcome {outcome!r}; choose one of {OUTCOMES}.")
    key, descending = ("confidence" if sort.startswith("confidence") else "iou"), sort.endswith("high first")

    def value(row):
        return float(row[key]) if row.get(key) not in (None, "") else (-1.0 if descending else 2.0)

    return sorted(chosen, key=value, reverse=descending)


@dataclass(frozen=True)
class Panels:
    original: np.ndarray
    annotation: np.ndarray
    heatmap: np.ndarray
    overlay: np.ndarray
    has_outline: bool


def panels(root: Path, row: dict, small_heatmap: np.ndarray, threshold: float, opacity: float = 0.4) -> Panels:
    """Original, annotation mask, heatmap and overlay (tumour outline in green) for one row."""
    path = Path(root) / row["image"]
    image = load_image(path.read_bytes(), path.name).pixels
    heatmap = cv2.resize(small_heatmap.astype(np.float32) / 255, image.shape[::-1], interpolation=cv2.INTER_LINEAR)
    outline = load_outline(root, row["image"], image.shape)
    tumour = outline.mask if outline.mask is not None else np.zeros(image.shape, dtype=bool)
    blended = overlay(image, heatmap, opacity)
    region = heatmap >= threshold
    blended = draw_contours(blended, mask_outline(region), (255, 255, 255))
    blended = draw_contours(blended, mask_outline(tumour), TUMOUR_RGB)
    return Panels(
        original=np.uint8(grey_to_rgb(image) * 255),
        annotation=np.uint8(np.repeat(tumour[..., None], 3, axis=2) * 255),
        heatmap=heatmap_rgb(heatmap),
        overlay=blended,
        has_outline=outline.mask is not None,
    )


def method_table(summaries: list[dict]) -> list[dict]:
    """One row per (model, method) evaluation: mean localisation metrics and time per image."""
    table = []
    for summary in summaries:
        overall = summary.get("localisation", {}).get("all", {})
        row = {"model": summary["checkpoint"], "method": summary["heatmaps"]["method"]}
        row.update({column: (overall.get(column) or {}).get("mean") for column in LOCALISATION_COLUMNS})
        speed = summary.get("images_per_second")
        row["ms_per_image"] = round(1000 / speed, 1) if speed else None
        row["accuracy"] = summary["accuracy"]
        table.append(row)
    return table
