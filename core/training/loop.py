"""Train a timm classifier on a ROOT/SPLIT/<class>/<image> dataset, from memory.

Images are decoded and preprocessed once (core.training.data), then augmented a batch at a
time on the training device (CPU, or a CUDA GPU with --device cuda). A grouped hold-out drawn
from the training splits picks nothing on `test`: it gives the per-epoch log and the data the
temperature is fitted on.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from timm.utils import ModelEmaV3
from tqdm import tqdm

from core.checkpoint import create_model, load_checkpoint, save_checkpoint
from core.config import ModelConfig, Preprocessing
from core.dataset import grouped_folds, grouped_holdout
from core.inference import batched_logits
from core.metrics import classification_summary, holdout_calibration, softmax
from core.preprocess import to_tensor
from core.pretrained import IMAGENET_WEIGHTS, imagenet_backbone_for
from core.training.augmentation import Augment, Randomise, mixer
from core.training.data import TrainingData, load_training_data, make_counterfactuals, template_slices
from core.training.distillation import (
    AttentionTransfer,
    distillation_loss,
    family,
    label_where_teacher_is_blind,
    teacher_targets,
)
from core.training.guidance import GUIDANCE_DILATION, class_activation_maps, guidance_loss, outside_share
from core.training.options import TrainOptions
from core.training.record import training_record

# ConvNeXt's last stage feeds global average pooling, so gradients there are the same at every
# position; one stage earlier they vary (on `val`, Grad-CAM IoU 0.05 at stages.2 vs 0.02 at stages.3).
DEFAULT_LAYERS = {"tf_efficientnet_lite": "conv_head", "convnext": "stages.2"}


def default_target_layer(arch: str) -> str:
    return DEFAULT_LAYERS[family(arch, DEFAULT_LAYERS)]


def train(options: TrainOptions) -> dict:
    """Train, fit the temperature on the hold-out, write the checkpoint. Returns its config."""
    torch.set_num_threads(options.threads)
    started = time.time()
    settings = Preprocessing(input_size=options.image_size)
    data = load_training_data(options)
    held = grouped_holdout(data.records, options.holdout_fraction, options.holdout_seed)
    print(f"{held.sum()} images held out by group", flush=True)
    if not held.any():
        print("nothing held out: the temperature stays 1.0; set it with `python -m core calibrate`", flush=True)
    model, history = fit(options, data, held)
    labels, label_names = data.labels, data.label_names

    holdout = {}
    temperature = 1.0
    if held.any():
        held_logits = batched_logits(model, data.plain[held], settings)
        temperature, holdout = holdout_calibration(held_logits, labels[held], label_names)
    config = ModelConfig(
        architecture=options.arch,
        label_names=tuple(label_names),
        preprocessing=settings,
        default_target_layer=default_target_layer(options.arch),
        temperature=temperature,
        refit_without_holdout=not held.any(),
    )
    model.eval().cpu()
    record = training_record(options, started, history, holdout, len(data.records))
    save_checkpoint(model, config, options.out, training=record)
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
        "recipe": training_record(options, started, [], {}, len(data.records)),
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
    labels, plain, masked, outlines = data.labels, data.plain, data.masked, data.outlines
    fixed_probs = data.teacher_probs
    from_template = np.zeros(len(labels), dtype=bool)
    if options.healthy_template:  # never held out: they are not from the dataset
        extra_plain, extra_masked = template_slices(settings, options.data)
        plain, masked = np.concatenate([plain, extra_plain]), np.concatenate([masked, extra_masked])
        labels = np.concatenate([labels, np.full(len(extra_plain), data.label_names.index("notumor"))])
        held = np.concatenate([held, np.zeros(len(extra_plain), dtype=bool)])
        from_template = np.concatenate([from_template, np.ones(len(extra_plain), dtype=bool)])
        if outlines is not None:
            outlines = np.concatenate([outlines, np.zeros(extra_plain.shape, dtype=bool)])
        if fixed_probs is not None:  # placeholders: template slices learn from their label alone
            fixed_probs = np.concatenate([fixed_probs, np.zeros((len(extra_plain), fixed_probs.shape[1]), np.float32)])
        print(f"added {len(extra_plain)} MNI152 template slices as notumor", flush=True)
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
    randomise = Randomise(options.seed, options.randomise) if options.randomise else None
    counterfactuals = None
    if options.counterfactuals:
        counterfactuals = make_counterfactuals(
            plain, masked, outlines, train_idx, options.seed, controls=options.control_fills > 0
        )
        print(
            f"made {counterfactuals.available.sum()} counterfactual healthy slices {counterfactuals.methods}"
            + (f" and {counterfactuals.has_control.sum()} controls" if options.control_fills else ""),
            flush=True,
        )
    notumor = data.label_names.index("notumor") if "notumor" in data.label_names else -1
    dilation = max(1, round(GUIDANCE_DILATION * options.image_size))
    rng = np.random.default_rng(options.seed)
    mix = mixer(options, len(data.label_names))
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
            images = _as_shown(use_mask, plain[batch], masked[batch])
            target = labels[batch].copy()
            batch_outlines = outlines[batch].copy() if outlines is not None else None
            swap = np.zeros(len(batch), dtype=bool)
            if counterfactuals is not None:
                swap = counterfactuals.available[batch] & (rng.random(len(batch)) < options.counterfactuals)
                removed = _as_shown(use_mask, counterfactuals.plain[batch], counterfactuals.masked[batch])
                images[swap], target[swap], batch_outlines[swap] = removed[swap], notumor, False
                if options.control_fills:  # the tumour stays, so do its label and outline
                    control = counterfactuals.has_control[batch] & ~swap
                    control &= rng.random(len(batch)) < options.control_fills
                    filled = _as_shown(
                        use_mask, counterfactuals.control_plain[batch], counterfactuals.control_masked[batch]
                    )
                    images[control] = filled[control]
            x = torch.from_numpy(images).to(device).float()[:, None] / 255
            drawn = torch.from_numpy(batch_outlines).to(device).float()[:, None] if options.guidance else None
            x, drawn = _augmented(augment, randomise, x, drawn)
            target = torch.from_numpy(target).to(device)
            if mix is not None:
                mixed, target = mix(x[:, None], target)  # soft targets, label smoothing included
                x = mixed[:, 0]
            with torch.autocast(options.device, dtype=torch.bfloat16, enabled=options.bf16):
                logits, cams = _logits_and_maps(model, to_tensor(x, settings), options.guidance > 0)
                soft = teacher_targets(data.teacher, fixed_probs, batch, x)
            logits = logits.float()
            smoothing = 0.0 if mix is not None else 0.1
            loss = F.cross_entropy(logits, target, weight=class_weights, label_smoothing=smoothing)
            if soft is not None:
                soft = label_where_teacher_is_blind(soft.float(), target, swap | from_template[batch])
                loss = (1 - options.distill_weight) * loss + options.distill_weight * distillation_loss(logits, soft)
            if transfer is not None:
                loss = loss + transfer.loss()
            if cams is not None:
                outside = outside_share(drawn, cams.shape[-2:], dilation)
                has_outline = drawn.flatten(1).amax(1) > 0.5
                loss = loss + options.guidance * guidance_loss(cams.float(), target, outside, has_outline)
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
            held_logits = batched_logits(evaluated, plain[held], settings)
            summary = classification_summary(labels[held], softmax(held_logits), data.label_names)
            entry.update(holdout_accuracy=summary["accuracy"], holdout_macro_f1=summary["macro_f1"])
        history.append(entry)
        print(json.dumps(entry), flush=True)
        if step >= total_steps:
            break
    if transfer is not None:
        transfer.remove()
    return evaluated, history


def _as_shown(use_mask: np.ndarray, plain: np.ndarray, masked: np.ndarray) -> np.ndarray:
    """Each image of a batch as the model is shown it: brain-masked where `use_mask` says so."""
    return np.where(use_mask[:, None, None], masked, plain)


def _logits_and_maps(model: torch.nn.Module, inputs: torch.Tensor, guided: bool):
    """The logits and, for outline guidance, the class activation maps of the same pass."""
    if not guided:
        return model(inputs), None
    features = model.forward_features(inputs)
    return model.forward_head(features), class_activation_maps(model, features)


def _augmented(augment: Augment, randomise: Randomise | None, x: torch.Tensor, drawn: torch.Tensor | None):
    """(N, S, S) augmented images and, when guided, the outlines moved with them."""
    if drawn is None:
        x = augment(x)
        return (randomise(x) if randomise else x)[:, 0], None
    x, drawn = augment(x, drawn)
    if randomise:
        x, drawn = randomise(x, drawn)
    return x[:, 0], drawn


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
