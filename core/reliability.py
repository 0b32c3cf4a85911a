"""When not to trust a prediction: unfamiliar scans and near-ties.

Familiarity (Lee et al. 2018): the Mahalanobis distance of a slice's features to the nearest
class mean, with shared covariances (Ledoit-Wolf shrinkage), all fitted on the training part of
train+val. The features come in two blocks: what the model sees (the vector the classifier
reads, and the channel statistics of an early stage) and texture statistics of the input
itself (fine detail, noise, blur and the flat patches of heavy JPEG, which a ConvNeXt's stem
discards). Each block's distance
is divided by its hold-out 95th percentile and the two are added in quadrature (or, fitted
with `combine="max"`, the larger is taken), so neither drowns the other; stored as one
block-diagonal precision. The score in [0, 1] is the share of
the grouped hold-out's slices that lie at least as far: 0.5 is a typical slice, below 0.05 is
farther than 95 % of the hold-out, and that slice is called unfamiliar.

Near-ties: a prediction is uncertain when its calibrated probability beats the runner-up by
less than a margin chosen on the same hold-out, the smallest margin at which the confident
predictions reach the stated selective accuracy. Weights refit on every image, the hold-out
included, take the margin their twin (the same recipe with the hold-out kept out) chose there.

Stored beside the weights as reliability.safetensors (tensors plus JSON metadata, no pickle);
`python -m core reliability --checkpoint NAME --data ROOT` fits it. core.features computes the
features (torch); this module needs numpy only, so the API's server process can report verdicts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import load_file, save_file

RELIABILITY_FILE = "reliability.safetensors"
UNFAMILIAR_SHARE = 0.05  # farther than 95 % of the hold-out
SELECTIVE_ACCURACY = 0.95  # what confident predictions must reach on the hold-out (0.98 was out of reach)
DEFAULT_MARGIN = 0.2  # for checkpoints without a fitted file
TEXTURE_SIGMAS = (1, 2, 4, 8)  # Laplacian-pyramid bands, in pixels of the model's input
# columns of texture_statistics(): mean and log-variance, two per band, then the flat share, the linear
# share and the two slopes of intensity_tilt(), in that order (feature_blocks() leaves out a tail of them)
TEXTURE_SIZE = 2 + 2 * len(TEXTURE_SIGMAS) + 4
BLOCK_ASPECTS = ("content", "texture")  # the model's features, then texture_statistics()
ASPECT_WORDS = {
    "content": "what the model sees in it (sequence, view, anatomy, or not a brain MRI at all)",
    "texture": "its image texture (resolution, blur, noise, compression or intensity curve)",
}
UNFAMILIAR_MESSAGE = (
    "This scan is unlike the images this model was trained on; its prediction and heatmap may be wrong."
)


@dataclass(frozen=True, eq=False)
class Reliability:
    means: np.ndarray  # (K, C) class means of the familiarity features
    precision: np.ndarray  # (C, C) inverse of the shared covariance
    holdout_distances: np.ndarray  # sorted distances of the hold-out slices
    margin: float  # uncertain below this lead of the top probability over the runner-up
    info: dict = field(default_factory=dict)

    @property
    def threshold(self) -> float:
        return float(np.quantile(self.holdout_distances, 1 - UNFAMILIAR_SHARE))

    def distances(self, features: np.ndarray) -> np.ndarray:
        """Mahalanobis distance of each feature row to its nearest class mean; with blocks
        combined by "max", the largest of the blocks' (scaled) distances to that mean."""
        if self.info.get("combine") == "max" and self.info.get("feature_blocks"):
            squared = self._block_squares(features).max(axis=1)  # (means, N)
        else:
            features = np.asarray(features, dtype=np.float64)
            squared = _squares_to_means(features, self._means64, self._precision64)
        return np.sqrt(np.maximum(squared.min(axis=0), 0))

    @cached_property
    def _means64(self) -> np.ndarray:
        return self.means.astype(np.float64)

    @cached_property
    def _precision64(self) -> np.ndarray:
        return self.precision.astype(np.float64)

    @cached_property
    def _block_precisions(self) -> list[tuple[int, int, np.ndarray]]:
        """(start, end, contiguous precision) of each feature block."""
        return [(a, b, np.ascontiguousarray(self._precision64[a:b, a:b])) for a, b in self.info["feature_blocks"]]

    def _block_squares(self, features: np.ndarray) -> np.ndarray:
        """(means, blocks, N) squared distances of each block of each feature row to each class
        mean, each scaled by that block's hold-out 95th percentile (its precision was divided by it)."""
        features = np.asarray(features, dtype=np.float64)
        blocks = [_squares_to_means(features[:, a:b], self._means64[:, a:b], p) for a, b, p in self._block_precisions]
        return np.stack(blocks, axis=1)

    def unusual(self, features: np.ndarray) -> list[tuple[str, ...]]:
        """Per slice, which blocks (BLOCK_ASPECTS, in feature order) lie farther from their
        nearest class mean than that block's own hold-out 95th percentile: what makes an
        unfamiliar slice unfamiliar. Empty for single-block files, or when neither block alone
        is that far (the two together can be)."""
        if len(self.info.get("feature_blocks") or []) < 2:
            return [()] * len(features)
        beyond = self._block_squares(features).min(axis=0) > 1.0  # (blocks, N): past the block's own line
        return [tuple(aspect for aspect, far in zip(BLOCK_ASPECTS, row) if far) for row in beyond.T]

    def familiarity(self, features: np.ndarray) -> np.ndarray:
        """Share of the hold-out at least as far from the training data, in [0, 1]."""
        distances = self.distances(features)
        below = np.searchsorted(self.holdout_distances, distances, side="left")
        return 1 - below / len(self.holdout_distances)


