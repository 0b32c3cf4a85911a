from __future__ import annotations

import numpy as np

from core.brain_mask import detect_brain_mask, mask_outline
from tests.conftest import SHARED_DATA, head_phantom, needs_data


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


def test_several_heads_side_by_side_are_told_apart_from_one():
    """A screenshot of a viewer's row or grid of slices: the largest head is used, and the
    warning says how many there are and which one was used."""
    import cv2

    smaller = cv2.resize(head_phantom(200, seed=1), (180, 180))
    row = np.hstack([np.pad(smaller, 10), head_phantom(200, seed=2)])
    result = detect_brain_mask(row)
    assert result.found and result.mask[:, 200:].sum() == result.mask.sum()  # the right-hand, larger head
    assert "2 separate heads" in result.several and "Only the largest, on the right, was used" in result.several
    grid = detect_brain_mask(np.vstack([np.hstack([head_phantom(128), head_phantom(128)])] * 2))
    assert not grid.found and "4 separate heads" in grid.several and "saw them all at once" in grid.several
    assert detect_brain_mask(head_phantom(256)).several == ""


@needs_data
def test_no_dataset_slice_is_taken_for_several_heads():
    from core.image_input import load_image

    paths = sorted(SHARED_DATA.glob("*/*/*.jpg"))[::5]
    warned = [p.name for p in paths if detect_brain_mask(load_image(p.read_bytes(), p.name).pixels).several]
    assert len(paths) > 600 and not warned, warned
