"""The case report: one A4 PDF page per scan (matplotlib's PDF backend), made in memory.

Each page: original, heatmap with its colour bar, overlay; the prediction with calibrated
probabilities and any uncertainty or unfamiliarity warning; method, layer and masking; the
faithfulness check where it was run; the model card's summary; the file's SHA-256, the
software version and the date; the disclaimer. A volume adds a page with the per-slice chart
and its most suspicious slices. Patient fields appear only when the caller passes them.
"""

from __future__ import annotations

import hashlib
import io
import textwrap
from dataclasses import dataclass, field
from datetime import UTC, datetime

import matplotlib

matplotlib.use("Agg")  # no display; the PDF backend draws into memory
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.backends.backend_pdf import PdfPages  # noqa: E402

from core.explanation import CLASS_AGNOSTIC_METHODS, Explanation
from core.image_input import slice_position  # noqa: E402
from core.reliability import UNFAMILIAR_MESSAGE  # noqa: E402
from core.render import CLASS_COLOURS, colour_bar, explanation_panels  # noqa: E402
from core.training.record import git_commit  # noqa: E402

A4 = (8.27, 11.69)  # inches, portrait
DISCLAIMER = (
    "Research tool, not a medical device; not for diagnosis. The heatmap marks the regions that most raised the "
    "model's score for the explained class, relative to this image's own maximum: it is not a tumour outline. The "
    "model was trained on one small public dataset with known biases (see its model card)."
)


@dataclass(frozen=True)
class ReportScan:
    """One scan's page: the slice, its explanation and how it was drawn."""

    filename: str
    sha256: str
    file_format: str
    pixels: np.ndarray
    explanation: Explanation
    slice_index: int | None = None
    num_slices: int = 1
    threshold: float = 0.5
    opacity: float = 0.4
    colormap: str = "Jet"
    faithfulness: str | None = None  # the check's verdict sentence, when it was run
    warnings: tuple[str, ...] = ()  # e.g. masking the input changes the prediction
    patient: dict[str, str] | None = None  # only when the user opted in
    volume: object | None = None  # core.volume.VolumeScores, for a volume
    top_slices: tuple[tuple[int, np.ndarray], ...] = field(default_factory=tuple)  # (index, overlay RGB)

    @classmethod
    def of_file(cls, filename: str, data: bytes, image, result: Explanation, **extra) -> ReportScan:
        """The page of `image` (a core.image_input.LoadedImage decoded from `data`) and its explanation."""
        return cls(filename, hashlib.sha256(data).hexdigest(), image.file_format, image.pixels, result,
                   image.slice_index, image.num_slices, **extra)  # fmt: skip


