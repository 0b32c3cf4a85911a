"""Outline guidance: a loss on where the model's class evidence lies ("right for the right
reasons", Ross et al. 2017; GAIN, Li et al. 2018).

The evidence is the class activation map of the last feature layer (Zhou et al. 2016): the
classifier applied at each position, so that the logit is the mean of the map. It is exact
for EfficientNet-Lite (average pooling, then a linear layer) and for ConvNeXt (average
pooling, LayerNorm, linear: the norm's statistics are the pooled vector's, so it is linear
in the features). It costs one small matrix product, no second backward pass. On tumour
images with an outline, the loss is the share of the target class's positive evidence that
lies outside the dilated outline: zero when it is all inside, up to 1 when none is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Evidence counts as outside when it lies outside the outline grown by this share of the side.
GUIDANCE_DILATION = 0.04


def class_activation_maps(model: torch.nn.Module, features: torch.Tensor) -> torch.Tensor:
    """(N, K, h, w) per-position logits whose mean over positions is the model's logit."""
    head = getattr(model, "head", None)
    norm = getattr(head, "norm", None)
    if norm is not None and hasattr(head, "fc"):  # timm ConvNeXt: pool -> LayerNorm2d -> fc
        pooled = features.mean((2, 3), keepdim=True)
        mean = pooled.mean(1, keepdim=True)
        variance = pooled.var(1, keepdim=True, unbiased=False)
        features = (features - mean) / torch.sqrt(variance + norm.eps)
        features = features * norm.weight[None, :, None, None] + norm.bias[None, :, None, None]
        fc = head.fc
    else:  # timm EfficientNet: pool -> linear
        fc = model.get_classifier()
    return torch.einsum("nchw,kc->nkhw", features, fc.weight) + fc.bias[None, :, None, None]


def outside_share(outlines: torch.Tensor, grid: tuple[int, int], dilation: int) -> torch.Tensor:
    """(N, h, w): the share of each feature cell lying outside the outline grown by
    `dilation` input pixels; `outlines` is (N, 1, S, S) in [0, 1]."""
    grown = F.max_pool2d(outlines.float(), 2 * dilation + 1, stride=1, padding=dilation) if dilation else outlines
    return 1 - F.adaptive_avg_pool2d((grown > 0.5).float(), grid)[:, 0]


def guidance_loss(cams: torch.Tensor, target: torch.Tensor, outside: torch.Tensor, has_outline: torch.Tensor):
    """Mean share of the target class's positive evidence outside the outline, over the
    images that have one (0 when none does)."""
    if not has_outline.any():
        return cams.sum() * 0.0
    evidence = cams[torch.arange(len(cams)), target].relu()[has_outline]
    outside = outside[has_outline]
    share = (evidence * outside).sum((1, 2)) / (evidence.sum((1, 2)) + 1e-6)
    return share.mean()
