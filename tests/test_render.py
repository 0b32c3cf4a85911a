from __future__ import annotations

import cv2
import numpy as np

from core.render import heatmap_figure, heatmap_rgb, overlay, png_bytes, probability_figure, threshold_region


def test_threshold_region_area_and_contour():
    heatmap = np.zeros((100, 100), dtype=np.float32)
    heatmap[20:40, 30:80] = 1.0
    heatmap[60:70, 10:20] = 0.4
    region = threshold_region(heatmap, 0.5)
    assert region.area_fraction == 20 * 50 / 100**2
    assert len(region.contours) == 1
    assert threshold_region(heatmap, 0.3).area_fraction == (20 * 50 + 10 * 10) / 100**2
    assert len(threshold_region(heatmap, 0.3).contours) == 2


def test_empty_heatmap_has_empty_region():
    region = threshold_region(np.zeros((50, 50), dtype=np.float32), 0.0)
    assert region.area_fraction == 0.0 and region.contours == ()


def test_overlay_opacity_blends():
    image = np.full((40, 40), 0.5, dtype=np.float32)
    heatmap = np.ones((40, 40), dtype=np.float32)
    invisible = overlay(image, heatmap, opacity=0.0)
    assert np.allclose(invisible, 128, atol=1)  # just the grey image
    half = overlay(image, heatmap, opacity=0.5).astype(int)
    assert np.abs(half - (heatmap_rgb(heatmap).astype(int) + 128) / 2).max() <= 1
    full = overlay(image, heatmap, opacity=1.0)
    np.testing.assert_array_equal(full, heatmap_rgb(heatmap))
    assert full.dtype == np.uint8 and full.shape == (40, 40, 3)


def test_png_round_trip():
    picture = heatmap_rgb(np.linspace(0, 1, 64 * 64).reshape(64, 64).astype(np.float32))
    decoded = cv2.cvtColor(
        cv2.imdecode(np.frombuffer(png_bytes(picture), np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB
    )
    np.testing.assert_array_equal(decoded, picture)


def test_figures_carry_values_and_colour_bar():
    heatmap = np.random.default_rng(0).random((512, 512)).astype(np.float32)
    figure = heatmap_figure(heatmap)
    trace = figure.data[0]
    assert trace.zmax == 1 and trace.colorbar.title.text
    assert np.asarray(trace.z).shape == (256, 256)
    bars = probability_figure(["a", "b"], [0.25, 0.75], highlight=1)
    assert list(bars.data[0].x) == [0.25, 0.75]


def test_tumour_outline_has_a_dark_halo_so_it_shows_on_any_colour_map():
    from core.render import OUTLINE_RGB, explanation_panels

    image = np.full((200, 200), 0.5, dtype=np.float32)
    tumour = np.zeros((200, 200), dtype=bool)
    tumour[60:140, 60:140] = True
    heatmap = np.full((200, 200), 0.5, dtype=np.float32)  # jet's green, the outline's own colour
    drawn = explanation_panels(image, heatmap, tumour_mask=tumour).overlay
    row = drawn[100, 50:75]
    green = np.flatnonzero((row == OUTLINE_RGB).all(axis=1))
    black = np.flatnonzero((row == 0).all(axis=1))
    assert green.size and black.size and black.min() < green.min()  # black beside the green line
