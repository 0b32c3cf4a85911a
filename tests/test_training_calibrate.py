"""A run refit without a hold-out takes the temperature its twin fitted."""

from __future__ import annotations

import json

from core.checkpoint import load_checkpoint, read_training_record
from core.cli import main
from tests.conftest import needs_data


@needs_data
def test_refit_without_a_holdout_takes_the_temperature_of_its_holdout_twin(small_dataset, tmp_path, capsys):
    args = ["train", "--arch", "convnext_atto", "--data", str(small_dataset), "--splits", "train", "--epochs", "1",
            "--image-size", "48", "--batch-size", "8", "--max-steps", "2", "--no-progress"]  # fmt: skip
    assert main([*args, "--out", str(tmp_path / "twin")]) == 0
    assert main([*args, "--out", str(tmp_path / "refit"), "--holdout-fraction", "0"]) == 0
    assert "0 images held out" in capsys.readouterr().out
    refit = json.loads((tmp_path / "refit" / "config.json").read_text())
    refit_record = json.loads((tmp_path / "refit" / "training.json").read_text())
    assert refit["temperature"] == 1.0 and refit["refit_without_holdout"] and refit_record["holdout_metrics"] == {}
    assert refit_record["holdout"] == "none: refit on every image of the training splits"

    twin = json.loads((tmp_path / "twin" / "config.json").read_text())
    twin_record = json.loads((tmp_path / "twin" / "training.json").read_text())
    assert twin_record["holdout_metrics"]["num_images"] > 0 and twin["temperature"] != 1.0
    assert not twin["refit_without_holdout"]
    calibrate = ["calibrate", "--checkpoint", str(tmp_path / "refit"), "--temperature-from", str(tmp_path / "twin")]
    assert main(calibrate) == 0
    calibrated = load_checkpoint(tmp_path / "refit")
    assert calibrated.config.temperature == twin["temperature"]
    source = read_training_record(tmp_path / "refit")["temperature_from"]
    assert source["checkpoint"] == str(tmp_path / "twin")
    assert source["holdout_metrics"] == twin_record["holdout_metrics"]

    # A run that held nothing out has no fitted temperature to give.
    capsys.readouterr()
    assert main(["calibrate", "--checkpoint", calibrate[2], "--temperature-from", calibrate[2]]) == 2
    assert "held nothing out" in capsys.readouterr().err
    # Nor does a run that fitted its own temperature take another's.
    assert main(["calibrate", "--checkpoint", calibrate[4], "--temperature-from", calibrate[4]]) == 2
    assert "fitted its own temperature" in capsys.readouterr().err
    assert json.loads((tmp_path / "twin" / "config.json").read_text()) == twin
