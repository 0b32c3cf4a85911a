"""Write a checkpoint's README.md model card (and its config.json "metrics") from measurements."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from core.checkpoint import create_model, migrate_checkpoint
from core.config import (
    ModelConfig,
    read_config,
    read_training_record,
    resolve_checkpoint,
    write_config,
)
from core.evaluation_store import LOCALISATION_COLUMNS
from core.explanation import heatmap_name
from core.reliability import TEXTURE_SIZE, Reliability
from core.reliability import load as load_reliability
from core.sweep import baseline_summary, method_table

# Accuracy (issue #27) and macro-F1 (the first issue) on test.
TARGETS = {"efficientnet": (0.95, 0.91), "convnext": (0.90, 0.85)}
ECE_TARGET = 0.05


def write_model_card(
    checkpoint: str | Path,
    test_summary: dict,
    localisation: list[dict],
    commit: str,
    stress: dict | None = None,
    faithfulness: dict | None = None,
    sanity: dict | None = None,
) -> Path:
    """Update config.json["metrics"] and write README.md; returns the card's path."""
    directory = resolve_checkpoint(checkpoint)
    migrate_checkpoint(directory)  # an older config.json's training record moves to training.json first
    ece = test_summary["ece_15_bins"]
    metrics = {
        "split": test_summary["split"],
        "num_images": test_summary["num_images"],
        "accuracy": test_summary["accuracy"],
        "macro_f1": test_summary["macro_f1"],
        "ece_before_temperature": ece["before_temperature"],
        "ece_after_temperature": ece["after_temperature"],
        "measured_by_commit": commit,
    }
    config = replace(read_config(directory), metrics=metrics)
    write_config(directory, config)
    training = read_training_record(directory)
    card = render_card(directory.name, config, training, test_summary, localisation, commit, stress,
                       load_reliability(directory), faithfulness, sanity)  # fmt: skip
    (directory / "README.md").write_text(card)
    return directory / "README.md"


def _target(architecture: str) -> tuple[float, float] | None:
    return next((t for key, t in TARGETS.items() if key in architecture), None)


