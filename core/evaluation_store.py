"""The evaluation folder: its one writer and reader, and the disk cache that holds such folders.

A folder holds `predictions.csv` (one PredictionRow per image), `summary.json`, and with
heatmaps `heatmaps.npz` (small heatmaps for the Gallery) and `iou_curves.npz` (each image's
IoU with its outline at every IOU_THRESHOLDS step, so a new threshold needs no model call).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from core.localisation import bootstrap_mean

CACHE_VARIABLE = "BRAIN_XAI_CACHE"  # where cached evaluations live (default: cache/evaluations)
DEFAULT_CACHE_DIR = Path(__file__).resolve().parent.parent / "cache" / "evaluations"
CACHE_VERSION = 4  # bump when the evaluation's output changes
HEATMAP_SIDE = 128  # stored heatmaps are downsampled to this side for the gallery
IOU_THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(1, 20))  # the Gallery's slider steps
LOCALISATION_COLUMNS = ("iou", "iou_otsu", "pointing_game", "mass_inside_tumour", "mass_outside_brain")
PREDICTIONS_FILE, SUMMARY_FILE = "predictions.csv", "summary.json"
HEATMAPS_FILE, IOU_CURVES_FILE = "heatmaps.npz", "iou_curves.npz"


@dataclass(frozen=True)
class PredictionRow:
    """One image of an evaluation: its prediction and, with heatmaps, where the heatmap fell."""

    image: str  # path relative to the dataset root
    label: str
    predicted: str
    confidence: float
    probabilities: tuple[float, ...]  # temperature-scaled, in the checkpoint's class order
    outcome: str  # see outcome_of()
    # Heatmap columns: None without heatmaps; the outline metrics are None without an outline.
    mass_outside_brain: float | None = None
    annotation: str | None = None  # "polygon", "rectangle" or "none"
    iou: float | None = None
    iou_otsu: float | None = None
    pointing_game: bool | None = None
    mass_inside_tumour: float | None = None
    # Faithfulness columns (evaluate --faithfulness): areas under the deletion and insertion
    # curves of the heatmap and of random maps (core.faithfulness).
    deletion_auc: float | None = None
    insertion_auc: float | None = None
    random_deletion_auc: float | None = None
    random_insertion_auc: float | None = None
    # Reliability columns (core.reliability): None where the checkpoint has no familiarity model.
    familiarity: float | None = None
    unfamiliar: bool | None = None
    uncertain: bool | None = None

    @property
    def correct(self) -> bool:
        return self.label == self.predicted

    def columns(self, label_names: list[str] | tuple[str, ...]) -> dict:
        """The row as predictions.csv writes it (probabilities as p_<class> columns)."""
        values = asdict(self)
        probabilities = dict(zip((f"p_{name}" for name in label_names), values.pop("probabilities")))
        head = {key: values.pop(key) for key in ("image", "label", "predicted", "confidence")}
        return {**head, **probabilities, **values}


NO_TUMOUR = "notumor"
OUTCOMES = ("TP", "FP", "FN", "wrong type")


def outcome_of(label: str, predicted: str) -> str:
    """TP: the right class. FP: a no-tumour slice called a tumour. FN: a tumour called no
    tumour. "wrong type": a tumour called another tumour type (an FN of its class and an FP of
    the predicted one; the Gallery shows it under both)."""
    if label == predicted:
        return "TP"
    if label == NO_TUMOUR:
        return "FP"
    return "FN" if predicted == NO_TUMOUR else "wrong type"


HEATMAP_COLUMNS = ("mass_outside_brain", "annotation", "iou", "iou_otsu", "pointing_game", "mass_inside_tumour")
FAITHFULNESS_COLUMNS = ("deletion_auc", "insertion_auc", "random_deletion_auc", "random_insertion_auc")
RELIABILITY_COLUMNS = ("familiarity", "unfamiliar", "uncertain")


@dataclass(frozen=True)
class Evaluation:
    rows: list[PredictionRow]
    summary: dict
    heatmaps: dict[str, np.ndarray]
    iou_curves: dict[str, np.ndarray]

    @property
    def label_names(self) -> list[str]:
        return list(self.summary["per_class"])


def write_evaluation(folder: Path, evaluation: Evaluation) -> None:
    """predictions.csv, summary.json and, when there are any, the two .npz files."""
    folder.mkdir(parents=True, exist_ok=True)
    label_names = evaluation.label_names
    with_heatmaps = "heatmaps" in evaluation.summary
    columns = ["image", "label", "predicted", "confidence", *(f"p_{n}" for n in label_names), "outcome"]
    columns += list(HEATMAP_COLUMNS) if with_heatmaps else []
    columns += list(FAITHFULNESS_COLUMNS) if "faithfulness" in evaluation.summary else []
    columns += list(RELIABILITY_COLUMNS)
    with (folder / PREDICTIONS_FILE).open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in evaluation.rows:
            writer.writerow({k: ("" if v is None else v) for k, v in row.columns(label_names).items()})
    (folder / SUMMARY_FILE).write_text(json.dumps(evaluation.summary, indent=2) + "\n")
    if with_heatmaps:
        np.savez_compressed(folder / HEATMAPS_FILE, **evaluation.heatmaps)
        np.savez_compressed(folder / IOU_CURVES_FILE, **evaluation.iou_curves)


def read_evaluation(folder: Path) -> Evaluation:
    summary = json.loads((folder / SUMMARY_FILE).read_text())
    label_names = list(summary["per_class"])
    with (folder / PREDICTIONS_FILE).open(newline="") as handle:
        rows = [_parse_row(values, label_names) for values in csv.DictReader(handle)]
    return Evaluation(rows, summary, _read_arrays(folder / HEATMAPS_FILE), _read_arrays(folder / IOU_CURVES_FILE))


def _parse_row(values: dict[str, str], label_names: list[str]) -> PredictionRow:
    def number(key: str) -> float | None:
        text = values.get(key) or ""
        return float(text) if text else None

    pointing = values.get("pointing_game") or ""
    return PredictionRow(
        image=values["image"],
        label=values["label"],
        predicted=values["predicted"],
        confidence=float(values["confidence"]),
        probabilities=tuple(float(values[f"p_{name}"]) for name in label_names),
        outcome=values["outcome"],
        mass_outside_brain=number("mass_outside_brain"),
        annotation=values.get("annotation") or None,
        iou=number("iou"),
        iou_otsu=number("iou_otsu"),
        pointing_game={"True": True, "False": False}.get(pointing),
        mass_inside_tumour=number("mass_inside_tumour"),
        **{column: number(column) for column in FAITHFULNESS_COLUMNS},
        familiarity=number("familiarity"),
        unfamiliar=_flag(values.get("unfamiliar")),
        uncertain=_flag(values.get("uncertain")),
    )


def _flag(text: str | None) -> bool | None:
    return {"True": True, "False": False}.get(text or "")


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    return dict(np.load(path)) if path.is_file() else {}


def localisation_summary(
    rows: list[PredictionRow], label_names: list[str], columns: tuple[str, ...] = LOCALISATION_COLUMNS
) -> dict:
    """Bootstrap means of the columns over all rows, over the correctly classified ones, per
    class and per outcome (None skipped)."""

    def means(subset: list[PredictionRow]) -> dict:
        return {c: bootstrap_mean([_as_float(getattr(r, c)) for r in subset]) for c in columns}

    return {
        "all": means(rows),
        "correct": means([r for r in rows if r.correct]),
        "per_class": {name: means([r for r in rows if r.label == name]) for name in label_names},
        "per_outcome": {o: means([r for r in rows if r.outcome == o]) for o in OUTCOMES},
    }


def _as_float(value) -> float | None:
    return None if value is None else float(value)


def at_threshold(evaluation: Evaluation, threshold: float) -> Evaluation:
    """The evaluation with its IoU column and IoU summary at another heatmap threshold, read
    from the stored per-image IoU curves: no model call, nothing recomputed but the means."""
    step = int(np.argmin([abs(threshold - t) for t in IOU_THRESHOLDS]))
    curves = evaluation.iou_curves
    rows = [replace(r, iou=float(curves[r.image][step])) if r.image in curves else r for r in evaluation.rows]

    summary = json.loads(json.dumps(evaluation.summary))
    localisation = summary.get("localisation")
    if localisation and curves:
        ious = localisation_summary(rows, list(localisation["per_class"]), columns=("iou",))
        for group in ("all", "correct"):
            if group in localisation:
                localisation[group]["iou"] = ious[group]["iou"]
        for group in ("per_class", "per_outcome"):
            for name, values in localisation[group].items():
                values["iou"] = ious[group].get(name, {"iou": None})["iou"]
        summary["heatmaps"]["threshold"] = IOU_THRESHOLDS[step]
    return Evaluation(rows, summary, evaluation.heatmaps, curves)


def cache_dir() -> Path:
    """Where cached evaluations live: $BRAIN_XAI_CACHE, else cache/evaluations in the repo."""
    return Path(os.environ.get(CACHE_VARIABLE) or DEFAULT_CACHE_DIR)


def cache_key(checkpoint_sha: str, root: Path, split: str, settings: dict | None) -> str:
    """Stable key of everything an evaluation's result depends on (settings: JSON-ready)."""
    parts = {
        "version": CACHE_VERSION,
        "checkpoint": checkpoint_sha,
        "data": str(Path(root).resolve()),
        "split": split,
        "settings": settings,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def cached_summaries(cache: Path, root: Path, split: str, threshold: float) -> list[dict]:
    """summary.json of every finished evaluation with heatmaps of ROOT/SPLIT at `threshold`."""
    summaries = [json.loads(p.read_text()) for p in sorted(Path(cache).glob(f"*/{SUMMARY_FILE}"))]
    return [
        s for s in summaries
        if s.get("split") == split and s.get("data") == str(Path(root).resolve())
        and s.get("heatmaps", {}).get("threshold") == threshold
    ]  # fmt: skip
