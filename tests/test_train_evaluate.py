"""Smoke training on a handful of shared images, then evaluation on a small slice."""

from __future__ import annotations

import csv
import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core.checkpoint import create_model, load_checkpoint
from core.cli import main
from core.dataset import grouped_folds, grouped_holdout, list_split, shrink_copy
from core.preprocess import Preprocessing, to_tensor
from core.train import (
    AttentionTransfer,
    Augment,
    TrainOptions,
    attention_layers,
    attention_transfer_loss,
    fit,
    load_training_data,
    predict_logits,
    train,
)
from tests.conftest import SHARED_DATA

needs_data = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"dataset not found at {SHARED_DATA}")
CLASSES = ("glioma", "meningioma", "notumor", "pituitary")


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory) -> Path:
    """A few images per class per split, copied from the shared dataset (never committed)."""
    root = tmp_path_factory.mktemp("data")
    for split, count in (("train", 6), ("test", 3)):
        for label in CLASSES:
            (root / split / label).mkdir(parents=True)
            for path in sorted((SHARED_DATA / split / label).iterdir())[:count]:
                shutil.copy(path, root / split / label / path.name)
    return root


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
    training = json.loads((out / "config.json").read_text())["training"]
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


def test_evaluate_errors_are_clear(use_tiny_checkpoints, tmp_path, capsys):
    assert main(["evaluate", "--checkpoint", "tiny_convnext", "--data", str(tmp_path), "--split", "test",
                 "--out", str(tmp_path / "o")]) == 2  # fmt: skip
    assert "No folder" in capsys.readouterr().err
    (tmp_path / "test" / "astrocytoma").mkdir(parents=True)
    assert main(["evaluate", "--checkpoint", "tiny_convnext", "--data", str(tmp_path), "--split", "test",
                 "--out", str(tmp_path / "o")]) == 2  # fmt: skip
    assert "unknown to the model" in capsys.readouterr().err


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
def test_evaluate_with_heatmaps_and_cache(use_tiny_checkpoints, small_dataset, tmp_path):
    from core.evaluate import HeatmapSettings, cache_key, cached_evaluation

    annotations = small_dataset / "annotations"
    if not annotations.exists():
        annotations.mkdir()
        for path in (small_dataset / "test").rglob("*.jpg"):
            source = SHARED_DATA / "annotations" / f"{path.stem}.json"
            if source.is_file():
                shutil.copy(source, annotations / source.name)
    settings = HeatmapSettings("Grad-CAM", True, True, 0.5)
    cache = tmp_path / "cache"
    folder = cached_evaluation("tiny_convnext", small_dataset, "test", settings, cache, batch_size=4, progress=False)
    summary = json.loads((folder / "summary.json").read_text())
    rows = list(csv.DictReader((folder / "predictions.csv").open()))
    tumour_rows = [r for r in rows if r["label"] != "notumor"]
    assert tumour_rows and all(r["annotation"] in ("polygon", "rectangle") for r in tumour_rows)
    assert all(0 <= float(r["iou"]) <= 1 and r["pointing_game"] in ("True", "False") for r in tumour_rows)
    assert all(r["iou"] == "" for r in rows if r["label"] == "notumor")  # no outline, no IoU
    assert all(0 <= float(r["mass_outside_brain"]) <= 1 for r in rows if r["mass_outside_brain"])
    assert {r["outcome"] for r in rows} <= {"TP", "FN"}
    overall = summary["localisation"]["all"]["iou"]
    assert overall["n"] == len(tumour_rows) and overall["ci95"][0] <= overall["mean"] <= overall["ci95"][1]
    assert set(summary["localisation"]["per_class"]) == set(CLASSES)

    # Another threshold, read from the stored IoU curves, matches a full evaluation at it.
    from core.gallery import at_threshold, read_evaluation

    stored = read_evaluation(folder)
    same = at_threshold(stored, 0.5)
    assert [float(r["iou"]) for r in same.rows if r["iou"] != ""] == pytest.approx(
        [float(r["iou"]) for r in tumour_rows]
    )
    redone = cached_evaluation("tiny_convnext", small_dataset, "test", HeatmapSettings("Grad-CAM", True, True, 0.3),
                               cache, batch_size=4, progress=False)  # fmt: skip
    expected = json.loads((redone / "summary.json").read_text())["localisation"]
    moved = at_threshold(stored, 0.3)

    def ious(rows):
        return [None if r["iou"] == "" else float(r["iou"]) for r in rows]

    assert ious(moved.rows) == pytest.approx(ious(read_evaluation(redone).rows))
    assert ious(moved.rows) != pytest.approx(ious(stored.rows))  # the threshold did move something
    for name, values in expected["per_class"].items():
        got = moved.summary["localisation"]["per_class"][name]["iou"]
        assert (got["mean"], got["n"]) == pytest.approx((values["iou"]["mean"], values["iou"]["n"]))
    assert moved.summary["heatmaps"]["threshold"] == 0.3

    # A second call is served from the cache; other settings get another key.
    stamp = (folder / "summary.json").stat().st_mtime_ns
    again = cached_evaluation("tiny_convnext", small_dataset, "test", settings, cache, progress=False)
    assert again == folder and (folder / "summary.json").stat().st_mtime_ns == stamp
    other = HeatmapSettings("HiResCAM", True, True, 0.5)
    assert cache_key("abc", small_dataset, "test", settings) != cache_key("abc", small_dataset, "test", other)
    assert cache_key("abc", small_dataset, "test", settings) != cache_key("abd", small_dataset, "test", settings)
    assert cache_key("abc", small_dataset, "test", settings) != cache_key("abc", small_dataset, "val", settings)


