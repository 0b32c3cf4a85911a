from __future__ import annotations

import json
import shutil

import pytest
import torch

from core.checkpoint import checkpoint_sha256, checkpoint_stamp, load_checkpoint, migrate_checkpoint
from core.config import (
    DEFAULT_CHECKPOINT_ROOT,
    NO_HOLDOUT_RECORD,
    CheckpointError,
    list_checkpoints,
    read_training_record,
)


def test_round_trip_keeps_weights_and_config(checkpoint_root, tiny_model):
    again = load_checkpoint("tiny_convnext", root=checkpoint_root)
    for (name, a), (_, b) in zip(tiny_model.model.state_dict().items(), again.model.state_dict().items()):
        assert torch.equal(a, b), name
    assert again.config == tiny_model.config
    assert again.config.temperature == 1.5
    assert not again.model.training


def test_list_checkpoints(checkpoint_root):
    assert list_checkpoints(checkpoint_root) == ["tiny_convnext", "tiny_effnet"]


def test_missing_name_lists_installed(checkpoint_root):
    with pytest.raises(CheckpointError, match="Installed: tiny_convnext, tiny_effnet"):
        load_checkpoint("nope", root=checkpoint_root)


@pytest.fixture
def copy(checkpoint_root, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(checkpoint_root / "tiny_convnext", target)
    return target


def test_truncated_weights(copy):
    weights = copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="truncated or damaged"):
        load_checkpoint(copy)


def test_tampered_header(copy):
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[8:20] = b"garbage!!!!!"
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="truncated or damaged"):
        load_checkpoint(copy)


def test_pickle_file_is_never_loaded(copy):
    # A pickle in place of safetensors must be refused, not executed.
    torch.save({"x": torch.zeros(1)}, copy / "model.safetensors")
    with pytest.raises(CheckpointError):
        load_checkpoint(copy)


def test_weights_that_do_not_fit_the_architecture(copy):
    config = json.loads((copy / "config.json").read_text())
    config["label_names"] = ["a", "b"]
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(copy)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"schema_version": 99}, "schema_version"),
        ({"default_target_layer": "no.such.layer"}, "not in the model"),
        ({"architecture": "not_a_model"}, "not known to timm"),
    ],
)
def test_bad_config(copy, change, message):
    config = json.loads((copy / "config.json").read_text())
    config.update(change)
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(copy)


def test_invalid_json(copy):
    (copy / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(copy)


def test_checkpoint_fingerprint_covers_weights_and_config(copy):
    original = checkpoint_sha256(copy)
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "temperature": 2.0}))
    edited = checkpoint_sha256(copy)
    assert edited != original
    (copy / "model.safetensors").write_bytes((copy / "model.safetensors").read_bytes() + b" ")
    assert checkpoint_sha256(copy) not in (original, edited)
    (copy / "config.json").unlink()
    with pytest.raises(CheckpointError, match="has no config.json"):
        checkpoint_sha256(copy)


def test_an_older_config_still_loads_and_migrates_without_touching_the_weights(copy):
    config = json.loads((copy / "config.json").read_text())
    del config["refit_without_holdout"]
    size = config["preprocessing"]["input_size"]
    record = {"holdout": NO_HOLDOUT_RECORD, "holdout_metrics": {}, "epochs": 3}
    old = {**config, "num_classes": 4, "input_size": [3, size, size], "mean": [0.5] * 3, "std": [0.5] * 3,
           "training": record, "notes": ["tried once"]}  # fmt: skip
    (copy / "config.json").write_text(json.dumps(old))
    weights = (copy / "model.safetensors").read_bytes()

    loaded = load_checkpoint(copy)
    assert loaded.config.refit_without_holdout and loaded.config.extra == {}
    assert read_training_record(copy) == {**record, "notes": ["tried once"]}

    migrate_checkpoint(copy)
    migrated = json.loads((copy / "config.json").read_text())
    assert not {"training", "notes", "input_size", "mean", "std", "num_classes"} & set(migrated)
    assert migrated["refit_without_holdout"] is True
    assert json.loads((copy / "training.json").read_text()) == {**record, "notes": ["tried once"]}
    assert (copy / "model.safetensors").read_bytes() == weights
    assert load_checkpoint(copy).config == loaded.config


def test_shipped_configs_hold_only_what_inference_needs():
    for name in list_checkpoints(DEFAULT_CHECKPOINT_ROOT):
        directory = DEFAULT_CHECKPOINT_ROOT / name
        values = json.loads((directory / "config.json").read_text())
        assert "training" not in values and "notes" not in values
        assert (directory / "config.json").stat().st_size < 2048
        record = read_training_record(directory)
        runs = record.get("ingredient_records") or [record]  # a soup (core.training.soup) records each run
        assert runs and all(run["epochs"] > 0 for run in runs)


def test_stamp_changes_when_a_file_is_rewritten(copy):
    before = checkpoint_stamp(copy)
    assert checkpoint_stamp(copy) == before
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "temperature": 2.5}))
    assert checkpoint_stamp(copy) != before
    (copy / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="has no model.safetensors"):
        checkpoint_stamp(copy)


@pytest.mark.parametrize(
    "change, field",
    [
        ({"preprocessing": {"input_size": 0}}, "preprocessing.input_size"),
        ({"preprocessing": {"input_size": -5}}, "preprocessing.input_size"),
        ({"preprocessing": {"input_size": "256"}}, "preprocessing.input_size"),
        ({"preprocessing": {"input_size": 4096}}, "preprocessing.input_size"),
        ({"preprocessing": {"std": 0}}, "preprocessing.std"),
        ({"temperature": 0}, "temperature"),
        ({"temperature": -1}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"label_names": ["glioma", "glioma", "notumor", "pituitary"]}, "label_names"),
        ({"label_names": "abcd"}, "label_names"),
        ({"architecture": 7}, "architecture"),
    ],
)
def test_config_fields_are_validated_by_name(copy, change, field):
    config = json.loads((copy / "config.json").read_text())
    for key, value in change.items():
        config[key] = {**config[key], **value} if isinstance(value, dict) else value
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=f"cannot be used: '{field}'"):
        load_checkpoint(copy)


@pytest.mark.parametrize(
    "content, message", [(b"\xff\xfe\x00bad", "not UTF-8"), (b"[1, 2, 3]", "must hold a JSON object .*, not a list")]
)
def test_config_that_is_not_a_json_object(copy, content, message):
    (copy / "config.json").write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(copy)
