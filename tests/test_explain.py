from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import core.explain as engine
from core.checkpoint import load_checkpoint
from core.explain import CAM_METHODS, explain, explain_batch, layer_names
from core.explanation import CAM_METHOD_NAMES, INPUT_ATTRIBUTIONS, METHODS, ExplainError, ExplainSettings
from core.features import FirstPassFeatures, early_layer, familiarity_features
from core.inference import judged_scores
from tests.conftest import LABELS, add_cam_method, head_phantom

FAST = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def hook_count(model) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) + len(m._backward_pre_hooks)
        for m in model.modules()
    )


def test_every_named_cam_has_its_class_and_no_other():
    assert tuple(CAM_METHODS) == CAM_METHOD_NAMES and set(METHODS) == {*CAM_METHOD_NAMES, *INPUT_ATTRIBUTIONS}


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_gives_a_heatmap_at_input_resolution(tiny_model, method):
    image = head_phantom(100)
    result = explain(tiny_model, image, ExplainSettings(method=method))
    assert result.heatmap.shape == (100, 100) and result.heatmap.dtype == np.float32
    assert 0.0 <= result.heatmap.min() and result.heatmap.max() <= 1.0
    assert result.method == method and result.target_layer == ("input" if method not in CAM_METHODS else "stages.3")
    assert np.isclose(result.probabilities.sum(), 1.0, atol=1e-5)


@FAST
@given(height=st.integers(32, 300), width=st.integers(32, 300), seed=st.integers(0, 10))
def test_heatmap_shape_and_range_for_any_size(tiny_model, height, width, seed):
    image = np.random.default_rng(seed).random((height, width)).astype(np.float32)
    result = explain(tiny_model, image)
    assert result.heatmap.shape == (height, width)
    assert np.isfinite(result.heatmap).all()
    assert 0.0 <= result.heatmap.min() and result.heatmap.max() <= 1.0


@FAST
@given(size=st.integers(64, 256), seed=st.integers(0, 50))
def test_masked_heatmap_is_zero_outside_the_head(tiny_model, size, seed):
    result = explain(tiny_model, head_phantom(size, seed))
    assert result.brain_mask is not None and result.masked_heatmap
    assert result.heatmap[~result.brain_mask].max() == 0.0
    assert result.summary()["brain_masked"] is True


@FAST
@given(target=st.integers(0, len(LABELS) - 1))
def test_any_class_can_be_explained(tiny_model, target):
    image = head_phantom(96)
    by_index = explain(tiny_model, image, ExplainSettings(target=target, method="HiResCAM"))
    by_name = explain(tiny_model, image, ExplainSettings(target=LABELS[target], method="HiResCAM"))
    default = explain(tiny_model, image, ExplainSettings(method="HiResCAM"))
    assert by_index.target_index == target and by_index.target_label == LABELS[target]
    np.testing.assert_array_equal(by_index.heatmap, by_name.heatmap)
    # The prediction does not depend on which class is explained.
    np.testing.assert_allclose(by_index.probabilities, default.probabilities, atol=1e-6)
    assert default.target_index == default.predicted_index


def test_masking_switches(tiny_model):
    image = head_phantom(128)
    off = explain(tiny_model, image, ExplainSettings(mask_input=False, mask_heatmap=False))
    assert not off.masked_input and not off.masked_heatmap and off.summary()["brain_masked"] is False
    assert "off" in off.brain_mask_note
    input_only = explain(tiny_model, image, ExplainSettings(mask_heatmap=False))
    assert input_only.masked_input and not input_only.masked_heatmap


def test_fallback_to_full_image_is_reported(tiny_model):
    image = np.random.default_rng(0).uniform(0.4, 1.0, (128, 128)).astype(np.float32)
    result = explain(tiny_model, image)
    assert result.brain_mask is None and not result.masked_heatmap
    assert "fell back to the full image" in result.brain_mask_note


def test_other_layers_by_dotted_name(tiny_model):
    names = layer_names(tiny_model.model)
    assert "stages.2" in names and "stages.3" in names
    result = explain(tiny_model, head_phantom(96), ExplainSettings(target_layer="stages.2"))
    assert result.target_layer == "stages.2"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"method": "Magic-CAM"}, "Unknown method"),
        ({"target": "astrocytoma"}, "Unknown class"),
        ({"target": 7}, "out of range"),
        ({"target_layer": "__class__"}, "no layer"),
        ({"target_layer": "stages.9"}, "no layer"),
    ],
)
def test_bad_settings(tiny_model, kwargs, message):
    with pytest.raises(ExplainError, match=message):
        explain(tiny_model, head_phantom(64), ExplainSettings(**kwargs))


