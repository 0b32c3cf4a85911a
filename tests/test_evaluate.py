"""Evaluation of a split: errors, heatmaps and localisation, and the disk cache."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest

from core.cli import main
from core.evaluation_store import outcome_of
from core.explanation import ExplainSettings
from tests.conftest import CLASSES, SHARED_DATA, needs_data


def test_evaluate_errors_are_clear(use_tiny_checkpoints, tmp_path, capsys):
    assert main(["evaluate", "--checkpoint", "tiny_convnext", "--data", str(tmp_path), "--split", "test",
                 "--out", str(tmp_path / "o")]) == 2  # fmt: skip
    assert "No folder" in capsys.readouterr().err
    (tmp_path / "test" / "astrocytoma").mkdir(parents=True)
    assert main(["evaluate", "--checkpoint", "tiny_convnext", "--data", str(tmp_path), "--split", "test",
                 "--out", str(tmp_path / "o")]) == 2  # fmt: skip
    assert "unknown to the model" in capsys.readouterr().err


@needs_data
def test_evaluate_with_heatmaps_and_cache(use_tiny_checkpoints, small_dataset, tmp_path):
    from core.evaluate import cached_evaluation, heatmap_settings
    from core.evaluation_store import at_threshold, cache_key, read_evaluation

    annotations = small_dataset / "annotations"
    if not annotations.exists():
        annotations.mkdir()
        for path in (small_dataset / "test").rglob("*.jpg"):
            source = SHARED_DATA / "annotations" / f"{path.stem}.json"
            if source.is_file():
                shutil.copy(source, annotations / source.name)
    settings = ExplainSettings("Grad-CAM", None, None, True, True)
    cache = tmp_path / "cache"
    folder = cached_evaluation("tiny_convnext", small_dataset, "test", cache, settings=settings, threshold=0.5,
                               batch_size=4, progress=False)  # fmt: skip
    summary = json.loads((folder / "summary.json").read_text())
    rows = list(csv.DictReader((folder / "predictions.csv").open()))
    tumour_rows = [r for r in rows if r["label"] != "notumor"]
    assert tumour_rows and all(r["annotation"] in ("polygon", "rectangle") for r in tumour_rows)
    assert all(0 <= float(r["iou"]) <= 1 and r["pointing_game"] in ("True", "False") for r in tumour_rows)
    assert all(r["iou"] == "" for r in rows if r["label"] == "notumor")  # no outline, no IoU
    assert all(0 <= float(r["mass_outside_brain"]) <= 1 for r in rows if r["mass_outside_brain"])
    assert all(r["outcome"] == outcome_of(r["label"], r["predicted"]) for r in rows)
    overall = summary["localisation"]["all"]["iou"]
    assert overall["n"] == len(tumour_rows) and overall["ci95"][0] <= overall["mean"] <= overall["ci95"][1]
    assert set(summary["localisation"]["per_class"]) == set(CLASSES)

    # Another threshold, read from the stored IoU curves, matches a full evaluation at it.
    stored = read_evaluation(folder)
    same = at_threshold(stored, 0.5)
    assert [r.iou for r in same.rows if r.iou is not None] == pytest.approx([float(r["iou"]) for r in tumour_rows])
    redone = cached_evaluation("tiny_convnext", small_dataset, "test", cache, settings=settings, threshold=0.3,
                               batch_size=4, progress=False)  # fmt: skip
    expected = json.loads((redone / "summary.json").read_text())["localisation"]
    moved = at_threshold(stored, 0.3)

    def ious(rows):
        return [r.iou for r in rows]

    assert ious(moved.rows) == pytest.approx(ious(read_evaluation(redone).rows))
    assert ious(moved.rows) != pytest.approx(ious(stored.rows))  # the threshold did move something
    for name, values in expected["per_class"].items():
        got = moved.summary["localisation"]["per_class"][name]["iou"]
        assert (got["mean"], got["n"]) == pytest.approx((values["iou"]["mean"], values["iou"]["n"]))
    assert moved.summary["heatmaps"]["threshold"] == 0.3

    # A second call is served from the cache; other settings get another key.
    stamp = (folder / "summary.json").stat().st_mtime_ns
    again = cached_evaluation("tiny_convnext", small_dataset, "test", cache, settings=settings, progress=False)
    assert again == folder and (folder / "summary.json").stat().st_mtime_ns == stamp
    ours = heatmap_settings(settings, 0.5)
    other = heatmap_settings(ExplainSettings("HiResCAM", None, None, True, True), 0.5)
    assert cache_key("abc", small_dataset, "test", ours) != cache_key("abc", small_dataset, "test", other)
    assert cache_key("abc", small_dataset, "test", ours) != cache_key("abd", small_dataset, "test", ours)
    assert cache_key("abc", small_dataset, "test", ours) != cache_key("abc", small_dataset, "val", ours)


@needs_data
def test_cached_evaluation_is_redone_when_the_config_changes(checkpoint_root, small_dataset, tmp_path):
    """A new default layer or temperature in config.json, with the same weights, is a new result."""
    from core.evaluate import cached_evaluation

    checkpoint = shutil.copytree(checkpoint_root / "tiny_convnext", tmp_path / "edited")
    cache = tmp_path / "cache"
    before = cached_evaluation(checkpoint, small_dataset, "test", cache, batch_size=4, progress=False)
    config_path = checkpoint / "config.json"
    config = json.loads(config_path.read_text())
    config["default_target_layer"] = "stages.2"
    config_path.write_text(json.dumps(config))
    after = cached_evaluation(checkpoint, small_dataset, "test", cache, batch_size=4, progress=False)
    assert after != before
    layers = [json.loads((f / "summary.json").read_text())["heatmaps"]["target_layer"] for f in (before, after)]
    assert layers == ["stages.3", "stages.2"]


def test_faithfulness_columns_and_their_means(checkpoint_root, tmp_path, capsys):
    from tests.test_model_card import phantom_dataset

    data = phantom_dataset(tmp_path / "data")
    out = tmp_path / "e"
    assert main(["evaluate", "--checkpoint", str(checkpoint_root / "tiny_effnet"), "--data", str(data),
                 "--method", "default", "--faithfulness", "--out", str(out)]) == 0  # fmt: skip
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert all(0 <= float(r["deletion_auc"]) <= 1 and 0 <= float(r["insertion_auc"]) <= 1 for r in rows)
    summary = json.loads((out / "summary.json").read_text())
    mean = summary["faithfulness"]["deletion_auc"]
    assert mean["n"] == 8 and mean["mean"] == pytest.approx(np.mean([float(r["deletion_auc"]) for r in rows]))
    assert summary["heatmaps"]["method"] == "Grad-CAM"  # the checkpoint's default, resolved
    assert "faithfulness: deletion_auc" in capsys.readouterr().out
    assert main(["evaluate", "--checkpoint", str(checkpoint_root / "tiny_effnet"), "--data", str(data),
                 "--faithfulness", "--out", str(out)]) == 2  # fmt: skip
    assert "add --method" in capsys.readouterr().err


def test_a_seeded_sample_per_class():
    from core.dataset import Record
    from core.evaluate import sample_per_class

    sizes = (("a", 10), ("b", 3))
    records = [Record(f"{label}/{i}.png", label, f"g{i}") for label, count in sizes for i in range(count)]
    sample = sample_per_class(records, 4)
    assert [r.label for r in sample].count("a") == 4 and [r.label for r in sample].count("b") == 3
    assert sample == sample_per_class(records, 4)  # seeded
    assert [records.index(r) for r in sample] == sorted(records.index(r) for r in sample)  # listing order kept
