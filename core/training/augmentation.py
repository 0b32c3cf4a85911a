"""Augmentation of whole training batches on the training device, and mixup/CutMix."""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from timm.data import Mixup
from torchvision.transforms.functional import gaussian_blur

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

    def __call__(self, images: torch.Tensor, masks: torch.Tensor | None = None):
        """Augmented images; with `masks` (N, 1, S, S), also the masks moved the same way."""
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
        images = (images.clamp(0, 1) ** gamma * contrast + brightness).clamp(0, 1)
        if masks is None:
            return images
        return images, F.grid_sample(masks, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def _uniform(self, n: int, low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, generator=self.generator)


# What Randomise draws, as the training record states it (each family on its own share of images).
RANDOMISATION_NOTE = (
    "sequence and scanner randomisation, each on {p:.0%} of the images: zoom 0.75-1.35 (tight crops and "
    "padding); an intensity curve inside the head (one third each: random monotone 6-knot curve, random "
    "non-monotone curve, inversion); multiplicative bias field exp(quadratic), coefficients +-0.3; Gaussian "
    "blur sigma 0.5-2 px or resolution loss to 1/2-1/4 of the side and back; Rician noise sigma 0.01-0.06; "
    "JPEG quality 15-90"
)


class Randomise:
    """Sequence and scanner randomisation of a (N, 1, S, S) batch in [0, 1]: crops, intensity
    curves (including non-monotone ones and inversion, so a contrast-T1 slice can look
    T2-like), bias fields, blur and resolution loss, noise and JPEG re-compression. Each
    family is applied to a random `probability` share of the images; the background outside
    the head stays black. Seeded like Augment; JPEG runs on the CPU."""

    def __init__(self, seed: int, probability: float = 0.3):
        self.generator = torch.Generator().manual_seed(seed + 1)
        self.probability = probability

    def note(self) -> str:
        return RANDOMISATION_NOTE.format(p=self.probability)

    def __call__(self, images: torch.Tensor, masks: torch.Tensor | None = None):
        """Randomised images; with `masks` (N, 1, S, S), also the masks zoomed the same way."""
        device, images = images.device, images.detach().cpu().clamp(0, 1)
        if masks is not None:
            images = torch.cat([images, masks.detach().cpu().float()], 1)
        images = self._zoom(images, self._chosen(len(images)))
        if masks is not None:
            images, masks = images[:, :1].contiguous(), images[:, 1:].to(device)
        head = images > 0.02
        images = self._curve(images, head, self._chosen(len(images)))
        images = self._bias_field(images, head, self._chosen(len(images)))
        images = self._soften(images, self._chosen(len(images)))
        images = self._noise(images, head, self._chosen(len(images)))
        images = self._jpeg(images, self._chosen(len(images)))
        images = images.clamp(0, 1).to(device)
        return images if masks is None else (images, masks)

    def _rand(self, *shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=self.generator)

    def _uniform(self, low: float, high: float, *shape: int) -> torch.Tensor:
        return low + (high - low) * self._rand(*shape)

    def _chosen(self, n: int) -> torch.Tensor:
        return self._rand(n) < self.probability

    def _zoom(self, images: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
        if not chosen.any():
            return images
        inverse_scale = 1 / self._uniform(0.75, 1.35, int(chosen.sum()))
        theta = torch.zeros(len(inverse_scale), 2, 3)
        theta[:, 0, 0] = theta[:, 1, 1] = inverse_scale
        part = images[chosen]
        grid = F.affine_grid(theta, list(part.shape), align_corners=False)
        images = images.clone()
        images[chosen] = F.grid_sample(part, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return images

    def _curve(self, images: torch.Tensor, head: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
        images = images.clone()
        knots = 6
        for i in torch.nonzero(chosen).flatten().tolist():
            kind = int(self._rand(1).item() * 3)
            if kind == 2:
                curved = 1 - images[i]
            else:
                levels = self._rand(knots)
                levels = torch.sort(levels).values if kind == 0 else levels
                position = images[i] * (knots - 1)
                low = position.floor().clamp(max=knots - 2).long()
                fraction = position - low
                curved = levels[low] * (1 - fraction) + levels[low + 1] * fraction
                curved = (curved - levels.min()) / (levels.max() - levels.min()).clamp(min=1e-3)
            images[i] = torch.where(head[i], curved, 0.0)
        return images

    def _bias_field(self, images: torch.Tensor, head: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
        if not chosen.any():
            return images
        side = images.shape[-1]
        y, x = torch.meshgrid(torch.linspace(-1, 1, side), torch.linspace(-1, 1, side), indexing="ij")
        terms = torch.stack([x, y, x * y, x * x, y * y])
        coefficients = self._uniform(-0.3, 0.3, int(chosen.sum()), 5)
        fields = torch.exp(torch.einsum("nk,khw->nhw", coefficients, terms))[:, None]
        images = images.clone()
        images[chosen] = images[chosen] * fields
        return images

    def _soften(self, images: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
        images = images.clone()
        side = images.shape[-1]
        for i in torch.nonzero(chosen).flatten().tolist():
            if self._rand(1).item() < 0.5:
                sigma = float(self._uniform(0.5, 2.0, 1))
                images[i] = gaussian_blur(images[i], kernel_size=2 * int(3 * sigma) + 1, sigma=sigma)
            else:
                small = max(8, int(side / float(self._uniform(2.0, 4.0, 1))))
                shrunk = F.interpolate(images[i : i + 1], size=(small, small), mode="area")
                images[i] = F.interpolate(shrunk, size=(side, side), mode="bilinear", align_corners=False)[0]
        return images

    def _noise(self, images: torch.Tensor, head: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
        if not chosen.any():
            return images
        part = images[chosen]
        sigma = self._uniform(0.01, 0.06, len(part)).view(-1, 1, 1, 1)
        real = part + sigma * torch.randn(part.shape, generator=self.generator)
        imaginary = sigma * torch.randn(part.shape, generator=self.generator)
        images = images.clone()
        images[chosen] = torch.sqrt(real**2 + imaginary**2)  # magnitude images carry Rician noise
        return images

    def _jpeg(self, images: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
        images = images.clone()
        for i in torch.nonzero(chosen).flatten().tolist():
            quality = int(self._uniform(15, 90, 1))
            pixels = np.uint8(images[i, 0].clamp(0, 1).numpy() * 255 + 0.5)
            _, encoded = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, quality])
            images[i, 0] = torch.from_numpy(cv2.imdecode(encoded, cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255)
        return images


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
