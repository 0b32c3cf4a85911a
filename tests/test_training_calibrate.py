"""A run refit without a hold-out takes the temperature its twin fitted."""

from __future__ import annotations

import json

import pytest

from core.checkpoint import load_checkpoint
from core.cli import main
from core.config import read_training_record
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


def test_the_shift_fitted_temperature_is_adopted_only_when_it_does_better_on_unseen_shifts(checkpoint_root, tmp_path):
    import shutil

    from core.config import CheckpointError, read_config, read_training_record
    from core.training.calibrate import adopt_shift_temperature

    target = tmp_path / "model"
    shutil.copytree(checkpoint_root / "tiny_convnext", target)
    clean_t = read_config(target).temperature

    def report(pooled_unseen: float, pooled_clean: float, images: str = "grouped hold-out of train+val") -> dict:
        return {"images": images, "temperature_under_shift": {
            "clean_temperature": clean_t, "pooled_temperature": 2.5,
            "mean_ece_on_unseen_shifts": {"clean": 0.15, "pooled": pooled_unseen},
            "clean_ece": {"clean": 0.03, "pooled": pooled_clean}}}  # fmt: skip

    assert adopt_shift_temperature(target, report(0.2, 0.04)) is None  # worse under shift: kept
    assert adopt_shift_temperature(target, report(0.08, 0.09)) is None  # clean ECE over 0.05: kept
    assert read_config(target).temperature == clean_t
    with pytest.raises(CheckpointError, match="grouped hold-out"):
        adopt_shift_temperature(target, report(0.08, 0.04, images="split test"))
    assert adopt_shift_temperature(target, report(0.08, 0.04)) == 2.5
    assert read_config(target).temperature == 2.5
    assert "unseen shift families" in read_training_record(target)["temperature_from"]["rule"]
    with pytest.raises(CheckpointError, match="Run the stress test again"):
        adopt_shift_temperature(target, report(0.08, 0.04))  # made at the old temperature
