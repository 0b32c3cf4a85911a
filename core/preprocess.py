"""Turn a 2-D slice into the model's input, and map a heatmap back onto the slice.

The same code runs at training and inference; its settings live in config.json.
Grey conversion happens at decoding (core.image_input). Here: crop to the head (so the
field of view and image size carry less of the source bias), pad to a square, resize,
and stretch intensities between robust percentiles inside the head.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from core.brain_mask import BrainMask, detect_brain_mask
from core.config import Preprocessing


@dataclass(frozen=True)
class CropBox:
    """Where the model's square input came from in the original slice."""

    top: int
    bottom: int
    left: int
    right: int
    side: int  # the padded square's side, in original pixels
    pad_top: int
    pad_left: int


def head_box(image: np.ndarray, mask: np.ndarray | None, margin: float) -> tuple[int, int, int, int]:
    """Bounding box (top, bottom, left, right) of the head, or of the whole image."""
    region = mask if mask is not None else image > 0.05 * float(image.max())
    left, top, box_width, box_height = cv2.boundingRect(region.astype(np.uint8))
    height, width = image.shape
    if box_width == 0:
        return 0, height, 0, width
    pad = int(round(margin * max(height, width)))
    return (
        max(0, top - pad),
        min(height, top + box_height + pad),
        max(0, left - pad),
        min(width, left + box_width + pad),
    )


def prepare_slice(
    image: np.ndarray, settings: Preprocessing, head_mask: np.ndarray | None = None
) -> tuple[np.ndarray, CropBox]:
    """Crop, pad and resize a slice to the model's square input, intensities in [0, 1].

    Args:
        image: 2-D float32 slice in [0, 1] (background already zeroed if masking).
        settings: the checkpoint's preprocessing.
        head_mask: the detected head, used for the crop and the intensity percentiles.

    Returns:
        (square float32 array of side settings.input_size, the CropBox to map back)
    """
    height, width = image.shape
    if settings.crop_to_head:
        top, bottom, left, right = head_box(image, head_mask, settings.crop_margin)
    else:
        top, bottom, left, right = 0, height, 0, width
    crop = image[top:bottom, left:right]
    side = max(crop.shape)
    pad_top, pad_left = (side - crop.shape[0]) // 2, (side - crop.shape[1]) // 2
    square = np.zeros((side, side), dtype=np.float32)
    square[pad_top : pad_top + crop.shape[0], pad_left : pad_left + crop.shape[1]] = crop

    inside = crop[head_mask[top:bottom, left:right]] if head_mask is not None else crop[crop > 0]
    if inside.size < 16:
        inside = crop.ravel()
    low, high = np.percentile(inside, settings.intensity_percentiles)
    if high > low:
        square = np.clip((square - low) / (high - low), 0.0, 1.0)
    interpolation = cv2.INTER_AREA if side > settings.input_size else cv2.INTER_LINEAR
    resized = cv2.resize(square, (settings.input_size, settings.input_size), interpolation=interpolation)
    box = CropBox(top, bottom, left, right, side, pad_top, pad_left)
    return resized.astype(np.float32), box


def to_tensor(prepared: np.ndarray | torch.Tensor, settings: Preprocessing) -> torch.Tensor:
    """(N?, S, S) in [0, 1] -> normalised (N, 3, S, S): grey repeated on three channels."""
    tensor = torch.as_tensor(prepared, dtype=torch.float32)
    if tensor.ndim == 2:
        tensor = tensor[None]
    tensor = (tensor - settings.mean) / settings.std
    return tensor[:, None].expand(-1, 3, -1, -1).contiguous()


def heatmap_to_slice(heatmap: np.ndarray, box: CropBox, shape: tuple[int, int]) -> np.ndarray:
    """Resize a model-input-sized heatmap back to the crop and place it in the full slice."""
    square = cv2.resize(heatmap.astype(np.float32), (box.side, box.side), interpolation=cv2.INTER_LINEAR)
    crop = square[
        box.pad_top : box.pad_top + box.bottom - box.top,
        box.pad_left : box.pad_left + box.right - box.left,
    ]
    full = np.zeros(shape, dtype=np.float32)
    full[box.top : box.bottom, box.left : box.right] = crop
    return np.clip(full, 0.0, 1.0)


def heatmap_to_square(heatmap: np.ndarray, box: CropBox, size: int) -> np.ndarray:
    """The inverse of heatmap_to_slice(): a slice-sized map cut to the crop, padded to the
    square and resized to the model's input, so it lines up with the model's input pixels."""
    square = np.zeros((box.side, box.side), dtype=np.float32)
    crop = heatmap[box.top : box.bottom, box.left : box.right].astype(np.float32)
    square[box.pad_top : box.pad_top + crop.shape[0], box.pad_left : box.pad_left + crop.shape[1]] = crop
    interpolation = cv2.INTER_AREA if box.side > size else cv2.INTER_LINEAR
    return cv2.resize(square, (size, size), interpolation=interpolation)


@dataclass(frozen=True)
class PreparedSlice:
    """A slice as the model sees it, with the head mask and the box to map back."""

    square: np.ndarray
    box: CropBox
    brain: BrainMask
    masked: bool  # background zeroed before the model


LIGHT_FRAME_TOLERANCE = 0.08  # intensity around the frame's median still counted as frame
LIGHT_FRAME_MAX_SHARE = 0.8  # a "frame" over more of the image has nothing inside it: left alone


def without_light_frame(image: np.ndarray) -> np.ndarray:
    """The slice with a uniform light background (the white page of a screenshot or a scanned
    film, a viewer's light theme) made black, as every training slice's background is; returned
    as it is unless the outer 2 % of each side is light (median >= 0.5) and 95 % uniform, which
    no image of the training data is, and the frame leaves a fifth of the image inside it."""
    depth = max(2, round(0.02 * min(image.shape)))
    band = np.concatenate([image[:depth].ravel(), image[-depth:].ravel(),
                           image[depth:-depth, :depth].ravel(), image[depth:-depth, -depth:].ravel()])  # fmt: skip
    level = float(np.median(band))
    if level < 0.5 or np.mean(np.abs(band - level) < LIGHT_FRAME_TOLERANCE) < 0.95:
        return image
    near = (np.abs(image - level) < LIGHT_FRAME_TOLERANCE).astype(np.uint8)
    _, labels = cv2.connectedComponents(near, connectivity=4)
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    frame = np.isin(labels, edge[edge > 0])
    return image if frame.mean() > LIGHT_FRAME_MAX_SHARE else np.where(frame, 0.0, image)


def prepare_for_model(image: np.ndarray, settings: Preprocessing, mask_input: bool = True) -> PreparedSlice:
    """Make a light background black, detect the head, optionally zero the background, then
    prepare_slice()."""
    image = without_light_frame(image)
    brain = detect_brain_mask(image)
    masked = brain.found and mask_input
    square, box = prepare_slice(image * brain.mask if masked else image, settings, brain.mask)
    return PreparedSlice(square, box, brain, masked)
