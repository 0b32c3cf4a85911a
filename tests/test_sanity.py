"""The model-parameter randomisation test fails a method that ignores the weights."""

from __future__ import annotations

import numpy as np
import pytest

import core.explain as engine
from core.explanation import GALLERY_METHODS, ExplainSettings
from core.sanity import PASS_BELOW, layer_groups, randomisation_check
from tests.conftest import add_cam_method, head_phantom
from tests.test_explain import hook_count


class BrightnessCAM(engine.GradCAM):
    """A 'method' that draws the input's brightness whatever the model: an edge detector in disguise."""

    def forward(self, input_tensor, targets=None, eigen_smooth=False):
        self.outputs = self.activations_and_grads(input_tensor)
        grey = input_tensor[:, 0].detach().numpy()
        low, high = grey.min(axis=(1, 2), keepdims=True), grey.max(axis=(1, 2), keepdims=True)
        return (grey - low) / np.maximum(high - low, 1e-6)


def test_layers_are_randomised_from_the_output_back():
    from core.checkpoint import create_model

    assert layer_groups(create_model("convnext_atto", 4)) == [
        "head", "stages.3", "stages.2", "stages.1", "stages.0", "stem.1", "stem.0"
    ]  # fmt: skip


def test_a_method_that_ignores_the_weights_fails(tiny_model, monkeypatch):
    add_cam_method(monkeypatch, "Brightness", BrightnessCAM)
    images = [head_phantom(96, seed) for seed in range(2)]
    weights = [p.detach().clone() for p in tiny_model.model.parameters()]
    check = randomisation_check(tiny_model, images, ExplainSettings("Brightness"))
    assert not check.passed and check.spearman[-1] > 0.99 and check.ssim[-1] > 0.99
    assert check.verdict().startswith("Fails")
    assert len(check.spearman) == len(check.groups) == len(layer_groups(tiny_model.model))
    # the shared model is untouched and carries no hooks: a copy was randomised
    assert all(np.array_equal(a, b.detach()) for a, b in zip(weights, tiny_model.model.parameters()))
    assert hook_count(tiny_model.model) == 0


def test_a_gradient_cam_follows_the_weights(tiny_model):
    check = randomisation_check(tiny_model, [head_phantom(96, 1)], ExplainSettings("Grad-CAM"))
    assert all(-1 <= value <= 1 for value in check.spearman + check.ssim)
    assert check.passed == (check.spearman[-1] < PASS_BELOW)
    assert check.to_dict()["verdict"] == check.verdict()
    with pytest.raises(engine.ExplainError):
        randomisation_check(tiny_model, [head_phantom(64)], ExplainSettings(target_layer="no.such"))


class NoiseCAM(engine.GradCAM):
    """A 'method' that returns fresh noise on every call: it follows nothing, so any agreement
    between its maps before and after randomisation is an artefact of the comparison."""

    calls = 0

    def forward(self, input_tensor, targets=None, eigen_smooth=False):
        self.outputs = self.activations_and_grads(input_tensor)
        NoiseCAM.calls += 1
        rng = np.random.default_rng(NoiseCAM.calls)
        return rng.random((len(input_tensor), *input_tensor.shape[2:])).astype(np.float32)


def test_the_shared_blank_outside_the_head_is_not_agreement(tiny_model, monkeypatch):
    """With the heatmap masked to the head, two unrelated maps share their zeros outside it;
    compared whole, those ties alone gave a rank correlation of about 0.5."""
    add_cam_method(monkeypatch, "Noise", NoiseCAM)
    check = randomisation_check(tiny_model, [head_phantom(96, seed) for seed in range(2)], ExplainSettings("Noise"))
    assert abs(check.spearman[-1]) < 0.15 and check.passed


def test_the_table_adds_the_checkpoints_default_when_the_gallery_lacks_it(checkpoint_root, tmp_path):
    from dataclasses import replace

    from core.checkpoint import load_checkpoint
    from core.sanity import sanity_table
    from tests.test_model_card import phantom_dataset

    data = phantom_dataset(tmp_path / "data")
    loaded = load_checkpoint(checkpoint_root / "tiny_effnet")
    methods = [row["method"] for row in sanity_table(loaded, data, "test", images=1)]
    assert methods == list(GALLERY_METHODS)
    with_ig = replace(loaded, config=replace(loaded.config, default_method="Integrated Gradients"))
    rows = sanity_table(with_ig, data, "test", images=1)
    assert [row["method"] for row in rows] == [*GALLERY_METHODS, "Integrated Gradients"]
    assert isinstance(rows[-1]["passes"], bool)
