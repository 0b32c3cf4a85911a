from __future__ import annotations

import json

import numpy as np
import pytest

from core.annotations import annotation_path, load_outline, outline_from_shapes
from core.localisation import (
    bootstrap_mean,
    localisation_metrics,
    mass_inside,
    otsu_threshold,
    pointing_game,
    region_iou,
)


def square(shape=(50, 50), top=10, left=10, size=10) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[top : top + size, left : left + size] = True
    return mask


def test_perfect_overlap():
    tumour = square()
    heatmap = tumour.astype(np.float32)
    metrics = localisation_metrics(heatmap, tumour, threshold=0.5)
    assert metrics["iou"] == 1.0 and metrics["iou_otsu"] == 1.0
    assert metrics["pointing_game"] is True and metrics["mass_inside_tumour"] == 1.0


def test_no_overlap():
    tumour = square(top=0, left=0)
    heatmap = square(top=30, left=30).astype(np.float32)
    metrics = localisation_metrics(heatmap, tumour, threshold=0.5)
    assert metrics["iou"] == 0.0 and metrics["pointing_game"] is False and metrics["mass_inside_tumour"] == 0.0


def test_partial_overlap_hand_computed():
    tumour = square(top=10, left=10, size=10)  # 100 px
    heatmap = square(top=10, left=15, size=10).astype(np.float32) * 0.8  # 100 px, 50 shared
    heatmap[15, 17] = 1.0  # peak inside both
    assert region_iou(heatmap, tumour, 0.5) == pytest.approx(50 / 150)
    assert pointing_game(heatmap, tumour)
    inside = 49 * 0.8 + 1.0
    assert mass_inside(heatmap, tumour) == pytest.approx(inside / (99 * 0.8 + 1.0))


def test_empty_masks_and_heatmaps():
    empty = np.zeros((20, 20), dtype=bool)
    zero = np.zeros((20, 20), dtype=np.float32)
    assert region_iou(zero, empty, 0.5) == 0.0
    assert pointing_game(zero, square((20, 20), 0, 0, 5)) is False
    assert mass_inside(zero, square((20, 20), 0, 0, 5)) == 0.0
    assert region_iou(square((20, 20)).astype(np.float32), empty, 0.5) == 0.0


def test_bootstrap_interval_contains_mean():
    result = bootstrap_mean([0.1, 0.2, 0.3, 0.4, None, float("nan")])
    assert result["n"] == 4 and result["mean"] == pytest.approx(0.25)
    assert result["ci95"][0] <= 0.25 <= result["ci95"][1]
    assert bootstrap_mean([])["mean"] is None


# --- LabelMe ---------------------------------------------------------------


def write(root, stem, content):
    (root / "annotations").mkdir(exist_ok=True)
    path = root / "annotations" / f"{stem}.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def test_polygon_preferred_over_rectangle(tmp_path):
    write(tmp_path, "img", {"shapes": [
        {"shape_type": "rectangle", "points": [[0, 0], [49, 49]]},
        {"shape_type": "polygon", "points": [[10, 10], [20, 10], [20, 20], [10, 20]]},
    ], "imagePath": "../test/glioma/img.jpg"})  # fmt: skip
    outline = load_outline(tmp_path, "test/glioma/img.jpg", (50, 50))
    assert outline.kind == "polygon"
    assert outline.mask[15, 15] and not outline.mask[30, 30]
    assert outline.mask.sum() == 11 * 11


def test_rectangle_when_no_polygon(tmp_path):
    write(tmp_path, "img", {"shapes": [{"shape_type": "rectangle", "points": [[30, 5], [10, 15]]}]})
    outline = load_outline(tmp_path, "train/x/img.png", (50, 50))
    assert outline.kind == "rectangle" and outline.mask.sum() == 21 * 11


def test_missing_and_malformed(tmp_path):
    assert load_outline(tmp_path, "test/a/none.jpg", (50, 50)).reason == "no annotation"
    write(tmp_path, "bad", "{not json")
    bad = load_outline(tmp_path, "test/a/bad.jpg", (50, 50))
    assert bad.mask is None and "malformed" in bad.reason
    write(tmp_path, "odd", {"shapes": "nonsense"})
    assert load_outline(tmp_path, "test/a/odd.jpg", (50, 50)).mask is None
    write(tmp_path, "outside", {"shapes": [{"shape_type": "polygon", "points": [[900, 900], [950, 900], [950, 950]]}]})
    assert "outside the image" in load_outline(tmp_path, "test/a/outside.jpg", (50, 50)).reason


