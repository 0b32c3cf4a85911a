"""Explain files and folders from the command line.

Writes, mirroring the input tree under OUT: `<stem>_overlay.png` and `<stem>_heatmap.png`
per image, plus `results.json` and `summary.csv` for the run. A bad file is reported in its
row and the batch goes on. With `--all-slices`, every slice of each volume gets a row and the
most suspicious slices get `<stem>_slice<NNN>_overlay.png` and `_heatmap.png`.
"""

from __future__ import annotations

import csv
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from core.checkpoint import LoadedModel, load_checkpoint
from core.config import resolve_checkpoint
from core.explain import explain
from core.explanation import ExplainError, ExplainSettings
from core.image_input import SUPPORTED_SUFFIXES, ImageInputError, load_image, sniffed_kind
from core.render import explanation_panels, png_bytes

if TYPE_CHECKING:
    from core.report import ReportScan


def expand_inputs(paths: list[Path]) -> list[tuple[Path, Path]]:
    """(file, output stem relative to OUT) for each file; folders are searched recursively."""
    pairs = []
    for path in paths:
        if path.is_dir():
            for file in sorted(p for p in path.rglob("*") if p.is_file() and _is_scan(p)):
                pairs.append((file, Path(path.name) / file.relative_to(path).parent / _stem(file)))
        else:
            pairs.append((path, Path(_stem(path))))
    seen: dict[Path, int] = {}
    unique = []
    for file, stem in pairs:  # two inputs with the same name get _2, _3, ...
        seen[stem] = seen.get(stem, 0) + 1
        unique.append((file, stem if seen[stem] == 1 else stem.with_name(f"{stem.name}_{seen[stem]}")))
    return unique


@dataclass(frozen=True)
class ExplainedFile:
    """One input's result as an engine hands it back: its row, and its two pictures as PNG
    bytes (None where the file failed; the row then says why)."""

    entry: dict
    overlay_png: bytes | None = None
    heatmap_png: bytes | None = None
    report_page: ReportScan | None = None  # with report=True


def explain_file(
    loaded: LoadedModel, path: Path, settings: ExplainSettings, report: bool = False, axis: int = 2
) -> ExplainedFile:
    """Read, explain and draw one file (a volume's middle slice along `axis`, as load_image
    takes it): the unit of work of every engine."""
    entry = {"image": str(path)}
    try:
        data = path.read_bytes()
        loaded_image = load_image(data, path.name, axis=axis)
        image = loaded_image.pixels
        result = explain(loaded, image, settings)
    except (ImageInputError, ExplainError, OSError) as error:
        return ExplainedFile({**entry, "error": _message(error)})
    page = _report_page(path, data, loaded_image, result) if report else None
    entry = {**entry, **result.summary(), "image_notes": list(loaded_image.notes)}
    return ExplainedFile(entry, *_panel_pngs(image, result.heatmap), report_page=page)


def _report_page(path: Path, data: bytes, image, result, **extra) -> ReportScan:
    from core.report import ReportScan

    return ReportScan.of_file(path.name, data, image, result, **extra)


def write_report(out: Path, pages: list[ReportScan], checkpoint: str | Path, model_name: str) -> Path | None:
    """OUT/report.pdf with one page per explained scan (core.report); None when nothing was explained."""
    from core.model_card import card_summary
    from core.report import case_report

    if not pages:
        return None
    path = out / "report.pdf"
    path.write_bytes(case_report(pages, model_name, card_summary(checkpoint)))
    return path


def explain_files(
    paths: list[Path],
    checkpoint: str | Path,
    out: Path,
    settings: ExplainSettings = ExplainSettings(),
    *,
    progress: bool = True,
    engine: str = "local",
    address: str | None = None,
    workers: int | None = None,
    report: bool = False,
    axis: int = 2,
) -> list[dict]:
    """Explain every image; returns one dict per input (also in results.json / summary.csv).

    Args:
        axis: the axis NIfTI volumes are sliced along (2 axial, 1 coronal, 0 sagittal).
        engine: "local" (this process) or "ray" (an actor pool, core.distributed; `address`
            and `workers` are its cluster and pool size). Both write the same files and rows.
        report: also write OUT/report.pdf, a case report page per explained image (local engine).
    """
    loaded = load_checkpoint(checkpoint)
    settings = settings.resolved(loaded.config)
    out.mkdir(parents=True, exist_ok=True)
    inputs = expand_inputs(paths)
    if engine == "ray":
        from core.distributed import explain_stream

        files = [path.resolve() for path, _ in inputs]  # workers may not share this process's directory
        stream = explain_stream(loaded, resolve_checkpoint(checkpoint).resolve(), files, settings, address, workers,
                                axis)  # fmt: skip
    else:
        stream = ((index, explain_file(loaded, path, settings, report, axis)) for index, (path, _) in enumerate(inputs))
    results: list[dict | None] = [None] * len(inputs)
    pages: list[ReportScan | None] = [None] * len(inputs)
    for index, explained in tqdm(stream, total=len(inputs), desc="explain", unit="image", disable=not progress):
        path, stem = inputs[index]
        results[index] = _write_pictures(out, stem, {**explained.entry, "image": str(path)}, explained)
        pages[index] = explained.report_page
    if report:
        write_report(out, [page for page in pages if page is not None], checkpoint, loaded.name)
    run = {"checkpoint": loaded.name, "method": settings.method, "images": results}
    (out / "results.json").write_text(json.dumps(run, indent=2) + "\n")
    _write_summary_csv(out / "summary.csv", results, loaded.config.label_names, settings.method)
    return results


