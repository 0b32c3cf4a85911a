"""Does a heatmap point at what the model uses? Deletion and insertion curves (Petsiuk et al.
2018, RISE), computed with pytorch-grad-cam's perturbation metric, against a random map.

Deletion: the explained class's probability as the hottest pixels of the head are removed (set
to black, the MRI background), an eighth at a time; a faithful map makes it fall fast (low area
under the curve). Insertion: the probability as the hottest pixels are revealed on a black
slice; a faithful map makes it rise fast (high area). Fractions count the head's pixels only:
the background is black already. The same curves for smooth random maps (the mean of
RANDOM_MAPS draws) say what "fast" means for this slice; a curve counts as better than random
when its area differs by more than MARGIN.

ROAD (Rong et al. 2022, pytorch-grad-cam's ROADCombined) removes pixels differently: it fills
them by noisy linear interpolation from their neighbours instead of black, so the model cannot
read the shape of what was removed. Its score is the mean, over ROAD_PERCENTILES, of (the
probability with the least relevant pixels removed - with the most relevant removed) / 2:
higher is more faithful; a random map scores about 0. It needs a sparse solve per percentile,
about 12 s per slice on one CPU thread: it is the Explain page's "Check with ROAD" button, not a
column of `evaluate`.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
from pytorch_grad_cam.metrics.perturbation_confidence import (
    PerturbationConfidenceMetric,
    RemoveLeastRelevantFirst,
    RemoveMostRelevantFirst,
)
from pytorch_grad_cam.metrics.road import ROADCombined

from core.checkpoint import LoadedModel
from core.config import Preprocessing
from core.explanation import ExplainSettings, Explanation
from core.inference import prepare_slices
from core.preprocess import heatmap_to_square, to_tensor

FRACTIONS = tuple(i / 8 for i in range(9))  # share of the head's pixels removed or revealed
RANDOM_MAPS = 2
MARGIN = 0.02  # areas closer than this to the random maps' are "no better than random"
ROAD_PERCENTILES = (20, 50, 80)  # pytorch-grad-cam's default is 10..90 in tens: 3x the solves
RANDOM_GRID = 8  # random maps are 8x8 noise, upsampled: blobs the size of a CAM's, not salt and pepper


@dataclass(frozen=True)
class FaithfulnessCheck:
    """Deletion and insertion curves of the heatmap and of random maps, and their areas."""

    fractions: tuple[float, ...]
    deletion: tuple[float, ...]
    insertion: tuple[float, ...]
    random_deletion: tuple[float, ...]
    random_insertion: tuple[float, ...]
    target_label: str

    @property
    def deletion_auc(self) -> float:
        return area(self.fractions, self.deletion)

    @property
    def insertion_auc(self) -> float:
        return area(self.fractions, self.insertion)

    @property
    def random_deletion_auc(self) -> float:
        return area(self.fractions, self.random_deletion)

    @property
    def random_insertion_auc(self) -> float:
        return area(self.fractions, self.random_insertion)

    @property
    def faithful(self) -> bool | None:
        """True when both curves beat the random map's, False when neither does, else None."""
        deletion = self.deletion_auc < self.random_deletion_auc - MARGIN
        insertion = self.insertion_auc > self.random_insertion_auc + MARGIN
        return True if deletion and insertion else False if not (deletion or insertion) else None

    def verdict(self) -> str:
        numbers = (f"deletion AUC {self.deletion_auc:.2f} against {self.random_deletion_auc:.2f} for random maps, "
                   f"insertion AUC {self.insertion_auc:.2f} against {self.random_insertion_auc:.2f}")  # fmt: skip
        if self.faithful:
            return (f"Faithful: removing the hottest pixels lowers the '{self.target_label}' score faster than "
                    f"removing random regions, and revealing them raises it faster ({numbers}).")  # fmt: skip
        if self.faithful is False:
            return (f"Not faithful: the heatmap does no better than a random map at finding what the model uses "
                    f"for '{self.target_label}' ({numbers}). Try another method or layer.")  # fmt: skip
        return f"Mixed: the heatmap beats a random map on one curve only ({numbers})."

    def to_dict(self) -> dict:
        return {
            "fractions": list(self.fractions),
            "deletion": list(self.deletion),
            "insertion": list(self.insertion),
            "random_deletion": list(self.random_deletion),
            "random_insertion": list(self.random_insertion),
            "deletion_auc": self.deletion_auc,
            "insertion_auc": self.insertion_auc,
            "random_deletion_auc": self.random_deletion_auc,
            "random_insertion_auc": self.random_insertion_auc,
            "faithful": self.faithful,
            "verdict": self.verdict(),
        }


def area(fractions, values) -> float:
    """Area under a curve sampled at `fractions` (trapezoid rule)."""
    return float(np.trapezoid(np.asarray(values, dtype=np.float64), np.asarray(fractions, dtype=np.float64)))


def check_heatmap(
    loaded: LoadedModel, image: np.ndarray, explanation: Explanation, settings: ExplainSettings, seed: int = 0
) -> FaithfulnessCheck:
    """Deletion and insertion curves of `explanation`'s heatmap on the model's own input.

    Args:
        loaded, image: the model and the slice that were explained.
        explanation: explain(loaded, image, settings).
        settings: its settings (the input is prepared with the same masking).
    """
    config = loaded.config
    tensor, heatmap, head = on_model_input(loaded, image, explanation, settings)
    size = config.preprocessing.input_size
    randoms = random_maps(size, head, seed)
    # Ties (a CAM's flat zeros) would be removed all at once; a jitter far below any map's
    # resolution orders them at random, inside the head only.
    jitter = np.random.default_rng(seed).random((1 + len(randoms), size, size)) * 1e-6 * head
    maps = (np.stack([heatmap, *randoms]) + jitter).astype(np.float32)
    deletion, insertion = curves(loaded, tensor, maps, head.mean(), explanation.target_index)
    return FaithfulnessCheck(
        fractions=FRACTIONS,
        deletion=tuple(deletion[0]),
        insertion=tuple(insertion[0]),
        random_deletion=tuple(deletion[1:].mean(0)),
        random_insertion=tuple(insertion[1:].mean(0)),
        target_label=explanation.target_label,
    )


