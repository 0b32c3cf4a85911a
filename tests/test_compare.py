from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from core.compare import heatmap_agreement, side_by_side, verdict
from core.explain import explain
from core.reliability import Verdict
from tests.conftest import head_phantom


def blob(shape=(100, 100), centre=(50, 50), radius=10) -> np.ndarray:
    rows, cols = np.ogrid[: shape[0], : shape[1]]
    distance = np.hypot(rows - centre[0], cols - centre[1])
    return np.clip(1 - distance / (2 * radius), 0, 1).astype(np.float32)


def test_identical_maps_agree_perfectly():
    heatmap = blob()
    result = heatmap_agreement(heatmap, heatmap, threshold=0.5)
    assert result.iou == 1.0 and result.pearson == pytest.approx(1.0)
    assert result.peak_distance == 0.0 and np.abs(result.difference).max() == 0


def test_disjoint_maps():
    a, b = blob(centre=(20, 20), radius=5), blob(centre=(80, 80), radius=5)
    result = heatmap_agreement(a, b, threshold=0.5, spacing_mm=(0.5, 2.0))
    assert result.iou == 0.0
    assert result.pearson < 0.1
    assert result.peak_unit == "mm"
    assert result.peak_distance == pytest.approx(np.hypot(60 * 0.5, 60 * 2.0))


def test_shifted_squares_hand_computed():
    a = np.zeros((50, 50), dtype=np.float32)
    b = np.zeros_like(a)
    a[10:20, 10:20] = 1.0  # 100 px
    b[10:20, 15:25] = 1.0  # shifted 5 columns: overlap 50, union 150
    result = heatmap_agreement(a, b, threshold=0.5)
    assert result.iou == pytest.approx(50 / 150)
    assert result.peak_unit == "px" and result.peak_distance == pytest.approx(5.0)
    # Pearson by hand: each map has 100 ones in 2500 pixels, 50 shared.
    p = 100 / 2500
    covariance = 50 / 2500 - p * p
    assert result.pearson == pytest.approx(covariance / (p * (1 - p)))


def test_empty_and_constant_maps_are_undefined_not_wrong():
    zero = np.zeros((40, 40), dtype=np.float32)
    result = heatmap_agreement(zero, zero)
    assert result.iou is None and result.pearson is None


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="differ in shape"):
        heatmap_agreement(np.zeros((10, 10)), np.zeros((10, 11)))


def test_verdict_and_figure(tiny_model, checkpoint_root):
    from core.checkpoint import load_checkpoint

    other = load_checkpoint(checkpoint_root / "tiny_effnet")
    image = head_phantom(120)
    first, second = explain(tiny_model, image), explain(other, image)
    figure = side_by_side(image, [("A", first), ("B", second)], tile=64)
    assert figure.shape == (2 * (28 + 64), 3 * 64, 3) and figure.dtype == np.uint8


def _as(result, label_index: int, confidence: float, uncertain=False, unfamiliar=False):
    probabilities = np.full(4, (1 - confidence) / 3, dtype=np.float32)
    probabilities[label_index] = confidence
    trust = Verdict(0.01 if unfamiliar else 0.5, unfamiliar, uncertain, (label_index + 1) % 4)
    return replace(result, probabilities=probabilities, predicted_index=label_index, reliability=trust)


def test_compare_calls_it_agreement_only_when_both_are_confident_on_a_familiar_scan(tiny_model):
    base = explain(tiny_model, head_phantom(96))
    records = {"A": 0.887, "B": 0.953}
    agree = verdict(("A", "B"), _as(base, 0, 0.91), _as(base, 0, 0.8), records)
    assert agree.kind == "agree" and agree.sentence.startswith("Both models predict glioma (A 91%, B 80%).")
    assert "B has the better record (test accuracy 95.3% against 88.7%)" in agree.sentence

    torn = verdict(("A", "B"), _as(base, 0, 0.91), _as(base, 0, 0.48, uncertain=True), records)
    assert (
        torn.kind == "neutral" and "B is uncertain" in torn.sentence and "not read this as agreement" in torn.sentence
    )
    strange = verdict(("A", "B"), _as(base, 0, 0.91, unfamiliar=True), _as(base, 0, 0.9), records)
    assert strange.kind == "neutral" and "the scan is unfamiliar to A" in strange.sentence

    split = verdict(("A", "B"), _as(base, 0, 0.91), _as(base, 1, 0.7), {})
    assert split.kind == "disagree" and "A predicts glioma (91%), B predicts meningioma (70%)" in split.sentence
    assert "record" not in split.sentence  # no model card numbers, no claim
    assert split.sentence.endswith("(70%).")

    lost = verdict(("A", "B"), _as(base, 2, 0.93, unfamiliar=True), _as(base, 1, 0.48, uncertain=True), records)
    assert lost.kind == "disagree" and "; and B is uncertain and the scan is unfamiliar to A." in lost.sentence
    assert lost.sentence.endswith("B has the better record (test accuracy 95.3% against 88.7%). Those records come "
                                  "from scans like the training images, which this one is not.")  # fmt: skip
    assert "which this one is not" not in agree.sentence
    both = verdict(("A", "B"), _as(base, 2, 0.93, unfamiliar=True), _as(base, 1, 0.9, unfamiliar=True), records)
    assert "(90%); and the scan is unfamiliar to both." in both.sentence
    torn_both = verdict(("A", "B"), _as(base, 0, 0.5, uncertain=True), _as(base, 0, 0.48, uncertain=True), records)
    assert torn_both.kind == "neutral" and "(A 50%, B 48%), but both are uncertain: do not" in torn_both.sentence


def test_compare_command_writes_figure_and_json(use_tiny_checkpoints, tmp_path):
    import json

    from core.cli import main
    from tests.conftest import encode

    image = tmp_path / "scan.png"
    image.write_bytes(encode(head_phantom(128), "PNG"))
    out = tmp_path / "out"
    assert main(["compare", str(image), "--checkpoints", "tiny_convnext", "tiny_effnet", "--out", str(out)]) == 0
    report = json.loads((out / "comparison.json").read_text())
    assert set(report["models"]) == {"tiny_convnext", "tiny_effnet"}
    assert report["agreement"]["peak_unit"] == "px" and 0 <= report["agreement"]["iou"] <= 1
    assert (out / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["compare", str(tmp_path / "missing.png"), "--checkpoints", "tiny_convnext", "tiny_effnet",
                 "--out", str(out)]) == 2  # fmt: skip
