"""TrainOptions: every training setting with its default, help and command-line flag, once.

`python -m core train` builds its flags from these fields (core.cli), so a default is never
written twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


def option(default=None, help: str = "", *, flag: str | None = None, required: bool = False, **cli):
    """A dataclass field with what its command-line flag needs: help, and optionally another
    flag name, metavar or choices (`cli`). Required options have no default."""
    metadata = {"help": help, "flag": flag, "cli": cli}
    if required:
        return field(metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class TrainOptions:
    arch: str = option(help="timm architecture, e.g. convnext_atto", required=True)
    data: Path = option(help="dataset ROOT with SPLIT/<class>/<image>", required=True)
    out: Path = option(help="checkpoint folder to write (with --folds: the JSON report)", required=True)
    splits: tuple[str, ...] = option(("train", "val"), "the splits to train on")
    epochs: int = option(12, "passes over the training images")
    image_size: int = option(192, "side of the model's square input, in pixels")
    batch_size: int = option(32, "images per step")
    lr: float = option(1e-3, "peak learning rate of the one-cycle schedule")
    weight_decay: float = option(0.05, "AdamW weight decay")
    seed: int = option(0, "seed of the weights, batches, augmentation and the hold-out draw")
    # A second seed of a recipe must keep the first one's hold-out, or it trains on images the
    # comparison with the shipped weights (seed-0 hold-out) is made on.
    holdout_seed: int | None = option(None, "seed of the grouped hold-out draw alone (default: --seed)")
    init: str = option(
        "scratch",
        "scratch, imagenet-lite0 (-lite1, -lite2), or a checkpoint folder of the same architecture to go on from",
    )
    teacher: Path | None = option(None, "checkpoint to distil from")
    distill_weight: float = option(0.5, "share of the loss given to the teacher")
    # The teacher scores each augmented view the student sees (Beyer et al. 2022, "patient and
    # consistent" distillation) instead of giving fixed targets from the un-augmented image.
    consistent_teacher: bool = option(
        False, "the teacher scores each augmented view the student sees, not the un-augmented image once"
    )
    ema_decay: float | None = option(
        None, "save an exponential moving average of the weights", flag="--ema", metavar="DECAY"
    )
    # Beta(alpha, alpha) blending of image pairs (mixup) or pasting a box of one into the other
    # (CutMix), half the batches each when both are set; the ConvNeXt paper's recipe uses 0.8 / 1.0.
    mixup_alpha: float = option(0.0, "blend image pairs (timm Mixup)", flag="--mixup", metavar="ALPHA")
    cutmix_alpha: float = option(0.0, "paste a box from another image", flag="--cutmix", metavar="ALPHA")
    # Stochastic depth (timm drop_path_rate): residual blocks are skipped at random while training,
    # deeper ones more often (up to this rate), a regulariser for a ConvNeXt trained from scratch.
    drop_path: float = option(0.0, "stochastic depth while training (timm)", metavar="RATE")
    # Attention transfer (Zagoruyko & Komodakis 2017): beta of the loss pulling the student's spatial
    # attention maps towards the teacher's on the same view (the paper uses 1000); 0 turns it off.
    attention_transfer: float = option(
        0.0, "pull the student's spatial attention towards the consistent teacher's (e.g. 1000)", metavar="BETA"
    )
    # Issue #27: what the model learns from. Counterfactuals: tumour images of the training
    # splits with the outlined tumour removed (core.counterfactual), labelled notumor.
    counterfactuals: float = option(
        0.0, "share of outlined tumour images shown with the tumour removed, as notumor (e.g. 0.25)", metavar="SHARE"
    )
    # Controls for the counterfactuals: the tumour's shape filled elsewhere in the head the same
    # way, label kept, so that a fill alone is no evidence of a healthy slice.
    control_fills: float = option(
        0.0, "share of outlined tumour images shown with a same-shaped fill elsewhere in the head, label kept "
        "(e.g. 0.25; needs --counterfactuals)", metavar="SHARE"
    )  # fmt: skip
    randomise: float = option(
        0.0, "share of images given each sequence/scanner randomisation (e.g. 0.3)", metavar="SHARE"
    )
    healthy_template: bool = option(False, "add MNI152 template slices in three planes (nilearn) as notumor")
    guidance: float = option(
        0.0, "weight of the outline-guidance loss: evidence outside the dilated outline (e.g. 1)", metavar="WEIGHT"
    )
    holdout_fraction: float = option(
        0.15, "share of each class's groups held out (0: refit on every image; then set the temperature with calibrate)"
    )
    limit: int | None = option(None, "images per class (smoke runs)")
    max_steps: int | None = option(None, "stop after this many steps (smoke runs)")
    threads: int = option(2, "CPU threads torch uses (one per run when two runs share the cores)")
    device: str = option("cpu", "where batches are trained (decoding stays on the CPU)", choices=["cpu", "cuda"])
    # Student and teacher forward passes in bfloat16 autocast (weights, optimiser and hold-out
    # scoring stay float32): on a CPU with AVX512-BF16 a 224 px ConvNeXt step runs ~1.9x faster.
    bf16: bool = option(False, "forward passes in bfloat16 autocast (faster on CPUs with AVX512-BF16)")
    progress: bool = option(True, "hide the progress bars", flag="--no-progress")

    def __post_init__(self):
        object.__setattr__(self, "splits", tuple(self.splits))
        if self.holdout_seed is None:
            object.__setattr__(self, "holdout_seed", self.seed)
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"--device is cpu or cuda, not {self.device}.")
        if self.device == "cuda" and not _cuda_available():
            raise ValueError("--device cuda: torch sees no CUDA GPU on this machine; use --device cpu.")
        if self.consistent_teacher and not self.teacher:
            raise ValueError("--consistent-teacher needs --teacher CHECKPOINT.")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise ValueError(f"--ema is a decay between 0 and 1 (e.g. 0.998), not {self.ema_decay}.")
        if not 0 <= self.drop_path < 1:
            raise ValueError(f"--drop-path is a probability below 1 (e.g. 0.1), not {self.drop_path}.")
        if self.attention_transfer < 0:
            raise ValueError(f"--attention-transfer is a loss weight >= 0 (e.g. 1000), not {self.attention_transfer}.")
        if self.attention_transfer and not self.consistent_teacher:
            raise ValueError("--attention-transfer needs --consistent-teacher (the teacher must see the same view).")
        if not 0 <= self.distill_weight <= 1:
            raise ValueError(f"--distill-weight is between 0 and 1, not {self.distill_weight}.")
        if self.control_fills and not self.counterfactuals:
            raise ValueError("--control-fills needs --counterfactuals (they are the counterfactuals' control).")
        for name in ("counterfactuals", "control_fills", "randomise"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"--{name} is a share from 0 to 1 (e.g. 0.25), not {getattr(self, name)}.")
        if self.guidance < 0:
            raise ValueError(f"--guidance is a loss weight >= 0 (e.g. 1), not {self.guidance}.")
        if self.guidance and (self.mixup_alpha or self.cutmix_alpha):
            raise ValueError("--guidance cannot go with --mixup/--cutmix: a mixed image has no single outline.")
        if not 0 <= self.holdout_fraction < 1:
            raise ValueError(f"--holdout-fraction is from 0 to below 1 (e.g. 0.15), not {self.holdout_fraction}.")
        if self.mixup_alpha < 0 or self.cutmix_alpha < 0:
            raise ValueError("--mixup and --cutmix are Beta-distribution alphas >= 0 (e.g. 0.8 and 1.0).")
        if (self.mixup_alpha or self.cutmix_alpha) and self.teacher and not self.consistent_teacher:
            raise ValueError("--mixup/--cutmix with --teacher need --consistent-teacher (fixed targets are unmixed).")


def _cuda_available() -> bool:
    import torch  # here, not at the top: the command line builds its flags from TrainOptions

    return torch.cuda.is_available()