def _write_pictures(out: Path, stem: Path, entry: dict, explained: ExplainedFile) -> dict:
    """Write one result's PNGs under OUT; its row, with their paths relative to OUT."""
    if explained.overlay_png is None:
        tqdm.write(f"{entry['image']}: {entry['error']}", file=sys.stderr)
        return entry
    (out / stem).parent.mkdir(parents=True, exist_ok=True)
    overlay_path, heatmap_path = (out / f"{stem}_overlay.png", out / f"{stem}_heatmap.png")
    overlay_path.write_bytes(explained.overlay_png)
    heatmap_path.write_bytes(explained.heatmap_png)
    entry.update(overlay=str(overlay_path.relative_to(out)), heatmap=str(heatmap_path.relative_to(out)))
    return entry


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


def _is_scan(path: Path) -> bool:
    """A file of a folder to explain: a supported suffix, or (DICOM exports often have none, or
    ".IMA", or a UID for a name) DICOM or image bytes at its start; hidden files are left out."""
    if path.name.lower().endswith(SUPPORTED_SUFFIXES):
        return True
    if path.name.startswith(".") or path.name.upper() == "DICOMDIR":  # an export's index, not an image
        return False
    with path.open("rb") as file:
        kind = sniffed_kind(file.read(256))
    return kind in ("DICOM", "image") or (kind == "ZIP" and "." not in path.name)  # not a .docx or .xlsx


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", path.suffix):
        if suffix and name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def explain_volumes(
    paths: list[Path],
    checkpoint: str | Path,
    out: Path,
    settings: ExplainSettings = ExplainSettings(),
    *,
    top: int = 3,
    progress: bool = True,
    report: bool = False,
    axis: int = 2,
) -> list[dict]:
    """`explain --all-slices`: every slice of each volume scored (summary.csv: one row per
    slice), and heatmap + overlay PNGs for its `top` most suspicious slices. With `report`,
    OUT/report.pdf: per volume, its most suspicious slice's page and the per-slice chart.
    NIfTI volumes are sliced along `axis` (2 axial, 1 coronal, 0 sagittal)."""
    from core.volume import score_volume, slice_reader

    loaded = load_checkpoint(checkpoint)
    settings = settings.resolved(loaded.config)
    out.mkdir(parents=True, exist_ok=True)
    volumes, pages = [], []
    for path, stem in expand_inputs(paths):
        try:
            data = path.read_bytes()
            count, read = slice_reader(data, path.name, axis)
        except (ImageInputError, OSError) as error:
            tqdm.write(f"{path}: {_message(error)}", file=sys.stderr)
            volumes.append({"image": str(path), "error": _message(error)})
            continue
        with tqdm(total=count, desc=path.name, unit="slice", disable=not progress) as bar:
            scores = score_volume(loaded, count, read, mask_input=settings.mask_input,
                                  on_progress=lambda done, _: bar.update(done - bar.n))  # fmt: skip
        slices, explained, suspicious = scores.rows(), [], scores.most_suspicious(top)
        for index in suspicious:
            image = read(index)
            result = explain(loaded, image.pixels, settings)
            pictures = ExplainedFile({}, *_panel_pngs(image.pixels, result.heatmap))
            named = stem.with_name(f"{stem.name}_slice{index:03d}")
            slices[index] = _write_pictures(out, named, slices[index], pictures)
            explained.append((image, result))
        if report and explained:  # the most suspicious slice's page, then the volume's
            overlays = tuple((i.slice_index, explanation_panels(i.pixels, r.heatmap).overlay) for i, r in explained)
            pages.append(_report_page(path, data, *explained[0], volume=scores, top_slices=overlays))
        volumes.append({"image": str(path), "num_slices": count, "most_suspicious": suspicious, "slices": slices})
    run = {"checkpoint": loaded.name, "method": settings.method, "volumes": volumes}
    (out / "results.json").write_text(json.dumps(run, indent=2) + "\n")
    _write_slice_csv(out / "summary.csv", volumes, loaded.config.label_names, settings.method)
    if report:
        write_report(out, pages, checkpoint, loaded.name)
    return volumes


def _message(error: Exception) -> str:
    """What a row says about a file that failed: the OS's reason, or the decoder's message."""
    return error.strerror if isinstance(error, OSError) else str(error)


def _panel_pngs(image, heatmap) -> tuple[bytes, bytes]:
    pictures = explanation_panels(image, heatmap)
    return png_bytes(pictures.overlay), png_bytes(pictures.heatmap)


def _write_slice_csv(path: Path, volumes: list[dict], label_names, method: str) -> None:
    columns = ["path", "slice", "prediction", *(f"p_{n}" for n in label_names), "familiarity", "unfamiliar",
               "uncertain", "method", "overlay", "heatmap", "error"]  # fmt: skip
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, columns, extrasaction="ignore")
        writer.writeheader()
        for volume in volumes:
            for row in volume.get("slices", [{"error": volume.get("error")}]):
                cells = {key: _blank_if_none(value) for key, value in row.items()}
                writer.writerow({**cells, "path": volume["image"], "method": method})
