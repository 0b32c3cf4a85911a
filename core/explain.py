"""One call, one result: explain(model, slice) -> Explanation.

CAMs come from pytorch-grad-cam. Hooks are created per call inside `with`, under the
model's lock, so concurrent sessions sharing one cached model never mix their hooks.
Brain masking follows shared/seeds/000: the input's background is zeroed before the CAM,
and the CAM is zeroed outside the head after it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import contextmanager, nullcontext

import numpy as np
import torch
from pytorch_grad_cam import (
    EigenCAM,
    GradCAM,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    ScoreCAM,
    XGradCAM,
)
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from core.attribution import input_attribution
from core.brain_mask import BrainMask
from core.checkpoint import LoadedModel
from core.explanation import INPUT_ATTRIBUTIONS, NOISE_SAMPLES, ExplainError, ExplainSettings, Explanation
from core.features import FirstPassFeatures
from core.inference import prepare_slices
from core.metrics import softmax
from core.preprocess import heatmap_to_slice, to_tensor
from core.reliability import verdict

CAM_METHODS = {
    "Grad-CAM": GradCAM,
    "Grad-CAM++": GradCAMPlusPlus,
    "HiResCAM": HiResCAM,
    "XGrad-CAM": XGradCAM,
    "LayerCAM": LayerCAM,
    "Eigen-CAM": EigenCAM,
    "Score-CAM": ScoreCAM,
}
SCORE_CAM_BATCH = 8  # feature maps per forward pass: 32 took 1.3x the time and 2.4x the extra memory


def explain(
    loaded: LoadedModel,
    image: np.ndarray,
    settings: ExplainSettings = ExplainSettings(),
    on_progress: Callable[[int, int], None] | None = None,
) -> Explanation:
    """Predict a slice's class and compute a class activation map for it.

    Args:
        loaded: a LoadedModel from core.checkpoint.load_checkpoint.
        image: 2-D float32 slice in [0, 1] (core.image_input.load_image(...).pixels).
        settings: method, class, layer and masking.
        on_progress: called with (forward passes done, passes expected) after each pass.

    Returns:
        Explanation with the heatmap at the slice's resolution.

    Raises:
        ExplainError: a class or layer the model does not have.
    """
    return explain_batch(loaded, [image], settings, on_progress)[0]


def explain_batch(
    loaded: LoadedModel,
    images: list[np.ndarray],
    settings: ExplainSettings = ExplainSettings(),
    on_progress: Callable[[int, int], None] | None = None,
) -> list[Explanation]:
    """explain() for several slices in one forward/backward pass; timings are per slice."""
    started = time.perf_counter()
    config = loaded.config
    settings = settings.resolved(config)
    on_input = settings.method in INPUT_ATTRIBUTIONS
    layer_name = "input" if on_input else settings.target_layer
    layers = [] if on_input else [_resolve_layer(loaded.model, name) for name in layer_name.split("+")]
    target_index = None if settings.target is None else _class_index(settings.target, config.label_names)

    prepared = prepare_slices(images, config.preprocessing, settings.mask_input)
    tensor = to_tensor(np.stack([p.square for p in prepared]), config.preprocessing)
    preprocess_ms = _ms_since(started)

    step = time.perf_counter()
    first_pass = FirstPassFeatures(loaded.model) if loaded.reliability is not None else nullcontext()
    with loaded.lock, _count_passes(loaded.model, layers, settings.method, len(images), on_progress), first_pass:
        if on_input:
            cam_squares, logits = input_attribution(settings.method, loaded.model, tensor, config.preprocessing,
                                                    target_index)  # fmt: skip
        else:
            targets = None if target_index is None else [ClassifierOutputTarget(target_index)] * len(images)
            with _backpropagate_only_above(_lowest(loaded.model, layers)):
                cam_squares, logits = _run_cam(CAM_METHODS[settings.method], loaded.model, layers, tensor, targets)
        familiarity, unusual = None, [()] * len(images)
        if loaded.reliability is not None:
            features = first_pass.features(tensor)
            familiarity, unusual = loaded.reliability.familiarity(features), loaded.reliability.unusual(features)
    model_ms = _ms_since(step)

    results = []
    all_probabilities = softmax(logits, config.temperature).astype(np.float32)
    for image, ready, cam_square, scores, probabilities in zip(
        images, prepared, cam_squares, logits, all_probabilities
    ):
        step = time.perf_counter()
        predicted = int(np.argmax(probabilities))
        explained = predicted if target_index is None else target_index
        cam_square, warning = _clean_cam(cam_square, config.label_names[explained])
        warning = " ".join(part for part in (ready.brain.several, warning) if part) or None
        heatmap = heatmap_to_slice(cam_square, ready.box, image.shape)
        if settings.mask_heatmap:
            heatmap = apply_brain_mask(heatmap, ready.brain.mask)
        timings = {
            "preprocess": preprocess_ms / len(images),
            "model_and_cam": model_ms / len(images),
            "postprocess": _ms_since(step),
        }
        timings["total"] = sum(timings.values())
        results.append(
            Explanation(
                logits=scores.astype(np.float32),
                probabilities=probabilities,
                predicted_index=predicted,
                target_index=explained,
                label_names=tuple(config.label_names),
                heatmap=heatmap.astype(np.float32),
                brain_mask=ready.brain.mask,
                brain_mask_note=_mask_note(ready.brain, settings.mask_input, settings.mask_heatmap),
                masked_input=ready.masked,
                masked_heatmap=ready.brain.found and settings.mask_heatmap,
                method=settings.method,
                target_layer=layer_name,
                timings_ms={k: round(v, 1) for k, v in timings.items()},
                warning=warning,
                reliability=verdict(
                    probabilities,
                    None if familiarity is None else float(familiarity[len(results)]),
                    loaded.reliability,
                    unusual[len(results)],
                ),
            )
        )
    return results


def _run_cam(cam_class, model: torch.nn.Module, layers: list[torch.nn.Module], tensor: torch.Tensor, targets):
    """(CAMs at the model's input size, logits) from pytorch-grad-cam, hooks released after.

    Not `with cam:` — BaseCAM.__exit__ swallows IndexError, which would hide the real error
    behind an unset result; here every exception propagates and the hooks still go.
    """
    cam = cam_class(model=model, target_layers=layers)
    try:
        if cam_class is ScoreCAM:
            cam.batch_size = SCORE_CAM_BATCH
        squares = cam(input_tensor=tensor, targets=targets)
        return squares, cam.outputs.detach().numpy()
    finally:
        cam.activations_and_grads.release()


@contextmanager
def _count_passes(model: torch.nn.Module, layers: list[torch.nn.Module], method: str, count: int, on_progress):
    """Report (passes done, passes expected) after each forward pass of the model: the real
    progress of a slow method (Score-CAM: one pass per batch of SCORE_CAM_BATCH feature maps of
    every layer; the noise tunnel: one per noisy copy), known once the first pass has shown the
    layers' channel counts."""
    if on_progress is None:
        yield
        return
    channels: dict[int, int] = {}
    done = 0

    def record_channels(module, inputs, output):
        if isinstance(output, torch.Tensor):
            channels.setdefault(id(module), int(output.shape[1]))

    def counted(module, inputs, output):
        nonlocal done
        done += 1
        total = 1  # the prediction's pass, which also gives the familiarity features
        if method == "Score-CAM":
            total += count * sum(math.ceil(c / SCORE_CAM_BATCH) for c in channels.values())
        elif method == "Integrated Gradients":
            total += count
        elif method == "Integrated Gradients + noise tunnel":
            total += count * NOISE_SAMPLES
        on_progress(min(done, total), total)

    handles = [layer.register_forward_hook(record_channels) for layer in layers]
    handles.append(model.register_forward_hook(counted))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def _backpropagate_only_above(layer: torch.nn.Module):
    """Cut the autograd graph at the target layer while a CAM runs.

    A CAM needs the score's gradient at the target layer's output, nothing below it; the
    gradients of earlier layers and their weights would be computed and thrown away.
    The hook is registered before the CAM's own hooks, so they see the cut tensor.
    """

    def cut(module, inputs, output):
        if isinstance(output, torch.Tensor):
            return output.detach().requires_grad_(True)
        return None

    handle = layer.register_forward_hook(cut)
    try:
        yield
    finally:
        handle.remove()


def apply_brain_mask(heatmap: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Zero the heatmap outside the head and rescale its maximum back to 1 (no-op without a mask)."""
    if mask is None:
        return heatmap
    masked = heatmap * mask
    peak = float(masked.max())
    return masked / peak if peak > 0 else masked


def layer_names(model: torch.nn.Module) -> list[str]:
    """Dotted names of the modules a CAM can hook (convolutional feature maps)."""
    return [
        name
        for name, module in model.named_modules()
        if name and (isinstance(module, torch.nn.Conv2d) or name.count(".") <= 1)
    ]


def _lowest(model: torch.nn.Module, layers: list[torch.nn.Module]) -> torch.nn.Module:
    """The first of `layers` in the model's module order: the graph may be cut there only,
    or the gradients of the others would be lost."""
    order = {id(module): index for index, module in enumerate(model.modules())}
    return min(layers, key=lambda module: order[id(module)])


def _resolve_layer(model: torch.nn.Module, name: str) -> torch.nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError:
        raise ExplainError(f"The model has no layer '{name}'.") from None


def _class_index(target: int | str, label_names: tuple[str, ...]) -> int:
    if isinstance(target, str):
        if target in label_names:
            return label_names.index(target)
        raise ExplainError(f"Unknown class '{target}'. Classes: {', '.join(label_names)}.")
    if not 0 <= int(target) < len(label_names):
        raise ExplainError(f"Class index {target} is out of range 0-{len(label_names) - 1}.")
    return int(target)


def _clean_cam(cam: np.ndarray, label: str) -> tuple[np.ndarray, str | None]:
    if not np.isfinite(cam).all():
        return np.zeros_like(cam, dtype=np.float32), (
            "The heatmap could not be computed (numerical overflow). Try another method or layer."
        )
    if float(cam.max()) <= 0.0:
        return cam.astype(np.float32), (
            f"The heatmap is empty: with this method and layer no region raises the score "
            f"for '{label}'. Try another method or layer."
        )
    return cam.astype(np.float32), None


def _mask_note(brain: BrainMask, mask_input: bool, mask_heatmap: bool) -> str:
    if not (mask_input or mask_heatmap):
        return "Brain masking is off."
    if not brain.found:
        return f"Brain masking fell back to the full image: {brain.reason}"
    return brain.reason


def _ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0
