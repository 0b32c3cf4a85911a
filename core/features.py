"""The familiarity features of a slice (core.reliability scores them): what the model computes
from it in one forward pass, and texture statistics of its input, in torch.

Kept apart from core.reliability, which needs numpy only, so that what reads and reports
verdicts (the API's server process) does not load torch.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from core.reliability import TEXTURE_SIGMAS

TEXTURE_EROSION = 12  # pixels kept away from the head's edge, whose step would dominate every band


def early_layer(model: torch.nn.Module) -> torch.nn.Module:
    """A stage at 1/8 of the input (EfficientNet `blocks.2`, ConvNeXt `stages.1`): its channel
    statistics describe texture and contrast, where photos, CT and other sequences differ most."""
    return model.blocks[2] if hasattr(model, "blocks") else model.stages[1]


def _blurred(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """torchvision's gaussian_blur (kernel 4 sigma + 1, reflected edges) as two 1-D passes."""
    radius = 2 * sigma
    taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=image.dtype) / sigma) ** 2)
    taps = taps / taps.sum()
    rows = F.conv2d(F.pad(image, (radius, radius, 0, 0), mode="reflect"), taps.view(1, 1, 1, -1))
    return F.conv2d(F.pad(rows, (0, 0, radius, radius), mode="reflect"), taps.view(1, 1, -1, 1))


