"""The one inference path: the same logits whichever caller scores a slice."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.explain import explain
from core.explanation import ExplainSettings
from core.inference import batched_logits, model_input, prepare_slices, slice_logits
from core.metrics import softmax
from core.preprocess import prepare_for_model
from tests.conftest import head_phantom


def test_uint8_squares_score_as_their_float_values(tiny_model):
    settings = tiny_model.config.preprocessing
    squares = np.random.default_rng(0).integers(0, 256, (5, 64, 64), dtype=np.uint8)
    as_uint8 = batched_logits(tiny_model.model, squares, settings, batch=2)
    as_float = batched_logits(tiny_model.model, squares.astype(np.float32) / 255, settings)
    assert as_uint8.shape == (5, 4)
    np.testing.assert_allclose(as_uint8, as_float, atol=1e-5)
    assert batched_logits(tiny_model.model, squares[:0], settings).size == 0


def test_batched_logits_scores_in_eval_mode_and_restores_the_mode(tiny_model):
    model, settings = tiny_model.model, tiny_model.config.preprocessing
    squares = np.random.default_rng(1).random((3, 64, 64)).astype(np.float32)
    model.train()
    try:
        in_train_mode = batched_logits(model, squares, settings)
        assert model.training  # restored
    finally:
        model.eval()
    np.testing.assert_array_equal(in_train_mode, batched_logits(model, squares, settings))


def test_model_input_resizes_to_the_model_and_normalises(tiny_model):
    settings = tiny_model.config.preprocessing  # 64 px, mean 0.5, std 0.5
    images = torch.full((2, 48, 48), 0.75)
    tensor = model_input(images, settings)
    assert tensor.shape == (2, 3, 64, 64)
    assert torch.allclose(tensor, torch.full_like(tensor, 0.5))  # (0.75 - 0.5) / 0.5


def test_explanation_and_plain_scoring_give_the_same_logits(tiny_model):
    images = [head_phantom(96, seed) for seed in range(3)]
    plain = slice_logits(tiny_model, images, mask_input=True)
    for image, logits in zip(images, plain):
        explained = explain(tiny_model, image, ExplainSettings("Grad-CAM"))
        np.testing.assert_allclose(explained.logits, logits, atol=1e-4)
        np.testing.assert_allclose(
            explained.probabilities, softmax(logits[None], tiny_model.config.temperature)[0], atol=1e-5
        )


@pytest.mark.parametrize("mask_input", [True, False])
def test_prepare_slices_in_parallel_matches_one_at_a_time(tiny_model, mask_input):
    settings = tiny_model.config.preprocessing
    images = [head_phantom(80 + 8 * i, i) for i in range(4)]
    for batch, image in zip(prepare_slices(images, settings, mask_input), images):
        single = prepare_for_model(image, settings, mask_input)
        np.testing.assert_array_equal(batch.square, single.square)
        assert batch.masked == single.masked == mask_input