@needs_data
def test_cached_evaluation_is_redone_when_the_config_changes(checkpoint_root, small_dataset, tmp_path):
    """A new default layer or temperature in config.json, with the same weights, is a new result."""
    from core.evaluate import HeatmapSettings, cached_evaluation

    checkpoint = shutil.copytree(checkpoint_root / "tiny_convnext", tmp_path / "edited")
    settings, cache = HeatmapSettings("Grad-CAM", True, True, 0.5), tmp_path / "cache"
    before = cached_evaluation(checkpoint, small_dataset, "test", settings, cache, batch_size=4, progress=False)
    config_path = checkpoint / "config.json"
    config = json.loads(config_path.read_text())
    config["default_target_layer"] = "stages.2"
    config_path.write_text(json.dumps(config))
    after = cached_evaluation(checkpoint, small_dataset, "test", settings, cache, batch_size=4, progress=False)
    assert after != before
    layers = [json.loads((f / "summary.json").read_text())["heatmaps"]["target_layer"] for f in (before, after)]
    assert layers == ["stages.3", "stages.2"]


@needs_data
def test_training_can_continue_from_a_checkpoint(small_dataset, tmp_path, capsys):
    args = ["train", "--data", str(small_dataset), "--splits", "train", "--epochs", "1", "--image-size", "48",
            "--batch-size", "8", "--max-steps", "2", "--no-progress"]  # fmt: skip
    assert main([*args, "--arch", "convnext_atto", "--out", str(tmp_path / "a")]) == 0
    # With a learning rate of 0 the continued run must hand back exactly the weights it started from.
    assert main([*args, "--arch", "convnext_atto", "--init", str(tmp_path / "a"), "--lr", "0",
                 "--seed", "5", "--out", str(tmp_path / "b")]) == 0  # fmt: skip
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()
    continued = json.loads((tmp_path / "b" / "config.json").read_text())["training"]
    assert continued["init"] == str(tmp_path / "a")
    assert continued["continued_from"] == json.loads((tmp_path / "a" / "config.json").read_text())["training"]

    capsys.readouterr()
    assert main([*args, "--arch", "tf_efficientnet_lite0", "--init", str(tmp_path / "a"),
                 "--out", str(tmp_path / "c")]) == 2  # fmt: skip
    assert "is a convnext_atto" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


@needs_data
def test_grouped_folds_hold_each_image_out_once_and_keep_groups_whole():
    records = list_split(SHARED_DATA, "train") + list_split(SHARED_DATA, "val")
    folds = grouped_folds(records, 5, seed=0)
    assert (np.sum(folds, axis=0) == 1).all()
    for held in folds:
        assert_groups_whole_and_classes_balanced(records, held)


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


def _distilling(data: Path, checkpoint_root: Path, max_steps: int) -> TrainOptions:
    """A few 64 px steps of a ConvNeXt scored by the tiny EfficientNet on each augmented view."""
    return TrainOptions(arch="convnext_atto", data=data, out=Path("unused"), splits=("train",), image_size=64,
                        batch_size=8, max_steps=max_steps, teacher=checkpoint_root / "tiny_effnet",
                        consistent_teacher=True, progress=False)  # fmt: skip


