"""Choose each checkpoint's default heatmap by measurement: every method at every candidate
layer, against trivial baselines, on a split's outlined tumours.

The rule (committed before the first sweep ran, see RULE): rank by mean pointing game of the
heatmap as the app shows it; eligible only with mean IoU@0.5 at least the best baseline's and
at most MAX_MS_PER_IMAGE per image; within TIE of the best, the higher IoU@0.5 wins, then the
faster. Choose on `val` (or the training splits), report on `test`.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from core.annotations import annotation_path, load_outline
from core.brain_mask import detect_brain_mask
from core.checkpoint import LoadedModel, load_checkpoint
from core.config import read_config, resolve_checkpoint, write_config
from core.dataset import holdout_records, list_split
from core.evaluation_store import LOCALISATION_COLUMNS
from core.explain import CAM_METHODS, apply_brain_mask, explain_batch
from core.explanation import INPUT_ATTRIBUTIONS, SLOW_METHODS, ExplainSettings, heatmap_name
from core.image_input import load_image
from core.localisation import bootstrap_mean, localisation_metrics, mass_inside

METRICS = ("pointing_game", "iou", "iou_otsu", "mass_inside_tumour", "mass_outside_brain")
THRESHOLD = 0.5
MAX_MS_PER_IMAGE = 1000.0
TIE = 0.01
SANITY_IMAGES = 8
RULE = (
    f"highest mean pointing game (brain-masked heatmap) among candidates with mean IoU@{THRESHOLD} >= the best "
    f"trivial baseline's and <= {MAX_MS_PER_IMAGE:.0f} ms per image; within {TIE} of the best, higher IoU@{THRESHOLD}, "
    f"then faster; the winner must pass the randomisation sanity check on the split's first {SANITY_IMAGES} outlined "
    "tumours, else the next in that order"
)
# Candidate layers per architecture family: each stage or block output, and the head.
CANDIDATE_LAYERS = {
    "tf_efficientnet_lite": ("blocks.2", "blocks.3", "blocks.4", "blocks.5", "blocks.6", "conv_head"),
    "convnext": ("stages.0", "stages.1", "stages.2", "stages.3"),
}


@dataclass(frozen=True)
class Candidate:
    method: str  # a CAM method, an input attribution, or a baseline's name
    layer: str | None  # None for a baseline or an input attribution (it explains the input pixels)
    means: dict[str, dict]  # metric -> bootstrap_mean() (mean, ci95, n)
    ms_per_image: float

    def mean(self, metric: str) -> float:
        return self.means[metric]["mean"]


def candidate_layers(architecture: str) -> tuple[str, ...]:
    family = next((prefix for prefix in CANDIDATE_LAYERS if architecture.startswith(prefix)), None)
    if family is None:
        raise ValueError(f"No candidate layers are known for {architecture}; pass --layers.")
    return CANDIDATE_LAYERS[family]


def candidates(architecture: str, layers: tuple[str, ...] | None = None) -> list[tuple[str, str | None]]:
    """(method, layer) pairs: every CAM method but the slow ones at every layer, LayerCAM fused
    over the last three layers (pytorch-grad-cam averages the scaled per-layer maps), and each
    fast input attribution (layer None: it explains the input pixels)."""
    layers = layers or candidate_layers(architecture)
    pairs = [(method, layer) for method in CAM_METHODS if method not in SLOW_METHODS for layer in layers]
    if len(layers) >= 3:
        pairs.append(("LayerCAM", "+".join(layers[-3:])))
    return pairs + [(method, None) for method in INPUT_ATTRIBUTIONS if method not in SLOW_METHODS]


def baseline_maps(image: np.ndarray, head: np.ndarray | None) -> dict[str, np.ndarray]:
    """Heatmaps that know nothing of the model: uniform in the head, a centred Gaussian (sigma a
    quarter of the side), and the slice's own brightness; each zeroed outside the head, as the
    app masks its heatmaps."""
    height, width = image.shape
    rows, cols = np.mgrid[0:height, 0:width]
    sigma = 0.25 * max(height, width)
    gaussian = np.exp(-(((rows - (height - 1) / 2) ** 2 + (cols - (width - 1) / 2) ** 2) / (2 * sigma**2)))
    inside = head if head is not None else np.ones(image.shape, dtype=bool)
    maps = {"uniform in head": inside.astype(np.float32), "centred Gaussian": gaussian.astype(np.float32),
            "brightness in head": image.astype(np.float32)}  # fmt: skip
    return {name: apply_brain_mask(values * inside, inside) for name, values in maps.items()}


@dataclass(frozen=True)
class OutlinedCase:
    image: np.ndarray
    tumour: np.ndarray


# The split name under which the sweep reads the grouped hold-out of train+val that `train` keeps
# aside: the outlines a model trained with outline guidance has never seen.
HOLDOUT = "train+val hold-out"


def _records(root: Path, split: str, label_names: list[str]):
    return holdout_records(root, label_names) if split == HOLDOUT else list_split(root, split, label_names)


def load_outlined_cases(
    root: Path, split: str, label_names: list[str], limit: int | None, seed: int
) -> list[OutlinedCase]:
    """The split's images with a tumour outline, at most `limit` drawn at random (seeded)."""
    records = _records(root, split, label_names)
    order = np.random.default_rng(seed).permutation(len(records)) if limit else range(len(records))
    cases = []
    for index in order:
        record = records[index]
        if not annotation_path(root, record.image).is_file():
            continue  # no outline: not decoded at all (the no-tumour images)
        path = Path(root) / record.image
        image = load_image(path.read_bytes(), path.name).pixels
        outline = load_outline(root, record.image, image.shape)
        if outline.mask is not None:
            cases.append(OutlinedCase(image, outline.mask))
        if limit and len(cases) >= limit:
            break
    return cases


