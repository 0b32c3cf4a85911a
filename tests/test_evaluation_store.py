"""The evaluation folder: typed rows written and read back exactly, and the disk cache."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.evaluation_store import (
    CACHE_VARIABLE,
    DEFAULT_CACHE_DIR,
    IOU_THRESHOLDS,
    Evaluation,
    PredictionRow,
    at_threshold,
    cache_dir,
    cached_summaries,
    localisation_summary,
    outcome_of,
    read_evaluation,
    write_evaluation,
)

LABELS = ["glioma", "notumor"]


def rows() -> list[PredictionRow]:
    return [
        PredictionRow("test/glioma/a.jpg", "glioma", "glioma", 0.8123456789012345, (0.8123456789012345, 0.18765432),
                      "TP", 0.25, "polygon", 0.4, 0.3, True, 0.2),
        PredictionRow("test/glioma/b.jpg", "glioma", "notumor", 0.6, (0.4, 0.6), "FN", 0.5, "rectangle", 0.0, 0.1,
                      False, 0.05),
        PredictionRow("test/notumor/c.jpg", "notumor", "notumor", 0.9, (0.1, 0.9), "TP", 0.1, "none",
                      familiarity=0.03, unfamiliar=True, uncertain=False),
    ]  # fmt: skip


def evaluation(with_heatmaps: bool = True) -> Evaluation:
    summary = {"per_class": {name: {} for name in LABELS}, "split": "test", "data": "/data"}
    if not with_heatmaps:
        plain = [PredictionRow(r.image, r.label, r.predicted, r.confidence, r.probabilities, r.outcome) for r in rows()]
        return Evaluation(plain, summary, {}, {})
    summary["heatmaps"] = {"method": "Grad-CAM", "threshold": 0.5}
    summary["localisation"] = localisation_summary(rows(), LABELS)
    curves = {r.image: np.linspace(0.9, 0.0, len(IOU_THRESHOLDS)).astype(np.float32) for r in rows()[:2]}
    heatmaps = {r.image: np.full((8, 8), i, dtype=np.uint8) for i, r in enumerate(rows())}
    return Evaluation(rows(), summary, heatmaps, curves)


def test_rows_round_trip_exactly_through_predictions_csv(tmp_path):
    written = evaluation()
    write_evaluation(tmp_path, written)
    header = (tmp_path / "predictions.csv").read_text().splitlines()[0]
    assert header == ("image,label,predicted,confidence,p_glioma,p_notumor,outcome,mass_outside_brain,annotation,"
                      "iou,iou_otsu,pointing_game,mass_inside_tumour,familiarity,unfamiliar,uncertain")  # fmt: skip
    back = read_evaluation(tmp_path)
    assert back.rows == written.rows  # floats, booleans and missing values come back as written
    assert back.summary == written.summary
    assert np.array_equal(back.heatmaps["test/glioma/b.jpg"], written.heatmaps["test/glioma/b.jpg"])
    assert set(back.iou_curves) == {"test/glioma/a.jpg", "test/glioma/b.jpg"}


def test_without_heatmaps_only_the_prediction_columns_are_written(tmp_path):
    write_evaluation(tmp_path, evaluation(with_heatmaps=False))
    assert (tmp_path / "predictions.csv").read_text().splitlines()[0] == (
        "image,label,predicted,confidence,p_glioma,p_notumor,outcome,familiarity,unfamiliar,uncertain"
    )
    assert not (tmp_path / "heatmaps.npz").exists()
    assert read_evaluation(tmp_path).rows[2].iou is None


def test_localisation_summary_skips_missing_values_and_counts_booleans():
    summary = localisation_summary(rows(), LABELS)
    assert summary["all"]["iou"]["n"] == 2 and summary["all"]["iou"]["mean"] == pytest.approx(0.2)
    assert summary["all"]["pointing_game"]["mean"] == pytest.approx(0.5)
    assert summary["per_class"]["notumor"]["iou"]["n"] == 0
    assert summary["per_outcome"]["FN"]["mass_outside_brain"]["mean"] == pytest.approx(0.5)


def test_at_threshold_reads_the_stored_curves():
    moved = at_threshold(evaluation(), 0.05)  # the first step: IoU 0.9 on both outlined images
    assert [r.iou for r in moved.rows] == [pytest.approx(0.9), pytest.approx(0.9), None]
    assert moved.summary["localisation"]["all"]["iou"]["mean"] == pytest.approx(0.9)
    assert moved.summary["heatmaps"]["threshold"] == 0.05
    assert evaluation().rows[0].iou == 0.4  # the original is not changed


def test_cache_location_and_discovery(tmp_path, monkeypatch):
    monkeypatch.delenv(CACHE_VARIABLE, raising=False)
    assert cache_dir() == DEFAULT_CACHE_DIR
    monkeypatch.setenv(CACHE_VARIABLE, str(tmp_path))
    assert cache_dir() == tmp_path
    for key, split, threshold in (("a", "test", 0.5), ("b", "val", 0.5), ("c", "test", 0.3)):
        (tmp_path / key).mkdir()
        summary = {"split": split, "data": str(tmp_path.resolve()), "heatmaps": {"threshold": threshold}}
        (tmp_path / key / "summary.json").write_text(json.dumps(summary))
    found = cached_summaries(tmp_path, tmp_path, "test", 0.5)
    assert [(s["split"], s["heatmaps"]["threshold"]) for s in found] == [("test", 0.5)]


def test_outcomes_say_which_way_a_slice_was_wrong():
    assert outcome_of("glioma", "glioma") == "TP"
    assert outcome_of("notumor", "pituitary") == "FP"  # a healthy slice called a tumour
    assert outcome_of("meningioma", "notumor") == "FN"  # a tumour missed
    assert outcome_of("glioma", "meningioma") == "wrong type"


def test_localisation_is_reported_for_correct_slices_and_for_all():
    summary = localisation_summary(rows(), LABELS)
    assert summary["correct"]["iou"]["n"] == 1 and summary["correct"]["iou"]["mean"] == pytest.approx(0.4)
    assert summary["all"]["iou"]["n"] == 2
    assert set(summary["per_outcome"]) == {"TP", "FP", "FN", "wrong type"}
