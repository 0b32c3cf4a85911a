from __future__ import annotations

import numpy as np
import pytest

from core.compare import heatmap_agreement, side_by_side, verdict
from core.explain import explain
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
    agree, text = verdict(("A", "B"), first, second)
    if agree:
        assert text.startswith(f"Both models predict {first.predicted_label}")
    else:
        assert "disagree" in text and first.predicted_label in text and second.predicted_label in text
    same, text = verdict(("A", "A"), first, first)
    assert same and f"({first.confidence:.0%} / {first.confidence:.0%})" in text
    figure = side_by_side(image, [("A", first), ("B", second)], tile=64)
    assert figure.shape == (2 * (28 + 64), 3 * 64, 3) and figure.dtype == np.uint8


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