def render_card(
    name: str,
    config: ModelConfig,
    training: dict,
    test: dict,
    localisation: list[dict],
    commit: str,
    stress: dict | None = None,
    reliability: Reliability | None = None,
    faithfulness: dict | None = None,
    sanity: dict | None = None,
) -> str:
    parameters = sum(p.numel() for p in create_model(config.architecture, len(config.label_names)).parameters())
    ece = test["ece_15_bins"]
    accuracy_target, f1_target = _target(config.architecture) or (None, None)
    accuracy_verdict = _verdict(test["accuracy"], accuracy_target, at_least=True)
    f1_verdict = _verdict(test["macro_f1"], f1_target, at_least=True, wrap=True)
    ece_verdict = _verdict(ece["after_temperature"], ECE_TARGET, at_least=False)
    lines = [
        f"# {name}: {config.architecture} brain-MRI classifier",
        "",
        "> Research model, **not a medical device**. Never use it for diagnosis.",
        "",
        "## Data and split",
        f"- Trained on `{', '.join(training.get('splits', []))}` of `brain-tumor-mri` "
        f"({training.get('num_images')} images: {', '.join(config.label_names)}).",
        f"- Grouped hold-out inside the training splits: {training.get('holdout')}. {_holdout_role(training)} "
        f"Nothing was selected on `test`. {_weights_kept(training)}",
        f"- Reported below: `{test['split']}` ({test['num_images']} images), never used for any choice.",
        "",
        "## Architecture and preprocessing",
        f"- timm `{config.architecture}`, {parameters / 1e6:.2f} M parameters, input "
        f"{config.preprocessing.input_size}x{config.preprocessing.input_size}, grey repeated on 3 channels, "
        f"mean {config.preprocessing.mean}, std {config.preprocessing.std}.",
        "- Preprocessing (same in training and the app): crop to the detected head + 4 % margin, pad to square, "
        "stretch intensities between the 1st and 99th percentile inside the head, resize.",
        *_default_heatmap(config),
        f"- Temperature {config.temperature:.3f}.",
        "",
        "## Recipe",
        *_recipe(training),
        f"- Hold-out after training: {_holdout(training.get('holdout_metrics', {}))}",
        "",
        f"## Results on `{test['split']}` (commit `{commit}`)",
        f"- Accuracy **{test['accuracy']:.4f}** ({round(test['accuracy'] * test['num_images'])} of "
        f"{test['num_images']} right{accuracy_verdict}), macro-F1 **{test['macro_f1']:.4f}**{f1_verdict}.",
        f"- ECE (15 bins) {ece['before_temperature']:.4f} before and **{ece['after_temperature']:.4f}** after "
        f"temperature scaling (T = {ece['temperature']:.3f}, fitted on {_temperature_source(training)}"
        f"{ece_verdict}).",
        "",
        "| class | precision | recall | F1 | ROC AUC (one-vs-rest) | images |",
        "|---|---|---|---|---|---|",
    ]
    for label, row in test["per_class"].items():
        auc = f"{row['roc_auc']:.3f}" if row["roc_auc"] is not None else "n/a"
        lines.append(f"| {label} | {row['precision']:.3f} | {row['recall']:.3f} | {row['f1']:.3f} | {auc} | "
                     f"{row['support']} |")  # fmt: skip
    matrix = test["confusion_matrix"]
    lines += ["", "Confusion matrix (rows true, columns predicted):", "",
              "| | " + " | ".join(matrix["labels"]) + " |", "|---" * (len(matrix["labels"]) + 1) + "|"]  # fmt: skip
    for label, row in zip(matrix["labels"], matrix["rows_true_columns_predicted"]):
        lines.append(f"| {label} | " + " | ".join(str(v) for v in row) + " |")
    if localisation:
        lines += _localisation_section(localisation, config.default_target_layer)
    if faithfulness:
        lines += _faithfulness_section(faithfulness)
    if sanity:
        lines += _sanity_section(sanity)
    lines += _reliability_section(reliability)
    if stress:
        lines += _stress_section(stress)
    if training.get("notes"):  # free text in training.json: what was tried, why a target was missed
        lines += ["", "## What was tried, and what was not", "", *(f"- {note}" for note in training["notes"])]
    lines += [
        "",
        "Reproduce: `python -m core evaluate --checkpoint " + name + " --data ../shared/data/brain-tumor-mri "
        "--split test --out out/" + name + "`.",
        "",
        "## Limitations",
        "- **Source bias**: every `notumor` image comes from another source (Br35H: mostly T2/FLAIR, mixed sizes) "
        "than the tumour images (figshare: contrast T1, 512x512). Grey conversion, head cropping and intensity "
        "normalisation remove some easy cues, but MRI sequence contrast remains, so `notumor` can be recognised "
        "from the sequence rather than the anatomy; its near-perfect scores overstate real-world performance.",
        "- Tumour classes differ in typical view (pituitary mostly coronal/sagittal), another shortcut.",
        "- The split approximates patients by blocks of consecutive slices; patients may still straddle splits.",
        "- Single 2-D slices, one public dataset, 4 classes; no other tumour types and no external validation. "
        "Healthy contrast-T1 slices exist only as counterfactuals (tumours inpainted away) and template slices, "
        "where the recipe lists them. Calibration was fitted on a small hold-out and may not transfer.",
        "- A heatmap shows what raised the score, not where the tumour is (see the localisation numbers).",
        "",
    ]
    return "\n".join(lines)


def _recipe(training: dict) -> list[str]:
    """The recipe's lines; for a soup (core.training.soup), its ingredients and their common recipe."""
    ingredients = training.get("ingredient_records")
    if not ingredients:
        return _run_recipe(training)
    keys = {key for record in ingredients for key in record} - {"history"}
    differ = sorted(key for key in keys if _differs(ingredients, key))
    listed = "; ".join(
        f"`{entry['checkpoint']}` ({entry.get('epochs')} epochs, seed {entry.get('seed')}, "
        f"commit `{entry.get('commit')}`, hold-out {_holdout(entry.get('holdout_metrics') or {}).rstrip('.')})"
        for entry in training["soup_of"]
    )
    return [
        f"- Weights: {training.get('weights')}, made at commit `{training.get('commit')}` from {len(ingredients)} "
        f"run{'s' if len(ingredients) > 1 else ''}: {listed}.",
        f"- The runs differ only in: {', '.join(differ) or 'nothing'}. The first run's recipe:",
        *("  " + line for line in _run_recipe(ingredients[0])),
    ]


