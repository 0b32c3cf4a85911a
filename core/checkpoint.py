"""Checkpoints on disk: model.safetensors + config.json (+ README.md model card).

Loading never unpickles: weights come from safetensors, settings from JSON.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import timm
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from core.preprocess import Preprocessing
from core.reliability import RELIABILITY_FILE, Reliability, feature_size
from core.reliability import load as load_reliability

SCHEMA_VERSION = 1
DEFAULT_CHECKPOINT_ROOT = Path(__file__).resolve().parent.parent / "checkpoints"
ROOT_VARIABLE = "BRAIN_XAI_CHECKPOINTS"  # overrides where checkpoint names are looked up
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"  # what inference needs
TRAINING_FILE = "training.json"  # how the weights were made: recipe, history, lineage, notes
# The training record's "holdout" of a --holdout-fraction 0 run; configs written before
# config.json carried the boolean refit_without_holdout are recognised by it.
NO_HOLDOUT_RECORD = "none: refit on every image of the training splits"
# Keys older config.json files carried that are now elsewhere: the preprocessing block holds
# input size, mean and std once, and the training record lives in training.json.
LEGACY_KEYS = {"num_classes", "input_size", "mean", "std", "training", "notes"}


class CheckpointError(RuntimeError):
    """A checkpoint is missing, damaged or incompatible; the message says what to do."""


class _PreprocessingSchema(BaseModel):
    """What config.json's "preprocessing" may hold (strict: "256" is not 256)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    input_size: int = Field(ge=32, le=1024)
    mean: float = Field(allow_inf_nan=False)
    std: float = Field(gt=0, allow_inf_nan=False)
    crop_to_head: bool = True
    crop_margin: float = Field(0.04, ge=0, le=0.5)
    intensity_percentiles: list[float] = Field([1.0, 99.0], min_length=2, max_length=2)

    @field_validator("intensity_percentiles")
    @classmethod
    def _ordered(cls, values: list[float]) -> list[float]:
        if not 0 <= values[0] < values[1] <= 100:
            raise ValueError("must be two percentiles with 0 <= low < high <= 100")
        return values


class _ConfigSchema(BaseModel):
    """What config.json must hold for inference; other keys (older files' training record) pass."""

    model_config = ConfigDict(extra="allow", strict=True)
    schema_version: Literal[1]
    architecture: str = Field(min_length=1)
    label_names: list[str] = Field(min_length=2)
    preprocessing: _PreprocessingSchema
    default_target_layer: str = Field(min_length=1)
    temperature: float = Field(1.0, gt=0, le=100, allow_inf_nan=False)
    refit_without_holdout: bool = False
    default_method: str = Field("Grad-CAM", min_length=1)
    default_choice: dict = {}
    metrics: dict = {}

    @field_validator("label_names")
    @classmethod
    def _distinct(cls, names: list[str]) -> list[str]:
        if any(not name.strip() for name in names) or len(set(names)) != len(names):
            raise ValueError("must be distinct, non-empty class names")
        return names


def validate_config(values: object, path: Path) -> None:
    """Raise CheckpointError naming each bad field of config.json and what is allowed."""
    if not isinstance(values, dict):
        raise CheckpointError(f"{path} must hold a JSON object (settings by name), not a {type(values).__name__}.")
    if values.get("schema_version") != SCHEMA_VERSION:
        raise CheckpointError(
            f"{path} has schema_version {values.get('schema_version')!r}; this app reads version {SCHEMA_VERSION}."
        )
    try:
        _ConfigSchema.model_validate(values)
    except ValidationError as error:
        problems = "; ".join(
            f"'{'.'.join(str(part) for part in issue['loc'])}': {issue['msg'].lower()} (found {issue['input']!r:.60})"
            for issue in error.errors()
        )
        raise CheckpointError(f"{path} has bad settings, so this model cannot be used: {problems}.") from None