@needs_data
def test_consistent_teacher_scores_each_augmented_batch(small_dataset, checkpoint_root, monkeypatch):
    options = _distilling(small_dataset, checkpoint_root, max_steps=3)
    data = load_training_data(options)
    assert data.teacher_probs is None
    shape = lambda inputs, output: inputs[0].shape  # noqa: E731
    _, seen, _ = _fit_watching(options, data, monkeypatch, watch=shape)
    assert seen == [(8, 3, 64, 64)] * 3  # one call per training step, on that step's batch

    # a 48 px student: the 64 px teacher scores each view at its own input size
    small = replace(options, image_size=48)
    _, seen, _ = _fit_watching(small, load_training_data(small), monkeypatch, watch=shape)
    assert seen == [(8, 3, 64, 64)] * 3

    fixed = load_training_data(replace(options, consistent_teacher=False))
    assert fixed.teacher is None and fixed.teacher_probs.shape == (24, 4)
    fixed_small = load_training_data(replace(options, consistent_teacher=False, image_size=48))
    assert np.abs(fixed_small.teacher_probs - fixed.teacher_probs).max() < 0.2  # the same images, scored at 64 px
    assert np.allclose(fixed.teacher_probs.sum(axis=1), 1, atol=1e-5)
    with pytest.raises(ValueError, match="needs --teacher"):
        replace(options, teacher=None)


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
    averaged_logits = predict_logits(averaged, data.plain[held], settings)
    assert not np.allclose(averaged_logits, predict_logits(raw, data.plain[held], settings))
    accuracy = float(np.mean(averaged_logits.argmax(1) == data.labels[held]))
    assert history[-1]["holdout_accuracy"] == pytest.approx(accuracy)

    train(options)
    assert "moving average" in json.loads((tmp_path / "ema" / "config.json").read_text())["training"]["weights"]
    with pytest.raises(ValueError, match="between 0 and 1"):
        replace(options, ema_decay=1.5)


@torch.no_grad()
def attention_distance(student: torch.nn.Module, teacher, x: torch.Tensor) -> float:
    """Mean squared distance (beta 2) between a 64 px student's attention maps and the teacher's."""
    transfer = AttentionTransfer(student.eval(), "convnext_atto", teacher, beta=2)
    student(to_tensor(x, Preprocessing(input_size=64)))
    teacher.model(to_tensor(x, teacher.config.preprocessing))
    transfer.remove()
    return transfer.loss().item()


def _fit_watching(options: TrainOptions, data, monkeypatch, held=None, watch=lambda inputs, output: inputs[0].clone()):
    """Fit, recording watch(inputs, output) at each student and (consistent) teacher forward pass.
    Returns (student records, teacher records, fitted model)."""
    student, teacher = [], []
    hook = data.teacher.model.register_forward_hook(
        lambda module, inputs, output: teacher.append(watch(inputs, output))
    )

    def create_hooked(arch: str, num_classes: int, **timm_options):
        model = create_model(arch, num_classes, **timm_options)
        model.register_forward_hook(lambda module, inputs, output: student.append(watch(inputs, output)))
        return model

    monkeypatch.setattr("core.train.create_model", create_hooked)
    model, _ = fit(options, data, np.zeros(len(data.records), dtype=bool) if held is None else held)
    hook.remove()
    return student, teacher, model


@needs_data
def test_mixup_blends_pairs_the_student_and_teacher_both_see(small_dataset, checkpoint_root, monkeypatch):
    options = _distilling(small_dataset, checkpoint_root, max_steps=3)
    data = load_training_data(options)
    plain, _, _ = _fit_watching(options, data, monkeypatch)
    mixed, teacher_saw, _ = _fit_watching(replace(options, mixup_alpha=0.8), data, monkeypatch)

    assert len(mixed) == 3 and all(torch.equal(s, t) for s, t in zip(mixed, teacher_saw))  # teacher sees the mix
    for x, blended in zip(plain, mixed):
        other = x.flip(0)  # timm's Mixup pairs image i with image n-1-i
        # blended = lam * x + (1 - lam) * other with one lam per batch: solve for it by least squares
        lam = float(((blended - other) * (x - other)).sum() / ((x - other) ** 2).sum())
        assert 0 < lam < 1
        assert torch.allclose(blended, lam * x + (1 - lam) * other, atol=1e-4)

    odd, _, _ = _fit_watching(replace(options, batch_size=7, max_steps=4, cutmix_alpha=1.0), data, monkeypatch)
    assert [len(x) for x in odd] == [6, 6, 6, 2]  # 24 images: odd batches lose one image
    with pytest.raises(ValueError, match="need --consistent-teacher"):
        replace(options, consistent_teacher=False, cutmix_alpha=1.0)
    with pytest.raises(ValueError, match="alphas >= 0"):
        replace(options, mixup_alpha=-0.2)


