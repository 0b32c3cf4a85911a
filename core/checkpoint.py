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

import timm
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from core.preprocess import Preprocessing

SCHEMA_VERSION = 1
DEFAULT_CHECKPOINT_ROOT = Path(__file__).resolve().parent.parent / "checkpoints"
ROOT_VARIABLE = "BRAIN_XAI_CHECKPOINTS"  # overrides where checkpoint names are looked up
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
NO_HOLDOUT = "none: refit on every image of the training splits"  # training.holdout of --holdout-fraction 0


class CheckpointError(RuntimeError):
    """A checkpoint is missing, damaged or incompatible; the message says what to do."""


@dataclass(frozen=True)
class ModelConfig:
    """The parts of config.json the engine needs; the rest is kept in `extra`."""

    architecture: str
    label_names: tuple[str, ...]
    preprocessing: Preprocessing
    default_target_layer: str
    temperature: float = 1.0
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def refit_without_holdout(self) -> bool:
        """Trained with --holdout-fraction 0: it saw the hold-out and fitted no temperature."""
        return self.extra.get("training", {}).get("holdout") == NO_HOLDOUT

    def to_dict(self) -> dict:
        size = self.preprocessing.input_size
        return {
            "schema_version": SCHEMA_VERSION,
            "architecture": self.architecture,
            "num_classes": len(self.label_names),
            "label_names": list(self.label_names),
            "input_size": [3, size, size],
            "mean": [self.preprocessing.mean] * 3,
            "std": [self.preprocessing.std] * 3,
            "preprocessing": self.preprocessing.to_dict(),
            "default_target_layer": self.default_target_layer,
            "temperature": self.temperature,
            **self.extra,
        }

    @classmethod
    def from_dict(cls, values: dict) -> ModelConfig:
        known = {
            "schema_version",
            "architecture",
            "num_classes",
            "label_names",
            "input_size",
            "mean",
            "std",
            "preprocessing",
            "default_target_layer",
            "temperature",
        }
        return cls(
            architecture=values["architecture"],
            label_names=tuple(values["label_names"]),
            preprocessing=Preprocessing.from_dict(values["preprocessing"]),
            default_target_layer=values["default_target_layer"],
            temperature=float(values.get("temperature", 1.0)),
            extra={k: v for k, v in values.items() if k not in known},
        )


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A model ready for inference, its config, and the lock that guards its hooks."""

    name: str
    model: torch.nn.Module
    config: ModelConfig
    weights_sha256: str
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


def create_model(architecture: str, num_classes: int, **timm_options) -> torch.nn.Module:
    if architecture not in timm.list_models():
        raise CheckpointError(f"Architecture '{architecture}' is not known to timm {timm.__version__}.")
    return timm.create_model(architecture, pretrained=False, num_classes=num_classes, **timm_options)


def save_checkpoint(model: torch.nn.Module, config: ModelConfig, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_FILE))
    (directory / CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=2) + "\n")


def checkpoint_root() -> Path:
    return Path(os.environ.get(ROOT_VARIABLE, DEFAULT_CHECKPOINT_ROOT))


def list_checkpoints(root: Path | None = None) -> list[str]:
    """Names of the installed checkpoints (folders holding both files), sorted."""
    root = root or checkpoint_root()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / WEIGHTS_FILE).is_file() and (p / CONFIG_FILE).is_file())


def preferred_checkpoint(names: list[str], root: Path | None = None) -> int:
    """Index of the checkpoint with the best recorded test accuracy (the first when none has one).

    Pages open on it, so a user sees the strongest installed model unless they choose another.
    """
    root = root or checkpoint_root()

    def accuracy(name: str) -> float:
        try:
            metrics = json.loads((root / name / CONFIG_FILE).read_text()).get("metrics") or {}
            return float(metrics.get("accuracy", -1.0))
        except (OSError, ValueError, TypeError, AttributeError):
            return -1.0

    scores = [accuracy(name) for name in names]
    return scores.index(max(scores)) if names else 0


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
    try:
        values = json.loads((directory / CONFIG_FILE).read_text())
    except FileNotFoundError as error:
        raise CheckpointError(f"{directory} has no {CONFIG_FILE}; it is not a checkpoint.") from error
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{directory / CONFIG_FILE} is not valid JSON: {error}.") from error
    if values.get("schema_version") != SCHEMA_VERSION:
        raise CheckpointError(
            f"{directory / CONFIG_FILE} has schema_version {values.get('schema_version')!r}; "
            f"this app reads version {SCHEMA_VERSION}."
        )
    try:
        return ModelConfig.from_dict(values)
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{directory / CONFIG_FILE} is missing or has a bad field: {error}.") from error


def adopt_temperature(target: str | Path, source: str | Path, root: Path | None = None) -> float:
    """Give a checkpoint refit on every training image (nothing held out) the temperature that
    `source`, the same recipe run with the grouped hold-out, fitted there; note where it came from."""
    target_dir, source_dir = resolve_checkpoint(target, root), resolve_checkpoint(source, root)
    target_config, source_config = read_config(target_dir), read_config(source_dir)
    if (source_config.architecture, source_config.label_names) != (
        target_config.architecture,
        target_config.label_names,
    ):
        raise CheckpointError(
            f"{source} is a {source_config.architecture} for {list(source_config.label_names)}; "
            f"{target} is a {target_config.architecture} for {list(target_config.label_names)}."
        )
    if not target_config.refit_without_holdout:
        raise CheckpointError(
            f"{target} was not refit with --holdout-fraction 0; a run that kept a hold-out fitted its own "
            "temperature there, so it stays."
        )
    fitted_on = source_config.extra.get("training", {})
    if not fitted_on.get("holdout_metrics"):
        raise CheckpointError(f"{source} held nothing out, so its temperature was never fitted; pick a run that did.")
    values = json.loads((target_dir / CONFIG_FILE).read_text())
    values["temperature"] = source_config.temperature
    values.setdefault("training", {})["temperature_from"] = {
        "checkpoint": str(source),
        "holdout": fitted_on["holdout"],
        "holdout_metrics": fitted_on["holdout_metrics"],
    }
    (target_dir / CONFIG_FILE).write_text(json.dumps(values, indent=2) + "\n")
    return source_config.temperature


def load_checkpoint(name_or_dir: str | Path, root: Path | None = None) -> LoadedModel:
    """Load a checkpoint for inference (eval mode, CPU).

    Args:
        name_or_dir: a folder name under checkpoints/ or a path to a checkpoint folder.
        root: where names are looked up.

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
    return LoadedModel(directory.name, model, config, hashlib.sha256(raw).hexdigest())


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
    return digest.hexdigest()


def _check_layer(model: torch.nn.Module, layer: str) -> None:
    try:
        model.get_submodule(layer)
    except AttributeError as error:
        raise CheckpointError(f"The default target layer '{layer}' is not in the model.") from error
