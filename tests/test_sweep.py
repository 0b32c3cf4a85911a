"""The localisation sweep: candidates, trivial baselines, the committed rule, and --apply."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from core.checkpoint import load_checkpoint
from core.cli import main
from core.config import read_config
from core.explain import explain
from core.explanation import ExplainSettings
from core.model_card import _default_heatmap
from core.sweep import RULE, Candidate, apply_winner, baseline_maps, candidates, choose, sweep
from tests.conftest import SHARED_DATA, needs_data
from tests.test_model_card import phantom_dataset


def candidate(method: str, layer: str | None, pointing: float, iou: float, ms: float = 10.0) -> Candidate:
    means = {"pointing_game": {"mean": pointing}, "iou": {"mean": iou}}
    return Candidate(method, layer, means, ms)


def test_the_rule_ranks_by_pointing_game_among_candidates_that_beat_the_baselines():
    baselines = [candidate("centred Gaussian", None, 0.24, 0.06), candidate("uniform in head", None, 0.04, 0.04)]
    results = [
        candidate("Grad-CAM", "a", 0.50, 0.05),  # best pointing, but IoU under the best baseline's
        candidate("HiResCAM", "b", 0.40, 0.10),
        candidate("LayerCAM", "c", 0.395, 0.20),  # within 0.01: the higher IoU wins the tie
        candidate("Eigen-CAM", "d", 0.45, 0.30, ms=5000),  # too slow for the page
    ]
    assert (choose(results, baselines).method, choose(results, baselines).layer) == ("LayerCAM", "c")
    assert choose(results[:1], baselines) is None
    assert "pointing game" in RULE and "IoU@0.5" in RULE


def test_candidates_cover_every_fast_method_at_every_layer_a_fused_layercam_and_integrated_gradients():
    pairs = candidates("convnext_atto")
    assert ("Score-CAM", "stages.2") not in pairs and ("Eigen-CAM", "stages.0") in pairs
    assert ("LayerCAM", "stages.1+stages.2+stages.3") in pairs
    assert ("Integrated Gradients", None) in pairs and ("Integrated Gradients + noise tunnel", None) not in pairs
    assert len(pairs) == 6 * 4 + 1 + 1
    with pytest.raises(ValueError, match="pass --layers"):
        candidates("resnet18")


def test_baselines_know_nothing_of_the_model():
    image = np.zeros((40, 60), dtype=np.float32)
    head = np.zeros((40, 60), dtype=bool)
    head[5:35, 10:50] = True
    image[head] = 0.5
    image[20, 30] = 1.0
    maps = baseline_maps(image, head)
    assert set(maps) == {"uniform in head", "centred Gaussian", "brightness in head"}
    for values in maps.values():
        assert values.max() == pytest.approx(1.0) and not values[~head].any()
    assert np.unravel_index(maps["centred Gaussian"].argmax(), image.shape) in {(19, 29), (19, 30), (20, 29), (20, 30)}
    assert np.unravel_index(maps["brightness in head"].argmax(), image.shape) == (20, 30)


def test_sweep_command_reports_and_applies_the_winner(checkpoint_root, tmp_path, capsys):
    data = phantom_dataset(tmp_path / "data", split="val")
    checkpoint = shutil.copytree(checkpoint_root / "tiny_effnet", tmp_path / "model")
    out = tmp_path / "sweep.json"
    args = ["sweep", "--checkpoint", str(checkpoint), "--data", str(data), "--layers", "blocks.5", "blocks.6",
            "conv_head", "--out", str(out)]  # fmt: skip
    code = main([*args, "--apply"])
    report = json.loads(out.read_text())
    assert report["images"] == 1 and report["split"] == "val"
    assert len(report["candidates"]) == 6 * 3 + 1 + 1 and len(report["baselines"]) == 3
    assert "winner" in capsys.readouterr().out
    if report["winner"] is not None:  # it passed the sanity check, after any candidate ranked above it failed
        assert report["sanity"][-1]["passed"] and not any(check["passed"] for check in report["sanity"][:-1])
    config = read_config(checkpoint)
    if report["winner"] is None:  # a random tiny model may beat no baseline
        assert code == 1 and config.default_method == "Grad-CAM" and not config.default_choice
        return
    assert code == 0
    assert (config.default_method, config.default_target_layer) == (report["winner"]["method"],
                                                                    report["winner"]["layer"])  # fmt: skip
    assert config.default_choice["rule"] == RULE and config.default_choice["split"] == "val"
    # Every caller that asks for the default now gets it.
    result = explain(load_checkpoint(checkpoint), np.zeros((64, 64), dtype=np.float32) + 0.5, ExplainSettings())
    assert (result.method, result.target_layer) == (config.default_method, config.default_target_layer)


def test_sweep_without_outlines_says_so(checkpoint_root, tmp_path, capsys):
    data = phantom_dataset(tmp_path / "data", split="val")
    shutil.rmtree(data / "annotations")
    assert main(["sweep", "--checkpoint", str(checkpoint_root / "tiny_effnet"), "--data", str(data)]) == 2
    assert "no image with a tumour outline" in capsys.readouterr().err


def test_an_input_attribution_winner_keeps_the_layer_for_the_cam_methods(checkpoint_root, tmp_path, capsys):
    checkpoint = shutil.copytree(checkpoint_root / "tiny_effnet", tmp_path / "model")
    layer_before = read_config(checkpoint).default_target_layer
    means = {
        "pointing_game": {"mean": 0.5, "ci95": [0.4, 0.6], "n": 9},
        "iou": {"mean": 0.2, "ci95": [0.1, 0.3], "n": 9},
    }
    baseline = {"method": "centred Gaussian", "layer": None, "means": means, "ms_per_image": 0.0}
    winner = {"method": "Integrated Gradients", "layer": None, "means": means, "ms_per_image": 800.0}
    sanity = [{"method": "Integrated Gradients", "layer": None, "spearman": [0.6, 0.12], "passed": True}]
    report = {"split": "val", "images": 9, "rule": RULE, "baselines": [baseline], "winner": winner, "sanity": sanity}
    apply_winner(checkpoint, report)
    config = read_config(checkpoint)
    assert (config.default_method, config.default_target_layer) == ("Integrated Gradients", layer_before)
    card_line = _default_heatmap(config)[0]
    assert "Default heatmap: **Integrated Gradients** (input pixels), chosen on `val`" in card_line
    assert "Randomisation check there: rank correlation 0.12" in card_line
    result = explain(load_checkpoint(checkpoint), np.zeros((64, 64), dtype=np.float32) + 0.5, ExplainSettings())
    assert result.method == "Integrated Gradients"


def test_a_winner_that_fails_the_sanity_check_gives_way_to_the_next(checkpoint_root, tmp_path, monkeypatch):
    import core.sanity
    from core.sanity import SanityCheck

    def fails_for_eigen_cam(loaded, images, settings, seed=0):
        correlation = 0.9 if settings.method == "Eigen-CAM" else 0.1
        return SanityCheck(settings.method, ("head",), (correlation,), (0.5,))

    monkeypatch.setattr(core.sanity, "randomisation_check", fails_for_eigen_cam)
    monkeypatch.setattr(
        "core.sweep.candidates", lambda architecture, layers: [("Eigen-CAM", "conv_head"), ("Grad-CAM", "conv_head")]
    )
    monkeypatch.setattr("core.sweep.choose", lambda results, baselines: results[0] if results else None)
    data = phantom_dataset(tmp_path / "data", split="val")
    report = sweep(checkpoint_root / "tiny_effnet", data, "val", progress=False)
    assert [check["method"] for check in report["sanity"]] == ["Eigen-CAM", "Grad-CAM"]
    assert report["winner"]["method"] == "Grad-CAM"


@needs_data
def test_sweep_on_the_holdout_reads_only_outlines_that_training_kept_aside(checkpoint_root, tmp_path, monkeypatch):
    """A model trained with outline guidance has seen val's outlines; --holdout sweeps on the
    grouped hold-out that `train` keeps aside instead."""
    import core.sweep
    from core.dataset import holdout_records, list_split

    names = list(load_checkpoint(checkpoint_root / "tiny_effnet").config.label_names)
    held = {record.image for record in holdout_records(SHARED_DATA, names)}
    trained = {r.image for split in ("train", "val") for r in list_split(SHARED_DATA, split, names)} - held
    asked = []
    real = core.sweep.annotation_path
    monkeypatch.setattr(core.sweep, "annotation_path", lambda root, image: asked.append(image) or real(root, image))
    out = tmp_path / "sweep.json"
    args = ["sweep", "--checkpoint", str(checkpoint_root / "tiny_effnet"), "--data", str(SHARED_DATA), "--holdout",
            "--layers", "conv_head", "--limit", "3", "--out", str(out)]  # fmt: skip
    assert main(args) in (0, 1)  # 1: a random tiny model may beat no baseline
    report = json.loads(out.read_text())
    assert report["split"] == "train+val hold-out" and report["images"] == 3
    assert asked and set(asked) <= held and not set(asked) & trained
