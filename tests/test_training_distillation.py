"""Distillation: teacher targets on each view, and attention transfer."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from core.training.data import load_training_data
from core.training.distillation import attention_layers, attention_transfer_loss, label_where_teacher_is_blind
from core.training.loop import fit, train
from tests.conftest import needs_data
from tests.training_support import attention_distance, distilling_options, fit_watching


@needs_data
def test_consistent_teacher_scores_each_augmented_batch(small_dataset, checkpoint_root, monkeypatch):
    options = distilling_options(small_dataset, checkpoint_root, max_steps=3)
    data = load_training_data(options)
    assert data.teacher_probs is None
    shape = lambda inputs, output: inputs[0].shape  # noqa: E731
    _, seen, _ = fit_watching(options, data, monkeypatch, watch=shape)
    assert seen == [(8, 3, 64, 64)] * 3  # one call per training step, on that step's batch

    # a 48 px student: the 64 px teacher scores each view at its own input size
    small = replace(options, image_size=48)
    _, seen, _ = fit_watching(small, load_training_data(small), monkeypatch, watch=shape)
    assert seen == [(8, 3, 64, 64)] * 3

    fixed = load_training_data(replace(options, consistent_teacher=False))
    assert fixed.teacher is None and fixed.teacher_probs.shape == (24, 4)
    fixed_small = load_training_data(replace(options, consistent_teacher=False, image_size=48))
    assert np.abs(fixed_small.teacher_probs - fixed.teacher_probs).max() < 0.2  # the same images, scored at 64 px
    assert np.allclose(fixed.teacher_probs.sum(axis=1), 1, atol=1e-5)
    with pytest.raises(ValueError, match="needs --teacher"):
        replace(options, teacher=None)


def test_attention_transfer_loss_compares_where_layers_are_active_not_how_much():
    student = torch.rand(2, 8, 7, 7, requires_grad=True)
    # more channels and larger activations, but active in the same places: no loss
    same_places = 3 * student.detach().repeat(1, 2, 1, 1)
    assert attention_transfer_loss([student], [same_places], beta=1000).item() == pytest.approx(0, abs=1e-6)
    # a teacher on a finer grid is resized to the student's: uniform maps match at any size
    assert attention_transfer_loss([torch.ones(2, 8, 7, 7)], [torch.ones(2, 4, 8, 8)], 1000).item() == pytest.approx(0)

    # active in disjoint places: the normalised maps are orthogonal, squared distance 2 per image,
    # so the mean over 49 positions is 2/49 and the loss beta/2 * 2/49 (summed over the pairs)
    left, right = torch.zeros(2, 8, 7, 7), torch.zeros(2, 8, 7, 7)
    left[..., :3], right[..., 4:] = 1.0, 5.0
    assert attention_transfer_loss([left], [right], 1000).item() == pytest.approx(1000 / 49)
    assert attention_transfer_loss([left, left], [right, right], 10).item() == pytest.approx(2 * 10 / 49)

    teacher = torch.rand(2, 8, 7, 7, requires_grad=True)
    attention_transfer_loss([student], [teacher], 1000).backward()
    assert student.grad.abs().sum() > 0 and teacher.grad is None  # only the student learns


@needs_data
def test_attention_transfer_trains_the_student_through_hooks_it_removes(small_dataset, checkpoint_root, tmp_path):
    options = distilling_options(small_dataset, checkpoint_root, max_steps=2)
    data = load_training_data(options)
    everyone = np.zeros(len(data.records), dtype=bool)
    plain, _ = fit(options, data, everyone)
    transferring, _ = fit(replace(options, attention_transfer=1000), data, everyone)
    # same seed and batches: only the attention loss sets the two apart, and it brings the
    # student's attention maps closer to the teacher's on the training images
    x = torch.from_numpy(data.plain[:16]).float() / 255
    assert attention_distance(transferring, data.teacher, x) < 0.9 * attention_distance(plain, data.teacher, x)
    for model in (transferring, data.teacher.model):
        assert not any(module._forward_hooks for module in model.modules())

    train(replace(options, attention_transfer=1000, out=tmp_path / "at"))
    loss = json.loads((tmp_path / "at" / "training.json").read_text())["loss"]
    assert "attention transfer beta 1000 (stages.2 to blocks.4, stages.3 to bn2)" in loss
    with pytest.raises(ValueError, match="needs --consistent-teacher"):
        replace(options, consistent_teacher=False, attention_transfer=1000)
    with pytest.raises(ValueError, match=">= 0"):
        replace(options, attention_transfer=-1)
    with pytest.raises(ValueError, match="not resnet18"):
        attention_layers("resnet18")


def test_counterfactual_and_template_rows_learn_from_their_label_not_the_teacher():
    soft = torch.full((3, 4), 0.25)
    target = torch.tensor([0, 2, 1])
    kept = label_where_teacher_is_blind(soft, target, np.array([False, True, False]))
    assert torch.equal(kept[1], torch.tensor([0.0, 0.0, 1.0, 0.0]))
    assert torch.equal(kept[[0, 2]], soft[[0, 2]])
    mixed = torch.tensor([[0.6, 0.4, 0, 0], [0, 0, 0.5, 0.5], [1.0, 0, 0, 0]])  # mixup's soft labels
    assert torch.equal(label_where_teacher_is_blind(soft, mixed, np.array([True, False, False]))[0], mixed[0])
    assert label_where_teacher_is_blind(soft, target, np.zeros(3, dtype=bool)) is soft


@needs_data
def test_fixed_teacher_trains_beside_counterfactuals_and_template_slices(small_dataset, checkpoint_root, monkeypatch):
    options = replace(distilling_options(small_dataset, checkpoint_root, max_steps=3), consistent_teacher=False,
                      arch="tf_efficientnet_lite0", counterfactuals=1.0, healthy_template=True)  # fmt: skip
    data = load_training_data(options)
    seen = []
    original = label_where_teacher_is_blind

    def watch(soft, target, blind):
        seen.append((blind.copy(), original(soft, target, blind)))
        return seen[-1][1]

    monkeypatch.setattr("core.training.loop.label_where_teacher_is_blind", watch)
    fit(options, data, np.zeros(len(data.records), dtype=bool))
    assert len(seen) == 3 and any(blind.any() for blind, _ in seen)
    notumor = data.label_names.index("notumor")
    for blind, soft in seen:
        assert torch.all(soft[torch.from_numpy(blind), notumor] == 1)  # swapped or template rows: notumor
        assert torch.allclose(soft.sum(1), torch.ones(len(soft)), atol=1e-5)
