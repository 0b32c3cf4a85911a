"""The training splits, decoded and preprocessed once into memory, with the teacher's part."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from core.checkpoint import LoadedModel, load_checkpoint
from core.config import Preprocessing
from core.counterfactual import dilate, random_region, remove_tumour
from core.dataset import Record, decode_with_outlines, list_splits
from core.inference import batched_logits
from core.metrics import softmax
from core.preprocess import prepare_for_model
from core.training.distillation import DISTILL_TEMPERATURE
from core.training.options import TrainOptions


@dataclass(frozen=True)
class TrainingData:
    """The training splits, decoded once: labels, plain and brain-masked images, and either
    fixed teacher targets or the teacher itself (consistent distillation)."""

    records: list[Record]
    label_names: list[str]
    labels: np.ndarray
    plain: np.ndarray
    masked: np.ndarray
    teacher_probs: np.ndarray | None = None
    teacher: LoadedModel | None = None
    outlines: np.ndarray | None = None  # (N, S, S) bool, for counterfactuals and guidance


# Healthy slices of the MNI152 template (nilearn's ICBM 2009 T1, skull-stripped) that join the
# training images as notumor: every 8th slice (1 mm) through the middle of each plane.
TEMPLATE_RANGES = {"axial": (0.30, 0.80), "coronal": (0.20, 0.80), "sagittal": (0.15, 0.85)}
TEMPLATE_STEP = 8


# A data root may carry the slices (scripts/shrink_dataset.py writes them beside a shrunk copy),
# so a machine without nilearn, which cannot install it, trains with them too.
TEMPLATE_FILE = "mni152_slices.npz"


def template_planes() -> list[np.ndarray]:
    """The MNI152 slices the recipe uses, scaled to [0, 1] over the whole volume."""
    from nilearn.datasets import load_mni152_template

    volume = np.asarray(load_mni152_template(resolution=1).get_fdata(), dtype=np.float32)
    volume = (volume - volume.min()) / max(float(volume.max() - volume.min()), 1e-6)
    planes = []
    for axis, plane in ((2, "axial"), (1, "coronal"), (0, "sagittal")):
        low, high = TEMPLATE_RANGES[plane]
        for index in range(int(low * volume.shape[axis]), int(high * volume.shape[axis]), TEMPLATE_STEP):
            planes.append(np.ascontiguousarray(np.rot90(np.take(volume, index, axis=axis))))
    return planes


def save_template_planes(root: Path) -> Path:
    """Write the template slices into ROOT, as nilearn gives them (float32, compressed)."""
    path = Path(root) / TEMPLATE_FILE
    np.savez_compressed(path, **{f"plane{index:03d}": plane for index, plane in enumerate(template_planes())})
    return path


def template_slices(settings: Preprocessing, root: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(plain, masked) uint8 squares of MNI152 slices in the three planes, as decode_records;
    from ROOT's TEMPLATE_FILE when there is one, else from nilearn."""
    if root is not None and (Path(root) / TEMPLATE_FILE).is_file():
        with np.load(Path(root) / TEMPLATE_FILE) as archive:
            planes = [archive[key] for key in sorted(archive.files)]
    else:
        planes = template_planes()
    plain = np.stack([np.round(prepare_for_model(p, settings, mask_input=False).square * 255) for p in planes])
    masked = np.stack([np.round(prepare_for_model(p, settings, mask_input=True).square * 255) for p in planes])
    return plain.astype(np.uint8), masked.astype(np.uint8)


