"""Learning from a teacher checkpoint: softened targets (Hinton et al. 2015) and attention
transfer (Zagoruyko & Komodakis 2017)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from core.checkpoint import LoadedModel
from core.inference import model_input

DISTILL_TEMPERATURE = 2.0
# Attention transfer pairs layers by stride: 1/16 and 1/32 of the input in both families.
ATTENTION_LAYERS = {"tf_efficientnet_lite": ("blocks.4", "bn2"), "convnext": ("stages.2", "stages.3")}


def family(arch: str, table: dict) -> str:
    """The key of `table` that `arch` starts with (the architecture itself when none does)."""
    return next((prefix for prefix in table if arch.startswith(prefix)), arch)


def attention_layers(arch: str) -> tuple[str, ...]:
    name = family(arch, ATTENTION_LAYERS)
    if name not in ATTENTION_LAYERS:
        raise ValueError(f"--attention-transfer knows the layers of {', '.join(ATTENTION_LAYERS)}, not {arch}.")
    return ATTENTION_LAYERS[name]


def keep_outputs(model: torch.nn.Module, names: tuple[str, ...]) -> tuple[dict, list]:
    """Forward hooks that keep the named layers' outputs of the latest forward pass."""
    modules = dict(model.named_modules())
    outputs: dict[str, torch.Tensor] = {}
    handles = [modules[name].register_forward_hook(_keeper(outputs, name)) for name in names]
    return outputs, handles


def _keeper(outputs: dict, name: str):
    def keep(module, inputs, output):
        outputs[name] = output

    return keep


def attention_map(features: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Zagoruyko & Komodakis 2017: mean of squared activations over channels, at `size`,
    flattened and L2-normalised per image, so only where a layer is active counts, not how much."""
    spatial = features.float().pow(2).mean(1, keepdim=True)
    if spatial.shape[-2:] != size:
        spatial = F.interpolate(spatial, size=size, mode="bilinear", align_corners=False)
    return F.normalize(spatial.flatten(1), dim=1)


class AttentionTransfer:
    """Hooks on the student's and the teacher's paired layers (ATTENTION_LAYERS) that keep their
    outputs of the latest forward passes; loss() compares them. remove() takes the hooks off."""

    def __init__(self, student: torch.nn.Module, student_arch: str, teacher: LoadedModel, beta: float):
        self.beta = beta
        self.student_layers = attention_layers(student_arch)
        self.teacher_layers = attention_layers(teacher.config.architecture)
        self.student_outputs, handles = keep_outputs(student, self.student_layers)
        self.teacher_outputs, teacher_handles = keep_outputs(teacher.model, self.teacher_layers)
        self.handles = handles + teacher_handles

    def loss(self) -> torch.Tensor:
        return attention_transfer_loss(
            [self.student_outputs[name] for name in self.student_layers],
            [self.teacher_outputs[name] for name in self.teacher_layers],
            self.beta,
        )

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def attention_transfer_loss(student: list[torch.Tensor], teacher: list[torch.Tensor], beta: float) -> torch.Tensor:
    """beta/2 times the mean squared difference of paired attention maps, summed over the pairs;
    the teacher's maps are resized to the student's grid and carry no gradient."""
    return sum(
        (attention_map(s, tuple(s.shape[-2:])) - attention_map(t.detach(), tuple(s.shape[-2:]))).pow(2).mean()
        for s, t in zip(student, teacher, strict=True)
    ) * (beta / 2)


def teacher_targets(
    teacher: LoadedModel | None, fixed_probs: np.ndarray | None, batch: np.ndarray, x: torch.Tensor
) -> torch.Tensor | None:
    """The teacher's softened probabilities for this batch: scored on the same view (a teacher
    model) or fixed (probabilities computed once); None without a teacher."""
    if teacher is not None:
        with torch.no_grad():
            logits = teacher.model(model_input(x, teacher.config.preprocessing))
        return F.softmax(logits.float() / DISTILL_TEMPERATURE, 1)
    if fixed_probs is not None:
        return torch.from_numpy(fixed_probs[batch]).float().to(x.device)
    return None


def label_where_teacher_is_blind(soft: torch.Tensor, target: torch.Tensor, blind: np.ndarray) -> torch.Tensor:
    """The teacher's targets, with the label instead on the `blind` rows: a counterfactual (its
    tumour removed) or a template slice is notumor whatever the teacher says, since its fixed
    target was scored on the original image and its own view may rest on the shortcuts."""
    if not blind.any():
        return soft
    label = target.float() if target.ndim == 2 else F.one_hot(target, soft.shape[1]).float()
    rows = torch.from_numpy(blind).to(soft.device)
    return torch.where(rows[:, None], label, soft)


def distillation_loss(logits: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
    """Hinton et al. 2015: KL divergence to the teacher's softened distribution, scaled by T^2."""
    kd = F.kl_div(F.log_softmax(logits / DISTILL_TEMPERATURE, 1), soft, reduction="batchmean")
    return kd * DISTILL_TEMPERATURE**2