def baseline_summary(root: Path, split: str, label_names: list[str] | None = None) -> list[dict]:
    """The trivial baselines on every outlined tumour of ROOT/SPLIT: one row per baseline with
    its metrics' bootstrap means (what a method must beat to mean anything)."""
    label_names = label_names or sorted(p.name for p in (Path(root) / split).iterdir() if p.is_dir())
    cases = load_outlined_cases(root, split, label_names, None, 0)
    heads = [detect_brain_mask(case.image).mask for case in cases]
    return [asdict(baseline) for baseline in _baselines(cases, heads)]


def _baselines(cases: list[OutlinedCase], heads: list[np.ndarray | None]) -> list[Candidate]:
    """Each trivial baseline scored on the cases, with the head masks the heatmaps were masked by."""
    per_case = [baseline_maps(case.image, head) for case, head in zip(cases, heads)]
    names = list(per_case[0]) if per_case else []
    return [
        _summarise(
            name, None, _score([maps[name] for maps in per_case], [None] * len(cases), heads, cases), 0.0, len(cases)
        )  # fmt: skip
        for name in names
    ]


def lift(value: float | None, baselines: list[dict], metric: str) -> float | None:
    """`value` over the best baseline's mean of `metric` (None when either is missing or zero)."""
    best = max((b["means"][metric]["mean"] or 0.0 for b in baselines), default=0.0)
    return round(value / best, 2) if value is not None and best > 0 else None


def outlined_slices(root: Path, split: str, label_names: list[str], limit: int) -> list[np.ndarray]:
    """`limit` slices of ROOT/SPLIT that have a tumour outline, drawn at random (seed 0)."""
    return [case.image for case in load_outlined_cases(root, split, label_names, limit, 0)]


def _score(heatmaps: list[np.ndarray], raws: list[np.ndarray | None], heads, cases) -> dict[str, list]:
    values: dict[str, list] = {metric: [] for metric in METRICS}
    for shown, raw, head, case in zip(heatmaps, raws, heads, cases):
        metrics = localisation_metrics(shown, case.tumour, THRESHOLD, head=head)
        for metric in METRICS[:-1]:
            values[metric].append(float(metrics[metric]))
        values["mass_outside_brain"].append(mass_inside(raw, ~head) if head is not None and raw is not None else None)
    return values


