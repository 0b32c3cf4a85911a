"""Choose between checkpoints without touching `test`: paired comparisons against a reference.

- Grouped hold-out of the training splits (the one `train` holds out): accuracy, macro-F1 and
  ECE after each checkpoint's temperature, and an exact McNemar test on the images only one
  of the two gets right.
- Optionally, Grad-CAM placement on a split's outlined tumours (default `val`): mean IoU and
  mass outside the brain, with a paired Wilcoxon signed-rank test per image.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from scipy.stats import binomtest, wilcoxon

from core.checkpoint import load_checkpoint
from core.config import CheckpointError, Preprocessing
from core.dataset import decode_records, holdout_records
from core.evaluate import cached_evaluation
from core.evaluation_store import cache_dir, read_evaluation
from core.inference import batched_logits
from core.metrics import classification_summary, expected_calibration_error, softmax

PLACEMENT_COLUMNS = ("iou", "mass_outside_brain")


@dataclass(frozen=True)
class PairedTest:
    """`better`: images (or pairs) where the candidate wins, `worse`: where the reference wins."""

    better: int
    worse: int
    p_value: float


@dataclass(frozen=True)
class Comparison:
    checkpoint: str
    holdout_images: int
    accuracy: float
    macro_f1: float
    ece_after_temperature: float
    mcnemar: PairedTest | None  # None for the reference itself
    placement: dict[str, float] | None = None  # mean per PLACEMENT_COLUMNS
    placement_tests: dict[str, PairedTest] | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def mcnemar_exact(reference_correct: np.ndarray, candidate_correct: np.ndarray) -> PairedTest:
    """Exact (binomial) McNemar test: of the images exactly one model gets right, is the
    split between the two further from 50/50 than chance allows? Two-sided."""
    reference_correct, candidate_correct = np.asarray(reference_correct, bool), np.asarray(candidate_correct, bool)
    better = int((candidate_correct & ~reference_correct).sum())
    worse = int((reference_correct & ~candidate_correct).sum())
    p_value = binomtest(better, better + worse, 0.5).pvalue if better + worse else 1.0
    return PairedTest(better, worse, float(p_value))


def wilcoxon_paired(reference: np.ndarray, candidate: np.ndarray, higher_is_better: bool) -> PairedTest:
    """Paired Wilcoxon signed-rank test of per-image values (zero differences dropped)."""
    difference = np.asarray(candidate, float) - np.asarray(reference, float)
    gain = difference if higher_is_better else -difference
    nonzero = difference[difference != 0]
    p_value = float(wilcoxon(nonzero).pvalue) if nonzero.size else 1.0
    return PairedTest(int((gain > 0).sum()), int((gain < 0).sum()), p_value)


def holdout_probabilities(
    checkpoint: str | Path, data: Path, splits: tuple[str, ...], fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Per-image calibrated probabilities and labels on the grouped hold-out, scored on the
    un-masked images as `train` scores its hold-out. Returns (probabilities, labels, class names)."""
    loaded = load_checkpoint(checkpoint)
    if loaded.config.refit_without_holdout:
        raise CheckpointError(
            f"{checkpoint} was refit on every training image, the hold-out included, so the hold-out cannot judge it; "
            "compare its twin run instead (the one that kept the hold-out aside and gave it its temperature)."
        )
    names = list(loaded.config.label_names)
    logits, labels = holdout_logits(loaded.model, loaded.config.preprocessing, names, data, splits, fraction, seed)
    return softmax(logits, loaded.config.temperature), labels, names


def holdout_logits(
    model, settings: Preprocessing, names: list[str], data: Path, splits: tuple[str, ...], fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """A model's logits on the grouped hold-out's un-masked images (as `train` scores it), and their labels."""
    held = holdout_records(data, names, splits, fraction, seed)
    plain, _ = decode_records(data, held, settings, progress=False)
    return batched_logits(model, plain, settings), np.array([names.index(record.label) for record in held])


def compare_checkpoints(
    checkpoints: list[str | Path],
    data: Path,
    *,
    splits: tuple[str, ...] = ("train", "val"),
    fraction: float = 0.15,
    seed: int = 0,
    placement_split: str | None = None,
    cache: Path | None = None,
) -> list[Comparison]:
    """Each checkpoint against the first (the reference), on the hold-out and, given
    `placement_split`, on that split's outlined tumours with Grad-CAM at each default layer.

    Raises:
        CheckpointError, DatasetError: a checkpoint or the data cannot be read.
    """
    scored = [holdout_probabilities(c, data, splits, fraction, seed) for c in checkpoints]
    placements = (
        [_placement(c, data, placement_split, cache or cache_dir()) for c in checkpoints] if placement_split else None
    )
    reference_probs, labels, names = scored[0]
    reference_correct = reference_probs.argmax(1) == labels
    comparisons = []
    for index, (checkpoint, (probabilities, labels_i, _)) in enumerate(zip(checkpoints, scored)):
        summary = classification_summary(labels_i, probabilities, names)
        comparison = Comparison(
            checkpoint=str(checkpoint),
            holdout_images=len(labels_i),
            accuracy=summary["accuracy"],
            macro_f1=summary["macro_f1"],
            ece_after_temperature=expected_calibration_error(probabilities, labels_i),
            mcnemar=mcnemar_exact(reference_correct, probabilities.argmax(1) == labels_i) if index else None,
        )
        if placements is not None:
            comparison = _with_placement(comparison, placements[0], placements[index], index > 0)
        comparisons.append(comparison)
    return comparisons


def _placement(checkpoint: str | Path, data: Path, split: str, cache: Path) -> dict[str, dict[str, float]]:
    """Per-image Grad-CAM IoU (outlined tumours) and mass outside the brain (all images)."""
    rows = read_evaluation(cached_evaluation(checkpoint, data, split, cache, progress=False)).rows
    return {
        column: {row.image: getattr(row, column) for row in rows if getattr(row, column) is not None}
        for column in PLACEMENT_COLUMNS
    }


def _with_placement(comparison: Comparison, reference: dict, candidate: dict, test: bool) -> Comparison:
    means, tests = {}, {}
    for column in PLACEMENT_COLUMNS:
        images = sorted(reference[column].keys() & candidate[column].keys())
        ours = np.array([candidate[column][image] for image in images])
        means[column] = float(ours.mean()) if images else float("nan")
        if test:
            theirs = np.array([reference[column][image] for image in images])
            tests[column] = wilcoxon_paired(theirs, ours, higher_is_better=column == "iou")
    return replace(comparison, placement=means, placement_tests=tests or None)
