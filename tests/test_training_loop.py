"""The training loop: smoke runs, reproducibility, continuing, cross-validation, EMA, drop path, bf16."""

from __future__ import annotations

import csv
import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from core.checkpoint import load_checkpoint
from core.cli import main
from core.config import Preprocessing
from core.inference import batched_logits
from core.training.data import load_training_data
from core.training.loop import fit, train
from core.training.options import TrainOptions
from tests.conftest import CLASSES, copy_shared_slice, needs_data
from tests.training_support import distilling_options, fit_watching


@needs_data
def test_smoke_training_writes_a_loadable_checkpoint(small_dataset, tmp_path):
    out = tmp_path / "ckpt"
    code = main(["train", "--arch", "convnext_atto", "--data", str(small_dataset), "--out", str(out),
                 "--splits", "train", "--epochs", "1", "--image-size", "64", "--batch-size", "8",
                 "--no-progress"])  # fmt: skip
    assert code == 0
    loaded = load_checkpoint(out)
    assert loaded.config.label_names == CLASSES
    assert loaded.config.preprocessing.input_size == 64
    training = json.loads((out / "training.json").read_text())
    assert training["epochs"] == 1 and len(training["history"]) == 1 and training["seed"] == 0

    summary_dir = tmp_path / "eval"
    relative = Path(os.path.relpath(small_dataset))
    assert main(["evaluate", "--checkpoint", str(out), "--data", str(relative), "--split", "test",
                 "--out", str(summary_dir)]) == 0  # fmt: skip
    summary = json.loads((summary_dir / "summary.json").read_text())
    assert summary["num_images"] == 12
    assert set(summary["per_class"]) == set(CLASSES)
    assert 0 <= summary["ece_15_bins"]["after_temperature"] <= 1
    # Recorded as the resolved root, so the gallery finds it whichever spelling the command line used.
    assert summary["data"] == str(small_dataset.resolve())
    rows = list(csv.DictReader((summary_dir / "predictions.csv").open()))
    assert len(rows) == 12 and rows[0]["image"].startswith("test/")
    assert {"image", "label", "predicted", "confidence", "p_glioma"} <= set(rows[0])


@needs_data
def test_training_is_reproducible(small_dataset, tmp_path):
    args = ["train", "--arch", "convnext_atto", "--data", str(small_dataset), "--splits", "train", "--epochs", "1",
            "--image-size", "48", "--batch-size", "8", "--max-steps", "2", "--no-progress"]  # fmt: skip
    main([*args, "--out", str(tmp_path / "a")])
    main([*args, "--out", str(tmp_path / "b")])
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()


@needs_data
def test_training_can_continue_from_a_checkpoint(small_dataset, tmp_path, capsys):
    args = ["train", "--data", str(small_dataset), "--splits", "train", "--epochs", "1", "--image-size", "48",
            "--batch-size", "8", "--max-steps", "2", "--no-progress"]  # fmt: skip
    assert main([*args, "--arch", "convnext_atto", "--out", str(tmp_path / "a")]) == 0
    # With a learning rate of 0 the continued run must hand back exactly the weights it started from.
    assert main([*args, "--arch", "convnext_atto", "--init", str(tmp_path / "a"), "--lr", "0",
                 "--seed", "5", "--out", str(tmp_path / "b")]) == 0  # fmt: skip
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()
    continued = json.loads((tmp_path / "b" / "training.json").read_text())
    assert continued["init"] == str(tmp_path / "a")
    assert continued["continued_from"] == json.loads((tmp_path / "a" / "training.json").read_text())

    capsys.readouterr()
    assert main([*args, "--arch", "tf_efficientnet_lite0", "--init", str(tmp_path / "a"),
                 "--out", str(tmp_path / "c")]) == 2  # fmt: skip
    assert "is a convnext_atto" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