def load_training_data(options: TrainOptions) -> TrainingData:
    started = time.time()
    settings = Preprocessing(input_size=options.image_size)
    records = list_splits(options.data, options.splits)
    label_names = sorted({r.label for r in records})
    if options.limit:
        records = [r for name in label_names for r in [x for x in records if x.label == name][: options.limit]]
    labels = np.array([label_names.index(r.label) for r in records])
    needs_outlines = bool(options.counterfactuals or options.guidance)
    plain, masked, outlines = decode_with_outlines(options.data, records, settings, options.progress, needs_outlines)
    print(f"decoded {len(records)} images in {time.time() - started:.0f}s", flush=True)
    if (options.counterfactuals or options.healthy_template) and "notumor" not in label_names:
        raise ValueError("--counterfactuals and --healthy-template need a 'notumor' class in the data.")
    data = TrainingData(records, label_names, labels, plain, masked, outlines=outlines if needs_outlines else None)
    if not options.teacher:
        return data
    teacher = load_checkpoint(options.teacher)
    if list(teacher.config.label_names) != label_names:
        raise ValueError(f"Teacher classes {list(teacher.config.label_names)} differ from {label_names}.")
    teacher.model.eval().to(options.device)
    if options.consistent_teacher:
        return replace(data, teacher=teacher)
    logits = batched_logits(teacher.model, masked, teacher.config.preprocessing)
    return replace(data, teacher_probs=softmax(logits, DISTILL_TEMPERATURE).astype(np.float32))


@dataclass(frozen=True)
class Counterfactuals:
    """Tumour-removed copies of the training images that have an outline (core.counterfactual):
    `available[i]` says whether image i has one; plain and masked as in TrainingData."""

    available: np.ndarray
    plain: np.ndarray
    masked: np.ndarray
    methods: dict[str, int]
    # Controls: the tumour's shape filled the same way at a random place in the head, off the
    # tumour; `has_control[i]` says whether one was made (a place was found). None when not asked.
    has_control: np.ndarray | None = None
    control_plain: np.ndarray | None = None
    control_masked: np.ndarray | None = None


def make_counterfactuals(
    plain: np.ndarray, masked: np.ndarray, outlines: np.ndarray, indices: np.ndarray, seed: int, controls: bool = False
) -> Counterfactuals:
    """Remove the outlined tumour from each image in `indices` that has an outline, by Telea
    inpainting or the mirrored hemisphere (one drawn per image; `ns` stays held out for the
    stress test). The masked copy keeps the head's own background mask. With `controls`, also
    the same fill of the tumour's shape (grown by the margin and a gap as wide) moved to a
    random place inside the head and off the tumour, with the tumour left in place."""
    rng = np.random.default_rng(seed)
    available = np.zeros(len(plain), dtype=bool)
    removed, removed_masked = np.zeros_like(plain), np.zeros_like(masked)
    methods = {"telea": 0, "mirror": 0}
    control_rng = np.random.default_rng(seed + 1)  # the counterfactuals are the same with or without controls
    has_control = np.zeros(len(plain), dtype=bool) if controls else None
    control_plain, control_masked = (np.zeros_like(plain), np.zeros_like(masked)) if controls else (None, None)
    for i in indices:
        if not outlines[i].any():
            continue
        method = "telea" if rng.random() < 0.5 else "mirror"
        margin = max(1, round(0.02 * plain.shape[-1]))
        removed[i], removed_masked[i] = _filled(plain[i], masked[i], outlines[i], method, grow=margin)
        available[i] = True
        methods[method] += 1
        if controls:
            grown, head = dilate(outlines[i], 2 * margin), masked[i] > 0
            allowed = head & ~dilate(~head, margin) & ~grown[:, ::-1]  # inside the head, not the tumour's mirror
            elsewhere = random_region(grown, allowed, control_rng)
            if elsewhere is not None:
                control_plain[i], control_masked[i] = _filled(plain[i], masked[i], elsewhere, method, grow=0)
                has_control[i] = True
    return Counterfactuals(available, removed, removed_masked, methods, has_control, control_plain, control_masked)


def _filled(plain, masked, region, method: str, grow: int):
    """The plain and brain-masked slice with `region` (grown by `grow` pixels) filled by
    `method`; the masked copy keeps the head's own background mask."""
    head = (masked > 0) | dilate(region, grow)
    return remove_tumour(plain, region, method, grow), np.where(head, remove_tumour(masked, region, method, grow), 0)
