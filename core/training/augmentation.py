"""Augmentation of whole training batches on the training device, and mixup/CutMix."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from timm.data import Mixup

from core.training.options import TrainOptions

# What Augment draws, as the training record states it.
AUGMENTATION_NOTE = (
    "affine (+-10 deg, 6 % shift, 0.9-1.1 scale), h-flip, gamma 0.75-1.35, "
    "contrast 0.85-1.15, brightness +-0.05, brain mask on half the images"
)


class Augment:
    """MRI-friendly augmentation of a whole (N, 1, S, S) batch, each image its own draw:
    small affine (+-10 deg, 6 % shift, 0.9-1.1 scale), h-flip, gamma/contrast/brightness.
    The draws come from a CPU generator, so a seed gives the same batches on CPU and GPU."""

    def __init__(self, seed: int):
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        draw = lambda low, high: self._uniform(len(images), low, high).to(images.device)  # noqa: E731
        angle = torch.deg2rad(draw(-10, 10))
        zoom = 1 / draw(0.9, 1.1)  # the grid maps output to input pixels, so it holds the inverse scale
        flip = torch.where(draw(0, 1) < 0.5, -1.0, 1.0)
        cos, sin = zoom * torch.cos(angle), zoom * torch.sin(angle)
        shift_x, shift_y = draw(-0.12, 0.12), draw(-0.12, 0.12)  # 6 % of the side; the grid spans [-1, 1]
        rows = [torch.stack([cos * flip, -sin, shift_x], 1), torch.stack([sin * flip, cos, shift_y], 1)]
        grid = F.affine_grid(torch.stack(rows, 1), list(images.shape), align_corners=False)
        images = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        gamma = draw(0.75, 1.35).view(-1, 1, 1, 1)
        contrast = draw(0.85, 1.15).view(-1, 1, 1, 1)
        brightness = draw(-0.05, 0.05).view(-1, 1, 1, 1)
        return (images.clamp(0, 1) ** gamma * contrast + brightness).clamp(0, 1)

    def _uniform(self, n: int, low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, generator=self.generator)


def mixer(options: TrainOptions, num_classes: int) -> Mixup | None:
    """timm's Mixup for --mixup/--cutmix (soft targets, label smoothing 0.1), or None."""
    if not (options.mixup_alpha or options.cutmix_alpha):
        return None
    np.random.seed(options.seed)  # timm's Mixup draws from numpy's global generator
    return Mixup(
        mixup_alpha=options.mixup_alpha,
        cutmix_alpha=options.cutmix_alpha,
        label_smoothing=0.1,
        num_classes=num_classes,
    )


def mixing_note(options: TrainOptions) -> str:
    alphas = {"mixup": options.mixup_alpha, "CutMix": options.cutmix_alpha}
    used = [f"{name} alpha {alpha}" for name, alpha in alphas.items() if alpha]
    return f", then {' or '.join(used)} (timm Mixup)" if used else ""
