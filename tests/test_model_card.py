from __future__ import annotations

import json
import shutil
from dataclasses import replace

import pytest

from core.cli import main
from core.config import preferred_checkpoint, read_config, read_training_record, write_config
from core.model_card import _verdict
from tests.conftest import LABELS, encode, head_phantom


def phantom_dataset(root, split: str = "test"):
    for i, label in enumerate(LABELS):
        (root / split / label).mkdir(parents=True)
        for k in range(2):
            (root / split / label / f"{label}_{k}.png").write_bytes(encode(head_phantom(96, seed=i * 10 + k), "PNG"))
    (root / "annotations").mkdir()
    shape = {"shape_type": "rectangle", "points": [[50, 30], [65, 45]]}
    (root / "annotations" / "glioma_0.json").write_text(json.dumps({"shapes": [shape]}))
    return root


def test_card_reports_the_measurements(checkpoint_root, tmp_path):
    data = phantom_dataset(tmp_path / "data")
    checkpoint = tmp_path / "model"
    shutil.copytree(checkpoint_root / "tiny_convnext", checkpoint)
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--data", str(data), "--out", str(tmp_path / "e")]) == 0
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--data", str(data), "--out", str(tmp_path / "h"),
                 "--method", "HiResCAM"]) == 0  # fmt: skip
    assert main(["card", "--checkpoint", str(checkpoint), "--test", str(tmp_path / "e" / "summary.json"),
                 "--localisation", str(tmp_path / "h" / "summary.json"), "--commit", "abc1234"]) == 0  # fmt: skip

    summary = json.loads((tmp_path / "e" / "summary.json").read_text())
    card = (checkpoint / "README.md").read_text()
    right = round(summary["accuracy"] * 8)
    assert f"Accuracy **{summary['accuracy']:.4f}** ({right} of 8 right; target >= 0.90: NOT met)" in card
    assert f"macro-F1 **{summary['macro_f1']:.4f}** (target >= 0.85: NOT met)" in card
    assert "commit `abc1234`" in card and "not a medical device" in card and "Source bias" in card
    assert "- Weights kept: last step." in card  # no training record says otherwise
    assert "; float32; " in card  # a training record without "precision" predates --bf16
    assert "Stochastic depth" not in card  # nor "drop_path": trained without it
    assert "| HiResCAM | stages.3 |" in card and "Best IoU: **HiResCAM** at layer `stages.3`" in card
    for baseline in ("uniform in head", "centred Gaussian", "brightness in head"):
        assert f"| {baseline} | - |" in card  # the trivial baselines beside the methods
    assert "pointing lift | IoU lift" in card
    assert "- Default heatmap: Grad-CAM at `stages.3` (not chosen by a sweep)." in card
    metrics = json.loads((checkpoint / "config.json").read_text())["metrics"]
    assert metrics["accuracy"] == summary["accuracy"] and metrics["measured_by_commit"] == "abc1234"
    assert metrics["num_images"] == 8