@needs_data
def test_bf16_autocasts_the_training_forward_passes_only(small_dataset, checkpoint_root, monkeypatch):
    options = _distilling(small_dataset, checkpoint_root, max_steps=2)
    data = load_training_data(options)
    held = np.zeros(len(data.records), dtype=bool)
    held[::4] = True

    def dtypes(bf16: bool) -> tuple[list, list, torch.nn.Module]:
        options_here = replace(options, bf16=bf16)
        return _fit_watching(options_here, data, monkeypatch, held, watch=lambda inputs, output: output.dtype)

    student, teacher, model = dtypes(True)
    # two training steps in bfloat16, then the hold-out (6 images, one batch) scored in float32
    assert student == [torch.bfloat16, torch.bfloat16, torch.float32]
    assert teacher == [torch.bfloat16, torch.bfloat16]
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    student, teacher, _ = dtypes(False)
    assert student == [torch.float32] * 3 and teacher == [torch.float32] * 2


@needs_data
def test_drop_path_skips_blocks_in_training_only_and_saves_plain_weights(small_dataset, tmp_path):
    start = tmp_path / "start"
    options = TrainOptions(arch="convnext_atto", data=small_dataset, out=start, splits=("train",), image_size=48,
                           batch_size=8, max_steps=1, progress=False)  # fmt: skip
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
    assert json.loads((tmp_path / "continued" / "config.json").read_text())["training"]["drop_path"] == 0.3
    with pytest.raises(ValueError, match="--drop-path"):
        replace(options, drop_path=1.0)


def test_attention_transfer_loss_compares_where_layers_are_active_not_how_much():
    student = torch.rand(2, 8, 7, 7, requires_grad=True)
    # more channels and larger activations, but active in the same places: no loss
    same_places = 3 * student.detach().repeat(1, 2, 1, 1)
    assert attention_transfer_loss([student], [same_places], beta=1000).item() == pytest.approx(0, abs=1e-6)
    # a teacher on a finer grid is resized to the student's: uniform maps match at any size
    assert attention_transfer_loss([torch.ones(2, 8, 7, 7)], [torch.ones(2, 4, 8, 8)], 1000).item() == pytest.approx(0)

    # active in disjoint places: the normalised maps are orthogonal, squared distance 2 per image,
    # so the mean over 49 positions is 2/49 and the loss beta/2 * 2/49 (summed over the pairs)
    left, right = torch.zeros(2, 8, 7, 7), torch.zeros(2, 8, 7, 7)
    left[..., :3], right[..., 4:] = 1.0, 5.0
    assert attention_transfer_loss([left], [right], 1000).item() == pytest.approx(1000 / 49)
    assert attention_transfer_loss([left, left], [right, right], 10).item() == pytest.approx(2 * 10 / 49)

    teacher = torch.rand(2, 8, 7, 7, requires_grad=True)
    attention_transfer_loss([student], [teacher], 1000).backward()
    assert student.grad.abs().sum() > 0 and teacher.grad is None  # only the student learns


