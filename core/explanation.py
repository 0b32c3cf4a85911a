"""What explain() takes and gives, without torch: the methods by name, the settings of one
request, and its result (core.explain computes it).

Kept apart from core.explain so that what only validates requests and reports results (the
API's server process, the command line's start-up) does not load torch and pytorch-grad-cam.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from core.config import ModelConfig
from core.reliability import NOT_ASSESSED, Verdict, uncertain_text

# The CAMs of pytorch-grad-cam that core.explain.CAM_METHODS draws, in the order menus list them.
CAM_METHOD_NAMES = ("Grad-CAM", "Grad-CAM++", "HiResCAM", "XGrad-CAM", "LayerCAM", "Eigen-CAM", "Score-CAM")
STEPS = 16  # Integrated Gradients: forward and backward passes per slice (core.attribution)
NOISE_SAMPLES = 4  # noisy copies the noise tunnel averages
INPUT_ATTRIBUTIONS = {
    "Integrated Gradients": f"{STEPS} forward+backward passes per slice",
    "Integrated Gradients + noise tunnel": f"{STEPS * NOISE_SAMPLES} forward+backward passes per slice",
}
METHODS = (*CAM_METHOD_NAMES, *INPUT_ATTRIBUTIONS)  # everything core.explain can draw
SLOW_METHODS = {"Score-CAM", "Integrated Gradients + noise tunnel"}  # many passes per slice
GALLERY_METHODS = tuple(m for m in CAM_METHOD_NAMES if m not in SLOW_METHODS)  # fast enough for a whole split
CLASS_AGNOSTIC_METHODS = {"Eigen-CAM"}  # the first principal component of the activations: no class enters


def heatmap_name(method: str, layer: str | None, code: str = "") -> str:
    """'Grad-CAM at stages.2' (the layer quoted with `code`), or 'Integrated Gradients (input
    pixels)' for an input attribution, which has no layer."""
    if method in INPUT_ATTRIBUTIONS or not layer:
        return f"{method} (input pixels)"
    return f"{method} at {code}{layer}{code}"


class ExplainError(ValueError):
    """Bad settings for explain(): unknown method, class or layer."""


@dataclass(frozen=True)
class ExplainSettings:
    """What to explain and how: one request, shared by the pages, the CLI, the API and the cache.

    method: one of METHODS (None: the checkpoint's default method). target: class index or
    name to explain (None: the predicted class). target_layer: dotted module name, or several
    joined by "+" (None: the checkpoint's default). mask_input: zero the background before the
    model. mask_heatmap: zero the heatmap outside the head after it.
    """

    method: str | None = None
    target: int | str | None = None
    target_layer: str | None = None
    mask_input: bool = True
    mask_heatmap: bool = True

    def __post_init__(self):
        if self.method is not None and self.method not in METHODS:
            raise ExplainError(f"Unknown method '{self.method}'. Choose one of: {', '.join(METHODS)}.")

    @property
    def slow(self) -> bool:
        return self.method in SLOW_METHODS

    def resolved(self, config: ModelConfig) -> ExplainSettings:
        """The same request with the checkpoint's default method and layer filled in."""
        return replace(
            self,
            method=self.method or config.default_method,
            target_layer=self.target_layer or config.default_target_layer,
        )


@dataclass(frozen=True)
class Explanation:
    """What the model predicted for one slice, and where its evidence lies."""

    logits: np.ndarray  # the model's raw scores, one per class
    probabilities: np.ndarray  # softmax of logits / temperature
    predicted_index: int
    target_index: int
    label_names: tuple[str, ...]
    heatmap: np.ndarray  # float32 in [0, 1], same shape as the input slice
    brain_mask: np.ndarray | None
    brain_mask_note: str
    masked_input: bool
    masked_heatmap: bool
    method: str
    target_layer: str
    timings_ms: dict
    warning: str | None = None
    reliability: Verdict | None = None  # familiarity, unfamiliar, uncertain (core.reliability)

    @property
    def predicted_label(self) -> str:
        return self.label_names[self.predicted_index]

    @property
    def target_label(self) -> str:
        return self.label_names[self.target_index]

    @property
    def confidence(self) -> float:
        return float(self.probabilities[self.predicted_index])

    @property
    def uncertain(self) -> bool:
        return bool(self.reliability and self.reliability.uncertain)

    @property
    def unfamiliar(self) -> bool:
        return bool(self.reliability and self.reliability.unfamiliar)

    def headline(self) -> str:
        """The prediction as a clinician should read it: the class, or 'uncertain: A 48 % or B 41 %'."""
        if self.uncertain:
            return uncertain_text(
                self.probabilities, self.label_names, self.predicted_index, self.reliability.runner_up
            )
        return self.predicted_label

    def uncertain_reason(self) -> str:
        """Why the prediction is shown as uncertain, as a sentence ('' when it is not)."""
        reason = self.reliability.uncertain_reason(self.probabilities, self.label_names) if self.uncertain else ""
        return reason[:1].upper() + reason[1:] + "." if reason else ""

    def summary(self) -> dict:
        """JSON-ready: prediction, probabilities, settings and timings (no arrays)."""
        return {
            "prediction": self.predicted_label,
            "confidence": round(self.confidence, 6),
            "probabilities": {n: round(float(p), 6) for n, p in zip(self.label_names, self.probabilities)},
            "target_class": self.target_label,
            "method": self.method,
            "target_layer": self.target_layer,
            "brain_masked": self.brain_mask is not None and (self.masked_input or self.masked_heatmap),
            "brain_mask_note": self.brain_mask_note,
            "timings_ms": dict(self.timings_ms),
            "warning": self.warning,
            **(self.reliability or NOT_ASSESSED).fields(),
            "uncertain_reason": self.uncertain_reason(),
        }
