"""Train a timm classifier on a ROOT/SPLIT/<class>/<image> dataset, from memory.

Images are decoded and preprocessed once (core.dataset), then augmented a batch at a time on
the training device (CPU, or a CUDA GPU with --device cuda).
A grouped hold-out drawn from the training splits picks nothing on `test`: it gives the
per-epoch log and the data the temperature is fitted on.
"""

from __future__ import annotations

import json
import platform
import subprocess
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from timm.data import Mixup
from timm.utils import ModelEmaV3
from tqdm import tqdm

from core.checkpoint import (
    CONFIG_FILE,
    NO_HOLDOUT,
    LoadedModel,
    ModelConfig,
    create_model,
    load_checkpoint,
    read_config,
    resolve_checkpoint,
    save_checkpoint,
)
from core.dataset import decode_records, grouped_folds, grouped_holdout, list_splits
from core.metrics import classification_summary, expected_calibration_error, fit_temperature, softmax
from core.preprocess import Preprocessing, to_tensor
from core.pretrained import IMAGENET_WEIGHTS, imagenet_backbone_for

DISTILL_TEMPERATURE = 2.0
# ConvNeXt's last stage feeds global average pooling, so gradients there are the same at every
# position; one stage earlier they vary (on `val`, Grad-CAM IoU 0.05 at stages.2 vs 0.02 at stages.3).
DEFAULT_LAYERS = {"tf_efficientnet_lite": "conv_head", "convnext": "stages.2"}
# Attention transfer pairs layers by stride: 1/16 and 1/32 of the input in both families.
ATTENTION_LAYERS = {"tf_efficientnet_lite": ("blocks.4", "bn2"), "convnext": ("stages.2", "stages.3")}


@dataclass(frozen=True)
class TrainOptions:
    arch: str
    data: Path
    out: Path
    splits: tuple[str, ...] = ("train", "val")
    epochs: int = 12
    image_size: int = 192
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.05
    seed: int = 0
    init: str = "scratch"  # "scratch", "imagenet-lite0/1/2" or a checkpoint folder to continue from
    teacher: Path | None = None
    distill_weight: float = 0.5
    # The teacher scores each augmented view the student sees (Beyer et al. 2022, "patient and
    # consistent" distillation) instead of giving fixed targets from the un-augmented image.
    consistent_teacher: bool = False
    ema_decay: float | None = None  # keep an exponential moving average of the weights; save and evaluate it
    # Beta(alpha, alpha) blending of image pairs (mixup) or pasting a box of one into the other
    # (CutMix), half the batches each when both are set; the ConvNeXt paper's recipe uses 0.8 / 1.0.
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    # Stochastic depth (timm drop_path_rate): residual blocks are skipped at random while training,
    # deeper ones more often (up to this rate), a regulariser for a ConvNeXt trained from scratch.
    drop_path: float = 0.0
    # Attention transfer (Zagoruyko & Komodakis 2017): beta of the loss pulling the student's spatial
    # attention maps towards the teacher's on the same view (the paper uses 1000); 0 turns it off.
    attention_transfer: float = 0.0
    holdout_fraction: float = 0.15
    limit: int | None = None  # images per class, for smoke runs
    max_steps: int | None = None
    threads: int = 2
    device: str = "cpu"  # or "cuda": the per-batch work runs there, decoding stays on the CPU
    # Student and teacher forward passes in bfloat16 autocast (weights, optimiser and hold-out
    # scoring stay float32): on a CPU with AVX512-BF16 a 224 px ConvNeXt step runs ~1.9x faster.
    bf16: bool = False
    progress: bool = True

    def __post_init__(self):
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"--device is cpu or cuda, not {self.device}.")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda: torch sees no CUDA GPU on this machine; use --device cpu.")
        if self.consistent_teacher and not self.teacher:
            raise ValueError("--consistent-teacher needs --teacher CHECKPOINT.")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise ValueError(f"--ema is a decay between 0 and 1 (e.g. 0.998), not {self.ema_decay}.")
        if not 0 <= self.drop_path < 1:
            raise ValueError(f"--drop-path is a probability below 1 (e.g. 0.1), not {self.drop_path}.")
        if self.attention_transfer < 0:
            raise ValueError(f"--attention-transfer is a loss weight >= 0 (e.g. 1000), not {self.attention_transfer}.")
        if self.attention_transfer and not self.consistent_teacher:
            raise ValueError("--attention-transfer needs --consistent-teacher (the teacher must see the same view).")
        if not 0 <= self.distill_weight <= 1:
            raise ValueError(f"--distill-weight is between 0 and 1, not {self.distill_weight}.")
        if not 0 <= self.holdout_fraction < 1:
            raise ValueError(f"--holdout-fraction is from 0 to below 1 (e.g. 0.15), not {self.holdout_fraction}.")
        if self.mixup_alpha < 0 or self.cutmix_alpha < 0:
            raise ValueError("--mixup and --cutmix are Beta-distribution alphas >= 0 (e.g. 0.8 and 1.0).")
        if (self.mixup_alpha or self.cutmix_alpha) and self.teacher and not self.consistent_teacher:
            raise ValueError("--mixup/--cutmix with --teacher need --consistent-teacher (fixed targets are unmixed).")