@needs_data
def test_cross_validation_reports_each_epoch_over_folds(small_dataset, tmp_path, capsys):
    out = tmp_path / "cv.json"
    assert main(["train", "--arch", "convnext_atto", "--data", str(small_dataset), "--splits", "train",
                 "--epochs", "2", "--image-size", "32", "--batch-size", "8", "--no-progress",
                 "--folds", "3", "--out", str(out)]) == 0  # fmt: skip
    report = json.loads(out.read_text())
    assert report["folds"] == 3 and sum(report["held_out_per_fold"]) == 24
    assert [row["epoch"] for row in report["per_epoch"]] == [1, 2] and report["best_epoch"] in (1, 2)
    first = report["per_epoch"][0]
    accuracies = [fold[0]["holdout_accuracy"] for fold in report["per_fold"]]
    assert first["holdout_accuracy_mean"] == pytest.approx(np.mean(accuracies))
    assert "best epoch" in capsys.readouterr().out

    assert main(["train", "--arch", "convnext_atto", "--data", str(small_dataset), "--splits", "train",
                 "--folds", "50", "--out", str(out), "--no-progress"]) == 2  # fmt: skip
    assert "n_splits=50" in capsys.readouterr().err


@needs_data
def test_moving_average_weights_are_the_ones_evaluated_and_saved(small_dataset, tmp_path):
    options = TrainOptions(arch="convnext_atto", data=small_dataset, out=tmp_path / "ema", splits=("train",),
                           epochs=1, image_size=48, batch_size=8, ema_decay=0.99, progress=False)  # fmt: skip
    data = load_training_data(options)
    held = np.zeros(len(data.records), dtype=bool)
    held[::4] = True
    averaged, history = fit(options, data, held)
    raw, _ = fit(replace(options, ema_decay=None), data, held)
    settings = Preprocessing(input_size=48)
    averaged_logits = batched_logits(averaged, data.plain[held], settings)
    assert not np.allclose(averaged_logits, batched_logits(raw, data.plain[held], settings))
    accuracy = float(np.mean(averaged_logits.argmax(1) == data.labels[held]))
    assert history[-1]["holdout_accuracy"] == pytest.approx(accuracy)

    train(options)
    assert "moving average" in json.loads((tmp_path / "ema" / "training.json").read_text())["weights"]
    with pytest.raises(ValueError, match="between 0 and 1"):
        replace(options, ema_decay=1.5)


@needs_data
def test_drop_path_skips_blocks_in_training_only_and_saves_plain_weights(small_dataset, tmp_path):
    start = tmp_path / "start"
    # lr 0.05 (one step at 0.05 / 25): ConvNeXt's layer scales start at 1e-6, so the residual
    # branches must grow for dropping one to show at the output
    options = TrainOptions(arch="convnext_atto", data=small_dataset, out=start, splits=("train",), image_size=48,
                           batch_size=8, max_steps=1, lr=0.05, progress=False)  # fmt: skip
    train(options)
    # lr 0: the continued run keeps the starting weights, now inside a model that drops blocks
    dropping = replace(options, init=str(start), drop_path=0.3, lr=0.0, out=tmp_path / "continued")
    data = load_training_data(dropping)
    model, _ = fit(dropping, data, np.zeros(len(data.records), dtype=bool))
    rates = [m.drop_prob for m in model.modules() if type(m).__name__ == "DropPath"]
    assert rates == sorted(rates) and rates[-1] == pytest.approx(0.3)  # timm: rising with depth up to the rate
    x = torch.rand(4, 3, 48, 48)
    with torch.no_grad():
        model.train()
        assert not torch.allclose(model(x), model(x))  # a different random set of blocks each pass
        model.eval()
        assert torch.equal(model(x), model(x))
    train(dropping)
    saved = load_checkpoint(tmp_path / "continued")  # loads into timm's plain model, strictly
    with torch.no_grad():
        assert torch.allclose(saved.model(x), load_checkpoint(start).model(x))
    assert json.loads((tmp_path / "continued" / "training.json").read_text())["drop_path"] == 0.3
    with pytest.raises(ValueError, match="--drop-path"):
        replace(options, drop_path=1.0)