def _summarise(method: str, layer: str | None, values: dict[str, list], seconds: float, n: int) -> Candidate:
    means = {metric: bootstrap_mean(values[metric]) for metric in METRICS}
    return Candidate(method, layer, means, 1000 * seconds / max(n, 1))


def sweep(
    checkpoint: str | Path,
    root: Path,
    split: str = "val",
    *,
    layers: tuple[str, ...] | None = None,
    limit: int | None = None,
    seed: int = 0,
    batch_size: int = 16,
    progress: bool = True,
) -> dict:
    """Localisation of every candidate and baseline on ROOT/SPLIT's outlined tumours, and the
    winner by RULE. Returns a JSON-ready report."""
    loaded = load_checkpoint(checkpoint)
    cases = load_outlined_cases(root, split, list(loaded.config.label_names), limit, seed)
    if not cases:
        where = f"The {split} of {root}" if split == HOLDOUT else str(Path(root) / split)
        raise ValueError(f"{where} has no image with a tumour outline in {Path(root) / 'annotations'}.")
    pairs = candidates(loaded.config.architecture, layers)
    results, heads = [], None
    for method, layer in tqdm(pairs, desc="sweep", disable=not progress):
        candidate, heads = _sweep_one(loaded, cases, method, layer, batch_size)
        results.append(candidate)
    baselines = _baselines(cases, heads)
    winner, sanity = _first_sane(loaded, ranked(results, baselines), root, split)
    return {
        "checkpoint": loaded.name,
        "data": str(Path(root).resolve()),
        "split": split,
        "images": len(cases),
        "threshold": THRESHOLD,
        "rule": RULE,
        "candidates": [asdict(c) for c in results],
        "baselines": [asdict(b) for b in baselines],
        "sanity": sanity,
        "winner": asdict(winner) if winner else None,
    }


def _sweep_one(loaded: LoadedModel, cases: list[OutlinedCase], method: str, layer: str | None, batch_size: int):
    settings = ExplainSettings(method, None, layer, mask_input=True, mask_heatmap=False)
    shown, raws, heads = [], [], []
    started = time.perf_counter()
    for start in range(0, len(cases), batch_size):
        batch = cases[start : start + batch_size]
        for explanation in explain_batch(loaded, [case.image for case in batch], settings):
            raws.append(explanation.heatmap)
            heads.append(explanation.brain_mask)
            shown.append(apply_brain_mask(explanation.heatmap, explanation.brain_mask))
    seconds = time.perf_counter() - started
    return _summarise(method, layer, _score(shown, raws, heads, cases), seconds, len(cases)), heads


def choose(results: list[Candidate], baselines: list[Candidate]) -> Candidate | None:
    """RULE applied to the candidates; None when no candidate is eligible."""
    floor = max(b.mean("iou") for b in baselines)
    eligible = [c for c in results if c.mean("iou") >= floor and c.ms_per_image <= MAX_MS_PER_IMAGE]
    if not eligible:
        return None
    best = max(c.mean("pointing_game") for c in eligible)
    tied = [c for c in eligible if c.mean("pointing_game") >= best - TIE]
    return max(tied, key=lambda c: (c.mean("iou"), -c.ms_per_image))


def ranked(results: list[Candidate], baselines: list[Candidate]) -> list[Candidate]:
    """The eligible candidates in RULE's order of preference."""
    order, left = [], list(results)
    while (best := choose(left, baselines)) is not None:
        order.append(best)
        left.remove(best)
    return order


def _first_sane(loaded: LoadedModel, order: list[Candidate], root: Path, split: str) -> tuple[Candidate | None, list]:
    """The first candidate whose heatmap changes when the model's weights are randomised, and
    the checks run on the way (a method that shows the image, not the model, is no default)."""
    from core.sanity import randomisation_check  # core.sanity uses this module's outlined_slices

    slices = outlined_slices(Path(root), split, list(loaded.config.label_names), SANITY_IMAGES)
    checks = []
    for candidate in order:
        settings = ExplainSettings(candidate.method, None, candidate.layer, mask_input=True, mask_heatmap=True)
        check = randomisation_check(loaded, slices, settings)
        checks.append({"method": candidate.method, "layer": candidate.layer, **check.to_dict()})
        if check.passed:
            return candidate, checks
    return None, checks


