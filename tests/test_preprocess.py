from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from core.config import Preprocessing
from core.preprocess import head_box, heatmap_to_slice, prepare_for_model, prepare_slice
from tests.conftest import head_phantom


@settings(max_examples=200, deadline=None)
@given(
    height=st.integers(8, 120), width=st.integers(8, 120), seed=st.integers(0, 10_000),
    fill=st.floats(0.0, 0.3), margin=st.sampled_from([0.0, 0.04, 0.2]),
)  # fmt: skip
def test_head_box_is_the_masks_bounding_box_plus_margin(height, width, seed, fill, margin):
    mask = np.random.default_rng(seed).random((height, width)) < fill
    top, bottom, left, right = head_box(np.ones((height, width), np.float32), mask, margin)
    if not mask.any():
        assert (top, bottom, left, right) == (0, height, 0, width)
        return
    rows, cols = np.nonzero(mask)
    pad = int(round(margin * max(height, width)))
    assert (top, bottom) == (max(0, rows.min() - pad), min(height, rows.max() + 1 + pad))
    assert (left, right) == (max(0, cols.min() - pad), min(width, cols.max() + 1 + pad))


def test_a_hot_spot_maps_back_to_where_it_was_in_the_slice():
    settings = Preprocessing(input_size=64)
    image = np.zeros((120, 200), np.float32)
    image[:, 50:170] = head_phantom(120)  # head off-centre in a wide slice
    prepared = prepare_for_model(image, settings)
    heat = np.zeros_like(image)
    heat[40:60, 90:110] = 1.0
    heat_square, box = prepare_slice(heat, settings, prepared.brain.mask)  # the model's view of the spot
    assert box == prepared.box
    mapped = heatmap_to_slice(heat_square, box, image.shape)
    peak_row, peak_col = np.unravel_index(np.argmax(mapped), mapped.shape)
    assert 40 <= peak_row < 60 and 90 <= peak_col < 110
    assert mapped.shape == image.shape and mapped[:, : box.left].max() == 0.0


def test_a_light_background_is_made_black_as_in_training_and_a_dark_one_left_alone():
    """Screenshots and scanned films put the head on a white page; the model saw only black
    backgrounds, and the head detector took the page for the head (coverage over 90 %)."""
    from core.preprocess import without_light_frame

    settings = Preprocessing(input_size=64)
    head = head_phantom(128)
    on_black, on_white = np.pad(head, 40), np.pad(head, 40, constant_values=1.0)
    assert without_light_frame(on_black) is on_black  # the training data's case: untouched
    cleaned = without_light_frame(on_white)
    np.testing.assert_allclose(cleaned[:40], 0.0)
    np.testing.assert_allclose(cleaned[40:-40, 40:-40], head)  # the head itself is kept
    black, white = prepare_for_model(on_black, settings), prepare_for_model(on_white, settings)
    assert white.brain.found and abs(white.brain.coverage - black.brain.coverage) < 0.01
    assert np.abs(white.square - black.square).max() < 1e-6

    # A head cropped tightly, its bright scalp at the edge, is not a frame; nor is an even light image.
    tight, even = head[10:-10, 10:-10], np.full((64, 64), 0.8)
    assert without_light_frame(tight) is tight and without_light_frame(even) is even