@needs_data
def test_attention_transfer_trains_the_student_through_hooks_it_removes(small_dataset, checkpoint_root, tmp_path):
    options = _distilling(small_dataset, checkpoint_root, max_steps=2)
    data = load_training_data(options)
    everyone = np.zeros(len(data.records), dtype=bool)
    plain, _ = fit(options, data, everyone)
    transferring, _ = fit(replace(options, attention_transfer=1000), data, everyone)
    # same seed and batches: only the attention loss sets the two apart, and it brings the
    # student's attention maps closer to the teacher's on the training images
    x = torch.from_numpy(data.plain[:16]).float() / 255
    assert attention_distance(transferring, data.teacher, x) < 0.9 * attention_distance(plain, data.teacher, x)
    for model in (transferring, data.teacher.model):
        assert not any(module._forward_hooks for module in model.modules())

    train(replace(options, attention_transfer=1000, out=tmp_path / "at"))
    loss = json.loads((tmp_path / "at" / "config.json").read_text())["training"]["loss"]
    assert "attention transfer beta 1000 (stages.2 to blocks.4, stages.3 to bn2)" in loss
    with pytest.raises(ValueError, match="needs --consistent-teacher"):
        replace(options, consistent_teacher=False, attention_transfer=1000)
    with pytest.raises(ValueError, match=">= 0"):
        replace(options, attention_transfer=-1)
    with pytest.raises(ValueError, match="not resnet18"):
        attention_layers("resnet18")


def test_augmentation_draws_per_image_and_repeats_with_the_seed():
    square = torch.zeros(1, 1, 64, 64)
    square[..., 16:48, 16:48] = 0.5
    batch = square.expand(6, -1, -1, -1).contiguous()

    first, again = Augment(seed=3)(batch), Augment(seed=3)(batch)
    assert torch.equal(first, again)
    assert first.shape == batch.shape and 0 <= first.min() and first.max() <= 1
    assert len({tuple(np.round(image.flatten()[::97].numpy(), 4)) for image in first}) == 6  # six different draws
    # Small transforms: the bright square keeps most of its area and stays near the centre.
    for image in first[:, 0]:
        rows, cols = torch.nonzero(image > 0.1, as_tuple=True)
        assert 0.75 < len(rows) / 32**2 < 1.3
        assert abs(rows.float().mean() - 31.5) < 6 and abs(cols.float().mean() - 31.5) < 6


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_training_on_a_gpu_that_is_not_there_says_so():
    with pytest.raises(ValueError, match="no CUDA GPU"):
        TrainOptions(arch="convnext_atto", data=Path("unused"), out=Path("unused"), device="cuda")


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
def test_refit_without_a_holdout_takes_the_temperature_of_its_holdout_twin(small_dataset, tmp_path, capsys):
    args = ["train", "--arch", "convnext_atto", "--data", str(small_dataset), "--splits", "train", "--epochs", "1",
            "--image-size", "48", "--batch-size", "8", "--max-steps", "2", "--no-progress"]  # fmt: skip
    assert main([*args, "--out", str(tmp_path / "twin")]) == 0
    assert main([*args, "--out", str(tmp_path / "refit"), "--holdout-fraction", "0"]) == 0
    assert "0 images held out" in capsys.readouterr().out
    refit = json.loads((tmp_path / "refit" / "config.json").read_text())
    assert refit["temperature"] == 1.0 and refit["training"]["holdout_metrics"] == {}
    assert refit["training"]["holdout"] == "none: refit on every image of the training splits"

    twin = json.loads((tmp_path / "twin" / "config.json").read_text())
    assert twin["training"]["holdout_metrics"]["num_images"] > 0 and twin["temperature"] != 1.0
    calibrate = ["calibrate", "--checkpoint", str(tmp_path / "refit"), "--temperature-from", str(tmp_path / "twin")]
    assert main(calibrate) == 0
    calibrated = load_checkpoint(tmp_path / "refit")
    assert calibrated.config.temperature == twin["temperature"]
    source = calibrated.config.extra["training"]["temperature_from"]
    assert source["checkpoint"] == str(tmp_path / "twin")
    assert source["holdout_metrics"] == twin["training"]["holdout_metrics"]

    # A run that held nothing out has no fitted temperature to give.
    capsys.readouterr()
    assert main(["calibrate", "--checkpoint", calibrate[2], "--temperature-from", calibrate[2]]) == 2
    assert "held nothing out" in capsys.readouterr().err
    # Nor does a run that fitted its own temperature take another's.
    assert main(["calibrate", "--checkpoint", calibrate[4], "--temperature-from", calibrate[4]]) == 2
    assert "fitted its own temperature" in capsys.readouterr().err
    assert json.loads((tmp_path / "twin" / "config.json").read_text()) == twin


def test_holdout_fraction_must_leave_something_to_train_on():
    with pytest.raises(ValueError, match="--holdout-fraction"):
        TrainOptions(arch="convnext_atto", data=Path("d"), out=Path("o"), holdout_fraction=1.0)