@pytest.mark.parametrize("legacy", [False, True], ids=["training.json", "record inside an old config.json"])
def test_card_includes_the_training_record_and_notes(checkpoint_root, tmp_path, legacy):
    data = phantom_dataset(tmp_path / "data")
    checkpoint = tmp_path / "model"
    shutil.copytree(checkpoint_root / "tiny_convnext", checkpoint)
    config = {}
    config["notes"] = ["Trained 18 epochs only: the CPU budget ran out."]
    first = {"epochs": 18, "init": "scratch", "teacher": "checkpoints/t", "optimiser": "AdamW lr 0.001",
             "seconds": 2760, "commit": "aaa1111", "holdout_metrics": {}}  # fmt: skip
    config["training"] = {"epochs": 24, "init": "checkpoints/m", "continued_from": first,
                          "weights": "exponential moving average (decay up to 0.998)", "seed": 0, "seconds": 3000,
                          "precision": "bfloat16 autocast (forward passes), float32 weights",
                          "drop_path": 0.1, "holdout": "none: refit on every image of the training splits",
                          "temperature_from": {"checkpoint": "runs/twin", "holdout": "15% of each class's groups",
                                               "holdout_metrics": {"num_images": 40, "accuracy": 0.9,
                                                                   "macro_f1": 0.85, "ece_before_temperature": 0.06,
                                                                   "ece_after_temperature": 0.04}}}  # fmt: skip
    if legacy:  # config.json as it was before training.json: the record and notes inside it
        old = json.loads((checkpoint / "config.json").read_text())
        (checkpoint / "config.json").write_text(json.dumps({**old, **config}))
    else:
        (checkpoint / "training.json").write_text(json.dumps({**config["training"], "notes": config["notes"]}))
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--data", str(data), "--out", str(tmp_path / "e")]) == 0
    assert main(["card", "--checkpoint", str(checkpoint), "--test", str(tmp_path / "e" / "summary.json"),
                 "--commit", "abc1234"]) == 0  # fmt: skip
    card = (checkpoint / "README.md").read_text()
    assert "## What was tried, and what was not" in card
    assert "- Trained 18 epochs only: the CPU budget ran out." in card
    assert "- Weights kept: exponential moving average (decay up to 0.998)." in card
    assert "- Seed 0; bfloat16 autocast (forward passes), float32 weights; 50 min on" in card
    assert "- Stochastic depth (timm drop path), rising with depth up to 0.1." in card
    assert ("- Continued from a run of 18 epochs (initialisation: scratch, distilled from `checkpoints/t`; "
            "AdamW lr 0.001; 46 min; commit `aaa1111`; hold-out then: none)." in card)  # fmt: skip
    assert ("hold-out inside the training splits: none: refit on every image of the training splits. A twin run "
            "of the same recipe (`runs/twin`, not shipped) held out 15% of each class's groups; that hold-out checks "
            "the recipe (40 images, accuracy 0.900, macro-F1 0.850, ECE 0.060 -> 0.040) and gives the temperature."
            in card)  # fmt: skip
    assert "fitted on the twin run's hold-out" in card
    assert read_training_record(checkpoint)["notes"] == config["notes"]


def test_card_of_a_soup_lists_its_runs_and_their_common_recipe(checkpoint_root, tmp_path):
    data = phantom_dataset(tmp_path / "data")
    checkpoint = tmp_path / "model"
    shutil.copytree(checkpoint_root / "tiny_convnext", checkpoint)
    run = {"epochs": 8, "batch_size": 32, "init": "checkpoints/m", "optimiser": "AdamW lr 0.0003",
           "augmentation": "affine", "counterfactuals": "tumours removed", "seed": 0, "commit": "aaa1111",
           "history": [1]}  # fmt: skip
    runs = [run, {**run, "seed": 1, "history": [2]}, {**run, "epochs": 4, "commit": "bbb2222"}]
    metrics = {"num_images": 40, "accuracy": 0.9, "macro_f1": 0.85, "ece_before_temperature": 0.06,
               "ece_after_temperature": 0.04}  # fmt: skip
    soup = {"holdout": "15% of each class's groups, seed 0", "holdout_metrics": metrics, "commit": "ccc3333",
            "weights": "uniform average of 3 runs' weights", "ingredient_records": runs,
            "soup_of": [{"checkpoint": f"runs/r{i}", "epochs": r["epochs"], "seed": r["seed"], "commit": r["commit"],
                         "holdout_metrics": metrics} for i, r in enumerate(runs)]}  # fmt: skip
    (checkpoint / "training.json").write_text(json.dumps(soup))
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--data", str(data), "--out", str(tmp_path / "e")]) == 0
    assert main(["card", "--checkpoint", str(checkpoint), "--test", str(tmp_path / "e" / "summary.json"),
                 "--commit", "abc1234"]) == 0  # fmt: skip
    card = (checkpoint / "README.md").read_text()
    assert (
        "- Weights: uniform average of 3 runs' weights, made at commit `ccc3333` from 3 runs: `runs/r0` (8 epochs"
        in card
    )
    assert "`runs/r2` (4 epochs, seed 0, commit `bbb2222`, hold-out 40 images, accuracy 0.900" in card
    assert "- The runs differ only in: commit, epochs, seed. The first run's recipe:" in card
    assert (
        "  - 8 epochs, batch 32, AdamW lr 0.0003;" in card
        and "  - Counterfactual healthy slices: tumours removed." in card
    )
    assert "Every averaged run kept it aside" in card and "their weights are averaged" in card