def _eroded(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """A 0/1 mask eroded by a square of side 2 radius + 1 (pixels beyond the border count as
    inside), as two 1-D box sums: far faster than max pooling on a CPU."""
    box = torch.ones(2 * radius + 1, dtype=mask.dtype)
    rows = F.conv2d(F.pad(mask, (radius, radius, 0, 0), value=1.0), box.view(1, 1, 1, -1))
    sums = F.conv2d(F.pad(rows, (0, 0, radius, radius), value=float(len(box))), box.view(1, 1, -1, 1))
    return (sums > len(box) ** 2 - 0.5).to(mask.dtype)


def texture_statistics(tensor: torch.Tensor) -> torch.Tensor:
    """(N, TEXTURE_SIZE) statistics of the model's input inside the head (away from its edge):
    the intensity mean and log-variance, then for each band of a Laplacian pyramid its log
    energy relative to the variance (blur and resolution loss lower the fine bands, noise raises
    them) and its log kurtosis (edges against noise), then the shares of flat_pixels() and
    linear_pixels(), then intensity_tilt()."""
    grey = tensor[:, :1].float()
    background = grey.amin((2, 3), keepdim=True)  # a brain-masked input is constant outside the head
    inside = (grey > background + 1e-3).float()
    inside = _eroded(inside, TEXTURE_EROSION)
    count = inside.sum((2, 3)).clamp_min(1)

    def average(values: torch.Tensor) -> torch.Tensor:
        return (values * inside).sum((2, 3)) / count

    mean = average(grey)
    variance = average((grey - mean[..., None, None]) ** 2) + 1e-8
    statistics = [mean, variance.log()]
    levels = [grey] + [_blurred(grey, sigma) for sigma in TEXTURE_SIGMAS]
    for fine, coarse in zip(levels, levels[1:]):
        band = fine - coarse
        energy = average(band**2) + 1e-10
        statistics += [(energy / variance).log(), (average(band**4) / energy**2 + 1e-8).log()]
    statistics.append((average(flat_pixels(grey)) + 1e-3).log())
    statistics.append((average(linear_pixels(grey)) + 1e-3).log())
    statistics.append(intensity_tilt(grey, background, inside))
    return torch.cat(statistics, 1)


def intensity_tilt(grey: torch.Tensor, background: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
    """(N, 2) left-right and top-bottom slopes of log intensity inside the head (coordinates in
    [-1, 1]), from a weighted least-squares fit on 1, x, y, xy, x², y², so that the head's own
    curved centre-to-edge profile goes to the quadratic terms: a coil's bias field multiplies
    the slice by a smooth field and tilts it, a real head is close to level. Intensities are
    offset by 5 % of the input's range so that the darkest pixels do not dominate the logs."""
    count = len(grey)
    terms = _quadratic_terms(grey.shape[-1])
    span = grey.amax((2, 3), keepdim=True) - background
    logs = torch.log(grey - background + 0.05 * span + 1e-6).reshape(count, -1).double()
    weighted = terms[None] * inside.reshape(count, 1, -1).double()  # (N, 6, pixels)
    gram = weighted @ terms.T + 1e-6 * torch.eye(6, dtype=torch.float64)  # ridge: an empty head gives 0
    coefficients = torch.linalg.solve(gram, (weighted * logs[:, None]).sum(-1))
    return coefficients[:, 1:3].to(grey.dtype)


@lru_cache(maxsize=4)
def _quadratic_terms(side: int) -> torch.Tensor:
    """(6, side * side) float64: 1, x, y, xy, x², y² over a square, coordinates in [-1, 1]. Made
    once per input size (three quarters of intensity_tilt()'s time); read, never written."""
    y, x = torch.meshgrid(torch.linspace(-1, 1, side), torch.linspace(-1, 1, side), indexing="ij")
    return torch.stack([torch.ones_like(x), x, y, x * y, x * x, y * y]).reshape(6, -1).double()


def _half_step(grey: torch.Tensor) -> torch.Tensor:
    """Half an 8-bit step of each input's own range: below it, two values are the same 8-bit level."""
    return (grey.amax((2, 3), keepdim=True) - grey.amin((2, 3), keepdim=True)) / 255 / 2


def flat_pixels(grey: torch.Tensor) -> torch.Tensor:
    """1 where a pixel's right and lower neighbours both differ from it by less than half an
    8-bit step of the input's range: the flat patches of heavy JPEG, resolution loss or a
    shrunken field of view, where a real scan has noise. A smooth 16-bit or float input is
    never flatter than 8-bit training slices, so only flatter-than-training inputs stand out."""
    half_step = _half_step(grey)
    across = (grey[..., :, 1:] - grey[..., :, :-1]).abs() < half_step
    down = (grey[..., 1:, :] - grey[..., :-1, :]).abs() < half_step
    return F.pad((across[..., :-1, :] & down[..., :, :-1]).to(grey.dtype), (0, 1, 0, 1))


def linear_pixels(grey: torch.Tensor) -> torch.Tensor:
    """1 where the second differences across and down both stay under half an 8-bit step of the
    input's range: the ramps a slice enlarged by linear interpolation is made of (resolution
    loss), where a real scan has noise."""
    half_step = _half_step(grey)
    across = (grey[..., 1:-1, 2:] - 2 * grey[..., 1:-1, 1:-1] + grey[..., 1:-1, :-2]).abs() < half_step
    down = (grey[..., 2:, 1:-1] - 2 * grey[..., 1:-1, 1:-1] + grey[..., :-2, 1:-1]).abs() < half_step
    return F.pad((across & down).to(grey.dtype), (1, 1, 1, 1))


def scores_and_features(model: torch.nn.Module, tensor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, familiarity features) from one forward pass: the pooled features the classifier
    reads (timm pre-logits), the mean and standard deviation of each channel of early_layer()
    (Lee et al. 2018 also score intermediate layers), then texture_statistics() of the input."""
    with FirstPassFeatures(model) as first_pass:
        logits = model(tensor)
    return logits, first_pass.kept_features(tensor)


class FirstPassFeatures:
    """The familiarity features of the model's first forward pass while this is entered, so that
    a heatmap method's own pass on the input (every CAM's and Captum's first) also gives them,
    instead of a second pass: the classifier's input (the pre-logits, which timm's heads pass on
    unchanged in eval mode) and early_layer()'s output, kept without their autograd graph."""

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self.kept: dict[str, torch.Tensor] = {}

    def __enter__(self) -> FirstPassFeatures:
        def keep(name: str, tensor: torch.Tensor):
            self.kept.setdefault(name, tensor.detach())

        self.handles = [
            early_layer(self.model).register_forward_hook(lambda module, inputs, output: keep("early", output)),
            self.model.get_classifier().register_forward_hook(lambda module, inputs, output: keep("pooled", inputs[0])),
        ]
        return self

    def __exit__(self, *exc_info):
        for handle in self.handles:
            handle.remove()

    def kept_features(self, tensor: torch.Tensor) -> torch.Tensor:
        """(N, C) from what the first pass kept, `tensor` being its input."""
        early = self.kept["early"].float()
        statistics = [self.kept["pooled"].float(), early.mean((2, 3)), early.std((2, 3)), texture_statistics(tensor)]
        return torch.cat(statistics, 1)

    @torch.no_grad()
    def features(self, tensor: torch.Tensor) -> np.ndarray:
        """(N, C) for `tensor`, the input of that first pass; a fresh pass if none was seen."""
        if self.model.training or len(self.kept) < 2 or len(self.kept["pooled"]) != len(tensor):
            return familiarity_features(self.model, tensor)
        return self.kept_features(tensor).numpy()


@torch.no_grad()
def familiarity_features(model: torch.nn.Module, tensor: torch.Tensor, batch: int = 64) -> np.ndarray:
    """The familiarity features of scores_and_features(), (N, C), in eval mode."""
    was_training = model.training
    model.eval()
    out = [
        scores_and_features(model, tensor[start : start + batch])[1].numpy() for start in range(0, len(tensor), batch)
    ]
    model.train(was_training)
    return np.concatenate(out)


def feature_size(model: torch.nn.Module, input_size: int) -> int:
    return int(familiarity_features(model, torch.zeros(1, 3, input_size, input_size)).shape[1])
