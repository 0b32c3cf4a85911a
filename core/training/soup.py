"""A uniform model soup (Wortsman et al. 2022): the average of the weights of runs fine-tuned
from the same start, with its temperature fitted on the grouped hold-out the runs kept aside.

Runs from one start tend to end in one basin of the loss, and the middle of it is at least as
accurate as its edges and steadier than any one snapshot; runs from different starts do not
average (their units are not aligned), so the sources must share the start and the hold-out.

With `start`, the average is then moved part of the way back to the start's own weights (WiSE-FT,
Wortsman et al. 2022, CVPR, "Robust fine-tuning of zero-shot models"): fine-tuned weights and
the weights they were fine-tuned from are joined by a straight path of low loss, and points on
it can keep most of what the fine-tuning bought and most of what the start knew.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import torch

from core.checkpoint import load_checkpoint, save_checkpoint
from core.config import CheckpointError, read_training_record
from core.metrics import holdout_calibration
from core.selection import holdout_logits
from core.training.record import git_commit, holdout_note

INGREDIENT_KEYS = ("seed", "epochs", "commit", "holdout_metrics")  # what the soup's record lists per run


def average_weights(states: list[dict[str, torch.Tensor]], shares: list[float] | None = None) -> dict:
    """The mean of each floating-point tensor over `states` (BatchNorm statistics included),
    weighted by `shares` (summing to 1; default equal); integer tensors (BatchNorm's step
    counters) are taken from the first.

    Raises:
        CheckpointError: the states do not have the same tensors and shapes.
    """
    first = states[0]
    for state in states[1:]:
        if state.keys() != first.keys() or any(state[k].shape != first[k].shape for k in first):
            raise CheckpointError("These checkpoints do not have the same layers, so their weights cannot be averaged.")
    shares = torch.tensor(shares or [1 / len(states)] * len(states), dtype=torch.float64)
    if len(shares) != len(states) or abs(float(shares.sum()) - 1) > 1e-9 or bool((shares < 0).any()):
        raise ValueError(f"An average's shares are one per checkpoint, >= 0 and summing to 1, not {shares.tolist()}.")
    averaged = {}
    for key, tensor in first.items():
        if tensor.is_floating_point():
            stacked = torch.stack([state[key].double() for state in states])
            averaged[key] = torch.tensordot(shares, stacked, dims=1).to(tensor.dtype)
        else:
            averaged[key] = tensor.clone()
    return averaged


def make_soup(
    sources: list[str | Path],
    out: Path,
    data: Path,
    holdout_fraction: float = 0.15,
    seed: int = 0,
    start: str | Path | None = None,
    start_share: float = 0.0,
) -> dict:
    """Average the weights of `sources` into a checkpoint at `out` (with `start`: then take
    `start_share` of the way back to the weights the sources were fine-tuned from), fit its
    temperature on the grouped hold-out (the one every source kept aside) and write
    training.json with the ingredients. Returns the hold-out metrics.

    Raises:
        CheckpointError: fewer than two sources without a start, sources that differ in
            architecture, classes, preprocessing, start or hold-out, or that held nothing out,
            or a start that is not the weights they went on from.
    """
    started = time.time()
    if len(sources) < 2 and start is None:
        raise CheckpointError("A soup needs at least two checkpoints to average (or one and --start).")
    if (start is None and start_share) or not 0 <= start_share < 1:
        raise CheckpointError(f"--start-share is a share from 0 to below 1 and needs --start, not {start_share}.")
    loaded = [load_checkpoint(source, reliability=False) for source in sources]
    records = [read_training_record(model.directory) for model in loaded]
    expected_holdout = holdout_note(holdout_fraction, seed)
    first = loaded[0].config
    for source, model, record in zip(sources, loaded, records):
        if (model.config.architecture, model.config.label_names, model.config.preprocessing) != (
            first.architecture,
            first.label_names,
            first.preprocessing,
        ):
            raise CheckpointError(
                f"{source} is a {model.config.architecture} for {list(model.config.label_names)} at "
                f"{model.config.preprocessing.input_size} px; {sources[0]} is a {first.architecture} for "
                f"{list(first.label_names)} at {first.preprocessing.input_size} px. Average runs of one model only."
            )
        if model.config.refit_without_holdout or record.get("holdout") != expected_holdout:
            raise CheckpointError(
                f"{source} did not keep the hold-out this soup is fitted on ({expected_holdout}); its record says "
                f"{record.get('holdout')!r}. Average runs that kept the same hold-out, or pass its --holdout-seed."
            )
        # A folder's name can stand for other weights later (a checkpoint is replaced), so the start
        # is the name together with the training record the run copied from it.
        if _start(record) != _start(records[0]):
            raise CheckpointError(
                f"{source} and {sources[0]} did not start from the same weights (init {record.get('init')!r} and "
                f"{records[0].get('init')!r}, or the same name holding other weights); only runs from the same start "
                "can be averaged."
            )
    weights = average_weights([m.model.state_dict() for m in loaded])
    if start is not None:
        origin = _check_start(start, loaded[0], records[0])
        weights = average_weights([weights, origin.model.state_dict()], [1 - start_share, start_share])
    model = loaded[0].model
    model.load_state_dict(weights)
    model.eval()

    names = list(first.label_names)
    splits = tuple(records[0].get("splits", ("train", "val")))
    logits, labels = holdout_logits(model, first.preprocessing, names, data, splits, holdout_fraction, seed)
    temperature, metrics = holdout_calibration(logits, labels, names)
    record = {
        **{key: records[0][key] for key in ("data", "splits", "num_images", "init") if key in records[0]},
        "holdout": expected_holdout,
        "holdout_metrics": metrics,
        "weights": _weights_note(len(sources), start, start_share),
        "soup_of": [
            {"checkpoint": str(source), **{key: rec.get(key) for key in INGREDIENT_KEYS}}
            for source, rec in zip(sources, records)
        ],
        "ingredient_records": [{k: v for k, v in rec.items() if k != "notes"} for rec in records],
        **({"start": str(start), "start_share": start_share} if start is not None else {}),
        "seconds": round(time.time() - started),
        "commit": git_commit(),
    }
    save_checkpoint(model, replace(first, temperature=temperature), Path(out), training=record)
    return metrics


def _check_start(start: str | Path, source, record: dict):
    """The start checkpoint, loaded, once it is known to be the model the sources went on from:
    the same architecture, classes and preprocessing, and the training record they copied."""
    origin = load_checkpoint(start, reliability=False)
    same_model = (origin.config.architecture, origin.config.label_names, origin.config.preprocessing) == (
        source.config.architecture,
        source.config.label_names,
        source.config.preprocessing,
    )
    copied = record.get("continued_from")  # None for runs from scratch or ImageNet: no checkpoint to go back to
    if not same_model or not copied or _identity(read_training_record(origin.directory)) != _identity(copied):
        raise CheckpointError(
            f"{start} is not the checkpoint these runs were fine-tuned from (their record names init "
            f"{record.get('init')!r} and the training record they copied from it); pass the weights they started from."
        )
    return origin


def _weights_note(runs: int, start: str | Path | None, start_share: float) -> str:
    kept = "the run's weights"
    if runs > 1:
        kept = f"uniform average of {runs} runs' weights (model soup, Wortsman et al. 2022)"
    if start is not None:
        kept += (
            f", then {start_share:.0%} of the way back to the weights it went on from, `{start}` "
            "(WiSE-FT, Wortsman et al. 2022, CVPR)"
        )
    return kept + ", BatchNorm statistics averaged too"


def _identity(record: dict) -> tuple:
    return record.get("commit"), record.get("seconds"), record.get("holdout_metrics")


def _start(record: dict) -> tuple:
    return record.get("init"), *_identity(record.get("continued_from") or {})
