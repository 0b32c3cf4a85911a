"""The training record a run writes to training.json: recipe, hold-out, history, lineage,
machine and commit. The model card reads it (core.model_card)."""

from __future__ import annotations

import platform
import subprocess
import time
from pathlib import Path

import torch

from core.config import NO_HOLDOUT_RECORD, read_config, read_training_record, resolve_checkpoint
from core.training.augmentation import AUGMENTATION_NOTE, Randomise, mixing_note
from core.training.distillation import DISTILL_TEMPERATURE, attention_layers
from core.training.guidance import GUIDANCE_DILATION
from core.training.options import TrainOptions


def training_record(options: TrainOptions, started: float, history: list, holdout: dict, num_images: int) -> dict:
    return {
        "data": str(options.data),
        "splits": list(options.splits),
        "num_images": num_images,
        "holdout": holdout_note(options.holdout_fraction, options.holdout_seed),
        "holdout_metrics": holdout,
        "init": options.init,
        "continued_from": previous_training(options.init),
        "teacher": str(options.teacher) if options.teacher else None,
        "epochs": options.epochs,
        "image_size": options.image_size,
        "batch_size": options.batch_size,
        "optimiser": f"AdamW lr {options.lr} wd {options.weight_decay}, one-cycle",
        "loss": "class-weighted cross-entropy, label smoothing 0.1" + _distillation_note(options),
        "weights": f"exponential moving average (timm ModelEmaV3, warm-up, decay up to {options.ema_decay})"
        if options.ema_decay
        else "last step",
        "drop_path": options.drop_path,
        "augmentation": AUGMENTATION_NOTE + mixing_note(options),
        "randomisation": Randomise(options.seed, options.randomise).note() if options.randomise else None,
        "counterfactuals": COUNTERFACTUAL_NOTE.format(share=options.counterfactuals)
        if options.counterfactuals
        else None,
        "control_fills": CONTROL_NOTE.format(share=options.control_fills) if options.control_fills else None,
        "healthy_template": TEMPLATE_NOTE if options.healthy_template else None,
        "guidance": GUIDANCE_NOTE.format(weight=options.guidance, dilation=GUIDANCE_DILATION)
        if options.guidance
        else None,
        "precision": "bfloat16 autocast (forward passes), float32 weights" if options.bf16 else "float32",
        "seed": options.seed,
        "history": history,
        "seconds": round(time.time() - started),
        "machine": _machine(options.device),
        "commit": git_commit(),
    }


def holdout_note(fraction: float, seed: int) -> str:
    """How training.json names the grouped hold-out of `fraction` drawn with `seed`."""
    if not fraction:
        return NO_HOLDOUT_RECORD
    return f"{fraction:.0%} of each class's groups (metadata.csv 'group'), seed {seed}"


COUNTERFACTUAL_NOTE = (
    "each outlined tumour image of the training part is shown with probability {share:g} with its tumour "
    "removed (outline grown by 2 % of the side; OpenCV Telea inpainting or the mirrored hemisphere blended "
    "at a feathered border, one drawn per image, made in memory at the start) and labelled notumor"
)
CONTROL_NOTE = (
    "each outlined tumour image not shown as a counterfactual is shown with probability {share:g} with its "
    "tumour's shape (grown by 4 % of the side) filled the same way at a random place inside the head, off the "
    "tumour and its mirror image, label and outline kept: a fill alone is no evidence of a healthy slice"
)
TEMPLATE_NOTE = (
    "48 slices of nilearn's MNI152 template (ICBM 2009 T1, skull-stripped, 1 mm), every 8th slice through "
    "the middle of the axial, coronal and sagittal planes, as notumor; never held out"
)
GUIDANCE_NOTE = (
    "weight {weight:g} x share of the target class's positive class activation map (last feature layer) "
    "outside the radiologist's outline grown by {dilation:.0%} of the side, on outlined tumour images"
)


def previous_training(init: str) -> dict | None:
    """The training record of the checkpoint a run continues from, so lineage survives."""
    path = Path(init)
    if not path.is_dir():
        return None
    record = read_training_record(path)
    record.pop("notes", None)
    return record or None


def _machine(device: str) -> str:
    if device == "cuda":
        return f"{torch.cuda.get_device_name()} GPU, torch {torch.__version__}"
    threads = torch.get_num_threads()
    return f"{platform.machine()} CPU, {threads} thread{'s' if threads > 1 else ''}, torch {torch.__version__}"


def _distillation_note(options: TrainOptions) -> str:
    if not options.teacher:
        return ""
    targets = "on the same augmented view" if options.consistent_teacher else "fixed, from the un-augmented image"
    note = f", distillation weight {options.distill_weight} at T={DISTILL_TEMPERATURE:g} (teacher targets {targets})"
    if options.attention_transfer:
        teacher_arch = read_config(resolve_checkpoint(options.teacher)).architecture
        pairs = zip(attention_layers(options.arch), attention_layers(teacher_arch))
        layers = ", ".join(f"{student} to {teacher}" for student, teacher in pairs)
        note += f", attention transfer beta {options.attention_transfer:g} ({layers})"
    if options.counterfactuals or options.healthy_template:
        note += "; counterfactual and template slices learn from their notumor label alone"
    return note


def git_commit() -> str:
    """The repository's short commit, or "unknown" outside a git checkout."""
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).resolve().parents[2], capture_output=True,
            text=True, check=True, timeout=5,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"
