"""Deletion and insertion: a hand-made model whose evidence is known, and a hand-computed case."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from core.checkpoint import LoadedModel
from core.config import ModelConfig, Preprocessing
from core.explain import explain
from core.explanation import ExplainSettings, Explanation
from core.faithfulness import FRACTIONS, FaithfulnessCheck, area, check_heatmap, curves, road_check
from core.preprocess import to_tensor

SIZE = 16


class LeftHalfModel(torch.nn.Module):
    """Class 0's logit is 8 x the mean brightness of the left half; class 1's is 0. A parameter
    lets it sit where a LoadedModel's model sits."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(8.0))

    def forward(self, x):
        grey = x[:, 0] * 0.5 + 0.5  # back to [0, 1] (mean 0.5, std 0.5)
        evidence = grey[:, :, : SIZE // 2].mean((1, 2)) * self.scale
        return torch.stack([evidence, torch.zeros_like(evidence)], 1)


def loaded_left_half() -> LoadedModel:
    config = ModelConfig("none", ("a", "b"), Preprocessing(input_size=SIZE, crop_to_head=False), "scale")
    return LoadedModel("left-half", LeftHalfModel().eval(), config, "0" * 64, threading.Lock())


def test_deletion_and_insertion_by_hand():
    loaded = loaded_left_half()
    tensor = to_tensor(np.ones((SIZE, SIZE), dtype=np.float32), loaded.config.preprocessing)
    # Every pixel of the left half outranks every pixel of the right half, each with its own value.
    order = np.arange(SIZE * SIZE, dtype=np.float32).reshape(SIZE, SIZE)[:, ::-1].T.copy()
    ranked = np.where(np.arange(SIZE)[None, :] < SIZE // 2, 1000 + order, order) / (1000 + SIZE * SIZE)
    deletion, insertion = curves(loaded, tensor, ranked[None].astype(np.float32), 1.0, target=0)

    def probability(left_share: float) -> float:  # softmax([8 * share, 0])[0]
        return 1 / (1 + np.exp(-8 * left_share))

    # removing f of the pixels, left half first: the left half keeps 1 - 2f of its pixels (f <= 1/2)
    expected_deletion = [probability(max(0.0, 1 - 2 * f)) for f in FRACTIONS]
    expected_insertion = [probability(min(1.0, 2 * f)) for f in FRACTIONS]
    np.testing.assert_allclose(deletion[0], expected_deletion, atol=1e-5)
    np.testing.assert_allclose(insertion[0], expected_insertion, atol=1e-5)
    assert area(FRACTIONS, deletion[0]) == pytest.approx(np.trapezoid(expected_deletion, FRACTIONS), abs=1e-5)


def test_a_map_on_the_evidence_is_faithful_and_one_beside_it_is_not():
    loaded = loaded_left_half()
    image = np.ones((SIZE, SIZE), dtype=np.float32)
    base = explain_like(loaded, image)
    left = np.zeros((SIZE, SIZE), dtype=np.float32)
    left[:, : SIZE // 2] = np.linspace(1, 0.5, SIZE // 2)[None, :]
    on_evidence = check_heatmap(loaded, image, replace_heatmap(base, left), ExplainSettings(mask_input=False))
    beside = check_heatmap(
        loaded, image, replace_heatmap(base, left[:, ::-1].copy()), ExplainSettings(mask_input=False)
    )
    assert on_evidence.faithful is True and on_evidence.verdict().startswith("Faithful")
    assert beside.faithful is False and beside.verdict().startswith("Not faithful")
    assert on_evidence.deletion_auc < on_evidence.random_deletion_auc < beside.deletion_auc
    assert set(on_evidence.to_dict()) >= {"deletion_auc", "insertion_auc", "verdict", "faithful"}


def explain_like(loaded: LoadedModel, image: np.ndarray) -> Explanation:
    return Explanation(np.zeros(2, np.float32), np.array([0.5, 0.5], np.float32), 0, 0, ("a", "b"),
                       np.zeros_like(image), None, "", False, False, "none", "scale", {})  # fmt: skip


def replace_heatmap(explanation: Explanation, heatmap: np.ndarray) -> Explanation:
    from dataclasses import replace

    return replace(explanation, heatmap=heatmap)


def test_the_check_runs_on_a_real_explanation(tiny_model):
    from tests.conftest import head_phantom

    image = head_phantom(96)
    settings = ExplainSettings("HiResCAM")
    check = check_heatmap(tiny_model, image, explain(tiny_model, image, settings), settings)
    assert isinstance(check, FaithfulnessCheck) and len(check.deletion) == len(FRACTIONS)
    assert all(0 <= p <= 1 for p in check.deletion + check.insertion)
    assert check.deletion[-1] == pytest.approx(check.insertion[0])  # both: the black slice
    assert check.deletion[0] == pytest.approx(check.insertion[-1])  # both: the intact slice


def test_road_ranks_a_map_on_the_evidence_above_a_random_one_above_one_beside_it():
    """ROAD fills removed pixels from their neighbours: removing the bright left half (the
    evidence) lets the dark right half flow in, so the score falls; removing the right half lets
    the left flow in, which the model ignores."""
    loaded = loaded_left_half()
    image = np.zeros((SIZE, SIZE), dtype=np.float32)
    image[:, : SIZE // 2] = 1.0
    base = explain_like(loaded, image)
    left = np.zeros((SIZE, SIZE), dtype=np.float32)
    left[:, : SIZE // 2] = np.linspace(1, 0.5, SIZE // 2)[None, :]
    settings = ExplainSettings(mask_input=False)
    on_evidence = road_check(loaded, image, replace_heatmap(base, left), settings)
    beside = road_check(loaded, image, replace_heatmap(base, left[:, ::-1].copy()), settings)
    assert on_evidence.road > 0.05 and on_evidence.faithful and on_evidence.verdict().startswith("ROAD agrees")
    assert beside.road < on_evidence.random_road < on_evidence.road
    assert not beside.faithful and beside.verdict().startswith("ROAD does not confirm")
    assert road_check(loaded, image, replace_heatmap(base, left), settings) == on_evidence  # seeded
