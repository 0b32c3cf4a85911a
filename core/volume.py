"""Every slice of a volume (NIfTI, multi-frame DICOM or TIFF, a ZIP of a DICOM series):
class probabilities, familiarity and uncertainty per slice, and the most suspicious slice.

Slices are decoded one at a time and scored in batches (forward passes only), so memory
stays at one batch of slices plus the file itself; heatmaps are made afterwards for the
slices a user looks at.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from core.checkpoint import LoadedModel
from core.image_input import (
    MAX_DECODED_BYTES,
    ImageInputError,
    LoadedImage,
    gunzip_at_most,
    load_image,
    series_slice,
    upload_kind,
)
from core.inference import judged_scores

SliceReader = Callable[[int], LoadedImage]


@dataclass(frozen=True)
class SliceScore:
    """One slice's scores, or why it has none (a blank slice at the volume's edge, say)."""

    index: int
    probabilities: tuple[float, ...] | None = None  # calibrated, in the checkpoint's class order
    prediction: str | None = None
    familiarity: float | None = None
    unfamiliar: bool | None = None
    uncertain: bool | None = None
    error: str | None = None


@dataclass(frozen=True)
class VolumeScores:
    label_names: tuple[str, ...]
    slices: tuple[SliceScore, ...]

    def suspicion(self, score: SliceScore) -> float:
        """How strongly the model calls this slice a tumour: 1 - p(notumor) (the top
        probability for a model without a notumor class); -1 for a slice without scores."""
        if score.probabilities is None:
            return -1.0
        if "notumor" in self.label_names:
            return 1.0 - score.probabilities[self.label_names.index("notumor")]
        return max(score.probabilities)

    def most_suspicious(self, count: int = 1) -> list[int]:
        """Indices of the `count` slices the model most calls a tumour, most suspicious first;
        slices unlike its training images (often the volume's edges) only after the others."""
        scored = [s for s in self.slices if s.probabilities is not None]
        ranked = sorted(scored, key=lambda s: (bool(s.unfamiliar), -self.suspicion(s), s.index))
        return [s.index for s in ranked[:count]]

    def rows(self) -> list[dict]:
        """One row per slice, as summary.csv writes it."""
        rows = []
        for score in self.slices:
            probabilities = score.probabilities or (None,) * len(self.label_names)
            rows.append({"slice": score.index, "prediction": score.prediction,
                         **{f"p_{name}": p for name, p in zip(self.label_names, probabilities)},
                         "familiarity": score.familiarity, "unfamiliar": score.unfamiliar,
                         "uncertain": score.uncertain, "error": score.error})  # fmt: skip
        return rows


def slice_reader(data: bytes, filename: str, axis: int = 2) -> tuple[int, SliceReader]:
    """(number of slices, read(index)) for any supported file, parsing the container once:
    a .nii.gz is decompressed once and a ZIP's headers are ordered once, not per slice.

    Raises:
        ImageInputError: the file cannot be read (checked on its middle slice).
    """
    middle = load_image(data, filename, axis=axis)
    kind = upload_kind(filename, data)
    if kind == "ZIP":
        from core.dicom_series import open_series

        series = open_series(data, MAX_DECODED_BYTES)
        return middle.num_slices, lambda index: series_slice(series, index)
    if kind == "NIfTI" and data[:2] == b"\x1f\x8b":
        raw = gunzip_at_most(data, MAX_DECODED_BYTES + 2**20)
        return middle.num_slices, lambda index: load_image(raw, "volume.nii", slice_index=index, axis=axis)
    return middle.num_slices, lambda index: load_image(data, filename, slice_index=index, axis=axis)


def score_volume(
    loaded: LoadedModel,
    count: int,
    read: SliceReader,
    *,
    mask_input: bool = True,
    batch_size: int = 16,
    on_progress: Callable[[int, int], None] | None = None,
) -> VolumeScores:
    """Scores for slices 0..count-1, a batch at a time; a slice that cannot be read gets its error."""
    label_names = tuple(loaded.config.label_names)
    scores: list[SliceScore] = []
    for start in range(0, count, batch_size):
        images, indices = [], []
        for index in range(start, min(start + batch_size, count)):
            try:
                images.append(read(index).pixels)
                indices.append(index)
            except ImageInputError as error:
                scores.append(SliceScore(index, error=str(error)))
        if images:
            with loaded.lock:  # no CAM hooks of another session may see these forward passes
                _, probabilities, verdicts = judged_scores(loaded, images, mask_input)
            for index, row, trust in zip(indices, probabilities, verdicts):
                known = trust.familiarity
                scores.append(SliceScore(
                    index, tuple(float(p) for p in row), label_names[int(np.argmax(row))], known,
                    trust.unfamiliar if known is not None else None, trust.uncertain,
                ))  # fmt: skip
        if on_progress:
            on_progress(min(start + batch_size, count), count)
    return VolumeScores(label_names, tuple(sorted(scores, key=lambda s: s.index)))