@dataclass(frozen=True)
class ModelConfig:
    """config.json: what inference needs, and the test metrics the model card measured."""

    architecture: str
    label_names: tuple[str, ...]
    preprocessing: Preprocessing
    default_target_layer: str  # a dotted module name, or several joined by "+" (fused LayerCAM)
    temperature: float = 1.0
    # Trained with --holdout-fraction 0: it saw the hold-out and fitted no temperature of its own.
    refit_without_holdout: bool = False
    default_method: str = "Grad-CAM"  # the CAM method the app opens with (chosen by `python -m core sweep`)
    # How default_method and default_target_layer were chosen: split, rule, numbers (core.sweep).
    default_choice: dict = field(default_factory=dict, compare=False)
    metrics: dict = field(default_factory=dict, compare=False)  # written by core.model_card
    extra: dict = field(default_factory=dict, compare=False)  # keys this version does not know, kept

    def to_dict(self) -> dict:
        values = {
            "schema_version": SCHEMA_VERSION,
            "architecture": self.architecture,
            "label_names": list(self.label_names),
            "preprocessing": self.preprocessing.to_dict(),
            "default_method": self.default_method,
            "default_target_layer": self.default_target_layer,
            "temperature": self.temperature,
            "refit_without_holdout": self.refit_without_holdout,
        }
        if self.default_choice:
            values["default_choice"] = self.default_choice
        if self.metrics:
            values["metrics"] = self.metrics
        return {**values, **self.extra}

    @classmethod
    def from_dict(cls, values: dict) -> ModelConfig:
        known = {"schema_version", "architecture", "label_names", "preprocessing", "default_target_layer",
                 "temperature", "refit_without_holdout", "metrics", "default_method", "default_choice"}  # fmt: skip
        legacy_refit = (values.get("training") or {}).get("holdout") == NO_HOLDOUT_RECORD
        return cls(
            architecture=values["architecture"],
            label_names=tuple(values["label_names"]),
            preprocessing=Preprocessing.from_dict(values["preprocessing"]),
            default_target_layer=values["default_target_layer"],
            temperature=float(values.get("temperature", 1.0)),
            refit_without_holdout=bool(values.get("refit_without_holdout", legacy_refit)),
            default_method=values.get("default_method", "Grad-CAM"),
            default_choice=dict(values.get("default_choice") or {}),
            metrics=dict(values.get("metrics") or {}),
            extra={k: v for k, v in values.items() if k not in known | LEGACY_KEYS},
        )


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


def write_config(directory: Path, config: ModelConfig) -> None:
    (Path(directory) / CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=2) + "\n")


def read_training_record(directory: Path) -> dict:
    """training.json (recipe, history, lineage, notes), or the "training" and "notes" that
    older config.json files carried; {} when the checkpoint has neither."""
    path = Path(directory) / TRAINING_FILE
    if path.is_file():
        return json.loads(path.read_text())
    try:
        values = json.loads((Path(directory) / CONFIG_FILE).read_text())
    except (OSError, ValueError):
        return {}
    record = dict(values.get("training") or {})
    if values.get("notes"):
        record["notes"] = values["notes"]
    return record


def write_training_record(directory: Path, record: dict) -> None:
    (Path(directory) / TRAINING_FILE).write_text(json.dumps(record, indent=2) + "\n")


def migrate_checkpoint(directory: Path) -> None:
    """Rewrite an older checkpoint's config.json in today's shape, moving its training record
    and notes to training.json; the weights are not touched."""
    directory = Path(directory)
    record = read_training_record(directory)
    config = read_config(directory)
    write_config(directory, config)
    if record:
        write_training_record(directory, record)


def checkpoint_root() -> Path:
    return Path(os.environ.get(ROOT_VARIABLE, DEFAULT_CHECKPOINT_ROOT))


def list_checkpoints(root: Path | None = None) -> list[str]:
    """Names of the installed checkpoints (folders holding both files), sorted."""
    root = root or checkpoint_root()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / WEIGHTS_FILE).is_file() and (p / CONFIG_FILE).is_file())


def resolve_checkpoint(name_or_dir: str | Path, root: Path | None = None) -> Path:
    root = root or checkpoint_root()
    by_name = root / str(name_or_dir)
    if by_name.is_dir():
        return by_name
    path = Path(name_or_dir)
    if path.is_dir():
        return path
    installed = ", ".join(list_checkpoints(root)) or "none installed"
    raise CheckpointError(f"No checkpoint '{name_or_dir}'. Installed: {installed}.")


def read_config(directory: Path) -> ModelConfig:
    """config.json, validated (core.checkpoint._ConfigSchema) before anything uses it.

    Raises:
        CheckpointError: missing, not UTF-8 JSON, or a field out of range (the message names it).
    """
    path = Path(directory) / CONFIG_FILE
    try:
        values = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError as error:
        raise CheckpointError(f"{directory} has no {CONFIG_FILE}; it is not a checkpoint.") from error
    except UnicodeDecodeError as error:
        raise CheckpointError(f"{path} is not UTF-8 text; copy the checkpoint again.") from error
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path} is not valid JSON: {error}.") from error
    validate_config(values, path)
    return ModelConfig.from_dict(values)


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
