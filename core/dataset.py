"""Folders laid out as ROOT/SPLIT/<class>/<image>, decoded and preprocessed once into memory."""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image
from sklearn.model_selection import StratifiedGroupKFold
from tqdm import tqdm

from core.annotations import annotation_path, load_outline
from core.config import Preprocessing
from core.errors import DatasetError
from core.image_input import SUPPORTED_SUFFIXES, load_image
from core.preprocess import heatmap_to_square, prepare_for_model


@dataclass(frozen=True)
class Record:
    image: str  # path relative to ROOT, with forward slashes
    label: str
    group: str


def list_split(root: Path, split: str, label_names: list[str] | None = None) -> list[Record]:
    """Every image under ROOT/SPLIT/<class>/, with its group from metadata.csv when present.

    Raises:
        DatasetError: the split folder is missing, or holds a class the model does not know.
    """
    split_dir = Path(root) / split
    if not split_dir.is_dir():
        raise DatasetError(f"No folder {split_dir}; expected ROOT/{split}/<class>/<image>.")
    classes = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
    if not classes:
        raise DatasetError(f"{split_dir} holds no class folders.")
    if label_names is not None:
        unknown = [c for c in classes if c not in label_names]
        if unknown:
            raise DatasetError(
                f"Class folder(s) {unknown} in {split_dir} are unknown to the model, which knows {list(label_names)}."
            )
    groups = _read_groups(Path(root))
    records = []
    for label in classes:
        for path in sorted((split_dir / label).iterdir()):
            if path.is_file() and path.name.lower().endswith(SUPPORTED_SUFFIXES):
                relative = path.relative_to(root).as_posix()
                records.append(Record(relative, label, groups.get(relative, relative)))
    return records


def list_splits(root: Path, splits: list[str] | tuple[str, ...]) -> list[Record]:
    """list_split() of each split in turn."""
    return [record for split in splits for record in list_split(root, split)]


def _read_groups(root: Path) -> dict[str, str]:
    metadata = root / "metadata.csv"
    if not metadata.is_file():
        return {}
    with metadata.open(newline="") as handle:
        return {row["image"]: row.get("group") or row["image"] for row in csv.DictReader(handle)}


def decode_records(
    root: Path, records: list[Record], settings: Preprocessing, progress: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Decode each image once: (plain, brain-masked) uint8 arrays of shape (N, S, S)."""
    decoded = decode_with_outlines(root, records, settings, progress, outlines=False)
    return decoded.plain, decoded.masked


class DecodedImages(NamedTuple):
    plain: np.ndarray  # (N, S, S) uint8, the model's input square
    masked: np.ndarray  # the same with the background outside the head zeroed
    outlines: np.ndarray  # (N, S, S) bool: the radiologist's outline on that square (none: all False)


def decode_with_outlines(
    root: Path, records: list[Record], settings: Preprocessing, progress: bool = True, outlines: bool = True
) -> DecodedImages:
    """decode_records() plus each image's tumour outline (ROOT/annotations) mapped onto the
    same square, for counterfactuals and outline guidance in training."""
    size = settings.input_size
    plain = np.zeros((len(records), size, size), dtype=np.uint8)
    masked = np.zeros_like(plain)
    drawn = np.zeros(plain.shape if outlines else (0, size, size), dtype=bool)
    for i, record in enumerate(tqdm(records, desc="decode", disable=not progress, leave=False)):
        path = Path(root) / record.image
        image = load_image(path.read_bytes(), path.name).pixels
        prepared = prepare_for_model(image, settings, mask_input=False)
        plain[i] = np.round(prepared.square * 255)
        masked[i] = np.round(prepare_for_model(image, settings, mask_input=True).square * 255)
        if outlines:
            outline = load_outline(root, record.image, image.shape)
            if outline.mask is not None:
                drawn[i] = heatmap_to_square(outline.mask.astype(np.float32), prepared.box, size) >= 0.5
    return DecodedImages(plain, masked, drawn)


def grouped_holdout(records: list[Record], fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of held-out records: whole groups, about `fraction` of each class."""
    rng = np.random.default_rng(seed)
    held = np.zeros(len(records), dtype=bool)
    labels = sorted({r.label for r in records})
    for label in labels:
        groups = sorted({r.group for r in records if r.label == label})
        rng.shuffle(groups)
        target = fraction * sum(r.label == label for r in records)
        chosen: set[str] = set()
        count = 0
        for group in groups:
            if count >= target:
                break
            chosen.add(group)
            count += sum(r.group == group and r.label == label for r in records)
        held |= np.array([r.label == label and r.group in chosen for r in records])
    return held


def holdout_records(
    root: Path,
    label_names: list[str],
    splits: tuple[str, ...] = ("train", "val"),
    fraction: float = 0.15,
    seed: int = 0,
) -> list[Record]:
    """The grouped hold-out `train` keeps aside with the same splits, fraction and seed."""
    records = [record for split in splits for record in list_split(root, split, label_names)]  # as `train` lists them
    return [record for record, held in zip(records, grouped_holdout(records, fraction, seed)) if held]


def grouped_folds(records: list[Record], folds: int, seed: int) -> list[np.ndarray]:
    """Boolean held-out masks for k-fold cross-validation: whole groups, classes stratified."""
    labels = [r.label for r in records]
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    masks = []
    for _, held_index in splitter.split(labels, labels, [r.group for r in records]):
        held = np.zeros(len(records), dtype=bool)
        held[held_index] = True
        masks.append(held)
    return masks


def shrink_copy(root: Path, target: Path, splits: list[str], max_side: int = 288, quality: int = 85) -> int:
    """Copy ROOT/SPLIT/<class>/<image> to TARGET with each image at most `max_side` pixels,
    re-saved as JPEG under the same name (metadata.csv and the LabelMe outlines copied), for a
    size-limited upload. Returns the number of images written."""
    count = 0
    for record in list_splits(root, splits):
        out = Path(target) / record.image
        out.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(Path(root) / record.image) as image:
            image = image if image.mode in ("L", "RGB") else image.convert("L")
            image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
            image.save(out, format="JPEG", quality=quality)
        _shrink_outline(root, target, record.image)
        count += 1
    if (Path(root) / "metadata.csv").is_file():
        shutil.copy(Path(root) / "metadata.csv", Path(target) / "metadata.csv")
    return count


def _shrink_outline(root: Path, target: Path, image: str) -> None:
    """The image's LabelMe annotation without the embedded image; its points stay as drawn and
    its imageHeight/imageWidth say on what size, so reading it scales them to the shrunk copy
    (core.annotations.load_outline). Nothing when the image has no annotation."""
    source = annotation_path(root, image)
    if not source.is_file():
        return
    labelme = json.loads(source.read_text())
    labelme["imageData"] = None
    out = annotation_path(target, image)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(labelme))