def _differs(records: list[dict], key: str) -> bool:
    return any(record.get(key) != records[0].get(key) for record in records)


def _run_recipe(training: dict) -> list[str]:
    return [
        f"- Initialisation: {training.get('init')}"
        + (f"; distilled from `{training.get('teacher')}`" if training.get("teacher") else "")
        + ".",
        *_lineage(training.get("continued_from")),
        f"- {training.get('epochs')} epochs, batch {training.get('batch_size')}, {training.get('optimiser')}; "
        f"{training.get('loss')}.",
        f"- Weights kept: {training.get('weights', 'last step')}.",
        f"- Augmentation: {training.get('augmentation')}.",
        *(f"- {title}: {training[key]}." for key, title in RECIPE_EXTRAS if training.get(key)),
        *(
            [f"- Stochastic depth (timm drop path), rising with depth up to {training['drop_path']}."]
            if training.get("drop_path")
            else []
        ),
        f"- Seed {training.get('seed')}; {training.get('precision', 'float32')}; "
        f"{training.get('seconds', 0) / 60:.0f} min on {training.get('machine')} "
        f"(wall-clock time); trained from commit `{training.get('commit')}`.",
    ]


def _weights_kept(training: dict) -> str:
    if training.get("ingredient_records"):
        return "Each run's final epoch is kept (no early stopping), and their weights are averaged."
    return "The final epoch is kept (no early stopping)."


RECIPE_EXTRAS = (
    ("randomisation", "Sequence and scanner randomisation"),
    ("counterfactuals", "Counterfactual healthy slices"),
    ("healthy_template", "Healthy template slices"),
    ("guidance", "Outline guidance"),
)


def _reliability_section(reliability: Reliability | None) -> list[str]:
    if reliability is None:
        return ["", "## When not to trust it", "", "- No familiarity model is fitted (`python -m core reliability`)."]
    info = reliability.info
    kept = info.get("selective_accuracy")
    return [
        "", "## When not to trust it", "",
        f"- Familiarity: Mahalanobis distance of the features (the pre-logits, and an early stage's channel means "
        f"and spreads{_texture_words(info)}) to the nearest class mean (shared "
        f"Ledoit-Wolf covariance), fitted on the {info.get('fitted_on')}; the score is the share of the "
        f"{info.get('holdout')} lying at least as far. Below {info.get('unfamiliar_below')}: unfamiliar.",
        f"- Uncertain when the top calibrated probability leads the runner-up by less than {reliability.margin:.2f}: "
        f"the smallest lead at which {_whose_predictions(info)} confident predictions are right at least "
        f"{info.get('target_selective_accuracy'):.0%} of the time (they were "
        + (f"{kept:.1%}, keeping {info.get('coverage'):.0%} of the hold-out)." if kept is not None else "never; "
           "every prediction is marked uncertain).")
        + _refit_words(info),
    ]  # fmt: skip


def _whose_predictions(info: dict) -> str:
    twin = info.get("margin_from")
    if twin:
        return f"the twin run's (`{twin['checkpoint']}`, the same recipe with the hold-out kept out)"
    return "the hold-out's"


def _refit_words(info: dict) -> str:
    if not info.get("refit_without_holdout"):
        return ""
    refit = " The weights were refit on the hold-out, so"
    if info.get("margin_from"):
        return f"{refit} the familiarity threshold is fitted on slices they trained on."
    return f"{refit} these thresholds are optimistic."


