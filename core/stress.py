"""The stress test: how a checkpoint holds up when scans look unlike its training data, and
whether its tumour predictions depend on the tumour.

`python -m core stress --checkpoint NAME --data ROOT (--split SPLIT | --holdout) --out DIR`

1. Shifts. Each image is changed as another scanner or protocol might change it (resolution
   loss, contrast curves up to inversion, tighter crops, a wider field of view, noise, a bias
   field, JPEG), at three levels, then prepared and scored exactly as the app does. Reported
   per shift and level: accuracy, macro-F1, ECE after temperature and each class's recall.
2. Occlusion. On correctly classified tumour images with an outline, the outline is filled
   (with the head's median intensity, and by Navier-Stokes inpainting, a fill never used in
   training) and the share whose prediction leaves the class is the occlusion sensitivity; the
   same shape filled at a random place in the head is the control.

Everything is decoded in chunks and held in memory only while scored; nothing is written but
the report. Choose recipes with `--holdout` (the grouped hold-out `train` keeps aside); run it
on `test` only to report.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from sklearn.metrics import roc_auc_score
from tqdm import tqdm

from core.annotations import load_outline
from core.brain_mask import detect_brain_mask
from core.checkpoint import LoadedModel, load_checkpoint
from core.counterfactual import fill_region, random_region
from core.dataset import Record, holdout_records, list_split
from core.evaluate import sample_per_class
from core.image_input import load_image
from core.inference import slice_logits, slice_scores
from core.metrics import classification_summary, expected_calibration_error, fit_temperature, softmax
from core.reliability import UNFAMILIAR_SHARE, Reliability
from core.training.record import git_commit

LEVELS = ("mild", "moderate", "strong")
CHUNK = 32


@dataclass(frozen=True)
class Shift:
    name: str
    parameters: tuple[float, float, float]  # one per level
    describe: str
    apply: Callable[[np.ndarray, float, np.random.Generator], np.ndarray]


def _resolution(image: np.ndarray, factor: float, rng) -> np.ndarray:
    height, width = image.shape
    small = cv2.resize(
        image, (max(8, round(width / factor)), max(8, round(height / factor))), interpolation=cv2.INTER_AREA
    )
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


def _gamma(image: np.ndarray, gamma: float, rng) -> np.ndarray:
    return np.clip(image, 0, 1) ** gamma


def _curve(image: np.ndarray, amount: float, rng) -> np.ndarray:
    """Blend towards a non-monotone curve (dark and bright tissue both mid-grey, as some
    sequences render them); at 1, the head's intensities are inverted."""
    head = detect_brain_mask(image).mask
    if amount >= 1:
        curved = 1 - image
    else:
        tent = 1 - np.abs(2 * image - 1)  # 0 -> 0, 0.5 -> 1, 1 -> 0
        curved = (1 - amount) * image + amount * tent
    return np.where(head, curved, 0).astype(np.float32)


def _crop(image: np.ndarray, keep: float, rng) -> np.ndarray:
    height, width = image.shape
    rows, cols = round(height * keep), round(width * keep)
    top, left = (height - rows) // 2, (width - cols) // 2
    return np.ascontiguousarray(image[top : top + rows, left : left + cols])


def _field_of_view(image: np.ndarray, pad: float, rng) -> np.ndarray:
    """A wider field of view at the same matrix: padded with black, then resized back."""
    height, width = image.shape
    border = round(pad * max(height, width))
    padded = cv2.copyMakeBorder(image, border, border, border, border, cv2.BORDER_CONSTANT, value=0)
    return cv2.resize(padded, (width, height), interpolation=cv2.INTER_AREA)


def _noise(image: np.ndarray, sigma: float, rng) -> np.ndarray:
    real = image + rng.normal(0, sigma, image.shape)
    imaginary = rng.normal(0, sigma, image.shape)
    return np.clip(np.sqrt(real**2 + imaginary**2), 0, 1).astype(np.float32)


def _bias(image: np.ndarray, strength: float, rng) -> np.ndarray:
    height, width = image.shape
    y, x = np.meshgrid(np.linspace(-1, 1, height), np.linspace(-1, 1, width), indexing="ij")
    return np.clip(image * np.exp(strength * (0.7 * x + 0.5 * y + 0.5 * x * y)), 0, 1).astype(np.float32)