def default_target_layer(arch: str) -> str:
    return DEFAULT_LAYERS[_family(arch, DEFAULT_LAYERS)]


def _family(arch: str, table: dict) -> str:
    return next((prefix for prefix in table if arch.startswith(prefix)), arch)


def attention_layers(arch: str) -> tuple[str, ...]:
    family = _family(arch, ATTENTION_LAYERS)
    if family not in ATTENTION_LAYERS:
        raise ValueError(f"--attention-transfer knows the layers of {', '.join(ATTENTION_LAYERS)}, not {arch}.")
    return ATTENTION_LAYERS[family]


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


class Augment:
    """MRI-friendly augmentation of a whole (N, 1, S, S) batch, each image its own draw:
    small affine (+-10 deg, 6 % shift, 0.9-1.1 scale), h-flip, gamma/contrast/brightness.
    The draws come from a CPU generator, so a seed gives the same batches on CPU and GPU."""

    def __init__(self, seed: int):
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        draw = lambda low, high: self._uniform(len(images), low, high).to(images.device)  # noqa: E731
        angle = torch.deg2rad(draw(-10, 10))
        zoom = 1 / draw(0.9, 1.1)  # the grid maps output to input pixels, so it holds the inverse scale
        flip = torch.where(draw(0, 1) < 0.5, -1.0, 1.0)
        cos, sin = zoom * torch.cos(angle), zoom * torch.sin(angle)
        shift_x, shift_y = draw(-0.12, 0.12), draw(-0.12, 0.12)  # 6 % of the side; the grid spans [-1, 1]
        rows = [torch.stack([cos * flip, -sin, shift_x], 1), torch.stack([sin * flip, cos, shift_y], 1)]
        grid = F.affine_grid(torch.stack(rows, 1), list(images.shape), align_corners=False)
        images = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        gamma = draw(0.75, 1.35).view(-1, 1, 1, 1)
        contrast = draw(0.85, 1.15).view(-1, 1, 1, 1)
        brightness = draw(-0.05, 0.05).view(-1, 1, 1, 1)
        return (images.clamp(0, 1) ** gamma * contrast + brightness).clamp(0, 1)

    def _uniform(self, n: int, low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, generator=self.generator)


@dataclass(frozen=True)
class TrainingData:
    """The training splits, decoded once: labels, plain and brain-masked images, and either
    fixed teacher targets or the teacher itself (consistent distillation)."""

    records: list
    label_names: list[str]
    labels: np.ndarray
    plain: np.ndarray
    masked: np.ndarray
    teacher_probs: np.ndarray | None = None
    teacher: LoadedModel | None = None


def load_training_data(options: TrainOptions) -> TrainingData:
    started = time.time()
    settings = Preprocessing(input_size=options.image_size)
    records = list_splits(options.data, options.splits)
    label_names = sorted({r.label for r in records})
    if options.limit:
        records = [r for name in label_names for r in [x for x in records if x.label == name][: options.limit]]
    labels = np.array([label_names.index(r.label) for r in records])
    plain, masked = decode_records(options.data, records, settings, options.progress)
    print(f"decoded {len(records)} images in {time.time() - started:.0f}s", flush=True)
    data = TrainingData(records, label_names, labels, plain, masked)
    if not options.teacher:
        return data
    teacher = load_checkpoint(options.teacher)
    if list(teacher.config.label_names) != label_names:
        raise ValueError(f"Teacher classes {list(teacher.config.label_names)} differ from {label_names}.")
    teacher.model.eval().to(options.device)
    if options.consistent_teacher:
        return replace(data, teacher=teacher)
    logits = predict_logits(teacher.model, masked, teacher.config.preprocessing)
    return replace(data, teacher_probs=softmax(logits, DISTILL_TEMPERATURE).astype(np.float32))


