"""Dataset folders: grouped hold-out and folds, and the shrunk copy for an upload."""

from __future__ import annotations

import numpy as np
from PIL import Image

from core.dataset import grouped_folds, grouped_holdout, list_split, shrink_copy
from tests.conftest import CLASSES, SHARED_DATA, needs_data


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