def _squares_to_means(features: np.ndarray, means: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """(means, N) squared Mahalanobis distances, (x - m)^T P (x - m), in one BLAS product for all
    rows and means (numpy's three-operand einsum does not use BLAS: it took 10x as long per slice)."""
    centred = (features[None] - means[:, None]).reshape(-1, features.shape[1])
    return np.einsum("nc,nc->n", centred @ precision, centred).reshape(len(means), len(features))


COMBINATIONS = ("quadrature", "max")


@dataclass(frozen=True)
class Verdict:
    """What the app, the CLI and the API say about one prediction's reliability."""

    familiarity: float | None  # None: the checkpoint has no familiarity model
    unfamiliar: bool
    uncertain: bool
    runner_up: int
    unusual: tuple[str, ...] = ()  # Reliability.unusual(): which aspects lie beyond the hold-out
    margin: float | None = None  # the fitted near-tie margin; None: DEFAULT_MARGIN, nothing fitted

    def unusual_text(self) -> str:
        """'Unusual: its image texture (...).' for an unfamiliar slice, else empty."""
        if not self.unusual:  # verdict() keeps it empty for a familiar slice
            return ""
        return "Unusual: " + " and ".join(ASPECT_WORDS[aspect] for aspect in self.unusual) + "."

    def uncertain_reason(self, probabilities: np.ndarray, label_names) -> str:
        """Why an uncertain prediction is shown as one, true at any lead: a wide fitted margin makes
        even 80 % against 8 % uncertain, which is no near-tie. Empty when not uncertain."""
        if not self.uncertain:
            return ""
        top, runner_up = int(np.argmax(probabilities)), self.runner_up
        lead = round(100 * float(probabilities[top] - probabilities[runner_up]))
        reason = f"{label_names[top]} leads {label_names[runner_up]} by {lead} points, under the "
        if self.margin is None:
            reason += f"default {round(100 * DEFAULT_MARGIN)} points (this checkpoint has no fitted margin)"
        else:
            reason += (f"{round(100 * self.margin)} points from which this model's predictions were right "
                       f"{round(100 * SELECTIVE_ACCURACY)} % of the time on held-out slices")  # fmt: skip
        return reason + ("; too close to call" if lead < 100 * DEFAULT_MARGIN else "")

    def fields(self) -> dict:
        familiarity = None if self.familiarity is None else round(self.familiarity, 4)
        return {
            "familiarity": familiarity,
            "unfamiliar": self.unfamiliar,
            "unusual": list(self.unusual),
            "uncertain": self.uncertain,
        }


NOT_ASSESSED = Verdict(None, False, False, 0)


def verdict(
    probabilities: np.ndarray,
    familiarity: float | None,
    reliability: Reliability | None,
    unusual: tuple[str, ...] = (),
) -> Verdict:
    order = np.argsort(probabilities)[::-1]
    lead = float(probabilities[order[0]] - probabilities[order[1]]) if len(order) > 1 else 1.0
    fitted = reliability.margin if reliability is not None else None
    margin = DEFAULT_MARGIN if fitted is None else fitted
    unfamiliar = familiarity is not None and familiarity < UNFAMILIAR_SHARE
    runner_up = int(order[1]) if len(order) > 1 else int(order[0])
    return Verdict(familiarity, unfamiliar, lead < margin, runner_up, unusual if unfamiliar else (), fitted)


def uncertain_text(probabilities: np.ndarray, label_names, top: int, runner_up: int) -> str:
    """'uncertain: glioma 48 % or meningioma 41 %'."""
    return (
        f"uncertain: {label_names[top]} {probabilities[top]:.0%} "
        f"or {label_names[runner_up]} {probabilities[runner_up]:.0%}"
    )


def feature_blocks(
    size: int, texture: bool = True, flatness: bool = True, linear: bool = True, tilt: bool = True
) -> list[tuple[int, int]]:
    """[start, stop) of the model block and (when `texture`) the texture block in a feature
    vector of `size`; columns in no block are left out of the distance: the texture columns
    without `texture`; without `flatness` the flat share and every column after it (the last
    four), without `linear` the linear share and the tilt (the last three), without `tilt` the
    tilt's two slopes (the last two)."""
    model_size = size - TEXTURE_SIZE
    if not texture:
        return [(0, model_size)]
    left_out = 4 if not flatness else 3 if not linear else 2 if not tilt else 0
    return [(0, model_size), (model_size, size - left_out)]


def choose_margin(probabilities: np.ndarray, labels: np.ndarray, target: float = SELECTIVE_ACCURACY) -> dict:
    """The smallest lead (top minus runner-up probability) at which the predictions with at
    least that lead are right at least `target` of the time; with its coverage."""
    ordered = np.sort(probabilities, axis=1)
    lead = ordered[:, -1] - ordered[:, -2]
    correct = probabilities.argmax(1) == labels
    for margin in np.round(np.arange(0.0, 0.96, 0.01), 2):
        kept = lead >= margin
        if kept.sum() >= 20 and correct[kept].mean() >= target:
            return {
                "margin": float(margin),
                "coverage": float(kept.mean()),
                "selective_accuracy": float(correct[kept].mean()),
            }
    return {"margin": 0.95, "coverage": float((lead >= 0.95).mean()), "selective_accuracy": None}


def fit(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    holdout_features: np.ndarray,
    margin: float,
    info: dict,
    blocks: list[tuple[int, int]] | None = None,
    combine: str = "quadrature",
) -> Reliability:
    """Class means and a shared covariance per block of features ([start, stop) columns; one
    block when None; columns in no block are not used); each block's precision is divided by
    the square of its hold-out 95th percentile distance, so the blocks weigh alike in the
    combined distance: their distances added in quadrature, or the largest (`combine="max"`)."""
    if combine not in COMBINATIONS:
        raise ValueError(f"combine is one of {COMBINATIONS}, not {combine!r}.")
    from sklearn.covariance import LedoitWolf

    size = train_features.shape[1]
    blocks = blocks or [(0, size)]
    classes = np.unique(train_labels)
    means = np.stack([train_features[train_labels == k].mean(0) for k in classes])
    row_means = means[np.searchsorted(classes, train_labels)]
    combined, scales = np.zeros((size, size)), []
    for start, stop in blocks:
        precision = LedoitWolf().fit(train_features[:, start:stop] - row_means[:, start:stop]).precision_
        alone = Reliability(means[:, start:stop], precision, np.zeros(1), margin)
        scale = float(np.quantile(alone.distances(holdout_features[:, start:stop]), 1 - UNFAMILIAR_SHARE))
        combined[start:stop, start:stop] = precision / max(scale, 1e-12) ** 2
        scales.append(round(scale, 4))
    info = {**info, "feature_blocks": [list(block) for block in blocks], "block_scales": scales, "combine": combine}
    fitted = Reliability(means.astype(np.float32), combined.astype(np.float32), np.zeros(1), margin, info)
    distances = np.sort(fitted.distances(holdout_features))
    return Reliability(fitted.means, fitted.precision, distances.astype(np.float32), margin, info)


def save(reliability: Reliability, directory: Path) -> Path:
    path = Path(directory) / RELIABILITY_FILE
    tensors = {
        "means": np.ascontiguousarray(reliability.means, dtype=np.float32),
        "precision": np.ascontiguousarray(reliability.precision, dtype=np.float32),
        "holdout_distances": np.ascontiguousarray(reliability.holdout_distances, dtype=np.float32),
    }
    save_file(tensors, str(path), metadata={"margin": str(reliability.margin), "info": json.dumps(reliability.info)})
    return path


def load(directory: Path) -> Reliability | None:
    """The checkpoint's reliability file, None when it has none.

    Raises:
        ValueError: the file is damaged or does not match the weights' feature size.
    """
    path = Path(directory) / RELIABILITY_FILE
    if not path.is_file():
        return None
    try:
        tensors = load_file(str(path))
        with safe_open(str(path), "np") as handle:
            metadata = handle.metadata() or {}
        reliability = Reliability(
            tensors["means"], tensors["precision"], tensors["holdout_distances"],
            float(metadata["margin"]), json.loads(metadata.get("info", "{}")),
        )  # fmt: skip
    except (SafetensorError, OSError, KeyError, ValueError) as error:
        raise ValueError(f"{path} is damaged ({error}); fit it again with `python -m core reliability`.") from error
    size = reliability.means.shape[1]
    if reliability.precision.shape != (size, size) or len(reliability.holdout_distances) < 20:
        raise ValueError(f"{path} is inconsistent (feature size or hold-out); fit it again.")
    return reliability


def twin_margin(checkpoint: str | Path, twin: str | Path) -> dict:
    """The near-tie margin for `checkpoint`, refit on every image (its hold-out included), from
    `twin`, the same recipe run with the grouped hold-out kept out: a margin fitted on slices the
    weights trained on is optimistic. Returns the twin's margin, with the coverage and selective
    accuracy it had on the hold-out and where it came from.

    Raises:
        CheckpointError: another architecture or classes, a checkpoint that kept its own hold-out,
            a twin that held nothing out, another temperature, or a twin with no fitted file.
    """
    from core.config import CheckpointError, refit_and_twin

    _, target, twin_dir, source = refit_and_twin(checkpoint, twin, "near-tie margin")
    if not np.isclose(source.temperature, target.temperature, rtol=1e-6, atol=0):
        raise CheckpointError(
            f"{twin}'s temperature ({source.temperature:.3f}) is not {checkpoint}'s ({target.temperature:.3f}), "
            f"and the margin is a lead in calibrated probabilities: first `python -m core calibrate --checkpoint "
            f"{checkpoint} --temperature-from {twin}`."
        )
    fitted = load(twin_dir)
    if fitted is None:
        raise CheckpointError(f"{twin} has no {RELIABILITY_FILE}; fit it first with `python -m core reliability`.")
    return {
        "margin": fitted.margin,
        "coverage": fitted.info.get("coverage"),
        "selective_accuracy": fitted.info.get("selective_accuracy"),
        "margin_from": {"checkpoint": str(twin), "holdout": fitted.info.get("holdout")},
    }


def fit_checkpoint(
    checkpoint: str | Path,
    data: Path,
    seed: int = 0,
    progress: bool = True,
    texture: bool = True,
    combine: str = "quadrature",
    flatness: bool = True,
    linear: bool = True,
    tilt: bool = True,
    margin_from: str | Path | None = None,
) -> Reliability:
    """Fit familiarity on the training part of train+val and the margin on its grouped hold-out
    (the split `train` uses, seed 0), with the inputs the app gives the model (brain-masked).
    `texture`: add the texture-statistics block (docs/training.md says which checkpoint has it),
    `flatness`: with its flat share and what follows, `linear`: with the linear share and the
    tilt, `tilt`: with intensity_tilt()'s slopes;
    `combine`: how the blocks' distances make one ("quadrature" or "max");
    `margin_from`: for weights refit on every image, the twin whose margin they take (required).

    Raises:
        CheckpointError: a refit without `margin_from`, or a twin twin_margin() refuses.
    """
    from core.checkpoint import load_checkpoint
    from core.config import CheckpointError
    from core.dataset import decode_records, grouped_holdout, list_split
    from core.inference import square_scores
    from core.metrics import softmax

    loaded = load_checkpoint(checkpoint, reliability=False)  # the old file may not fit these weights
    if margin_from is None and loaded.config.refit_without_holdout:
        raise CheckpointError(
            f"{checkpoint} was refit on every image, its hold-out included, so a margin fitted there would be "
            "optimistic; take its twin's with --margin-from TWIN."
        )
    from_twin = twin_margin(checkpoint, margin_from) if margin_from is not None else None
    names = list(loaded.config.label_names)
    settings = loaded.config.preprocessing
    records = [record for split in ("train", "val") for record in list_split(data, split, names)]
    held = grouped_holdout(records, 0.15, seed)
    _, masked = decode_records(data, records, settings, progress)
    labels = np.array([names.index(record.label) for record in records])
    logits, features = square_scores(loaded.model, masked, settings)  # one forward pass gives both
    probabilities = softmax(logits, loaded.config.temperature)
    chosen = from_twin or choose_margin(probabilities[held], labels[held])
    info = {
        "fitted_on": f"training part of train+val ({int((~held).sum())} images), brain-masked inputs",
        "holdout": f"grouped 15 % of train+val, seed {seed} ({int(held.sum())} images)",
        "refit_without_holdout": loaded.config.refit_without_holdout,
        "unfamiliar_below": UNFAMILIAR_SHARE,
        "target_selective_accuracy": SELECTIVE_ACCURACY,
        **chosen,
    }
    blocks = feature_blocks(features.shape[1], texture, flatness, linear, tilt)
    return fit(features[~held], labels[~held], features[held], chosen["margin"], info, blocks, combine)