def test_image_path_outside_the_dataset_is_never_followed(tmp_path):
    secret = tmp_path.parent / "secret.json"
    secret.write_text(json.dumps({"shapes": [{"shape_type": "rectangle", "points": [[0, 0], [9, 9]]}]}))
    write(tmp_path, "img", {"shapes": [], "imagePath": str(secret), "imageData": None})
    write(tmp_path, "img2", {"shapes": [], "imagePath": "../../../../etc/passwd"})
    assert load_outline(tmp_path, "test/a/img.jpg", (50, 50)).mask is None
    assert load_outline(tmp_path, "test/a/img2.jpg", (50, 50)).mask is None
    # Image names with folders cannot steer the lookup out of ROOT/annotations either.
    assert annotation_path(tmp_path, "../../secret.jpg") == tmp_path / "annotations" / "secret.json"


def test_outline_from_no_shapes():
    assert outline_from_shapes([], (10, 10)).mask is None


def test_otsu_is_taken_inside_the_head_not_over_the_background_zeros():
    heatmap = np.zeros((40, 40), dtype=np.float32)
    head = np.zeros((40, 40), dtype=bool)
    head[5:35, 5:35] = True
    heatmap[head] = 0.4  # a dim head
    heatmap[10:15, 10:15] = 0.9  # and a hot spot in it
    assert 0.4 <= otsu_threshold(heatmap, head) < 0.9  # splits the head from the hot spot (region: above it)
    assert otsu_threshold(heatmap) < 0.4  # over the whole image: between background and head
    metrics = localisation_metrics(heatmap, heatmap > 0.8, 0.5, head=head)
    assert metrics["iou_otsu"] == 1.0 and metrics["iou"] == 1.0


def test_uploaded_labelme_outline_is_scaled_or_refused_with_a_reason():
    import json

    from core.annotations import outline_from_labelme

    square = {"shape_type": "polygon", "points": [[10, 10], [30, 10], [30, 30], [10, 30]]}
    drawn_here = json.dumps({"shapes": [square], "imageHeight": 50, "imageWidth": 50}).encode()
    drawn_twice_as_large = json.dumps({"shapes": [square], "imageHeight": 100, "imageWidth": 100}).encode()
    here, halved = outline_from_labelme(drawn_here, (50, 50)), outline_from_labelme(drawn_twice_as_large, (50, 50))
    assert here.mask[20, 20] and not here.mask[40, 40] and here.mask.sum() == 21 * 21
    assert halved.mask[10, 10] and not halved.mask[20, 20]  # points scaled by one half
    wrong_shape = json.dumps({"shapes": [square], "imageHeight": 50, "imageWidth": 80}).encode()
    assert "drawn on a 80x50 image" in outline_from_labelme(wrong_shape, (50, 50)).reason
    assert "not a LabelMe outline" in outline_from_labelme(b"\xff\xfe not json", (50, 50)).reason
    assert outline_from_labelme(b'{"shapes": []}', (50, 50)).mask is None


def test_dataset_outline_is_read_like_an_upload_scaled_to_the_slice(tmp_path):
    """A dataset's annotation drawn on a larger copy (a shrunk upload, say) is scaled by its own
    imageHeight/imageWidth, and one of another aspect ratio is refused with the reason."""
    square = {"shape_type": "polygon", "points": [[20, 20], [60, 20], [60, 60], [20, 60]]}
    path = annotation_path(tmp_path, "train/glioma/a.jpg")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"shapes": [square], "imageHeight": 100, "imageWidth": 100}))
    halved = load_outline(tmp_path, "train/glioma/a.jpg", (50, 50))
    assert halved.mask[15, 15] and not halved.mask[35, 35] and abs(int(halved.mask.sum()) - 21 * 21) <= 21
    assert load_outline(tmp_path, "train/glioma/a.jpg", (100, 100)).mask[50, 50]  # drawn at this size
    assert "drawn on a 100x100 image" in load_outline(tmp_path, "train/glioma/a.jpg", (50, 80)).reason
    path.write_text("[1, 2]")
    assert "malformed annotation a.json" in load_outline(tmp_path, "train/glioma/a.jpg", (50, 50)).reason


def test_an_outline_drawn_on_a_slice_as_read_follows_the_trim_of_its_empty_border():
    import json

    from core.annotations import outline_from_labelme

    square = {"shape_type": "polygon", "points": [[110, 120], [130, 120], [130, 140], [110, 140]]}
    drawn = json.dumps({"shapes": [square], "imageHeight": 300, "imageWidth": 300}).encode()
    kept = outline_from_labelme(drawn, (60, 80), trim=(100, 90, 300, 300))  # rows 100-159, columns 90-169
    assert kept.mask.shape == (60, 80) and kept.mask[30, 30] and kept.mask.sum() == 21 * 21
    assert not kept.mask[5, 5]
    assert "part of the image that was kept" in outline_from_labelme(drawn, (10, 10), trim=(0, 0, 300, 300)).reason