def software_version() -> str:
    """The package version and, in a git checkout, the commit."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        number = version("brain-mri-xai")
    except PackageNotFoundError:
        number = "0.1.0"
    commit = git_commit()
    return f"brain-mri-xai {number}" + (f" (commit {commit})" if commit != "unknown" else "")


def case_report(
    scans: list[ReportScan], model_name: str, card_summary: list[str], when: datetime | None = None
) -> bytes:
    """The PDF's bytes: a page per scan, plus a volume page after a volume's scan page."""
    when = when or datetime.now(UTC)
    version = software_version()
    buffer = io.BytesIO()
    with PdfPages(buffer, metadata={"Title": "Brain-MRI explanation report", "Creator": version}) as pdf:
        for scan in scans:
            pdf.savefig(_scan_page(scan, model_name, card_summary, version, when))
            plt.close("all")
            if scan.volume is not None:
                pdf.savefig(_volume_page(scan, model_name))
                plt.close("all")
    return buffer.getvalue()


def _scan_page(scan: ReportScan, model_name: str, card: list[str], version: str, when: datetime):
    figure = plt.figure(figsize=A4)
    result = scan.explanation
    figure.text(0.06, 0.965, "Brain-MRI explanation report", fontsize=16, weight="bold")
    figure.text(0.06, 0.948, "Research tool, not a medical device.", fontsize=9, color="#b00020")

    panels = explanation_panels(scan.pixels, result.heatmap, threshold=scan.threshold, opacity=scan.opacity,
                                colormap=scan.colormap)  # fmt: skip
    titles = ("Original", f"Heatmap ({result.method})", f"Overlay (outline: heatmap >= {scan.threshold:.2f})")
    for position, (picture, title) in enumerate(zip((panels.original, panels.heatmap, panels.overlay), titles)):
        axes = figure.add_axes((0.04 + position * 0.32, 0.70, 0.28, 0.22))
        axes.imshow(picture, cmap="gray" if picture.ndim == 2 else None, vmin=0, vmax=1 if picture.ndim == 2 else None)
        axes.set_title(title, fontsize=8)
        axes.axis("off")
    bar = figure.add_axes((0.38, 0.685, 0.24, 0.012))
    bar.imshow(colour_bar(scan.colormap, 256, 8), aspect="auto", extent=(0, 1, 0, 1))
    bar.set_yticks([])
    bar.set_xticks([0, 0.5, 1], ["0 (least)", "0.5", "1 (most)"], fontsize=6)

    lines: list[tuple[str, dict]] = []
    headline = result.headline() if result.uncertain else f"{result.predicted_label} ({result.confidence:.1%})"
    lines.append((f"Prediction: {headline}", {"fontsize": 13, "weight": "bold"}))
    probabilities = ", ".join(f"{n} {p:.1%}" for n, p in zip(result.label_names, result.probabilities))
    lines.append((f"Calibrated probabilities: {probabilities}", {}))
    warnings = ([UNFAMILIAR_MESSAGE] if result.unfamiliar else []) + list(scan.warnings)
    if result.uncertain:
        warnings.append(result.uncertain_reason())
    if result.warning:
        warnings.append(result.warning)
    for warning in warnings:
        lines.append((f"Warning: {warning}", {"color": "#b00020"}))
    familiarity = result.reliability.familiarity if result.reliability else None
    if familiarity is not None:
        lines.append((f"Familiarity: {familiarity:.2f} (share of the hold-out at least as far from the training "
                      "images; below 0.05 is unfamiliar)", {}))  # fmt: skip
    lines.append(("", {}))
    explained = (" (class-agnostic: the same map for every class)" if result.method in CLASS_AGNOSTIC_METHODS
                 else f", for class '{result.target_label}'")  # fmt: skip
    lines.append((f"Heatmap: {result.method} at layer {result.target_layer}{explained}", {}))
    masking = (f"Background masked in the model's input: {'yes' if result.masked_input else 'no'}; heatmap masked "
               f"outside the head: {'yes' if result.masked_heatmap else 'no'}. {result.brain_mask_note}")  # fmt: skip
    lines.append((masking, {}))
    if scan.faithfulness:
        lines.append((f"Faithfulness check: {scan.faithfulness}", {}))
    lines.append(("", {}))
    lines.append((f"Model: {model_name}", {"weight": "bold"}))
    lines += [(line, {}) for line in card]
    lines.append(("", {}))
    where = f", {position}" if (position := slice_position(scan.slice_index, scan.num_slices)) else ""
    lines.append((f"File: {scan.filename} ({scan.file_format}{where})", {}))
    lines.append((f"SHA-256: {scan.sha256}", {"family": "monospace", "fontsize": 7}))
    lines.append((f"Software: {version}; made {when:%Y-%m-%d %H:%M} UTC", {}))
    if scan.patient:
        lines.append(("Patient (included at the user's request): "
                      + "; ".join(f"{k} {v}" for k, v in scan.patient.items()), {}))  # fmt: skip
    _write_lines(figure, lines, top=0.655)
    _write_lines(figure, [(DISCLAIMER, {"fontsize": 7, "style": "italic"})], top=0.055)
    return figure


def _write_lines(figure, lines: list[tuple[str, dict]], top: float, left: float = 0.06, width: int = 105) -> None:
    y = top
    for text, style in lines:
        size = style.get("fontsize", 8.5)
        wrapped = textwrap.wrap(text, int(width * 8.5 / size)) or [""]
        for part in wrapped:
            figure.text(left, y, part, fontsize=size, **{k: v for k, v in style.items() if k != "fontsize"})
            y -= size / 72 / A4[1] * 1.45
        y -= 0.002


def _volume_page(scan: ReportScan, model_name: str):
    scores = scan.volume
    figure = plt.figure(figsize=A4)
    figure.text(0.06, 0.965, f"Every slice of {scan.filename}", fontsize=14, weight="bold")
    figure.text(0.06, 0.948, f"{model_name}: calibrated class probabilities per slice; open circles: slices unlike "
                "the training images.", fontsize=8)  # fmt: skip
    chart = figure.add_axes((0.09, 0.62, 0.86, 0.27))
    scored = [s for s in scores.slices if s.probabilities is not None]
    for position, name in enumerate(scores.label_names):
        colour = CLASS_COLOURS[position % len(CLASS_COLOURS)]
        x, y = [s.index for s in scored], [s.probabilities[position] for s in scored]
        chart.plot(x, y, color=colour, label=name, linewidth=1)
        odd = [(s.index, s.probabilities[position]) for s in scored if s.unfamiliar]
        if odd:
            chart.scatter(*zip(*odd), facecolors="none", edgecolors=colour, s=12)
    if scan.slice_index is not None:
        chart.axvline(scan.slice_index, color="black", linestyle="--", linewidth=0.8)
    chart.set_ylim(0, 1)
    chart.set_xlim(-1, len(scores.slices))
    chart.set_xlabel("slice", fontsize=8)
    chart.set_ylabel("probability", fontsize=8)
    chart.legend(
        fontsize=7, ncols=len(scores.label_names), loc="upper center", bbox_to_anchor=(0.5, 1.13), frameon=False
    )
    chart.tick_params(labelsize=7)
    failed = sum(s.error is not None for s in scores.slices)
    notes = [f"{len(scores.slices)} slices, {failed} could not be read (blank or damaged)." if failed else
             f"{len(scores.slices)} slices."]  # fmt: skip
    if scan.top_slices:
        notes.append("Most suspicious slices (highest 1 - p(notumor) among slices like the training images):")
    _write_lines(figure, [(n, {}) for n in notes], top=0.575)
    for position, (index, picture) in enumerate(scan.top_slices[:3]):
        axes = figure.add_axes((0.04 + position * 0.32, 0.28, 0.28, 0.25))
        axes.imshow(picture)
        best = scores.slices[index]
        axes.set_title(f"slice {index}: {best.prediction}, tumour {scores.suspicion(best):.0%}", fontsize=8)
        axes.axis("off")
    _write_lines(figure, [(DISCLAIMER, {"fontsize": 7, "style": "italic"})], top=0.055)
    return figure


def scan_report(
    loaded,
    data: bytes,
    filename: str,
    image,
    result: Explanation,
    settings,
    *,
    axis: int = 2,
    display: dict | None = None,
    faithfulness: str | None = None,
    warnings: tuple[str, ...] = (),
    include_patient: bool = False,
    volume=None,
    top: int = 3,
) -> bytes:
    """The Explain page's one-click report: this scan's page and, for a scored volume, the
    per-slice page with its `top` most suspicious slices explained with the same settings.

    Args:
        image: the core.image_input.LoadedImage shown; result: its explanation with `settings`
            (core.explain.ExplainSettings), which the volume's top slices are explained with too.
        display: threshold, opacity and colormap as on the page.
        include_patient: carry the DICOM's patient fields (the user opted in).
        volume: core.volume.VolumeScores when every slice was scored.
    """
    from core.explain import explain
    from core.image_input import patient_fields
    from core.model_card import card_summary
    from core.volume import slice_reader

    top_slices = []
    if volume is not None:
        _, read = slice_reader(data, filename, axis)
        for index in volume.most_suspicious(top):
            pixels = read(index).pixels
            top_slices.append((index, explanation_panels(pixels, explain(loaded, pixels, settings).heatmap).overlay))
    page = ReportScan.of_file(
        filename, data, image, result, **(display or {}), faithfulness=faithfulness, warnings=warnings,
        patient=patient_fields(data, filename) if include_patient else None, volume=volume,
        top_slices=tuple(top_slices),
    )  # fmt: skip
    return case_report([page], loaded.name, card_summary(loaded.directory or loaded.name))
