"""Explain files from the command line: overlay and heatmap PNGs plus one results.json."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from core.checkpoint import load_checkpoint
from core.explain import ExplainError, explain
from core.image_input import ImageInputError, load_image
from core.render import heatmap_rgb, overlay, png_bytes


def explain_files(
    paths: list[Path],
    checkpoint: str | Path,
    out: Path,
    *,
    method: str = "Grad-CAM",
    target: str | None = None,
    brain_mask: bool = True,
) -> list[dict]:
    """Explain each file; a bad file gets an `error` entry and the rest go on.

    Returns:
        One dict per input (also written to OUT/results.json).
    """
    loaded = load_checkpoint(checkpoint)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for index, path in enumerate(paths):
        entry = {"image": str(path)}
        try:
            image = load_image(path.read_bytes(), path.name).pixels
            result = explain(
                loaded, image, method=method, target=target, mask_input=brain_mask, mask_heatmap=brain_mask
            )
        except (ImageInputError, ExplainError, OSError) as error:
            message = error.strerror if isinstance(error, OSError) else str(error)
            print(f"{path}: {message}", file=sys.stderr)
            entry["error"] = message
            results.append(entry)
            continue
        stem = f"{index:04d}_{_stem(path)}"
        (out / f"{stem}_overlay.png").write_bytes(png_bytes(overlay(image, result.heatmap)))
        (out / f"{stem}_heatmap.png").write_bytes(png_bytes(heatmap_rgb(result.heatmap)))
        entry.update(result.summary(), overlay=f"{stem}_overlay.png", heatmap=f"{stem}_heatmap.png")
        results.append(entry)
    run = {"checkpoint": loaded.name, "method": method, "images": results}
    (out / "results.json").write_text(json.dumps(run, indent=2) + "\n")
    return results


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", path.suffix):
        if suffix and name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name