def _stress_section(stress: dict) -> list[str]:
    """The stress test on the reported split: every shift, occlusion, calibration under shift."""
    trust = "coverage" in stress["table"][0]
    head = "| condition | accuracy | macro-F1 | ECE |" + (
        " unfamiliar | familiarity AUC | kept | kept accuracy |" if trust else ""
    )
    lines = [
        "", f"## Stress test on {stress['images']} ({stress['num_images']} images, commit `{stress.get('commit')}`)",
        "",
        "Each image changed as another scanner or protocol might (`python -m core stress`; shifts: "
        + "; ".join(f"{name}: {describe}" for name, describe in stress["shifts"].items())
        + "). Kept: neither uncertain nor unfamiliar (selective prediction); familiarity AUC: how well the score "
        "tells these images from the unshifted ones.", "", head,
        "|" + "---|" * (head.count("|") - 1),
    ]  # fmt: skip
    for row in stress["table"]:
        line = f"| {row['condition']} | {row['accuracy']:.3f} | {row['macro_f1']:.3f} | {row['ece']:.3f} |"
        if trust:
            kept = "-" if row["selective_accuracy"] is None else f"{row['selective_accuracy']:.3f}"
            line += f" {row['unfamiliar']:.2f} | {row['familiarity_auc']:.2f} | {row['coverage']:.2f} | {kept} |"
        lines.append(line)
    mean, worst = stress["mean_shifted_accuracy"], stress["worst_shift"]
    lines += ["", f"Mean accuracy under shift {mean:.3f}; worst: {worst}.", "",
              "Occlusion (correctly classified tumour images with an outline; share whose prediction leaves the class "
              "when the outline is filled, against the same shape filled at a random place in the head):", "",
              "| class | images | median fill | inpainted (Navier-Stokes, never used in training) | random region |",
              "|---|---|---|---|---|"]  # fmt: skip
    for name, row in stress["occlusion"].items():
        control = "n/a" if row["random region"] is None else f"{row['random region']:.2f}"
        lines.append(f"| {name} | {row['images']} | {row['sensitivity (median fill)']:.2f} | "
                     f"{row['sensitivity (ns fill)']:.2f} | {control} |")  # fmt: skip
    calibration = stress.get("temperature_under_shift")
    if calibration:
        unseen, clean = calibration["mean_ece_on_unseen_shifts"], calibration["clean_ece"]
        shipped, pooled = calibration["clean_temperature"], calibration["pooled_temperature"]
        lines += ["", f"Calibration under shift: the shipped temperature {shipped:.3f} gives ECE {clean['clean']:.3f} "
                  f"here and {unseen['clean']:.3f} on average under shift; one fitted on these images with their "
                  f"shifts ({pooled:.3f}) would give {clean['pooled']:.3f} and {unseen['pooled']:.3f} (on shift "
                  "families it was not fitted on)."]  # fmt: skip
    return lines


def _holdout_role(training: dict) -> str:
    source = training.get("temperature_from")
    soup = bool(training.get("ingredient_records"))
    logs = "Every averaged run kept it aside; it gives their per-epoch logs" if soup else "It gives the per-epoch log"
    if not source:
        return f"{logs} and the temperature."
    if "rule" in source:  # calibrate --under-shift
        return f"{logs} and the temperature, {source['rule']}."
    return (f"A twin run of the same recipe (`{source['checkpoint']}`, not shipped) held out {source['holdout']}; "
            f"that hold-out checks the recipe ({_holdout(source['holdout_metrics']).rstrip('.')}) "
            "and gives the temperature.")  # fmt: skip


def _temperature_source(training: dict) -> str:
    source = training.get("temperature_from")
    if source and "rule" in source:
        return "the hold-out with its stress-test shifts"
    return "the twin run's hold-out" if source else "the hold-out"


def _lineage(previous: dict | None) -> list[str]:
    """One line per earlier run this checkpoint continued from, oldest first."""
    if not previous:
        return []
    teacher = f", distilled from `{previous['teacher']}`" if previous.get("teacher") else ""
    holdout = _holdout(previous.get("holdout_metrics", {})).rstrip(".")
    line = (f"- Continued from a run of {previous.get('epochs')} epochs (initialisation: {previous.get('init')}"
            f"{teacher}; {previous.get('optimiser')}; {previous.get('seconds', 0) / 60:.0f} min; commit "
            f"`{previous.get('commit')}`; hold-out then: {holdout}).")  # fmt: skip
    return [*_lineage(previous.get("continued_from")), line]


def _verdict(value: float, target: float | None, at_least: bool, wrap: bool = False) -> str:
    """'; target >= 0.93: NOT met' (or ' (target ...)' with wrap); empty when there is no target."""
    if target is None:
        return ""
    met = value >= target if at_least else value <= target
    text = f"target {'>=' if at_least else '<='} {target:.2f}: {'met' if met else 'NOT met'}"
    return f" ({text})" if wrap else f"; {text}"


