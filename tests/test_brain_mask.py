from __future__ import annotations

import numpy as np

from core.brain_mask import detect_brain_mask, mask_outline
from tests.conftest import head_phantom


def test_phantom_head_is_found_with_holes_filled():
    image = head_phantom(256)
    image[100:110, 100:110] = 0.0  # a dark hole inside the head
    result = detect_brain_mask(image)
    assert result.found
    assert result.mask[128, 128] and result.mask[105, 105]  # inside, hole filled
    assert not result.mask[2, 2]  # background corner
    assert 0.2 < result.coverage < 0.9
    assert len(mask_outline(result.mask)) == 1


def test_tiny_object_falls_back_with_reason():
    image = np.zeros((256, 256), dtype=np.float32)
    image[120:140, 120:140] = 1.0
    result = detect_brain_mask(image)
    assert not result.found and "only" in result.reason and result.coverage < 0.2


def test_full_frame_image_falls_back_with_reason():
    image = np.random.default_rng(0).uniform(0.5, 1.0, (256, 256)).astype(np.float32)
    result = detect_brain_mask(image)
    assert not result.found and "no background" in result.reason


def test_blank_image_has_no_mask():
    result = detect_brain_mask(np.zeros((64, 64), dtype=np.float32))
    assert not result.found
