"""Give a run refit on every training image (nothing held out) the temperature its twin fitted."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from core.checkpoint import (
    CheckpointError,
    read_config,
    read_training_record,
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
    fitted_on = read_training_record(source_dir)
    if source_config.refit_without_holdout or not fitted_on.get("holdout_metrics"):
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
