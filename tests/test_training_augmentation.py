"""Augmentation: per-image draws repeated by the seed; mixup pairs both networks see."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from core.training.augmentation import Augment, Randomise
from core.training.data import load_training_data
from tests.conftest import needs_data
from tests.training_support import distilling_options, fit_watching


def test_augmentation_draws_per_image_and_repeats_with_the_seed():
    square = torch.zeros(1, 1, 64, 64)
    square[..., 16:48, 16:48] = 0.5
    batch = square.expand(6, -1, -1, -1).contiguous()

    first, again = Augment(seed=3)(batch), Augment(seed=3)(batch)
    assert torch.equal(first, again)
    assert first.shape == batch.shape and 0 <= first.min() and first.max() <= 1
    assert len({tuple(np.round(image.flatten()[::97].numpy(), 4)) for image in first}) == 6  # six different draws
    # Small transforms: the bright square keeps most of its area and stays near the centre.
    for image in first[:, 0]:
        rows, cols = torch.nonzero(image > 0.1, as_tuple=True)
        assert 0.75 < len(rows) / 32**2 < 1.3
        assert abs(rows.float().mean() - 31.5) < 6 and abs(cols.float().mean() - 31.5) < 6


@needs_data
def test_mixup_blends_pairs_the_student_and_teacher_both_see(small_dataset, checkpoint_root, monkeypatch):
    options = distilling_options(small_dataset, checkpoint_root, max_steps=3)
    data = load_training_data(options)
    plain, _, _ = fit_watching(options, data, monkeypatch)
    mixed, teacher_saw, _ = fit_watching(replace(options, mixup_alpha=0.8), data, monkeypatch)

    assert len(mixed) == 3 and all(torch.equal(s, t) for s, t in zip(mixed, teacher_saw))  # teacher sees the mix
    for x, blended in zip(plain, mixed):
        other = x.flip(0)  # timm's Mixup pairs image i with image n-1-i
        # blended = lam * x + (1 - lam) * other with one lam per batch: solve for it by least squares
        lam = float(((blended - other) * (x - other)).sum() / ((x - other) ** 2).sum())
        assert 0 < lam < 1
        assert torch.allclose(blended, lam * x + (1 - lam) * other, atol=1e-4)

    odd, _, _ = fit_watching(replace(options, batch_size=7, max_steps=4, cutmix_alpha=1.0), data, monkeypatch)
    assert [len(x) for x in odd] == [6, 6, 6, 2]  # 24 images: odd batches lose one image
    with pytest.raises(ValueError, match="need --consistent-teacher"):
        replace(options, consistent_teacher=False, cutmix_alpha=1.0)
    with pytest.raises(ValueError, match="alphas >= 0"):
        replace(options, mixup_alpha=-0.2)


def test_randomisation_repeats_with_the_seed_stays_in_range_and_keeps_the_background_black():
    square = torch.zeros(1, 1, 64, 64)
    square[..., 16:48, 16:48] = torch.linspace(0.1, 0.9, 32)
    batch = square.expand(16, -1, -1, -1).contiguous()
    masks = (batch > 0).float()

    first, moved = Randomise(seed=5, probability=0.5)(batch, masks)
    again, moved_again = Randomise(seed=5, probability=0.5)(batch, masks)
    assert torch.equal(first, again) and torch.equal(moved, moved_again)
    assert first.shape == batch.shape and 0 <= first.min() and first.max() <= 1
    assert not torch.equal(first, batch)
    assert len({tuple(np.round(image.flatten()[::53].numpy(), 3)) for image in first}) > 8  # per-image draws
    # Far corners stay dark (no zoom reaches them; noise stays small), whatever the intensity curve.
    assert first[..., :4, :4].mean() < 0.12
    # The masks follow the zoom: their area changes only where the image's did.
    assert torch.all((moved > 0.5).flatten(1).sum(1) > 0)


def test_every_randomisation_is_used_and_none_at_probability_zero():
    batch = torch.rand(4, 1, 32, 32)
    assert torch.equal(Randomise(seed=0, probability=0.0)(batch), batch.clamp(0, 1))
    assert "inversion" in Randomise(seed=0, probability=0.3).note() and "30%" in Randomise(0, 0.3).note()