def _jpeg(image: np.ndarray, quality: float, rng) -> np.ndarray:
    _, encoded = cv2.imencode(
        ".jpg", np.uint8(np.clip(image, 0, 1) * 255 + 0.5), [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    )
    return cv2.imdecode(encoded, cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255


SHIFTS = (
    Shift("resolution", (2, 3, 4), "down to 1/2, 1/3, 1/4 of the side and back", _resolution),
    Shift("gamma", (1.4, 2.0, 2.8), "intensity ** 1.4, 2.0, 2.8", _gamma),
    Shift("contrast curve", (0.35, 0.7, 1.0), "towards a non-monotone curve 35 %, 70 %; inverted", _curve),
    Shift("crop", (0.85, 0.7, 0.55), "central 85 %, 70 %, 55 % of each side", _crop),
    Shift("field of view", (0.15, 0.35, 0.6), "padded by 15 %, 35 %, 60 % and resized back", _field_of_view),
    Shift("noise", (0.03, 0.06, 0.12), "Rician noise sigma 0.03, 0.06, 0.12", _noise),
    Shift("bias field", (0.3, 0.6, 1.0), "multiplicative smooth field, log-amplitude 0.3, 0.6, 1.0", _bias),
    Shift("jpeg", (50, 20, 8), "JPEG quality 50, 20, 8", _jpeg),
)
FILLS = ("median", "ns")


def shifted(image: np.ndarray, shift: Shift, level: int, seed: int) -> np.ndarray:
    """`image` (2-D float in [0, 1]) under `shift` at level 0, 1 or 2; deterministic per seed."""
    out = shift.apply(image.astype(np.float32), shift.parameters[level], np.random.default_rng(seed))
    return np.clip(out, 0, 1).astype(np.float32)


def conditions() -> list[tuple[str, Shift | None, int]]:
    """("clean", None, 0) then (name, shift, level) for every shift and level."""
    return [("clean", None, 0)] + [
        (f"{shift.name} ({LEVELS[level]})", shift, level) for shift in SHIFTS for level in range(3)
    ]


def stress_test(
    checkpoint: str | Path,
    data: Path,
    split: str | None = None,
    *,
    holdout: bool = False,
    limit: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """The shift table and the occlusion sensitivity of `checkpoint` on `split` (or the grouped
    hold-out). `limit`: at most this many images per class, drawn at random (seeded)."""
    loaded = load_checkpoint(checkpoint)
    names = list(loaded.config.label_names)
    records = holdout_records(data, names, seed=seed) if holdout else list_split(data, split, names)
    if limit:
        records = sample_per_class(records, limit, seed, labels=names)
    if not records:
        raise ValueError("No images to stress-test.")
    labels = np.array([names.index(r.label) for r in records])
    scored = {name: [] for name, _, _ in conditions()}
    features = {name: [] for name, _, _ in conditions()}
    occlusion: list[dict] = []
    rng = np.random.default_rng(seed)
    chunks = range(0, len(records), CHUNK)
    for start in tqdm(chunks, desc="stress", disable=not progress, leave=False):
        chunk = records[start : start + CHUNK]
        images = [_decode(data, record) for record in chunk]
        for name, shift, level in conditions():
            variants = (
                images
                if shift is None
                else [shifted(im, shift, level, seed + start + i) for i, im in enumerate(images)]
            )
            logits, pooled = slice_scores(loaded, variants)
            scored[name].append(logits)
            features[name].append(pooled)
        occlusion += _occlusion_rows(loaded, data, chunk, images, scored["clean"][-1], rng)
    temperature = loaded.config.temperature
    reliability = loaded.reliability
    clean_familiarity = _familiarity(reliability, features["clean"])
    table = []
    for name, logits in scored.items():
        probabilities = softmax(np.concatenate(logits), temperature)
        summary = classification_summary(labels, probabilities, names)
        row = {
            "condition": name,
            "accuracy": summary["accuracy"],
            "macro_f1": summary["macro_f1"],
            "ece": expected_calibration_error(probabilities, labels),
            **{f"recall {c}": summary["per_class"][c]["recall"] for c in names},
        }
        if reliability is not None:
            row.update(_trust_columns(reliability, probabilities, labels, _familiarity(reliability, features[name]),
                                      clean_familiarity))  # fmt: skip
        table.append(row)
    shifted_rows = [row for row in table if row["condition"] != "clean"]
    pooled = {name: np.concatenate(logits) for name, logits in scored.items()}
    return {
        "checkpoint": str(checkpoint),
        "commit": git_commit(),
        "images": ("grouped hold-out of train+val (15 %, seed 0)" if holdout else f"split {split}")
        + (f", a random {limit} per class (seed {seed})" if limit else ""),
        "num_images": len(records),
        "temperature": temperature,
        "shifts": {shift.name: shift.describe for shift in SHIFTS},
        "table": table,
        "mean_shifted_accuracy": float(np.mean([row["accuracy"] for row in shifted_rows])),
        "worst_shift": min(shifted_rows, key=lambda row: row["accuracy"])["condition"],
        "occlusion": occlusion_summary(occlusion, names),
        "temperature_under_shift": shift_temperature(pooled, labels, temperature),
    }


def shift_temperature(logits: dict[str, np.ndarray], labels: np.ndarray, clean_temperature: float) -> dict:
    """Calibration under shift: the checkpoint's temperature (fitted on clean images) against
    one fitted on the clean and shifted images together. Each is judged by its ECE on shift
    families it was not fitted on (two halves of the families, crossed), and on clean images."""
    families = sorted({name.split(" (")[0] for name in logits if name != "clean"})
    halves = [families[0::2], families[1::2]]

    def conditions_of(half: list[str]) -> list[str]:
        return [name for name in logits if name.split(" (")[0] in half]

    def fit_on(names: list[str]) -> float:
        return fit_temperature(np.concatenate([logits[n] for n in names]), np.tile(labels, len(names)))

    unseen = {"clean": [], "pooled": []}
    for fitted, judged in ((0, 1), (1, 0)):
        crossed = fit_on(["clean", *conditions_of(halves[fitted])])
        for name in conditions_of(halves[judged]):
            unseen["clean"].append(expected_calibration_error(softmax(logits[name], clean_temperature), labels))
            unseen["pooled"].append(expected_calibration_error(softmax(logits[name], crossed), labels))
    pooled = fit_on(list(logits))
    return {
        "clean_temperature": clean_temperature,
        "pooled_temperature": pooled,
        "mean_ece_on_unseen_shifts": {key: float(np.mean(values)) for key, values in unseen.items()},
        "clean_ece": {
            "clean": expected_calibration_error(softmax(logits["clean"], clean_temperature), labels),
            "pooled": expected_calibration_error(softmax(logits["clean"], pooled), labels),
        },
    }


def _familiarity(reliability: Reliability | None, features: list[np.ndarray]) -> np.ndarray | None:
    return None if reliability is None else reliability.familiarity(np.concatenate(features))


def _trust_columns(reliability: Reliability, probabilities, labels, familiarity, clean_familiarity) -> dict:
    """Share called unfamiliar, how well familiarity tells this condition from the clean
    images (ROC AUC; 0.5 for clean itself), and accuracy on what is kept when uncertain or
    unfamiliar slices are set aside (selective prediction)."""
    ordered = np.sort(probabilities, axis=1)
    confident = ordered[:, -1] - ordered[:, -2] >= reliability.margin
    familiar = familiarity >= UNFAMILIAR_SHARE
    kept = confident & familiar
    correct = probabilities.argmax(1) == labels
    both = np.concatenate([clean_familiarity, familiarity])
    is_shifted = np.r_[np.zeros(len(clean_familiarity)), np.ones(len(familiarity))]
    return {
        "unfamiliar": float((~familiar).mean()),
        "familiarity_auc": float(roc_auc_score(is_shifted, -both)),
        "coverage": float(kept.mean()),
        "selective_accuracy": float(correct[kept].mean()) if kept.any() else None,
    }


def _decode(data: Path, record: Record) -> np.ndarray:
    path = Path(data) / record.image
    return load_image(path.read_bytes(), path.name).pixels


def _occlusion_rows(
    loaded: LoadedModel, data: Path, records: list[Record], images: list[np.ndarray], clean: np.ndarray, rng
) -> list[dict]:
    """For each correctly classified tumour image with an outline: its class and whether each
    fill of the outline, and of an equal-area random region in the head, moved it off its class."""
    names = list(loaded.config.label_names)
    rows, variants = [], []
    for record, image, logits in zip(records, images, clean):
        if record.label == "notumor" or names[int(np.argmax(logits))] != record.label:
            continue
        outline = load_outline(data, record.image, image.shape).mask
        if outline is None:
            continue
        head = detect_brain_mask(image).mask
        elsewhere = random_region(outline, head, rng)
        fills = [fill_region(image, outline, head, style) for style in FILLS]
        fills += [fill_region(image, elsewhere, head, "median") if elsewhere is not None else image]
        variants += fills
        rows.append({"label": record.label, "random_found": elsewhere is not None})
    if not rows:
        return []
    predicted = slice_logits(loaded, variants).argmax(1).reshape(len(rows), len(FILLS) + 1)
    for row, moved in zip(rows, predicted):
        label = names.index(row["label"])
        row.update({f"left after {style} fill": bool(moved[i] != label) for i, style in enumerate(FILLS)})
        row["left after random region"] = bool(moved[-1] != label) if row["random_found"] else None
    return rows


def occlusion_summary(rows: list[dict], names: list[str]) -> dict:
    """Per tumour class: images, occlusion sensitivity per fill, and the random-region rate."""
    summary = {}
    for name in names:
        mine = [row for row in rows if row["label"] == name]
        if not mine:
            continue
        controls = [row["left after random region"] for row in mine if row["left after random region"] is not None]
        sensitivity = {style: float(np.mean([row[f"left after {style} fill"] for row in mine])) for style in FILLS}
        summary[name] = {
            "images": len(mine),
            **{f"sensitivity ({style} fill)": value for style, value in sensitivity.items()},
            "random region": float(np.mean(controls)) if controls else None,
        }
    return summary


def write_report(report: dict, out: Path) -> None:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "stress.json").write_text(json.dumps(report, indent=2) + "\n")
    with (out / "stress.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(report["table"][0]))
        writer.writeheader()
        writer.writerows(report["table"])


def print_report(report: dict) -> None:
    print(
        f"{report['checkpoint']} on {report['images']} ({report['num_images']} images, T = {report['temperature']:.3f})"
    )
    trust = "unfamiliar" in report["table"][0]
    extra = f" {'unfamiliar':>10} {'AUC':>5} {'kept':>5} {'kept acc':>8}" if trust else ""
    print(f"{'condition':32} {'accuracy':>8} {'macro-F1':>8} {'ECE':>6}{extra}")
    for row in report["table"]:
        line = f"{row['condition']:32} {row['accuracy']:8.3f} {row['macro_f1']:8.3f} {row['ece']:6.3f}"
        if trust:
            kept_accuracy = "-" if row["selective_accuracy"] is None else f"{row['selective_accuracy']:.3f}"
            line += (
                f" {row['unfamiliar']:10.2f} {row['familiarity_auc']:5.2f} {row['coverage']:5.2f} {kept_accuracy:>8}"
            )
        print(line)
    print(f"mean accuracy under shift {report['mean_shifted_accuracy']:.3f}; worst: {report['worst_shift']}")
    calibration = report["temperature_under_shift"]
    unseen, clean = calibration["mean_ece_on_unseen_shifts"], calibration["clean_ece"]
    print(f"temperature {calibration['clean_temperature']:.3f} (clean): ECE {clean['clean']:.3f} clean, "
          f"{unseen['clean']:.3f} on unseen shifts; {calibration['pooled_temperature']:.3f} (clean + shifted): "
          f"{clean['pooled']:.3f} clean, {unseen['pooled']:.3f} on unseen shifts")  # fmt: skip
    for name, row in report["occlusion"].items():
        fills = ", ".join(f"{style} {row[f'sensitivity ({style} fill)']:.2f}" for style in FILLS)
        control = "n/a" if row["random region"] is None else f"{row['random region']:.2f}"
        print(f"occlusion {name} ({row['images']} images): {fills}; random region {control}")