def train(options: TrainOptions) -> dict:
    """Train, fit the temperature on the hold-out, write the checkpoint. Returns its config."""
    torch.set_num_threads(options.threads)
    started = time.time()
    settings = Preprocessing(input_size=options.image_size)
    data = load_training_data(options)
    held = grouped_holdout(data.records, options.holdout_fraction, options.seed)
    print(f"{held.sum()} images held out by group", flush=True)
    if not held.any():
        print("nothing held out: the temperature stays 1.0; set it with `python -m core calibrate`", flush=True)
    model, history = fit(options, data, held)
    labels, label_names = data.labels, data.label_names

    holdout = {}
    temperature = 1.0
    if held.any():
        held_logits = predict_logits(model, data.plain[held], settings)
        temperature = fit_temperature(held_logits, labels[held])
        summary = classification_summary(labels[held], softmax(held_logits, temperature), label_names)
        holdout = {
            "num_images": int(held.sum()),
            "accuracy": summary["accuracy"],
            "macro_f1": summary["macro_f1"],
            "ece_before_temperature": expected_calibration_error(softmax(held_logits), labels[held]),
            "ece_after_temperature": expected_calibration_error(softmax(held_logits, temperature), labels[held]),
        }
    config = ModelConfig(
        architecture=options.arch,
        label_names=tuple(label_names),
        preprocessing=settings,
        default_target_layer=default_target_layer(options.arch),
        temperature=temperature,
        extra={"training": _training_record(options, started, history, holdout, len(data.records))},
    )
    model.eval().cpu()
    save_checkpoint(model, config, options.out)
    print(f"saved {options.out} (temperature {temperature:.3f}) in {time.time() - started:.0f}s", flush=True)
    return config.to_dict()


def cross_validate(options: TrainOptions, folds: int) -> dict:
    """Grouped, class-stratified k-fold over the training splits: the recipe's per-epoch
    hold-out accuracy and macro-F1, mean and spread over folds, for choosing recipes and
    epochs without touching `test`. Writes options.out as JSON; no checkpoint."""
    torch.set_num_threads(options.threads)
    started = time.time()
    data = load_training_data(options)
    histories, held_out = [], []
    for fold, held in enumerate(grouped_folds(data.records, folds, options.seed)):
        held_out.append(int(held.sum()))
        print(f"fold {fold + 1}/{folds}: {held.sum()} images held out", flush=True)
        histories.append(fit(options, data, held)[1])
    epochs = []
    for epoch in range(min(len(h) for h in histories)):
        row = {"epoch": epoch + 1}
        for metric in ("holdout_accuracy", "holdout_macro_f1"):
            values = [h[epoch][metric] for h in histories]
            row.update({f"{metric}_mean": float(np.mean(values)), f"{metric}_std": float(np.std(values))})
        epochs.append(row)
    best = max(epochs, key=lambda row: row["holdout_macro_f1_mean"])
    report = {
        "folds": folds,
        "grouping": "metadata.csv 'group', stratified by class (scikit-learn StratifiedGroupKFold)",
        "recipe": _training_record(options, started, [], {}, len(data.records)),
        "held_out_per_fold": held_out,
        "per_epoch": epochs,
        "best_epoch": best["epoch"],
        "per_fold": histories,
    }
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"best epoch {best['epoch']}: macro-F1 {best['holdout_macro_f1_mean']:.3f} "
          f"+- {best['holdout_macro_f1_std']:.3f} over {folds} folds; wrote {options.out}", flush=True)  # fmt: skip
    return report


