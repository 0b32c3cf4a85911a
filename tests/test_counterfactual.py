"""Counterfactual slices: the tumour goes, the rest of the head stays."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from core.counterfactual import REMOVAL_METHODS, dilate, fill_region, random_region, remove_tumour
from tests.conftest import head_phantom


def lesion_of(image: np.ndarray) -> np.ndarray:
    """head_phantom()'s lesion: the disc it draws at (0.6, 0.4) of the side."""
    size = image.shape[0]
    disc = np.zeros(image.shape, np.uint8)
    cv2.circle(disc, (int(size * 0.6), int(size * 0.4)), max(2, size // 12), 1, -1)
    return disc.astype(bool)


@pytest.mark.parametrize("method", REMOVAL_METHODS)
def test_removal_changes_the_tumour_and_leaves_the_head_outside_the_margin_alone(method):
    image = head_phantom(128)
    lesion = lesion_of(image)
    removed = remove_tumour(image, lesion, method, margin=3)

    assert removed.dtype == image.dtype and removed.shape == image.shape
    # The bright lesion becomes brain-like: close to the brain's 0.45, far from the lesion's 1.0.
    assert abs(float(removed[lesion].mean()) - 0.45) < 0.12
    untouched = ~dilate(lesion, 3)
    assert np.array_equal(removed[untouched], image[untouched])


def test_mirror_uses_the_other_hemisphere_on_a_symmetric_slice_and_inpaints_otherwise():
    image = head_phantom(128, seed=1)
    lesion = lesion_of(image)
    healthy = np.where(lesion, 0.45, image)
    symmetric = np.where(lesion, 1.0, np.maximum(healthy, healthy[:, ::-1])).astype(np.float32)  # lesion on one side
    mirrored = remove_tumour(symmetric, lesion, "mirror", margin=2)
    core = lesion & ~dilate(~lesion, 2)  # well inside the lesion, where the blend weight is near 1
    assert np.abs(mirrored[core] - symmetric[:, ::-1][core]).mean() < 0.05

    lopsided = symmetric.copy()
    lopsided[:, :40] = 0  # no longer left-right symmetric: inpainting instead of mirroring
    assert np.array_equal(
        remove_tumour(lopsided, lesion, "mirror", margin=2), remove_tumour(lopsided, lesion, "telea", 2)
    )


def test_uint8_in_uint8_out_and_an_empty_outline_changes_nothing():
    image = np.uint8(head_phantom(96) * 255)
    assert remove_tumour(image, lesion_of(image / 255.0), "telea").dtype == np.uint8
    assert np.array_equal(remove_tumour(image, np.zeros(image.shape, bool), "telea"), image)
    with pytest.raises(ValueError, match="Unknown removal method"):
        remove_tumour(image, lesion_of(image / 255.0), "blur")


def test_random_region_keeps_the_shape_inside_the_head_off_the_tumour_and_fill_uses_the_head_median():
    image = head_phantom(128)
    lesion = lesion_of(image)
    head = image > 0.2
    moved = random_region(lesion, head, np.random.default_rng(0))
    assert moved is not None and moved.sum() == lesion.sum()
    assert head[moved].all() and not (moved & lesion).any()

    filled = fill_region(image, lesion, head, "median")
    assert np.allclose(filled[lesion], np.median(image[head & ~lesion]))
    assert np.array_equal(filled[~lesion], image[~lesion])
    assert random_region(np.ones((8, 8), bool), np.ones((8, 8), bool), np.random.default_rng(0)) is None


def test_controls_fill_the_tumours_shape_elsewhere_and_leave_the_tumour_and_the_counterfactuals_alone():
    from core.training.data import make_counterfactuals

    images = np.stack([np.uint8(head_phantom(128, seed=s) * 255) for s in range(6)])
    lesion = lesion_of(images[0])
    outlines = np.stack([lesion] * 5 + [np.zeros_like(lesion)])  # the last image has no outline
    masked = np.where(images > 20, images, 0).astype(np.uint8)
    indices = np.arange(6)
    plain_only = make_counterfactuals(images, masked, outlines, indices, seed=0)
    with_controls = make_counterfactuals(images, masked, outlines, indices, seed=0, controls=True)
    assert plain_only.has_control is None
    assert np.array_equal(plain_only.plain, with_controls.plain) and plain_only.methods == with_controls.methods
    assert with_controls.has_control.tolist() == [True] * 5 + [False]

    margin = max(1, round(0.02 * 128))
    near_tumour = dilate(lesion, 2 * margin)
    for i in range(5):
        changed = with_controls.control_plain[i] != images[i]
        assert changed.sum() > lesion.sum() // 2  # a fill about the tumour's size...
        assert not (changed & near_tumour).any()  # ...away from the tumour, which stays as it was
        assert not (changed & near_tumour[:, ::-1]).any()  # and from its mirror image
        assert (masked[i][changed] > 0).all()  # inside the head
        assert np.array_equal(with_controls.control_masked[i] > 0, masked[i] > 0)
