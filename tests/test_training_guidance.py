"""Outline guidance: class activation maps that add up to the logits, and a loss on where they lie."""

from __future__ import annotations

import pytest
import torch

from core.checkpoint import create_model
from core.training.guidance import class_activation_maps, guidance_loss, outside_share


@pytest.mark.parametrize("arch", ["tf_efficientnet_lite0", "convnext_atto"])
def test_the_maps_average_to_the_models_logits(arch):
    torch.manual_seed(0)
    model = create_model(arch, 4).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        features = model.forward_features(x)
        maps = class_activation_maps(model, features)
        logits = model(x)
    assert maps.shape == (2, 4, *features.shape[-2:])
    assert torch.allclose(maps.mean((2, 3)), logits, atol=1e-4)


def test_the_loss_is_zero_inside_the_outline_and_positive_outside():
    outline = torch.zeros(1, 1, 64, 64)
    outline[..., 16:32, 16:32] = 1
    outside = outside_share(outline, (4, 4), dilation=0)
    assert outside[0, 1, 1] == 0 and outside[0, 3, 3] == 1

    inside_maps = torch.zeros(1, 2, 4, 4)
    inside_maps[0, 1, 1, 1] = 5.0  # all class-1 evidence in the outlined cell
    outside_maps = torch.zeros(1, 2, 4, 4)
    outside_maps[0, 1, 3, 3] = 5.0
    target, has = torch.tensor([1]), torch.tensor([True])
    assert guidance_loss(inside_maps, target, outside, has).item() == pytest.approx(0.0, abs=1e-6)
    assert guidance_loss(outside_maps, target, outside, has).item() == pytest.approx(1.0, abs=1e-6)
    assert guidance_loss(outside_maps, target, outside, torch.tensor([False])).item() == 0.0  # no outline, no loss


def test_dilation_grows_what_counts_as_inside():
    outline = torch.zeros(1, 1, 64, 64)
    outline[..., 30:34, 30:34] = 1
    assert outside_share(outline, (8, 8), dilation=8).mean() < outside_share(outline, (8, 8), dilation=0).mean()
