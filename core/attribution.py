"""Input attributions from Captum, beside the CAMs: where in the input pixels the class score
comes from, not where in a layer's feature maps.

Integrated Gradients (Sundararajan et al. 2017) integrates the score's gradient along the path
from a black slice to the input: STEPS forward and backward passes per slice. With a noise
tunnel (SmoothGrad, Smilkov et al. 2017) it averages NOISE_SAMPLES noisy copies: that many
times the cost. The map is the positive attribution (evidence for the class), summed over the
three grey channels, smoothed (the raw map is pixel noise) and scaled to [0, 1] like a CAM.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from captum.attr import IntegratedGradients, NoiseTunnel

from core.config import Preprocessing
from core.explanation import NOISE_SAMPLES, STEPS

NOISE_STDEV = 0.1  # in normalised input units


def input_attribution(
    method: str, model: torch.nn.Module, tensor: torch.Tensor, settings: Preprocessing, target: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """(maps (N, S, S) in [0, 1], logits (N, classes)) for normalised inputs (N, 3, S, S); the
    class explained is `target`, or each slice's predicted class."""
    with torch.no_grad():
        logits = model(tensor)
    targets = logits.argmax(1).tolist() if target is None else [target] * len(tensor)
    black = torch.full_like(tensor, (0.0 - settings.mean) / settings.std)
    integrated = IntegratedGradients(model)
    if method == "Integrated Gradients":
        attributions = integrated.attribute(tensor, baselines=black, target=targets, n_steps=STEPS,
                                            internal_batch_size=STEPS)  # fmt: skip
    else:
        attributions = NoiseTunnel(integrated).attribute(
            tensor, baselines=black, target=targets, n_steps=STEPS, internal_batch_size=STEPS,
            nt_type="smoothgrad", nt_samples=NOISE_SAMPLES, stdevs=NOISE_STDEV,
        )  # fmt: skip
    model.zero_grad(set_to_none=True)
    evidence = attributions.detach().sum(1).clamp(min=0).numpy()
    return np.stack([_smooth_and_scale(values) for values in evidence]), logits.numpy()


def _smooth_and_scale(values: np.ndarray) -> np.ndarray:
    sigma = max(1.0, values.shape[0] / 64)
    smooth = cv2.GaussianBlur(values.astype(np.float32), (0, 0), sigma)
    peak = float(smooth.max())
    return smooth / peak if peak > 0 else smooth