def apply_winner(checkpoint: str | Path, report: dict) -> None:
    """Write the winner into config.json as default_method and default_target_layer (kept for
    the CAM methods when the winner is an input attribution), with the split, rule and numbers
    it was chosen by (default_choice)."""
    winner = report["winner"]
    if winner is None:
        raise ValueError("No candidate met the rule, so there is nothing to apply.")
    directory = resolve_checkpoint(checkpoint)
    best_baseline = max(report["baselines"], key=lambda b: b["means"]["iou"]["mean"])
    choice = {
        "split": report["split"],
        "images": report["images"],
        "rule": report["rule"],
        "pointing_game": winner["means"]["pointing_game"],
        "iou": winner["means"]["iou"],
        "ms_per_image": round(winner["ms_per_image"], 1),
        "best_baseline": {
            "name": best_baseline["method"],
            "iou": best_baseline["means"]["iou"],
            "pointing_game": best_baseline["means"]["pointing_game"],
        },  # fmt: skip
    }
    passed = [check for check in report.get("sanity", []) if check["passed"]]
    if passed:  # the winner's randomisation check: the last one run, the first that passed
        choice["sanity_rank_correlation"] = passed[-1]["spearman"][-1]
    config = read_config(directory)
    config = replace(config, default_method=winner["method"], default_choice=choice,
                     default_target_layer=winner["layer"] or config.default_target_layer)  # fmt: skip
    write_config(directory, config)


def print_report(report: dict) -> None:
    print(f"{report['checkpoint']} on {report['split']}: {report['images']} outlined tumours; rule: {report['rule']}")
    print("method | layer | pointing game [95 % CI] | IoU@0.5 | IoU Otsu | mass inside | mass outside brain | ms/img")
    for row in sorted(report["candidates"] + report["baselines"], key=lambda r: -r["means"]["pointing_game"]["mean"]):
        m = row["means"]
        cells = [f"{m[k]['mean']:.3f}" if m[k]["mean"] is not None else "n/a" for k in METRICS[1:]]
        ci = m["pointing_game"]["ci95"]
        where = row["layer"] or ("(input)" if row["method"] in INPUT_ATTRIBUTIONS else "(baseline)")
        print(f"{row['method']} | {where} | {m['pointing_game']['mean']:.3f} "
              f"[{ci[0]:.3f}, {ci[1]:.3f}] | " + " | ".join(cells) + f" | {row['ms_per_image']:.0f}")  # fmt: skip
    for check in report.get("sanity", []):
        print(f"sanity check, {heatmap_name(check['method'], check['layer'])}: {check['verdict']}")
    winner = report["winner"]
    print(f"winner: {heatmap_name(winner['method'], winner['layer'])}" if winner else "winner: none meets the rule")


def write_report(report: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")


def method_table(summaries: list[dict], baselines: list[dict] = ()) -> list[dict]:
    """One row per (model, method, layer) evaluation, then one per trivial baseline: mean
    localisation metrics, each method's lift over the best baseline (pointing game, IoU), and
    time per image."""
    table = []
    for summary in summaries:
        overall = summary.get("localisation", {}).get("all", {})
        settings = summary["heatmaps"]
        row = {"model": summary["checkpoint"], "method": settings["method"], "layer": settings.get("target_layer")}
        row.update({column: (overall.get(column) or {}).get("mean") for column in LOCALISATION_COLUMNS})
        for metric in ("pointing_game", "iou"):
            row[f"{metric}_lift"] = lift(row[metric], list(baselines), metric)
        speed = summary.get("images_per_second")
        row["ms_per_image"] = round(1000 / speed, 1) if speed else None
        table.append(row)
    for baseline in baselines:
        row = {"model": "(baseline)", "method": baseline["method"], "layer": None}
        row.update({column: baseline["means"].get(column, {}).get("mean") for column in LOCALISATION_COLUMNS})
        table.append(row)
    return table
