"""`python -m core soup`: the mean of runs' weights, refit on their common hold-out, and only of
runs that can be averaged."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from core.checkpoint import create_model, load_checkpoint
from core.cli import main
from core.config import CheckpointError, read_training_record, write_training_record
from core.training.soup import average_weights
from tests.conftest import LABELS, make_tiny_checkpoint, needs_data


def test_floating_point_tensors_are_averaged_and_step_counters_kept():
    states = []
    for seed in (0, 1, 2):
        torch.manual_seed(seed)
        model = create_model("tf_efficientnet_lite0", len(LABELS))
        model.train()(torch.randn(2, 3, 32, 32) * (seed + 1))  # different BatchNorm statistics per model
        states.append(model.state_dict())
    averaged = average_weights(states)

    weight, mean = "classifier.weight", "bn1.running_mean"
    assert torch.allclose(averaged[weight], (states[0][weight] + states[1][weight] + states[2][weight]) / 3)
    assert torch.allclose(averaged[mean], sum(state[mean] for state in states) / 3)
    assert not torch.allclose(averaged[mean], states[0][mean])
    assert averaged["bn1.num_batches_tracked"].dtype == torch.int64
    assert averaged["bn1.num_batches_tracked"] == states[0]["bn1.num_batches_tracked"]


def test_states_of_other_layers_are_refused():
    first = create_model("tf_efficientnet_lite0", len(LABELS)).state_dict()
    other = create_model("tf_efficientnet_lite0", len(LABELS) + 1).state_dict()
    with pytest.raises(CheckpointError, match="same layers"):
        average_weights([first, other])


@needs_data
def test_soup_of_two_seeds_is_their_mean_fitted_on_their_holdout(small_dataset, tmp_path, capsys):
    train = ["train", "--arch", "convnext_atto", "--data", str(small_dataset), "--splits", "train", "--epochs", "1",
             "--image-size", "48", "--batch-size", "8", "--max-steps", "2", "--holdout-seed", "0",
             "--no-progress"]  # fmt: skip
    for seed in ("0", "1"):
        assert main([*train, "--seed", seed, "--out", str(tmp_path / f"seed{seed}")]) == 0
    data = ["--data", str(small_dataset)]
    soup = ["soup", str(tmp_path / "soup"), str(tmp_path / "seed0"), str(tmp_path / "seed1"), *data]
    capsys.readouterr()
    assert main(soup) == 0
    assert "grouped hold-out accuracy" in capsys.readouterr().out

    ingredients = [load_checkpoint(tmp_path / f"seed{seed}").model.state_dict() for seed in (0, 1)]
    averaged = load_checkpoint(tmp_path / "soup")
    name = "head.fc.weight"
    assert torch.allclose(averaged.model.state_dict()[name], (ingredients[0][name] + ingredients[1][name]) / 2)
    record = read_training_record(tmp_path / "soup")
    seed0 = read_training_record(tmp_path / "seed0")
    assert [entry["seed"] for entry in record["soup_of"]] == [0, 1]
    assert record["holdout"] == seed0["holdout"]
    assert record["holdout_metrics"]["num_images"] == seed0["holdout_metrics"]["num_images"] > 0
    assert averaged.config.temperature > 0 and averaged.config.temperature != 1.0

    # A run that kept another hold-out (it trained on this one's images) cannot join.
    assert main([*train, "--holdout-seed", "5", "--out", str(tmp_path / "other")]) == 0
    capsys.readouterr()
    assert main([*soup[:2], str(tmp_path / "seed0"), str(tmp_path / "other"), *data]) == 2
    assert "did not keep the hold-out" in capsys.readouterr().err
    # Nor can a run whose start had the same name but other weights (the record it copied differs).
    shutil.copytree(tmp_path / "seed1", tmp_path / "restarted")
    record = read_training_record(tmp_path / "restarted")
    write_training_record(tmp_path / "restarted", {**record, "continued_from": {"commit": "abc1234", "seconds": 60}})
    capsys.readouterr()
    assert main([*soup[:2], str(tmp_path / "seed0"), str(tmp_path / "restarted"), *data]) == 2
    assert "did not start from the same weights" in capsys.readouterr().err
    # Nor can a model of another architecture, or a lone run.
    make_tiny_checkpoint(tmp_path / "effnet", "tf_efficientnet_lite0", "conv_head")
    assert main([*soup[:2], str(tmp_path / "seed0"), str(tmp_path / "effnet"), *data]) == 2
    assert "Average runs of one model only" in capsys.readouterr().err
    assert main([*soup[:2], str(tmp_path / "seed0"), *data]) == 2
    assert "at least two" in capsys.readouterr().err
    assert json.loads((tmp_path / "soup" / "config.json").read_text())["architecture"] == "convnext_atto"


@needs_data
def test_a_run_moved_back_toward_its_start_is_the_weighted_mean_of_the_two(small_dataset, tmp_path, capsys):
    train = ["train", "--arch", "convnext_atto", "--data", str(small_dataset), "--splits", "train", "--epochs", "1",
             "--image-size", "48", "--batch-size", "8", "--max-steps", "2", "--no-progress"]  # fmt: skip
    assert main([*train, "--out", str(tmp_path / "start")]) == 0
    assert main([*train, "--seed", "1", "--out", str(tmp_path / "other")]) == 0
    assert main([*train, "--init", str(tmp_path / "start"), "--lr", "0.1", "--out", str(tmp_path / "tuned")]) == 0
    wise = ["soup", str(tmp_path / "wise"), str(tmp_path / "tuned"), "--data", str(small_dataset)]
    capsys.readouterr()
    assert main([*wise, "--start", str(tmp_path / "start"), "--start-share", "0.25"]) == 0

    start, tuned = (load_checkpoint(tmp_path / name).model.state_dict() for name in ("start", "tuned"))
    name = "head.fc.weight"
    assert not torch.allclose(start[name], tuned[name])
    moved = load_checkpoint(tmp_path / "wise").model.state_dict()[name]
    assert torch.allclose(moved, 0.75 * tuned[name] + 0.25 * start[name], atol=1e-6)
    record = read_training_record(tmp_path / "wise")
    assert record["start_share"] == 0.25 and "25% of the way back" in record["weights"]

    # Only the weights the run went on from can be its start; a share needs a start.
    capsys.readouterr()
    assert main([*wise, "--start", str(tmp_path / "other"), "--start-share", "0.5"]) == 2
    assert "not the checkpoint these runs were fine-tuned from" in capsys.readouterr().err
    from_scratch = ["soup", str(tmp_path / "wise2"), str(tmp_path / "start"), "--data", str(small_dataset)]
    assert main([*from_scratch, "--start", str(tmp_path / "start"), "--start-share", "0.5"]) == 2
    assert "not the checkpoint these runs were fine-tuned from" in capsys.readouterr().err
    assert main([*wise, "--start-share", "0.5"]) == 2
    assert "(or one and --start)" in capsys.readouterr().err
    with pytest.raises(ValueError, match="summing to 1"):
        average_weights([start, tuned], [0.5, 0.6])
