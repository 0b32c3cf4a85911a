"""Captum input attributions: they find the pixels a hand-made model's score comes from."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.attribution import input_attribution
from core.config import Preprocessing
from core.explain import explain
from core.explanation import INPUT_ATTRIBUTIONS, ExplainSettings
from core.preprocess import to_tensor
from tests.test_faithfulness import SIZE, LeftHalfModel, loaded_left_half


@pytest.mark.parametrize("method", list(INPUT_ATTRIBUTIONS))
def test_attribution_lies_where_the_evidence_is(method):
    torch.manual_seed(0)
    settings = Preprocessing(input_size=SIZE, crop_to_head=False)
    tensor = to_tensor(np.full((2, SIZE, SIZE), 0.8, dtype=np.float32), settings)
    maps, logits = input_attribution(method, LeftHalfModel().eval(), tensor, settings, target=0)
    assert maps.shape == (2, SIZE, SIZE) and 0 <= maps.min() and maps.max() == pytest.approx(1.0)
    assert maps[:, :, : SIZE // 2].mean() > 5 * maps[:, :, SIZE // 2 :].mean()
    np.testing.assert_allclose(logits[:, 0], 8 * 0.8, rtol=1e-5)
    # class 1's score is constant: no pixel raises it
    nothing, _ = input_attribution(method, LeftHalfModel().eval(), tensor, settings, target=1)
    assert nothing.max() == 0


def test_explain_draws_integrated_gradients_at_the_input():
    loaded = loaded_left_half()
    image = np.full((40, 40), 0.8, dtype=np.float32)
    result = explain(loaded, image, ExplainSettings("Integrated Gradients", mask_input=False, mask_heatmap=False))
    assert result.target_layer == "input" and result.heatmap.shape == image.shape
    assert result.heatmap[:, :20].mean() > 5 * result.heatmap[:, 20:].mean()
