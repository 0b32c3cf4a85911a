"""The one way a slice reaches a model: prepare it, normalise it, score it in batches.

Training (hold-out, teacher targets), selection, evaluation and explanation all call these,
so every number the app reports comes from the same input the model was trained on.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn.functional as F

from core.checkpoint import LoadedModel
from core.config import Preprocessing
from core.features import scores_and_features
from core.metrics import softmax
from core.preprocess import PreparedSlice, prepare_for_model, to_tensor
from core.reliability import Verdict, verdict


def prepare_slices(images: list[np.ndarray], settings: Preprocessing, mask_input: bool) -> list[PreparedSlice]:
    """prepare_for_model() for each slice, on all cores: OpenCV and NumPy release the GIL."""
    if len(images) == 1:
        return [prepare_for_model(images[0], settings, mask_input)]
    with ThreadPoolExecutor(max_workers=min(len(images), os.cpu_count() or 1)) as pool:
        return list(pool.map(lambda image: prepare_for_model(image, settings, mask_input), images))


def model_input(images: torch.Tensor, settings: Preprocessing) -> torch.Tensor:
    """(N, S, S) in [0, 1] -> normalised input at the model's own size: a teacher trained at
    256 px distilling into a 224 px student scores the student's view resized to 256 px."""
    size = settings.input_size
    if images.shape[-2:] != (size, size):
        images = F.interpolate(images[:, None], size=(size, size), mode="bilinear", antialias=True)[:, 0]
    return to_tensor(images, settings)


@torch.no_grad()
def batched_logits(model: torch.nn.Module, squares: np.ndarray, settings: Preprocessing, batch: int = 64) -> np.ndarray:
    """Logits for prepared squares (N, S, S): uint8 (as training stores them) or float in [0, 1].
    Scored in eval mode on the model's device; the model's train/eval mode is restored."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    scale = 255.0 if squares.dtype == np.uint8 else 1.0
    out = []
    for start in range(0, len(squares), batch):
        chunk = torch.from_numpy(squares[start : start + batch]).to(device).float()
        out.append(model(model_input(chunk / scale if scale != 1.0 else chunk, settings)).cpu().numpy())
    model.train(was_training)
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


def slice_logits(loaded: LoadedModel, images: list[np.ndarray], mask_input: bool = True) -> np.ndarray:
    """Logits for decoded slices (core.image_input pixels), prepared as the checkpoint says."""
    settings = loaded.config.preprocessing
    squares = np.stack([prepared.square for prepared in prepare_slices(images, settings, mask_input)])
    return batched_logits(loaded.model, squares, settings)


def slice_scores(loaded: LoadedModel, images: list[np.ndarray], mask_input: bool = True):
    """(logits, familiarity features) for decoded slices from one forward pass each; the
    features are what core.reliability measures familiarity on."""
    settings = loaded.config.preprocessing
    squares = np.stack([prepared.square for prepared in prepare_slices(images, settings, mask_input)])
    return square_scores(loaded.model, squares, settings)


def judged_scores(loaded: LoadedModel, images: list[np.ndarray], mask_input: bool = True):
    """(logits, calibrated probabilities, reliability verdicts) for decoded slices, from one
    forward pass each: what a prediction without a heatmap reports."""
    logits, features = slice_scores(loaded, images, mask_input)
    probabilities = softmax(logits, loaded.config.temperature)
    trusted = loaded.reliability
    familiarity = trusted.familiarity(features).tolist() if trusted is not None else [None] * len(images)
    unusual = trusted.unusual(features) if trusted is not None else [()] * len(images)
    verdicts: list[Verdict] = [verdict(p, f, trusted, u) for p, f, u in zip(probabilities, familiarity, unusual)]
    return logits, probabilities, verdicts


@torch.no_grad()
def square_scores(model: torch.nn.Module, squares: np.ndarray, settings: Preprocessing, batch: int = 64):
    """(logits, familiarity features) for prepared squares (N, S, S): uint8 or float in [0, 1]."""
    model.eval()
    scale = 255.0 if squares.dtype == np.uint8 else 1.0
    logits, features = [], []
    for start in range(0, len(squares), batch):
        chunk = model_input(torch.from_numpy(squares[start : start + batch]).float() / scale, settings)
        scores, described = scores_and_features(model, chunk)
        logits.append(scores.numpy())
        features.append(described.numpy())
    return np.concatenate(logits), np.concatenate(features)