def test_verdict_is_exact_where_rounding_would_hide_a_miss():
    assert _verdict(714 / 768, 0.93, at_least=True) == "; target >= 0.93: NOT met"  # prints as 0.930
    assert _verdict(715 / 768, 0.93, at_least=True) == "; target >= 0.93: met"
    assert _verdict(0.0499, 0.05, at_least=False, wrap=True) == " (target <= 0.05: met)"
    assert _verdict(0.0501, 0.05, at_least=False) == "; target <= 0.05: NOT met"
    assert _verdict(0.99, None, at_least=True) == ""


def test_pages_open_on_the_most_accurate_checkpoint(checkpoint_root, tmp_path):
    for name, accuracy in (("a_weak", 0.7), ("b_strong", 0.9), ("c_unmeasured", None)):
        shutil.copytree(checkpoint_root / "tiny_convnext", tmp_path / name)
        if accuracy is not None:
            config = read_config(tmp_path / name)
            write_config(tmp_path / name, replace(config, metrics={"accuracy": accuracy}))
    assert preferred_checkpoint(["a_weak", "b_strong", "c_unmeasured"], tmp_path) == 1
    assert preferred_checkpoint(["c_unmeasured", "a_weak"], tmp_path) == 1
    assert preferred_checkpoint(["c_unmeasured"], tmp_path) == 0
    (tmp_path / "a_weak" / "config.json").write_text("{broken")
    assert preferred_checkpoint(["a_weak", "c_unmeasured"], tmp_path) == 0


def test_card_reports_the_stress_test_and_when_not_to_trust_the_model(checkpoint_root, tmp_path):
    import numpy as np

    from core import features, reliability

    data = phantom_dataset(tmp_path / "data")
    checkpoint = tmp_path / "model"
    shutil.copytree(checkpoint_root / "tiny_effnet", checkpoint)
    rng = np.random.default_rng(0)
    from core.checkpoint import load_checkpoint

    features = rng.normal(size=(200, features.feature_size(load_checkpoint(checkpoint).model, 64)))
    info = {"fitted_on": "training part", "holdout": "grouped hold-out", "unfamiliar_below": 0.05,
            "target_selective_accuracy": 0.98, "selective_accuracy": 0.981, "coverage": 0.84}  # fmt: skip
    reliability.save(reliability.fit(features, rng.integers(0, 4, 200), features[:50], 0.27, info), checkpoint)
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--data", str(data), "--out", str(tmp_path / "e")]) == 0
    assert main(["stress", "--checkpoint", str(checkpoint), "--data", str(data), "--split", "test",
                 "--out", str(tmp_path / "s")]) == 0  # fmt: skip
    assert main(["card", "--checkpoint", str(checkpoint), "--test", str(tmp_path / "e" / "summary.json"),
                 "--commit", "abc1234", "--stress", str(tmp_path / "s" / "stress.json")]) == 0  # fmt: skip
    card = (checkpoint / "README.md").read_text()
    stress = json.loads((tmp_path / "s" / "stress.json").read_text())
    assert "## When not to trust it" in card and "less than 0.27" in card and "98%" in card and "84%" in card
    assert "## Stress test on split test (8 images, commit `" in card
    for row in stress["table"]:
        assert f"| {row['condition']} | {row['accuracy']:.3f} | {row['macro_f1']:.3f} | {row['ece']:.3f} |" in card
    assert "Calibration under shift: the shipped temperature" in card
    assert "unfamiliar | familiarity AUC | kept | kept accuracy |" in card


