"""A checkpoint's model: built from model.safetensors and config.json (read by core.config),
with its familiarity file; saved the same way.

Loading never unpickles: weights come from safetensors, settings from JSON.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from pathlib import Path

import timm
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from core.config import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    CheckpointError,
    ModelConfig,
    read_config,
    read_training_record,
    resolve_checkpoint,
    write_config,
    write_training_record,
)
from core.features import feature_size
from core.reliability import RELIABILITY_FILE, Reliability
from core.reliability import load as load_reliability


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A model ready for inference, its config, and the lock that guards its hooks."""

    name: str
    model: torch.nn.Module
    config: ModelConfig
    weights_sha256: str
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    reliability: Reliability | None = None  # familiarity and near-tie margin (core.reliability)
    directory: Path | None = None  # the folder it was loaded from


def create_model(architecture: str, num_classes: int, **timm_options) -> torch.nn.Module:
    if architecture not in timm.list_models():
        raise CheckpointError(f"Architecture '{architecture}' is not known to timm {timm.__version__}.")
    return timm.create_model(architecture, pretrained=False, num_classes=num_classes, **timm_options)


def save_checkpoint(model: torch.nn.Module, config: ModelConfig, directory: Path, training: dict | None = None) -> None:
    """Write model.safetensors and config.json (and training.json, given a training record)."""
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_FILE))
    write_config(directory, config)
    if training is not None:
        write_training_record(directory, training)


def migrate_checkpoint(directory: Path) -> None:
    """Rewrite an older checkpoint's config.json in today's shape, moving its training record
    and notes to training.json; the weights are not touched."""
    directory = Path(directory)
    record = read_training_record(directory)
    config = read_config(directory)
    write_config(directory, config)
    if record:
        write_training_record(directory, record)


def load_checkpoint(name_or_dir: str | Path, root: Path | None = None, reliability: bool = True) -> LoadedModel:
    """Load a checkpoint for inference (eval mode, CPU).

    Args:
        name_or_dir: a folder name under checkpoints/ or a path to a checkpoint folder.
        root: where names are looked up.
        reliability: read reliability.safetensors too (off only to fit a new one).

    Returns:
        LoadedModel with its own lock.

    Raises:
        CheckpointError: missing, truncated, tampered or incompatible checkpoint.
    """
    directory = resolve_checkpoint(name_or_dir, root)
    config = read_config(directory)
    weights_path = directory / WEIGHTS_FILE
    try:
        raw = weights_path.read_bytes()
        state = load_file(str(weights_path))
    except FileNotFoundError as error:
        raise CheckpointError(f"{directory} has no {WEIGHTS_FILE}.") from error
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(
            f"{weights_path} is truncated or damaged ({error}); copy the checkpoint again."
        ) from error
    model = create_model(config.architecture, len(config.label_names))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise CheckpointError(
            f"The weights in {weights_path} do not fit '{config.architecture}' with "
            f"{len(config.label_names)} classes: {str(error)[:300]}"
        ) from error
    _check_layer(model, config.default_target_layer)
    model.eval()
    try:
        trust = load_reliability(directory) if reliability else None
    except ValueError as error:
        raise CheckpointError(str(error)) from error
    expected = (len(config.label_names), feature_size(model, config.preprocessing.input_size)) if trust else None
    if trust is not None and trust.means.shape != expected:
        raise CheckpointError(f"{directory}'s reliability file was fitted for other weights; fit it again.")
    return LoadedModel(directory.name, model, config, hashlib.sha256(raw).hexdigest(), reliability=trust,
                       directory=directory)  # fmt: skip


def checkpoint_sha256(name_or_dir: str | Path, root: Path | None = None) -> str:
    """SHA-256 of a checkpoint's weights and config together: anything computed from the model
    (predictions, temperature-scaled confidences, heatmaps at the default layer) depends on both."""
    directory = resolve_checkpoint(name_or_dir, root)
    digest = hashlib.sha256()
    for name in (WEIGHTS_FILE, CONFIG_FILE):
        try:
            digest.update((directory / name).read_bytes())
        except FileNotFoundError as error:
            raise CheckpointError(f"{directory} has no {name}; it is not a complete checkpoint.") from error
    if (directory / RELIABILITY_FILE).is_file():  # familiarity columns depend on it
        digest.update((directory / RELIABILITY_FILE).read_bytes())
    return digest.hexdigest()


def checkpoint_stamp(name_or_dir: str | Path, root: Path | None = None) -> tuple:
    """A cheap fingerprint of a checkpoint's files (size and modification time, no hashing):
    it changes whenever the weights, config.json or the reliability file are rewritten, for
    keying caches."""
    directory = resolve_checkpoint(name_or_dir, root)
    stamp = []
    for name in (WEIGHTS_FILE, CONFIG_FILE):
        try:
            status = (directory / name).stat()
        except FileNotFoundError as error:
            raise CheckpointError(f"{directory} has no {name}; it is not a complete checkpoint.") from error
        stamp.append((name, status.st_size, status.st_mtime_ns))
    trust = directory / RELIABILITY_FILE  # optional; predictions.csv carries its familiarity columns
    if trust.is_file():
        stamp.append((RELIABILITY_FILE, trust.stat().st_size, trust.stat().st_mtime_ns))
    return tuple(stamp)


def _check_layer(model: torch.nn.Module, layers: str) -> None:
    for layer in layers.split("+"):
        try:
            model.get_submodule(layer)
        except AttributeError as error:
            raise CheckpointError(f"The default target layer '{layer}' is not in the model.") from error