def test_empty_cam_gives_a_warning_not_garbage(tiny_model, monkeypatch):
    class ZeroCAM(engine.GradCAM):
        def get_cam_weights(self, *args, **kwargs):
            return np.zeros(super().get_cam_weights(*args, **kwargs).shape, dtype=np.float32)

    add_cam_method(monkeypatch, "Zero", ZeroCAM)
    result = explain(tiny_model, head_phantom(64), ExplainSettings(method="Zero"))
    assert result.warning and "empty" in result.warning
    assert result.heatmap.max() == 0.0


def test_no_hooks_left_after_100_calls(tiny_model):
    image = head_phantom(64)
    before = hook_count(tiny_model.model)
    for i in range(100):
        explain(tiny_model, image, ExplainSettings(method=["Grad-CAM", "HiResCAM", "Eigen-CAM"][i % 3]))
    assert hook_count(tiny_model.model) == before == 0


def test_threads_give_the_same_heatmaps_as_serial_calls(tiny_model):
    images = [head_phantom(96, seed) for seed in range(8)]
    serial = [explain(tiny_model, image).heatmap for image in images]
    with ThreadPoolExecutor(max_workers=4) as pool:
        parallel = list(pool.map(lambda image: explain(tiny_model, image).heatmap, images * 2))
    for i, heatmap in enumerate(parallel):
        np.testing.assert_allclose(heatmap, serial[i % 8], atol=1e-5)
    assert hook_count(tiny_model.model) == 0


GRADIENT_METHODS = [m for m in CAM_METHODS if m not in {"Eigen-CAM", "Score-CAM"}]


@pytest.mark.parametrize("name, layer", [("tiny_convnext", "stages.3"), ("tiny_convnext", "stages.1.blocks.0"),
                                         ("tiny_effnet", "conv_head"), ("tiny_effnet", "blocks.4")])  # fmt: skip
def test_cutting_the_graph_at_the_target_layer_changes_nothing(checkpoint_root, monkeypatch, name, layer):
    loaded = load_checkpoint(checkpoint_root / name)
    image = head_phantom(96, 3)
    cut = [explain(loaded, image, ExplainSettings(method=m, target_layer=layer, target=1)) for m in GRADIENT_METHODS]
    monkeypatch.setattr(engine, "_backpropagate_only_above", lambda layer: contextlib.nullcontext())
    full = [explain(loaded, image, ExplainSettings(method=m, target_layer=layer, target=1)) for m in GRADIENT_METHODS]
    for a, b in zip(cut, full):
        np.testing.assert_allclose(a.heatmap, b.heatmap, atol=1e-5)
        np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-6)
    assert hook_count(loaded.model) == 0


def test_cam_leaves_no_gradients_below_the_target_layer(tiny_model):
    explain(tiny_model, head_phantom(64))
    assert all(p.grad is None for p in tiny_model.model.stages[0].parameters())


def test_a_batch_gives_what_single_calls_give_in_the_same_order(tiny_model):
    noise = np.random.default_rng(0).random((50, 70)).astype(np.float32)
    images = [head_phantom(64 + 16 * i, i) for i in range(6)] + [noise]
    batch = explain_batch(tiny_model, images, ExplainSettings(method="HiResCAM"))
    for image, result in zip(images, batch):
        single = explain(tiny_model, image, ExplainSettings(method="HiResCAM"))
        assert result.heatmap.shape == image.shape
        np.testing.assert_allclose(result.heatmap, single.heatmap, atol=1e-4)
        np.testing.assert_allclose(result.probabilities, single.probabilities, atol=1e-5)
        assert result.brain_mask_note == single.brain_mask_note


def test_an_error_inside_the_cam_reaches_the_caller_and_the_hooks_go(tiny_model, monkeypatch):
    """pytorch-grad-cam's BaseCAM.__exit__ swallows IndexError; the real error must not be lost."""

    class BrokenCAM(engine.GradCAM):
        def get_cam_weights(self, *args, **kwargs):
            raise IndexError("the real cause")

    add_cam_method(monkeypatch, "Broken", BrokenCAM)
    with pytest.raises(IndexError, match="the real cause"):
        explain(tiny_model, head_phantom(64), ExplainSettings(method="Broken"))
    assert hook_count(tiny_model.model) == 0


