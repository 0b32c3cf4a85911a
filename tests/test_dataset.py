"""Dataset folders: grouped hold-out and folds, and the shrunk copy for an upload."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from core.annotations import annotation_path, load_outline
from core.dataset import grouped_folds, grouped_holdout, list_split, shrink_copy
from tests.conftest import CLASSES, SHARED_DATA, copy_shared_slice, needs_data


@needs_data
def test_grouped_holdout_keeps_groups_whole():
    records = list_split(SHARED_DATA, "train") + list_split(SHARED_DATA, "val")
    assert_groups_whole_and_classes_balanced(records, grouped_holdout(records, 0.15, seed=0))


def assert_groups_whole_and_classes_balanced(records, held) -> None:
    """No group on both sides; each class sends 10-30 % of its images to the held-out side."""
    held_groups = {r.group for r, h in zip(records, held) if h}
    assert not held_groups & {r.group for r, h in zip(records, held) if not h}
    for label in CLASSES:
        in_class = [h for r, h in zip(records, held) if r.label == label]
        assert 0.1 < sum(in_class) / len(in_class) < 0.3


@needs_data
def test_grouped_folds_hold_each_image_out_once_and_keep_groups_whole():
    records = list_split(SHARED_DATA, "train") + list_split(SHARED_DATA, "val")
    folds = grouped_folds(records, 5, seed=0)
    assert (np.sum(folds, axis=0) == 1).all()
    for held in folds:
        assert_groups_whole_and_classes_balanced(records, held)


@needs_data
def test_shrunk_copy_keeps_names_labels_and_groups_with_smaller_images(small_dataset, tmp_path):
    first_glioma = sorted((small_dataset / "train" / "glioma").iterdir())[0].name
    (small_dataset / "metadata.csv").write_text(f"image,group\ntrain/glioma/{first_glioma},patient-7\n")
    try:
        count = shrink_copy(small_dataset, tmp_path / "copy", ["train"], max_side=100, quality=85)
        original, copied = list_split(small_dataset, "train"), list_split(tmp_path / "copy", "train")
    finally:
        (small_dataset / "metadata.csv").unlink()
    assert count == len(original) == len(copied) == 24
    assert copied == original and copied[0].group == "patient-7"  # same paths, labels and groups
    assert not (tmp_path / "copy" / "test").exists()
    for record in copied:
        with Image.open(tmp_path / "copy" / record.image) as image:
            assert max(image.size) <= 100 and image.format == "JPEG"


@needs_data
def test_shrunk_copy_scales_each_outline_with_its_image(tmp_path):
    (tmp_path / "data").mkdir()
    root = copy_shared_slice(tmp_path / "data", {"train": 2})
    shrink_copy(root, tmp_path / "copy", ["train"], max_side=128, quality=95)
    outlined = [record for record in list_split(root, "train") if annotation_path(root, record.image).is_file()]
    assert outlined and all(annotation_path(tmp_path / "copy", r.image).is_file() for r in outlined)
    for record in outlined:
        with Image.open(root / record.image) as image:
            big = load_outline(root, record.image, image.size[::-1])
        with Image.open(tmp_path / "copy" / record.image) as image:
            small = load_outline(tmp_path / "copy", record.image, image.size[::-1])
        assert small.kind == big.kind and small.mask.shape[0] <= 128
        resized = cv2.resize(big.mask.astype(np.uint8), small.mask.shape[::-1], interpolation=cv2.INTER_AREA) > 0.5
        overlap = (resized & small.mask).sum() / (resized | small.mask).sum()
        assert overlap > 0.8, (record.image, overlap)


def test_template_slices_stored_beside_a_shrunk_copy_match_nilearns(tmp_path, monkeypatch):
    import sys

    from core.config import Preprocessing
    from core.training.data import TEMPLATE_FILE, save_template_planes, template_slices

    settings = Preprocessing(input_size=64)
    assert save_template_planes(tmp_path).name == TEMPLATE_FILE
    from_nilearn = template_slices(settings)
    monkeypatch.setitem(sys.modules, "nilearn.datasets", None)  # as on a machine without nilearn
    stored = template_slices(settings, tmp_path)
    assert len(stored[0]) == len(from_nilearn[0]) == 48
    for ours, theirs in zip(stored, from_nilearn):
        assert np.array_equal(ours, theirs)
    with pytest.raises(ImportError):
        template_slices(settings, tmp_path / "elsewhere")
