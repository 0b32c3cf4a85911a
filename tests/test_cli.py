from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.cli import main
from tests.conftest import encode, head_phantom


def test_explain_writes_pngs_and_results(use_tiny_checkpoints, tmp_path, capsys):
    good = tmp_path / "scan.png"
    good.write_bytes(encode(head_phantom(128), "PNG"))
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not really a jpeg")
    second = tmp_path / "again.png"
    second.write_bytes(encode(head_phantom(96, seed=2), "PNG"))
    out = tmp_path / "out"

    code = main(["explain", str(good), str(bad), str(second), "--checkpoint", "tiny_convnext",
                 "--method", "HiResCAM", "--out", str(out)])  # fmt: skip

    assert code == 1  # one file failed
    assert "broken.jpg" in capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    assert results["checkpoint"] == "tiny_convnext" and results["method"] == "HiResCAM"
    first, failed, third = results["images"]
    assert "error" in failed and "named .jpg but is not a readable JPEG image" in failed["error"]
    for entry in (first, third):
        assert entry["prediction"] in entry["probabilities"]
        assert entry["brain_masked"] is True and entry["timings_ms"]["total"] > 0
        assert (out / entry["overlay"]).stat().st_size > 0 and (out / entry["heatmap"]).stat().st_size > 0


def test_explain_without_brain_mask_and_with_target(use_tiny_checkpoints, tmp_path):
    image = tmp_path / "scan.png"
    image.write_bytes(encode(head_phantom(128), "PNG"))
    code = main(["explain", str(image), "--checkpoint", "tiny_effnet", "--target", "notumor",
                 "--no-brain-mask", "--out", str(tmp_path / "o")])  # fmt: skip
    assert code == 0
    entry = json.loads((tmp_path / "o" / "results.json").read_text())["images"][0]
    assert entry["brain_masked"] is False and entry["target_class"] == "notumor"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--checkpoint", "missing"], "No checkpoint 'missing'"),
        (["--checkpoint", "tiny_convnext", "--method", "Nope"], "Unknown method"),
    ],
)
def test_explain_bad_options(use_tiny_checkpoints, tmp_path, capsys, args, message):
    image = tmp_path / "scan.png"
    image.write_bytes(encode(head_phantom(64), "PNG"))
    assert main(["explain", str(image), *args, "--out", str(tmp_path / "o")]) == 2
    assert message in capsys.readouterr().err


def test_explain_folder_mirrors_tree_and_writes_csv(use_tiny_checkpoints, tmp_path):
    import csv

    folder = tmp_path / "study"
    (folder / "series1").mkdir(parents=True)
    (folder / "series1" / "a.png").write_bytes(encode(head_phantom(96), "PNG"))
    (folder / "b.jpg").write_bytes(encode(head_phantom(96, seed=1), "JPEG"))
    (folder / "series1" / "bad.png").write_bytes(b"broken")
    (folder / "notes.txt").write_text("not an image, skipped")
    out = tmp_path / "out"
    assert main(["explain", str(folder), "--checkpoint", "tiny_convnext", "--out", str(out)]) == 1
    assert (out / "study" / "series1" / "a_overlay.png").is_file()
    assert (out / "study" / "b_heatmap.png").is_file()
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert [Path(r["path"]).name for r in rows] == ["b.jpg", "a.png", "bad.png"]
    assert rows[2]["error"] and not rows[0]["error"]
    assert rows[0]["prediction"] and float(rows[0]["confidence"]) > 0 and rows[0]["p_glioma"]
    assert {r["method"] for r in rows} == {"Grad-CAM"}


def test_train_flags_come_from_the_options_with_their_defaults():
    import argparse
    from dataclasses import fields

    from core.cli import add_dataclass_options, dataclass_from_args
    from core.training.options import TrainOptions

    parser = argparse.ArgumentParser()
    add_dataclass_options(parser, TrainOptions)
    required = ["--arch", "convnext_atto", "--data", "d", "--out", "o"]
    parsed = dataclass_from_args(TrainOptions, parser.parse_args(required))
    assert parsed == TrainOptions(arch="convnext_atto", data=Path("d"), out=Path("o"))
    changed = parser.parse_args([*required, "--ema", "0.99", "--mixup", "0.8", "--no-progress", "--bf16",
                                 "--splits", "train", "--limit", "3", "--drop-path", "0.1"])  # fmt: skip
    options = dataclass_from_args(TrainOptions, changed)
    assert (options.ema_decay, options.mixup_alpha, options.progress, options.bf16) == (0.99, 0.8, False, True)
    assert (options.splits, options.limit, options.drop_path) == (("train",), 3, 0.1)
    assert all(spec.metadata.get("help") for spec in fields(TrainOptions))  # every flag explains itself
    with pytest.raises(SystemExit):
        parser.parse_args(required[:4])  # --out is required


def test_evaluate_with_an_unknown_method_says_so(use_tiny_checkpoints, tmp_path, capsys):
    assert main(["evaluate", "--checkpoint", "tiny_convnext", "--data", str(tmp_path), "--method", "Magic",
                 "--out", str(tmp_path / "o")]) == 2  # fmt: skip
    assert "Unknown method 'Magic'" in capsys.readouterr().err