def test_settings_are_checked_once_and_the_logits_kept(tiny_model):
    with pytest.raises(ExplainError, match="Unknown method 'Magic'"):
        ExplainSettings(method="Magic")
    assert ExplainSettings("Score-CAM").slow and not ExplainSettings().slow
    result = explain(tiny_model, head_phantom(64))
    assert result.logits.shape == (4,) and result.logits.dtype == np.float32
    scaled = np.exp(result.logits / tiny_model.config.temperature)
    np.testing.assert_allclose(result.probabilities, scaled / scaled.sum(), atol=1e-6)


def test_the_checkpoints_default_method_and_a_fused_layer(checkpoint_root, tmp_path):
    import shutil
    from dataclasses import replace

    from core.config import read_config, write_config

    copy = shutil.copytree(checkpoint_root / "tiny_convnext", tmp_path / "copy")
    write_config(copy, replace(read_config(copy), default_method="LayerCAM", default_target_layer="stages.2+stages.3"))
    loaded = load_checkpoint(copy)
    image = head_phantom(96)
    result = explain(loaded, image)
    assert (result.method, result.target_layer) == ("LayerCAM", "stages.2+stages.3")
    fused = explain(loaded, image, ExplainSettings("LayerCAM", target=result.predicted_index))
    single = explain(loaded, image, ExplainSettings("LayerCAM", result.predicted_index, "stages.3"))
    np.testing.assert_allclose(result.heatmap, fused.heatmap, atol=1e-6)
    assert not np.allclose(fused.heatmap, single.heatmap)
    assert hook_count(loaded.model) == 0
    # the graph is cut at the lowest of the fused layers: same maps as the uncut graph
    import contextlib

    original = engine._backpropagate_only_above
    engine._backpropagate_only_above = lambda layer: contextlib.nullcontext()
    try:
        uncut = explain(loaded, image, ExplainSettings("LayerCAM", target=result.predicted_index))
    finally:
        engine._backpropagate_only_above = original
    np.testing.assert_allclose(fused.heatmap, uncut.heatmap, atol=1e-5)


@pytest.mark.parametrize("name", ["efficientnet_lite0", "convnext_atto"])
def test_the_heatmaps_own_pass_gives_the_familiarity_a_second_pass_would(name):
    """One forward pass per CAM (Grad-CAM, Eigen-CAM) gives the prediction, the heatmap and the
    familiarity features; the verdict is what a prediction without a heatmap reports."""
    loaded = load_checkpoint(name)
    image = head_phantom(160, 5)
    _, _, (alone,) = judged_scores(loaded, [image])
    passes = []
    stage = early_layer(loaded.model)  # every pass goes through it, whichever entry point it takes
    handle = stage.register_forward_hook(lambda module, inputs, output: passes.append(len(inputs[0])))
    try:
        for method in ("Grad-CAM", "Eigen-CAM", "Integrated Gradients"):
            passes.clear()
            result = explain(loaded, image, ExplainSettings(method=method))
            assert result.reliability == alone, method
            if method in CAM_METHODS:
                assert passes == [1], method
    finally:
        handle.remove()
    assert hook_count(loaded.model) == 0


def test_first_pass_features_equal_a_separate_pass(checkpoint_root):
    loaded = load_checkpoint(checkpoint_root / "tiny_effnet")
    tensor = torch.from_numpy(np.random.default_rng(1).standard_normal((3, 3, 64, 64)).astype(np.float32))
    with FirstPassFeatures(loaded.model) as first_pass:
        loaded.model(tensor).sum().backward()
        loaded.model(tensor * 0)  # a later pass (Score-CAM's masked copies) is not what is kept
    np.testing.assert_allclose(first_pass.features(tensor), familiarity_features(loaded.model, tensor), atol=1e-5)
    with FirstPassFeatures(loaded.model) as unseen:
        pass
    np.testing.assert_array_equal(unseen.features(tensor), familiarity_features(loaded.model, tensor))
    loaded.model.zero_grad(set_to_none=True)


def test_an_image_of_several_slices_warns_that_one_was_used(tiny_model):
    row = np.hstack([head_phantom(96, seed) for seed in range(3)])
    result = explain(tiny_model, row)
    assert "3 separate heads" in result.warning and "one slice at a time" in result.warning
    assert result.summary()["warning"] == result.warning
    assert "separate heads" not in (explain(tiny_model, head_phantom(96)).warning or "")