def test_card_reports_faithfulness_on_a_sample_and_the_sanity_check(checkpoint_root, tmp_path):
    data = phantom_dataset(tmp_path / "data")
    checkpoint = tmp_path / "model"
    shutil.copytree(checkpoint_root / "tiny_convnext", checkpoint)
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--data", str(data), "--out", str(tmp_path / "e")]) == 0
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--data", str(data), "--out", str(tmp_path / "f"),
                 "--method", "default", "--faithfulness", "--per-class", "1"]) == 0  # fmt: skip
    assert main(["sanity", "--checkpoint", str(checkpoint), "--data", str(data), "--images", "1",
                 "--out", str(tmp_path / "sanity.json")]) == 0  # fmt: skip
    assert main(["card", "--checkpoint", str(checkpoint), "--test", str(tmp_path / "e" / "summary.json"),
                 "--faithfulness", str(tmp_path / "f" / "summary.json"), "--sanity", str(tmp_path / "sanity.json"),
                 "--commit", "abc1234"]) == 0  # fmt: skip

    sampled = json.loads((tmp_path / "f" / "summary.json").read_text())
    assert sampled["num_images"] == 4 and sampled["sample"].startswith("1 images per class")
    card = (checkpoint / "README.md").read_text()
    deletion = sampled["faithfulness"]["deletion_auc"]["mean"]
    assert "## Faithfulness on test (4 images: 1 images per class, seeded random (seed 0), commit `" in card
    assert f"| deletion AUC | {deletion:.3f} [" in card
    sanity = json.loads((tmp_path / "sanity.json").read_text())
    assert "## Sanity check on test (the first 1 outlined tumour images, commit `" in card
    assert f"Each CAM at the default layer `{sanity['layer']}`." in card and sanity["layer"] == "stages.3"
    for row in sanity["methods"]:
        assert f"| {row['method']} | {row['rank correlation, all randomised']:.2f} |" in card
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--data", str(data), "--out", str(tmp_path / "c"),
                 "--per-class", "1", "--cache"]) == 2  # fmt: skip


def test_card_names_the_familiarity_blocks_as_fitted():
    from core.model_card import _texture_words
    from core.reliability import feature_blocks

    size = 100
    assert _texture_words({"feature_blocks": feature_blocks(size, texture=False)}) == ""
    without_flat = _texture_words({"feature_blocks": feature_blocks(size, flatness=False)})
    assert "Laplacian-pyramid" in without_flat and "flat pixels" not in without_flat
    everything = _texture_words({"feature_blocks": feature_blocks(size)})
    assert "flat pixels and linear ramps" in everything and "tilt of intensity" in everything
    no_tilt = _texture_words({"feature_blocks": feature_blocks(size, tilt=False)})
    assert "flat pixels and linear ramps" in no_tilt and "tilt" not in no_tilt
    flat_only = _texture_words({"feature_blocks": feature_blocks(size, linear=False)})
    assert "share of flat pixels" in flat_only and "linear" not in flat_only


def test_a_refit_card_says_whose_hold_out_its_margin_comes_from():
    import numpy as np

    from core import reliability
    from core.model_card import _reliability_section

    rng = np.random.default_rng(0)
    features = rng.normal(size=(200, 8))
    info = {"fitted_on": "training part", "holdout": "grouped hold-out", "unfamiliar_below": 0.05,
            "target_selective_accuracy": 0.95, "selective_accuracy": 0.952, "coverage": 0.64,
            "refit_without_holdout": True}  # fmt: skip
    own = "\n".join(_reliability_section(reliability.fit(features, rng.integers(0, 4, 200), features[:50], 0.34, info)))
    assert "the hold-out's confident predictions" in own and "these thresholds are optimistic" in own
    twin = {**info, "margin_from": {"checkpoint": "runs/T4/model", "holdout": "grouped hold-out"}}
    fitted = reliability.fit(features, rng.integers(0, 4, 200), features[:50], 0.79, twin)
    taken = "\n".join(_reliability_section(fitted))
    assert "less than 0.79" in taken and "the twin run's (`runs/T4/model`" in taken and "95.2%, keeping 64%" in taken
    assert "optimistic" not in taken and "familiarity threshold is fitted on slices they trained on" in taken
