"""Give a run refit on every training image (nothing held out) the temperature its twin fitted."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from core.config import (
    CheckpointError,
    read_config,
    read_training_record,
    refit_and_twin,
    resolve_checkpoint,
    write_config,
    write_training_record,
)


def adopt_temperature(target: str | Path, source: str | Path, root: Path | None = None) -> float:
    """Give `target`, refit with --holdout-fraction 0, the temperature that `source` (the same
    recipe, run with the grouped hold-out) fitted there; training.json notes where it came from.

    Raises:
        CheckpointError: different models, a target that fitted its own temperature, or a
            source that held nothing out.
    """
    target_dir, target_config, source_dir, source_config = refit_and_twin(target, source, "temperature", root)
    fitted_on = read_training_record(source_dir)
    if not fitted_on.get("holdout_metrics"):
        raise CheckpointError(f"{source} held nothing out, so its temperature was never fitted; pick a run that did.")
    write_config(target_dir, replace(target_config, temperature=source_config.temperature))
    record = read_training_record(target_dir)
    record["temperature_from"] = {
        "checkpoint": str(source),
        "holdout": fitted_on["holdout"],
        "holdout_metrics": fitted_on["holdout_metrics"],
    }
    write_training_record(target_dir, record)
    return source_config.temperature


def adopt_shift_temperature(target: str | Path, stress: dict, clean_ece_limit: float = 0.05) -> float | None:
    """Calibration under shift: give `target` the temperature fitted on its hold-out together
    with the hold-out's shifted copies (`python -m core stress --holdout`) when that one has the
    lower ECE on shift families it was not fitted on and keeps the clean hold-out's ECE within
    `clean_ece_limit`. Returns the temperature adopted, or None (config.json unchanged).

    Raises:
        CheckpointError: the stress report is not of the hold-out, or of another temperature.
    """
    directory = resolve_checkpoint(target)
    config = read_config(directory)
    calibration = stress.get("temperature_under_shift")
    if not calibration or not str(stress.get("images", "")).startswith("grouped hold-out"):
        raise CheckpointError("Pass the stress report of the grouped hold-out (`python -m core stress --holdout`).")
    if abs(calibration["clean_temperature"] - config.temperature) > 1e-6:
        raise CheckpointError(
            f"The stress report was made at temperature {calibration['clean_temperature']:.3f}; "
            f"{target} now has {config.temperature:.3f}. Run the stress test again."
        )
    unseen, clean = calibration["mean_ece_on_unseen_shifts"], calibration["clean_ece"]
    if not (unseen["pooled"] < unseen["clean"] and clean["pooled"] <= clean_ece_limit):
        return None
    write_config(directory, replace(config, temperature=calibration["pooled_temperature"]))
    record = read_training_record(directory)
    record["temperature_from"] = {
        "rule": f"fitted on the grouped hold-out with its stress-test shifts; adopted because its ECE on unseen "
        f"shift families is lower ({unseen['pooled']:.3f} against {unseen['clean']:.3f}) and its clean hold-out "
        f"ECE stays within {clean_ece_limit} ({clean['pooled']:.3f})",
        "clean_temperature": calibration["clean_temperature"],
    }
    write_training_record(directory, record)
    return calibration["pooled_temperature"]
