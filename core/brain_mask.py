"""Find the head/brain region of an MRI slice, or say why it could not be found.

Threshold (Otsu), morphology, largest connected component and hole filling, then a
coverage check; callers fall back to the full image when no mask is returned.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

MIN_COVERAGE = 0.20
MAX_COVERAGE = 0.90
# A second region at least half the largest one's area is another head (several slices side by
# side), not a part of one: in the dataset's 3,550 slices the second region is at most a third.
SEVERAL_HEADS_SHARE = 0.5


@dataclass(frozen=True)
class BrainMask:
    """A boolean mask of the head, or None with the reason it was rejected."""

    mask: np.ndarray | None
    coverage: float  # fraction of the image inside the candidate region
    reason: str
    several: str = ""  # a warning when the image seems to hold several heads side by side

    @property
    def found(self) -> bool:
        return self.mask is not None


def detect_brain_mask(image: np.ndarray) -> BrainMask:
    """Detect the head region of a 2-D slice with values in [0, 1].

    Args:
        image: 2-D float array in [0, 1].

    Returns:
        BrainMask with a boolean mask when coverage is in [20 %, 90 %], else mask None
        and a reason a user can read.
    """
    grey = np.clip(image * 255.0, 0, 255).astype(np.uint8)
    side = min(grey.shape)
    blurred = cv2.GaussianBlur(grey, (5, 5), 0)
    otsu, _ = cv2.threshold(blurred, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    # Half of Otsu keeps dark brain tissue and CSF while dropping background noise.
    level = max(otsu * 0.5, 8.0)
    foreground = (blurred > level).astype(np.uint8)
    kernel_size = max(3, side // 64) | 1
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (kernel_size, kernel_size))
    foreground = cv2.morphologyEx(foreground, cv2.MORPH_CLOSE, kernel, iterations=2)
    foreground = cv2.morphologyEx(foreground, cv2.MORPH_OPEN, kernel)

    count, labels, stats, _ = cv2.connectedComponentsWithStats(foreground, connectivity=8)
    if count < 2:
        return BrainMask(None, 0.0, "No head region stands out from the background.")
    areas = stats[1:, cv2.CC_STAT_AREA]
    largest = 1 + int(np.argmax(areas))
    region = (labels == largest).astype(np.uint8)
    region = _fill_holes(region)
    coverage = float(region.mean())
    heads = int(np.sum(areas >= SEVERAL_HEADS_SHARE * areas.max()))
    found = MIN_COVERAGE <= coverage <= MAX_COVERAGE
    several = _several_heads_warning(heads, stats[largest], grey.shape, found) if heads > 1 else ""
    if coverage < MIN_COVERAGE:
        return BrainMask(
            None,
            coverage,
            f"The detected head covers only {coverage:.0%} of the image "
            f"(expected {MIN_COVERAGE:.0%}-{MAX_COVERAGE:.0%}); showing the full image.",
            several,
        )
    if coverage > MAX_COVERAGE:
        return BrainMask(
            None,
            coverage,
            f"The detected head covers {coverage:.0%} of the image, so no background "
            "could be separated; showing the full image.",
        )
    return BrainMask(region.astype(bool), coverage, f"Head region found ({coverage:.0%} of the image).", several)


def _several_heads_warning(heads: int, box: np.ndarray, shape: tuple[int, int], used_largest: bool) -> str:
    """'This image seems to hold 3 separate heads ...', saying where the one used lies."""
    left, top, width, height = (int(box[key]) for key in (cv2.CC_STAT_LEFT, cv2.CC_STAT_TOP,
                                                          cv2.CC_STAT_WIDTH, cv2.CC_STAT_HEIGHT))  # fmt: skip
    row = ("top", "middle", "bottom")[min(2, 3 * (top + height // 2) // shape[0])]
    column = ("left", "centre", "right")[min(2, 3 * (left + width // 2) // shape[1])]
    if row == "middle":
        where = "in the centre" if column == "centre" else f"on the {column}"
    else:
        where = f"at the {row}" if column == "centre" else f"at the {row} {column}"
    used = (f"Only the largest, {where}, was used for the prediction and the heatmap" if used_largest
            else "The model saw them all at once, which it was not made for")  # fmt: skip
    return (
        f"This image seems to hold {heads} separate heads (several slices side by side?). {used}. "
        "Upload one slice at a time."
    )


def _fill_holes(region: np.ndarray) -> np.ndarray:
    """Fill enclosed holes: flood the background from a padded border, keep the rest."""
    padded = np.pad(region, 1)
    flood = padded.copy()
    cv2.floodFill(flood, None, (0, 0), 1)
    holes = flood == 0
    return (padded | holes)[1:-1, 1:-1].astype(np.uint8)


def mask_outline(mask: np.ndarray) -> list[np.ndarray]:
    """Outer contours of a boolean mask, as OpenCV point arrays."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return list(contours)