def fit(options: TrainOptions, data: TrainingData, held: np.ndarray) -> tuple[torch.nn.Module, list[dict]]:
    """Train on the records not held out; log hold-out accuracy and macro-F1 once per epoch."""
    torch.manual_seed(options.seed)
    settings = Preprocessing(input_size=options.image_size)
    labels, plain, masked = data.labels, data.plain, data.masked
    device = torch.device(options.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # TF32 matrix products; CPU numerics untouched
    model = _initial_model(options, data.label_names).to(device)
    train_idx = np.flatnonzero(~held)
    counts = np.bincount(labels[train_idx], minlength=len(data.label_names)).astype(np.float64)
    class_weights = counts.sum() / (len(counts) * np.maximum(counts, 1))
    class_weights = torch.tensor(class_weights, dtype=torch.float32, device=device)
    steps_per_epoch = int(np.ceil(len(train_idx) / options.batch_size))
    total_steps = options.max_steps or options.epochs * steps_per_epoch
    optimiser = torch.optim.AdamW(model.parameters(), lr=options.lr, weight_decay=options.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=options.lr, total_steps=total_steps, pct_start=0.1
    )
    # timm's warm-up: the decay grows with the step (0.99 by step ~460), capped at ema_decay.
    ema = ModelEmaV3(model, decay=options.ema_decay, use_warmup=True, warmup_power=0.75) if options.ema_decay else None
    evaluated = ema.module if ema is not None else model
    augment = Augment(options.seed)
    rng = np.random.default_rng(options.seed)
    mix = _mixer(options, len(data.label_names))
    # hooks added after the moving average's copy of the model, removed at the end
    transfer = (
        AttentionTransfer(model, options.arch, data.teacher, options.attention_transfer)
        if options.attention_transfer
        else None
    )
    history, step = [], 0
    for epoch in range(options.epochs):
        model.train()
        order = rng.permutation(train_idx)
        losses = []
        batches = range(0, len(order), options.batch_size)
        for start in tqdm(batches, desc=f"epoch {epoch + 1}", disable=not options.progress, leave=False):
            if step >= total_steps:
                break
            batch = order[start : start + options.batch_size]
            if mix is not None:
                batch = batch[: len(batch) // 2 * 2]  # timm's Mixup pairs each image with the batch's mirror
            if len(batch) == 0:
                continue
            # Half the images are brain-masked, so the model sees both views the app offers.
            use_mask = rng.random(len(batch)) < 0.5
            images = np.where(use_mask[:, None, None], masked[batch], plain[batch])
            x = augment(torch.from_numpy(images).to(device).float()[:, None] / 255)[:, 0]
            target = torch.from_numpy(labels[batch]).to(device)
            if mix is not None:
                mixed, target = mix(x[:, None], target)  # soft targets, label smoothing included
                x = mixed[:, 0]
            with torch.autocast(options.device, dtype=torch.bfloat16, enabled=options.bf16):
                logits = model(to_tensor(x, settings))
                soft = _teacher_targets(data, batch, x)
            logits = logits.float()
            smoothing = 0.0 if mix is not None else 0.1
            loss = F.cross_entropy(logits, target, weight=class_weights, label_smoothing=smoothing)
            if soft is not None:
                # Hinton et al. 2015: match the teacher's softened distribution, scaled by T^2.
                kd = F.kl_div(F.log_softmax(logits / DISTILL_TEMPERATURE, 1), soft, reduction="batchmean")
                loss = (1 - options.distill_weight) * loss + options.distill_weight * kd * DISTILL_TEMPERATURE**2
            if transfer is not None:
                loss = loss + transfer.loss()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            scheduler.step()
            losses.append(loss.item())
            step += 1
            if ema is not None:
                ema.update(model, step=step)
        entry = {"epoch": epoch + 1, "loss": float(np.mean(losses)) if losses else None}
        if held.any():
            held_logits = predict_logits(evaluated, plain[held], settings)
            summary = classification_summary(labels[held], softmax(held_logits), data.label_names)
            entry.update(holdout_accuracy=summary["accuracy"], holdout_macro_f1=summary["macro_f1"])
        history.append(entry)
        print(json.dumps(entry), flush=True)
        if step >= total_steps:
            break
    if transfer is not None:
        transfer.remove()
    return evaluated, history


def _mixer(options: TrainOptions, num_classes: int) -> Mixup | None:
    if not (options.mixup_alpha or options.cutmix_alpha):
        return None
    np.random.seed(options.seed)  # timm's Mixup draws from numpy's global generator
    return Mixup(
        mixup_alpha=options.mixup_alpha,
        cutmix_alpha=options.cutmix_alpha,
        label_smoothing=0.1,
        num_classes=num_classes,
    )


def _initial_model(options: TrainOptions, label_names: list[str]) -> torch.nn.Module:
    model = _starting_weights(options, label_names)
    if not options.drop_path:
        return model
    # timm builds its DropPath layers only when the rate is set, so rebuild and copy the weights.
    dropping = create_model(options.arch, len(label_names), drop_path_rate=options.drop_path)
    dropping.load_state_dict(model.state_dict())
    return dropping


def _starting_weights(options: TrainOptions, label_names: list[str]) -> torch.nn.Module:
    if options.init == "scratch":
        return create_model(options.arch, len(label_names))
    if options.init in IMAGENET_WEIGHTS:
        architecture = IMAGENET_WEIGHTS[options.init].architecture
        if options.arch != architecture:
            raise ValueError(f"--init {options.init} needs --arch {architecture}.")
        return imagenet_backbone_for(options.init, len(label_names))
    start = load_checkpoint(Path(options.init))
    if start.config.architecture != options.arch or list(start.config.label_names) != label_names:
        raise ValueError(
            f"--init {options.init} is a {start.config.architecture} for {list(start.config.label_names)}; "
            f"this run trains a {options.arch} for {label_names}."
        )
    return start.model


def _teacher_targets(data: TrainingData, batch: np.ndarray, x: torch.Tensor) -> torch.Tensor | None:
    """The teacher's softened probabilities for this batch: fixed, or scored on the same view."""
    if data.teacher is not None:
        with torch.no_grad():
            logits = data.teacher.model(model_input(x, data.teacher.config.preprocessing))
        return F.softmax(logits.float() / DISTILL_TEMPERATURE, 1)
    if data.teacher_probs is not None:
        return torch.from_numpy(data.teacher_probs[batch]).float().to(x.device)
    return None


def model_input(images: torch.Tensor, settings: Preprocessing) -> torch.Tensor:
    """(N, S, S) in [0, 1] -> normalised input at the model's own size: a teacher trained at
    256 px distilling into a 224 px student scores the student's view resized to 256 px."""
    size = settings.input_size
    if images.shape[-2:] != (size, size):
        images = F.interpolate(images[:, None], size=(size, size), mode="bilinear", antialias=True)[:, 0]
    return to_tensor(images, settings)


@torch.no_grad()
def predict_logits(model: torch.nn.Module, images: np.ndarray, settings: Preprocessing, batch: int = 64) -> np.ndarray:
    """Logits for uint8 (N, S, S) prepared images (resized to the model's input size), in eval mode."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = [
        model(model_input(torch.from_numpy(images[i : i + batch]).to(device).float() / 255, settings)).cpu().numpy()
        for i in range(0, len(images), batch)
    ]
    model.train(was_training)
    return np.concatenate(out)


def _training_record(options: TrainOptions, started: float, history: list, holdout: dict, n: int) -> dict:
    return {
        "data": str(options.data),
        "splits": list(options.splits),
        "num_images": n,
        "holdout": f"{options.holdout_fraction:.0%} of each class's groups (metadata.csv 'group'), seed {options.seed}"
        if options.holdout_fraction
        else NO_HOLDOUT,
        "holdout_metrics": holdout,
        "init": options.init,
        "continued_from": previous_training(options.init),
        "teacher": str(options.teacher) if options.teacher else None,
        "epochs": options.epochs,
        "image_size": options.image_size,
        "batch_size": options.batch_size,
        "optimiser": f"AdamW lr {options.lr} wd {options.weight_decay}, one-cycle",
        "loss": "class-weighted cross-entropy, label smoothing 0.1" + _distillation_note(options),
        "weights": f"exponential moving average (timm ModelEmaV3, warm-up, decay up to {options.ema_decay})"
        if options.ema_decay
        else "last step",
        "drop_path": options.drop_path,
        "augmentation": "affine (+-10 deg, 6 % shift, 0.9-1.1 scale), h-flip, gamma 0.75-1.35, "
        "contrast 0.85-1.15, brightness +-0.05, brain mask on half the images" + _mixing_note(options),
        "precision": "bfloat16 autocast (forward passes), float32 weights" if options.bf16 else "float32",
        "seed": options.seed,
        "history": history,
        "seconds": round(time.time() - started),
        "machine": _machine(options.device),
        "commit": _git_commit(),
    }


def _machine(device: str) -> str:
    if device == "cuda":
        return f"{torch.cuda.get_device_name()} GPU, torch {torch.__version__}"
    threads = torch.get_num_threads()
    return f"{platform.machine()} CPU, {threads} thread{'s' if threads > 1 else ''}, torch {torch.__version__}"


def _distillation_note(options: TrainOptions) -> str:
    if not options.teacher:
        return ""
    targets = "on the same augmented view" if options.consistent_teacher else "fixed, from the un-augmented image"
    note = f", distillation weight {options.distill_weight} at T={DISTILL_TEMPERATURE:g} (teacher targets {targets})"
    if options.attention_transfer:
        teacher_arch = read_config(resolve_checkpoint(options.teacher)).architecture
        pairs = zip(attention_layers(options.arch), attention_layers(teacher_arch))
        layers = ", ".join(f"{student} to {teacher}" for student, teacher in pairs)
        note += f", attention transfer beta {options.attention_transfer:g} ({layers})"
    return note


def _mixing_note(options: TrainOptions) -> str:
    alphas = {"mixup": options.mixup_alpha, "CutMix": options.cutmix_alpha}
    used = [f"{name} alpha {alpha}" for name, alpha in alphas.items() if alpha]
    return f", then {' or '.join(used)} (timm Mixup)" if used else ""


def previous_training(init: str) -> dict | None:
    """The training record of the checkpoint a run continues from, so lineage survives."""
    config = Path(init) / CONFIG_FILE
    return json.loads(config.read_text()).get("training") if config.is_file() else None


def _git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