def _holdout(metrics: dict) -> str:
    if not metrics:
        return "none."
    return (f"{metrics['num_images']} images, accuracy {metrics['accuracy']:.3f}, macro-F1 {metrics['macro_f1']:.3f}, "
            f"ECE {metrics['ece_before_temperature']:.3f} -> {metrics['ece_after_temperature']:.3f}.")  # fmt: skip


def _localisation_section(summaries: list[dict], default_layer: str) -> list[str]:
    split = summaries[0]["split"]
    baselines = baseline_summary(Path(summaries[0]["data"]), split) if Path(summaries[0]["data"]).is_dir() else []
    lines = ["", f"## Localisation on {split} (tumour images with outlines; mean over images)", "",
             "| method | layer | IoU@thr | IoU Otsu | pointing game | mass inside tumour | mass outside brain | "
             "pointing lift | IoU lift | ms/image |", "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    best = None
    for row in method_table(summaries, baselines):
        layer = row["layer"] or (default_layer if row["model"] != "(baseline)" else "-")
        cells = [f"{row[c]:.3f}" if row[c] is not None else "n/a" for c in LOCALISATION_COLUMNS]
        lifts = [f"{row.get(k):.2f}x" if row.get(k) is not None else "-" for k in ("pointing_game_lift", "iou_lift")]
        time_per_image = f"{row['ms_per_image']:.0f}" if row.get("ms_per_image") else "-"
        lines.append(f"| {row['method']} | {layer} | " + " | ".join(cells + lifts) + f" | {time_per_image} |")
        if row["model"] != "(baseline)" and row["iou"] is not None and (best is None or row["iou"] > best[1]):
            best = (row["method"], row["iou"], layer)
    thresholds = {s["heatmaps"]["threshold"] for s in summaries}
    levels = ", ".join(f"{t:.2f}" for t in sorted(thresholds))
    lines += ["", f"Threshold {levels} (relative to each heatmap's maximum); brain masking on. "
              "`mass outside brain` is measured on the unmasked heatmap, over all images. The baselines know "
              "nothing of the model (uniform in the head, a centred Gaussian, the slice's brightness); a lift is a "
              "method's value over the best baseline's."]  # fmt: skip
    if best:
        lines.append(f"Best IoU: **{best[0]}** at layer `{best[2]}` ({best[1]:.3f}).")
    return lines


def _faithfulness_section(summary: dict) -> list[str]:
    """Deletion and insertion AUC of the default heatmap against random maps' (evaluate --faithfulness)."""
    means = summary["faithfulness"]

    def cell(column: str) -> str:
        value = means[column]
        low, high = value["ci95"]
        return f"{value['mean']:.3f} [{low:.3f}, {high:.3f}]"

    sample = summary.get("sample", "every image")
    heatmaps = summary.get("heatmaps", {})
    commit = f", commit `{summary['commit']}`" if summary.get("commit") else ""
    return ["", f"## Faithfulness on {summary['split']} ({summary['num_images']} images: {sample}{commit})", "",
            f"Deletion and insertion of the default heatmap ({heatmaps.get('method')} at "
            f"`{heatmaps.get('target_layer')}`) against smooth random maps, mean [95 % interval]. Deletion: lower "
            "is more faithful; insertion: higher is.", "",
            "| curve | heatmap | random maps |", "|---|---|---|",
            f"| deletion AUC | {cell('deletion_auc')} | {cell('random_deletion_auc')} |",
            f"| insertion AUC | {cell('insertion_auc')} | {cell('random_insertion_auc')} |"]  # fmt: skip


def _sanity_section(report: dict) -> list[str]:
    """The model-parameter randomisation check per method (python -m core sanity)."""
    commit = f", commit `{report['commit']}`" if report.get("commit") else ""
    lines = ["", f"## Sanity check on {report['split']} (the first {report['images']} outlined tumour images{commit})",
             "",
             "Every layer randomised from the top down (Adebayo et al. 2018): a heatmap that still correlates "
             "with the original (rank correlation 0.5 or more) shows the image, not the model."
             + (f" Each CAM at the default layer `{report['layer']}`." if report.get("layer") else ""), "",
             "| method | rank correlation | SSIM | passes |", "|---|---|---|---|"]  # fmt: skip
    for row in report["methods"]:
        lines.append(f"| {row['method']} | {row['rank correlation, all randomised']:.2f} | "
                     f"{row['SSIM, all randomised']:.2f} | {'yes' if row['passes'] else 'no'} |")  # fmt: skip
    return lines


def _default_heatmap(config: ModelConfig) -> list[str]:
    """How the default method and layer were chosen (core.sweep), when they were."""
    choice = config.default_choice
    name = heatmap_name(config.default_method, config.default_target_layer, "`")
    if not choice:
        return [f"- Default heatmap: {name} (not chosen by a sweep)."]
    pointing, iou, baseline = choice["pointing_game"], choice["iou"], choice["best_baseline"]
    return [
        f"- Default heatmap: {name.replace(config.default_method, f'**{config.default_method}**', 1)}, chosen on "
        f"`{choice['split']}` ({choice['images']} outlined tumours) by the rule: {choice['rule']}. There: pointing "
        f"game {pointing['mean']:.3f} [{pointing['ci95'][0]:.3f}, {pointing['ci95'][1]:.3f}], IoU@0.5 "
        f"{iou['mean']:.3f}; best baseline ({baseline['name']}) pointing game {baseline['pointing_game']['mean']:.3f}, "
        f"IoU {baseline['iou']['mean']:.3f}."
        + (
            f" Randomisation check there: rank correlation {choice['sanity_rank_correlation']:.2f} with every layer "
            "randomised (passes below 0.5)."
            if "sanity_rank_correlation" in choice
            else ""
        )
    ]


def card_summary(checkpoint: str | Path, bullets: int = 2, width: int = 260) -> list[str]:
    """A few lines for a case report: the training data, the test result and the first known
    biases, read from the checkpoint's config.json and README.md model card."""
    directory = resolve_checkpoint(checkpoint)
    lines = []
    sections = _card_sections(directory / "README.md")
    data = [line[2:] for line in sections.get("Data and split", []) if line.startswith("- ")]
    if data:
        lines.append(_shorten(data[0], width))
    metrics = read_config(directory).metrics
    if metrics.get("accuracy") is not None:
        lines.append(f"Measured on {metrics.get('split', 'test')} ({metrics.get('num_images', '?')} images): accuracy "
                     f"{metrics['accuracy']:.3f}, macro-F1 {metrics.get('macro_f1', float('nan')):.3f} "
                     f"(commit {metrics.get('measured_by_commit', '?')}).")  # fmt: skip
    else:
        lines.append("No test measurement is recorded for this model.")
    biases = [line[2:] for line in sections.get("Limitations", []) if line.startswith("- ")][:bullets]
    lines += [f"Known bias: {_shorten(bias.replace('**', ''), width)}" for bias in biases]
    return lines


def _card_sections(path: Path) -> dict[str, list[str]]:
    sections: dict[str, list[str]] = {}
    heading = None
    try:
        text = path.read_text()
    except OSError:
        return {}
    for line in text.splitlines():
        if line.startswith("## "):
            heading = line[3:].strip()
            sections[heading] = []
        elif heading:
            sections[heading].append(line.strip())
    return sections


def _shorten(text: str, width: int) -> str:
    text = text.replace("`", "")
    return text if len(text) <= width else text[: width - 1].rsplit(" ", 1)[0] + "..."


def _texture_words(info: dict) -> str:
    """How the card names the familiarity blocks (core.reliability.fit's info)."""
    blocks = info.get("feature_blocks", [])
    if len(blocks) < 2:
        return ""
    shares = ", and the shares of flat pixels and linear ramps (heavy JPEG, lost resolution)"
    extra = {TEXTURE_SIZE: shares + ", and the tilt of intensity across the head (a coil's bias field)",
             TEXTURE_SIZE - 2: shares,
             TEXTURE_SIZE - 3: ", and the share of flat pixels (heavy JPEG, lost resolution)"}  # fmt: skip
    return (
        "; and, as a second block weighed alike, texture statistics of the input: Laplacian-pyramid band "
        "energies and kurtosis inside the head" + extra.get(blocks[-1][1] - blocks[-1][0], "")
    )
