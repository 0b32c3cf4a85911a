"""Radiologists' tumour outlines from LabelMe JSON (ROOT/annotations/<image stem>.json).

Only the shapes are read; `imagePath` and `imageData` are ignored, so an annotation can
never point the app at a file outside the dataset root.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np


@dataclass(frozen=True)
class TumourOutline:
    """A tumour mask at the image's resolution, or None with the reason."""

    mask: np.ndarray | None
    kind: str  # "polygon", "rectangle" or "none"
    reason: str = ""


def annotation_path(root: Path, image: str) -> Path:
    """ROOT/annotations/<stem>.json for an image path relative to ROOT (no other folder)."""
    stem = Path(image).name.rsplit(".", 1)[0]
    return Path(root) / "annotations" / f"{stem}.json"


def load_outline(root: Path, image: str, shape: tuple[int, int]) -> TumourOutline:
    """Rasterise the annotation of `image` for a slice of `shape` (rows, columns): polygons
    preferred, rectangles otherwise; points drawn on a resized copy are scaled."""
    path = annotation_path(root, image)
    if not path.is_file():
        return TumourOutline(None, "none", "no annotation")
    try:
        return outline_from_document(json.loads(path.read_text()), shape)
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, TypeError, ValueError) as error:
        return TumourOutline(None, "none", f"malformed annotation {path.name}: {error}")


def outline_from_document(labelme: dict, shape: tuple[int, int]) -> TumourOutline:
    """A parsed LabelMe document as a mask for a slice of `shape` (rows, columns). When its
    imageHeight/imageWidth differ from the slice (drawn on a resized copy), the points are
    scaled; another aspect ratio (more than a pixel off) gives the reason instead."""
    shapes = labelme.get("shapes", [])
    height, width = labelme.get("imageHeight"), labelme.get("imageWidth")
    if height and width and (int(height), int(width)) != tuple(shape):
        scale_y, scale_x = shape[0] / float(height), shape[1] / float(width)
        if abs(float(height) * scale_x - shape[0]) > 1:
            drawn_on = f"the outline was drawn on a {width}x{height} image"
            return TumourOutline(None, "none", f"{drawn_on}, but this slice is {shape[1]}x{shape[0]}")
        shapes = [{**s, "points": [[x * scale_x, y * scale_y] for x, y in s.get("points", [])]} for s in shapes]
    return outline_from_shapes(shapes, shape)


def outline_from_shapes(shapes: list[dict], shape: tuple[int, int]) -> TumourOutline:
    polygons = [s for s in shapes if s.get("shape_type") == "polygon" and len(s.get("points", [])) >= 3]
    rectangles = [s for s in shapes if s.get("shape_type") == "rectangle" and len(s.get("points", [])) == 2]
    mask = np.zeros(shape, dtype=np.uint8)
    if polygons:
        for polygon in polygons:
            points = np.round(np.asarray(polygon["points"], dtype=np.float64)).astype(np.int32)
            cv2.fillPoly(mask, [points], 1)
        kind = "polygon"
    elif rectangles:
        for rectangle in rectangles:
            (x0, y0), (x1, y1) = np.round(np.asarray(rectangle["points"], dtype=np.float64)).astype(int)
            cv2.rectangle(mask, (min(x0, x1), min(y0, y1)), (max(x0, x1), max(y0, y1)), 1, -1)
        kind = "rectangle"
    else:
        return TumourOutline(None, "none", "annotation has no polygon or rectangle")
    if not mask.any():
        return TumourOutline(None, "none", "annotation lies outside the image")
    return TumourOutline(mask.astype(bool), kind)


MAX_OUTLINE_BYTES = 20 * 1024 * 1024  # LabelMe files may embed the image itself (imageData)


def outline_from_labelme(
    data: bytes, shape: tuple[int, int], trim: tuple[int, int, int, int] | None = None
) -> TumourOutline:
    """An uploaded LabelMe JSON as a mask for a slice of `shape` (rows, columns), scaled as
    `outline_from_document` does; a file that is not LabelMe gives the reason instead. `trim`
    (top, left, height, width of the slice as read; core.image_input.LoadedImage.trim): the
    outline is drawn on the slice as read, then cut as the slice was."""
    if len(data) > MAX_OUTLINE_BYTES:
        return TumourOutline(None, "none", f"the outline file is over {MAX_OUTLINE_BYTES // 2**20} MB")
    try:
        outline = outline_from_document(json.loads(data.decode("utf-8")), trim[2:] if trim else shape)
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, TypeError, ValueError) as error:
        return TumourOutline(None, "none", f"this is not a LabelMe outline file ({type(error).__name__})")
    if trim is None or outline.mask is None:
        return outline
    top, left = trim[:2]
    mask = outline.mask[top : top + shape[0], left : left + shape[1]]
    if not mask.any():
        return TumourOutline(None, "none", "annotation lies outside the part of the image that was kept")
    return TumourOutline(mask, outline.kind)
