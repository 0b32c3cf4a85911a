"""Checkpoint files without the model: config.json (validated), training.json, and where
checkpoints are found.

No torch here: what only lists, validates or describes checkpoints (the API's server process,
the command line's start-up) reads these; core.checkpoint builds the model from the weights.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

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
class Preprocessing:
    """How a slice becomes a tensor; stored in config.json under "preprocessing"."""

    input_size: int = 192
    mean: float = 0.5
    std: float = 0.5
    crop_to_head: bool = True
    crop_margin: float = 0.04  # fraction of the image side added around the head box
    intensity_percentiles: tuple[float, float] = (1.0, 99.0)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> Preprocessing:
        values = dict(values)
        values["intensity_percentiles"] = tuple(values.get("intensity_percentiles", (1.0, 99.0)))
        return cls(**values)


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
    """config.json, validated (_ConfigSchema) before anything uses it.

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


def refit_and_twin(
    target: str | Path, twin: str | Path, what: str, root: Path | None = None
) -> tuple[Path, ModelConfig, Path, ModelConfig]:
    """The folders and configs of `target`, refit with --holdout-fraction 0, and of `twin`, the
    same recipe run with the grouped hold-out kept out, whose `what` (a temperature, a near-tie
    margin: fitted on that hold-out) the refit takes.

    Raises:
        CheckpointError: another architecture or classes, a target that kept its own hold-out, or
            a twin that held nothing out.
    """
    target_dir, twin_dir = resolve_checkpoint(target, root), resolve_checkpoint(twin, root)
    target_config, twin_config = read_config(target_dir), read_config(twin_dir)
    if (twin_config.architecture, list(twin_config.label_names)) != (
        target_config.architecture,
        list(target_config.label_names),
    ):
        raise CheckpointError(
            f"{twin} is a {twin_config.architecture} for {list(twin_config.label_names)}; "
            f"{target} is a {target_config.architecture} for {list(target_config.label_names)}."
        )
    if not target_config.refit_without_holdout:
        raise CheckpointError(
            f"{target} was not refit with --holdout-fraction 0: it kept its own hold-out and fitted its own {what} "
            "there, so it stays."
        )
    if twin_config.refit_without_holdout:
        raise CheckpointError(
            f"{twin} held nothing out, so it has no {what} fitted on unseen slices; pick a run that did."
        )
    return target_dir, target_config, twin_dir, twin_config


def preferred_checkpoint(names: list[str], root: Path | None = None) -> int:
    """Index of the checkpoint with the best recorded test accuracy (the first when none has one).

    Pages and the API open on it, so a user sees the strongest installed model by default.
    """
    root = root or checkpoint_root()

    def accuracy(name: str) -> float:
        try:
            return float(read_config(root / name).metrics.get("accuracy", -1.0))
        except (CheckpointError, TypeError, ValueError):
            return -1.0

    scores = [accuracy(name) for name in names]
    return scores.index(max(scores)) if names else 0
