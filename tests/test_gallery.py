"""The Gallery's logic: choosing and sorting rows, finding the dataset, drawing a card's panels."""

from __future__ import annotations

import numpy as np
import pytest

import core.gallery
from core.evaluation_store import PredictionRow
from core.gallery import find_dataset, panels, select, splits_in
from tests.conftest import encode, head_phantom


def row(image: str, label: str, predicted: str, confidence: float, **columns) -> PredictionRow:
    outcome = "TP" if label == predicted else "FN"
    return PredictionRow(image, label, predicted, confidence, (confidence, 1 - confidence), outcome, **columns)


def test_select_outcomes_and_sorting():
    rows = [
        row("a", "glioma", "glioma", 0.9, iou=0.1),
        row("b", "glioma", "glioma", 0.6, iou=0.5),
        row("c", "glioma", "notumor", 0.7),
        row("d", "notumor", "glioma", 0.8),
    ]
    assert [r.image for r in select(rows, "glioma", "TP", "confidence, high first")] == ["a", "b"]
    assert [r.image for r in select(rows, "glioma", "TP", "IoU, high first")] == ["b", "a"]
    assert [r.image for r in select(rows, "glioma", "TP", "confidence, low first")] == ["b", "a"]
    assert [r.image for r in select(rows, "glioma", "FN", "confidence, high first")] == ["c"]
    assert [r.image for r in select(rows, "glioma", "FP", "confidence, high first")] == ["d"]
    with pytest.raises(ValueError):
        select(rows, "glioma", "TN", "confidence, high first")


def test_find_dataset_order(tmp_path, monkeypatch):
    field, env = tmp_path / "field", tmp_path / "env"
    for root in (field, env):
        (root / "test" / "glioma").mkdir(parents=True)
    (env / "annotations").mkdir()
    monkeypatch.setattr(core.gallery, "DEFAULT_DATA_ROOTS", ())
    monkeypatch.setenv("BRAIN_XAI_DATA", str(env))
    assert find_dataset(str(field)) == field.resolve()
    assert find_dataset("") == env.resolve()
    assert find_dataset(str(tmp_path / "missing")) is None  # a typed folder is never swapped for another
    monkeypatch.delenv("BRAIN_XAI_DATA")
    assert find_dataset("") is None
    assert splits_in(env) == ["test"]


def test_panels_draw_the_tumour_outline_in_green_and_the_region_in_white(tmp_path):
    (tmp_path / "test" / "glioma").mkdir(parents=True)
    (tmp_path / "test" / "glioma" / "g.png").write_bytes(encode(head_phantom(128), "PNG"))
    (tmp_path / "annotations").mkdir()
    shape = {"shape_type": "rectangle", "points": [[20, 20], [60, 60]]}
    (tmp_path / "annotations" / "g.json").write_text(__import__("json").dumps({"shapes": [shape]}))
    small = np.zeros((128, 128), dtype=np.uint8)
    small[80:110, 80:110] = 255  # the heatmap's region, away from the tumour
    card = panels(tmp_path, row("test/glioma/g.png", "glioma", "glioma", 0.9), small, threshold=0.5)
    assert card.has_outline and card.annotation[40, 40].tolist() == [255, 255, 255]
    assert card.annotation[100, 100].tolist() == [0, 0, 0]
    colours = {tuple(pixel) for pixel in card.overlay.reshape(-1, 3)}
    assert (0, 255, 0) in colours and (255, 255, 255) in colours
    assert card.original.dtype == np.uint8 and card.original.shape == (128, 128, 3)
