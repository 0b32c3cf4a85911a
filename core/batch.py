"""Explain files and folders from the command line.

Writes, mirroring the input tree under OUT: `<stem>_overlay.png` and `<stem>_heatmap.png`
per image, plus `results.json` and `summary.csv` for the run. A bad file is reported in its
row and the batch goes on.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

from tqdm import tqdm

from core.checkpoint import load_checkpoint
from core.explain import ExplainError, ExplainSettings, explain
from core.image_input import SUPPORTED_SUFFIXES, ImageInputError, load_image
from core.render import explanation_panels, png_bytes


def expand_inputs(paths: list[Path]) -> list[tuple[Path, Path]]:
    """(file, output stem relative to OUT) for each file; folders are searched recursively."""
    pairs = []
    for path in paths:
        if path.is_dir():
            for file in sorted(
                p for p in path.rglob("*") if p.is_file() and p.name.lower().endswith(SUPPORTED_SUFFIXES)
            ):
                pairs.append((file, Path(path.name) / file.relative_to(path).parent / _stem(file)))
        else:
            pairs.append((path, Path(_stem(path))))
    seen: dict[Path, int] = {}
    unique = []
    for file, stem in pairs:  # two inputs with the same name get _2, _3, ...
        seen[stem] = seen.get(stem, 0) + 1
        unique.append((file, stem if seen[stem] == 1 else stem.with_name(f"{stem.name}_{seen[stem]}")))
    return unique


def explain_files(
    paths: list[Path],
    checkpoint: str | Path,
    out: Path,
    settings: ExplainSettings = ExplainSettings(),
    *,
    progress: bool = True,
) -> list[dict]:
    """Explain every image; returns one dict per input (also in results.json / summary.csv)."""
    loaded = load_checkpoint(checkpoint)
    settings = settings.resolved(loaded.config)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for path, stem in tqdm(expand_inputs(paths), desc="explain", unit="image", disable=not progress):
        entry = {"image": str(path)}
        try:
            image = load_image(path.read_bytes(), path.name).pixels
            result = explain(loaded, image, settings)
        except (ImageInputError, ExplainError, OSError) as error:
            message = error.strerror if isinstance(error, OSError) else str(error)
            tqdm.write(f"{path}: {message}", file=sys.stderr)
            results.append({**entry, "error": message})
            continue
        (out / stem).parent.mkdir(parents=True, exist_ok=True)
        overlay_path, heatmap_path = (out / f"{stem}_overlay.png", out / f"{stem}_heatmap.png")
        pictures = explanation_panels(image, result.heatmap)
        overlay_path.write_bytes(png_bytes(pictures.overlay))
        heatmap_path.write_bytes(png_bytes(pictures.heatmap))
        entry.update(result.summary(), overlay=str(overlay_path.relative_to(out)),
                     heatmap=str(heatmap_path.relative_to(out)))  # fmt: skip
        results.append(entry)
    run = {"checkpoint": loaded.name, "method": settings.method, "images": results}
    (out / "results.json").write_text(json.dumps(run, indent=2) + "\n")
    _write_summary_csv(out / "summary.csv", results, loaded.config.label_names, settings.method)
    return results


def _write_summary_csv(path: Path, results: list[dict], label_names, method: str) -> None:
    columns = ["path", "prediction", "confidence", *(f"p_{n}" for n in label_names), "familiarity", "unfamiliar",
               "uncertain", "method", "brain_masked", "error"]  # fmt: skip
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for entry in results:
            probabilities = entry.get("probabilities", {})
            writer.writerow(
                [entry["image"], entry.get("prediction", ""), entry.get("confidence", ""),
                 *(probabilities.get(n, "") for n in label_names), _blank_if_none(entry.get("familiarity")),
                 entry.get("unfamiliar", ""), entry.get("uncertain", ""), method,
                 entry.get("brain_masked", ""), entry.get("error", "")]
            )  # fmt: skip


def _blank_if_none(value):
    return "" if value is None else value


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", path.suffix):
        if suffix and name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name