def on_model_input(
    loaded: LoadedModel, image: np.ndarray, explanation: Explanation, settings: ExplainSettings
) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """(the model's input tensor (1, 3, S, S), the heatmap and the head mask on that S x S square):
    the slice prepared with the explanation's masking, where the perturbations are applied."""
    config = loaded.config
    prepared = prepare_slices([image], config.preprocessing, settings.mask_input)[0]
    size = config.preprocessing.input_size
    heatmap = heatmap_to_square(explanation.heatmap, prepared.box, size)
    head = heatmap_to_square(explanation.brain_mask.astype(np.float32), prepared.box, size) > 0.5 \
        if explanation.brain_mask is not None else np.ones((size, size), dtype=bool)  # fmt: skip
    return to_tensor(prepared.square, config.preprocessing), heatmap, head


def random_maps(size: int, head: np.ndarray, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    grids = rng.random((RANDOM_MAPS, RANDOM_GRID, RANDOM_GRID)).astype(np.float32)
    return [cv2.resize(grid, (size, size), interpolation=cv2.INTER_LINEAR) * head for grid in grids]


def curves(
    loaded: LoadedModel, tensor: torch.Tensor, maps: np.ndarray, head_share: float, target: int
) -> tuple[np.ndarray, np.ndarray]:
    """(deletion, insertion): for each map, class `target`'s probability at each of FRACTIONS as
    the top of the map is removed or revealed, one pytorch-grad-cam perturbation pass per point.
    Maps are zero outside the head, which covers `head_share` of the input."""
    settings = loaded.config.preprocessing
    batch = tensor.expand(len(maps), -1, -1, -1)
    score = _probability(target, loaded.config.temperature)
    targets = [score] * len(maps)

    def perturbed(perturbation) -> np.ndarray:
        return PerturbationConfidenceMetric(perturbation)(batch, maps, targets, loaded.model, return_diff=False)

    with loaded.lock, torch.no_grad():
        intact = score(loaded.model(batch)).numpy()
        black = perturbed(RemoveLeastRelevantFirst(0, _blacken(settings)))  # nothing revealed
        deletion, insertion = [intact], [black]
        for fraction in FRACTIONS[1:-1]:
            share = 100 * fraction * head_share  # the top `fraction` of the head, as a percentile of the map
            # keeps the pixels below the map's (100 - share) percentile: removes the top of the head
            deletion.append(perturbed(RemoveMostRelevantFirst(100 - share, _blacken(settings))))
            # keeps the pixels above it: reveals the top of the head on a black slice
            insertion.append(perturbed(RemoveLeastRelevantFirst(share, _blacken(settings))))
        deletion.append(black)
        insertion.append(intact)
    return np.stack(deletion, axis=1).astype(np.float64), np.stack(insertion, axis=1).astype(np.float64)


def _probability(target: int, temperature: float):
    def score(logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits / temperature, dim=-1)[..., target]

    return score


def _blacken(settings: Preprocessing):
    """pytorch-grad-cam imputer: keep where the mask is 1, black (intensity 0) elsewhere."""
    black = (0.0 - settings.mean) / settings.std

    def impute(image: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        keep = keep.to(image.dtype)
        return image * keep + black * (1 - keep)

    return impute


@dataclass(frozen=True)
class RoadCheck:
    """ROAD scores of the heatmap and of a smooth random map (higher: more faithful)."""

    road: float
    random_road: float
    target_label: str

    @property
    def faithful(self) -> bool:
        return self.road > self.random_road + MARGIN

    def verdict(self) -> str:
        numbers = f"ROAD {self.road:.3f} against {self.random_road:.3f} for a random map"
        if self.faithful:
            return (f"ROAD agrees: with removed pixels filled in from their neighbours, the heatmap still finds "
                    f"what the model uses for '{self.target_label}' better than a random map ({numbers}).")  # fmt: skip
        return (f"ROAD does not confirm it: with removed pixels filled in from their neighbours, the heatmap does "
                f"no better than a random map for '{self.target_label}' ({numbers}).")  # fmt: skip


def road_check(
    loaded: LoadedModel, image: np.ndarray, explanation: Explanation, settings: ExplainSettings, seed: int = 0
) -> RoadCheck:
    """ROAD (pytorch-grad-cam's ROADCombined at ROAD_PERCENTILES) of `explanation`'s heatmap and of
    one random map, on the model's own input; seeded (the imputation adds noise)."""
    config = loaded.config
    tensor, heatmap, head = on_model_input(loaded, image, explanation, settings)
    size = config.preprocessing.input_size
    jitter = np.random.default_rng(seed).random((2, size, size)) * 1e-6 * head  # orders ties at random
    maps = (np.stack([heatmap, random_maps(size, head, seed)[0]]) + jitter).astype(np.float32)
    tensor = tensor.expand(2, -1, -1, -1)
    score = _probability(explanation.target_index, config.temperature)

    def forward(batch: torch.Tensor) -> torch.Tensor:  # the lock for the model's passes only, not the solves
        with loaded.lock:
            return loaded.model(batch)

    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(seed)
        scores = ROADCombined(percentiles=list(ROAD_PERCENTILES))(tensor, maps, [score, score], forward)
    return RoadCheck(float(scores[0]), float(scores[1]), explanation.target_label)