@needs_data
def test_bf16_autocasts_the_training_forward_passes_only(small_dataset, checkpoint_root, monkeypatch):
    options = distilling_options(small_dataset, checkpoint_root, max_steps=2)
    data = load_training_data(options)
    held = np.zeros(len(data.records), dtype=bool)
    held[::4] = True

    def dtypes(bf16: bool) -> tuple[list, list, torch.nn.Module]:
        options_here = replace(options, bf16=bf16)
        return fit_watching(options_here, data, monkeypatch, held, watch=lambda inputs, output: output.dtype)

    student, teacher, model = dtypes(True)
    # two training steps in bfloat16, then the hold-out (6 images, one batch) scored in float32
    assert student == [torch.bfloat16, torch.bfloat16, torch.float32]
    assert teacher == [torch.bfloat16, torch.bfloat16]
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    student, teacher, _ = dtypes(False)
    assert student == [torch.float32] * 3 and teacher == [torch.float32] * 2


@needs_data
def test_smoke_training_with_counterfactuals_randomisation_template_and_guidance(tmp_path):
    (tmp_path / "data").mkdir()
    data = copy_shared_slice(tmp_path / "data", {"train": 5})
    out = tmp_path / "robust"
    code = main(["train", "--arch", "tf_efficientnet_lite0", "--data", str(data), "--out", str(out),
                 "--splits", "train", "--epochs", "1", "--image-size", "64", "--batch-size", "8", "--max-steps", "3",
                 "--holdout-fraction", "0", "--counterfactuals", "0.5", "--control-fills", "0.5", "--randomise", "0.5",
                 "--healthy-template",
                 "--guidance", "1", "--no-progress"])  # fmt: skip
    assert code == 0
    record = json.loads((out / "training.json").read_text())
    assert "inversion" in record["randomisation"] and "Telea" in record["counterfactuals"]
    assert "MNI152" in record["healthy_template"] and record["guidance"].startswith("weight 1")
    assert record["control_fills"].startswith("each outlined tumour image not shown as a counterfactual")
    assert load_checkpoint(out).config.label_names == CLASSES


def test_guidance_needs_hard_labels_and_shares_stay_in_range(tmp_path):
    base = {"arch": "convnext_atto", "data": tmp_path, "out": tmp_path}
    with pytest.raises(ValueError, match="--guidance cannot go with --mixup"):
        TrainOptions(**base, guidance=1, mixup_alpha=0.8)
    with pytest.raises(ValueError, match="--counterfactuals is a share"):
        TrainOptions(**base, counterfactuals=1.5)
    with pytest.raises(ValueError, match="--control-fills needs --counterfactuals"):
        TrainOptions(**base, control_fills=0.25)


@needs_data
def test_a_second_seed_can_keep_the_first_seeds_holdout(small_dataset, tmp_path):
    args = ["train", "--arch", "convnext_atto", "--data", str(small_dataset), "--splits", "train", "--epochs", "1",
            "--image-size", "32", "--batch-size", "8", "--max-steps", "1", "--no-progress", "--seed", "3"]  # fmt: skip
    assert main([*args, "--holdout-seed", "0", "--out", str(tmp_path / "kept")]) == 0
    assert main([*args, "--out", str(tmp_path / "own")]) == 0
    kept = json.loads((tmp_path / "kept" / "training.json").read_text())
    own = json.loads((tmp_path / "own" / "training.json").read_text())
    assert kept["seed"] == own["seed"] == 3
    assert kept["holdout"].endswith("seed 0") and own["holdout"].endswith("seed 3")
    options = TrainOptions(arch="convnext_atto", data=small_dataset, out=tmp_path, seed=3)
    assert options.holdout_seed == 3 and replace(options, holdout_seed=0).holdout_seed == 0
