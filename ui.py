"""Widgets shared by the pages: model guard, scan picker, slice slider, error display."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import streamlit as st
from streamlit.errors import StreamlitAPIException

import cached
from core import render
from core.annotations import outline_from_labelme
from core.checkpoint import LoadedModel
from core.config import CheckpointError
from core.errors import DatasetError
from core.explain import layer_names
from core.explanation import CLASS_AGNOSTIC_METHODS, ExplainError, ExplainSettings, Explanation, heatmap_name
from core.faithfulness import FaithfulnessCheck, RoadCheck
from core.image_input import (
    COLOUR_NOTE,
    MAX_FILE_BYTES,
    MAX_VOLUME_FILE_BYTES,
    PLANE_AXES,
    ImageInputError,
    LoadedImage,
    thumbnail_note,
    upload_kind,
)
from core.localisation import localisation_metrics
from core.reliability import UNFAMILIAR_MESSAGE
from core.report import scan_report
from core.sanity import SanityCheck
from core.volume import VolumeScores
from core.workers import JobCancelled, JobTimedOut, PoolBusy, WorkerCrashed, explain_task

SAMPLE_DIR = Path(__file__).resolve().parent / "sample_images"
USER_ERRORS = (ImageInputError, ExplainError, CheckpointError, DatasetError)
NOTUMOR_CAVEAT = (
    "Caution: every no-tumour training image came from a different source and MRI sequence than the "
    "tumour images, so 'notumor' may reflect the image's sequence or contrast rather than its anatomy."
)
DISCLAIMER = (
    "Warm colours (red, yellow) mark the regions that most raised the model's score for the "
    "chosen class; blue marks little influence. The scale is relative to this image's own "
    "maximum, so a red spot does not mean high certainty. A heatmap is a research aid for "
    "understanding the model, not a diagnosis: the model is not a medical device."
)


@dataclass(frozen=True)
class Scan:
    data: bytes
    filename: str
    slice_index: int | None
    axis: int
    image: LoadedImage

    @cached_property
    def sha256(self) -> str:
        """The file's digest, computed once per run however many keys use it (volumes run to 200 MB)."""
        return hashlib.sha256(self.data).hexdigest()


PAGES = (("app.py", "Home"), ("pages/1_Explain.py", "Explain"), ("pages/2_Compare.py", "Compare"),
         ("pages/3_Gallery.py", "Gallery"))  # fmt: skip


def page_links() -> None:
    """The sidebar's page list, with the home page called Home (Streamlit's own calls it 'app')."""
    with st.sidebar:
        try:
            for page, label in PAGES:
                st.page_link(page, label=label)
        except StreamlitAPIException:  # a page run on its own (AppTest) has no other pages to link to
            return
        st.divider()


def require_models() -> list[str]:
    """Installed checkpoint names; stops the page with a plain message when none is."""
    names = cached.installed_models()
    if not names:
        st.warning(
            "No trained model is installed, so nothing can be explained. Train one with "
            "`python -m core train ...` (see the README) or copy a checkpoint folder "
            "(model.safetensors + config.json) into `checkpoints/`."
        )
        st.stop()
    return names


def loads(name: str) -> bool:
    """Whether the checkpoint loads (and is now cached for every page)."""
    try:
        cached.model(name)
    except CheckpointError:
        return False
    return True


def load_model(name: str) -> LoadedModel:
    """The cached model, or a plain error (damaged checkpoint) that stops the page."""
    try:
        return cached.model(name)
    except CheckpointError as error:
        st.error(str(error))
        st.stop()


def model_caption(loaded: LoadedModel) -> str:
    metrics = loaded.config.metrics
    if not metrics:
        return "No test metrics recorded for this model."
    images = metrics["num_images"]
    # Two decimals and the count: 0.9297 must not read as the 93 % target met.
    return (
        f"Test accuracy {metrics['accuracy']:.2%} ({round(metrics['accuracy'] * images)} of {images} images of the "
        f"`{metrics['split']}` split), macro-F1 {metrics['macro_f1']:.3f} (see checkpoints/{loaded.name}/README.md)."
    )


PREDICTED_CLASS = "predicted class"
EACH_DEFAULT = "each model's default"
METHOD_HELP = (
    "Each model opens on the method and layer that placed its heatmaps best on the validation "
    "split's tumour outlines (see its model card). Score-CAM is slow (one forward pass per feature map); "
    "Integrated Gradients (Captum) takes 16 forward and backward passes per scan, 64 with the noise tunnel."
)


MASK_INPUT_HELP = (
    "Zeroes the background outside the detected head in what the model sees, as half of its training "
    "images were. It can change the prediction; the page says when it does."
)


def duration(milliseconds: float) -> str:
    """'84 ms' below a second, '1.3 s' above it."""
    return f"{milliseconds:.0f} ms" if milliseconds < 1000 else f"{milliseconds / 1000:.1f} s"


def prediction(scan: Scan, checkpoint: str, mask_input: bool) -> str:
    """The predicted class with or without the input masked (one forward pass, cached)."""
    return _or_stop(cached.prediction, scan, checkpoint, mask_input)


def image_warnings(image: LoadedImage) -> tuple[str, ...]:
    """The notes on reading a file that bear on the prediction: a thumbnail, a colour image."""
    return tuple(note for note in image.notes if note in (thumbnail_note(image.pixels.shape), COLOUR_NOTE))


def image_notes(image: LoadedImage) -> None:
    """What reading the file involved, as captions; those that bear on the prediction as warnings."""
    warnings = image_warnings(image)
    for note in image.notes:
        (st.warning if note in warnings else st.caption)(note)


def reliability_note(result: Explanation, place=st) -> None:
    """The unfamiliar-scan banner and the familiarity score, where the checkpoint has one."""
    verdict = result.reliability
    if verdict is None or verdict.familiarity is None:
        place.caption("This model has no familiarity check (fit one with `python -m core reliability`).")
        return
    if verdict.unfamiliar:
        place.error(" ".join(filter(None, (UNFAMILIAR_MESSAGE, verdict.unusual_text()))))
    place.caption(
        f"Familiarity {verdict.familiarity:.2f}: the share of the model's own held-out training-source slices that "
        "look less typical to it (below 0.05: unfamiliar)."
    )


# Tables indexed by class: a column wide enough for "meningioma" (the default cut it to "mening").
CLASS_INDEX = {"_index": st.column_config.TextColumn("class", width="medium")}


def colormap_picker(key: str) -> str:
    """The heatmap colour map, the same choice on every page (colour-blind-safe ones marked)."""
    names = list(render.COLORMAPS)
    label = {name: f"{name} (colour-blind safe)" if name in render.COLOUR_BLIND_SAFE else name for name in names}
    return st.selectbox("Colour map", names, format_func=label.get, key=key)


def colour_bar(place, colormap: str) -> None:
    """The heatmap's scale under its panel: 0 on the left, this image's maximum on the right."""
    caption = "0: no influence <- scale -> 1: this image's maximum (relative, not a probability)"
    place.image(render.colour_bar(colormap), width="stretch", caption=caption)


def reliability_flags(row) -> str:
    """'; uncertain; unfamiliar' for a Gallery card (a PredictionRow), empty when neither."""
    flags = [name for name in ("uncertain", "unfamiliar") if getattr(row, name)]
    return "".join(f"; {flag}" for flag in flags)


def layer_choices(loaded: LoadedModel) -> list[str]:
    """The layers a CAM can hook, with the checkpoint's default first when it fuses several."""
    layers = layer_names(loaded.model)
    default = loaded.config.default_target_layer
    return layers if default in layers else [default, *layers]


def heatmap_caption(result: Explanation) -> str:
    """'Grad-CAM at conv_head for 'glioma''; Eigen-CAM does not depend on the class, so it is
    not captioned as if it did, and an input attribution is named as such, not at a layer."""
    name = heatmap_name(result.method, result.target_layer)
    if result.method in CLASS_AGNOSTIC_METHODS:
        return f"{name} (the same for every class)"
    return f"{name} for '{result.target_label}'"


def target_picker(labels: list[str], label: str = "Explain class", key: str | None = None) -> str | None:
    """Which class to explain: None for the predicted class, else a class name."""
    choice = st.selectbox(label, [PREDICTED_CLASS, *labels], key=key)
    return None if choice == PREDICTED_CLASS else choice


def explanation(scan: Scan, checkpoint: str, settings: ExplainSettings, place: str = "main") -> Explanation | None:
    """The cached explanation of the scan, or a plain error that stops the page. A slow method
    runs in a worker process with a progress bar, an estimate and a Cancel button (None when
    cancelled); `place` names where on the page it is drawn, one running job per place."""
    if settings.slow:
        return slow_explanation(scan, checkpoint, settings, place)
    return _or_stop(cached.explanation, scan, checkpoint, settings)


def slow_explanation(scan: Scan, checkpoint: str, settings: ExplainSettings, place: str) -> Explanation | None:
    """A slow method's explanation from the shared worker pool: this session's job for `place`
    is polled (a rerun finds it again), a new request there cancels the old one."""
    key = cached.slow_key(checkpoint, scan.sha256, scan.slice_index, scan.axis, settings)
    finished = cached.slow_results().get(key)
    if finished is not None:
        return finished
    cancelled = st.session_state.setdefault("slow_cancelled", {})
    if cancelled.get(place) == key:
        st.info(f"{settings.method} was cancelled. Choose a faster method, or run it again.")
        if not st.button(f"Run {settings.method} again", key=f"restart_{place}"):
            return None
        cancelled.pop(place)
    jobs = st.session_state.setdefault("slow_jobs", {})
    running = jobs.get(place)
    if running is not None and running[0] != key:
        running[1].cancel()  # the user asked for something else here
        running = None
    if running is None:
        try:
            job = cached.worker_pool().submit(explain_task, str(load_model(checkpoint).directory), scan.image.pixels,
                                              settings)  # fmt: skip
        except PoolBusy as error:
            st.warning(f"{error} Slow methods from other users are running; a fast method works now.")
            return None
        running = jobs[place] = (key, job)
    job = running[1]
    holder = st.empty()  # the Cancel button and the progress bar, gone when the job ends
    with holder.container():
        if st.button(f"Cancel {settings.method}", key=f"cancel_{place}"):
            job.cancel()
            jobs.pop(place, None)
            cancelled[place] = key
            st.rerun()
        bar = st.progress(0.0, text=f"{settings.method}: starting...")
    while not job.done():
        done, total = job.progress
        left = job.eta_s()
        estimate = f", about {duration(left * 1000)} left" if left is not None else ""
        text = f"forward pass {done} of {total}{estimate}" if total else "waiting for a worker..."
        bar.progress(done / total if total else 0.0, text=f"{settings.method}: {text}")
        time.sleep(0.25)
    holder.empty()
    jobs.pop(place, None)
    try:
        result = job.result()
    except (JobCancelled, JobTimedOut, WorkerCrashed, *USER_ERRORS) as error:
        st.error(str(error))
        return None
    cached.slow_results().put(key, result)
    return result


def faithfulness(scan: Scan, checkpoint: str, settings: ExplainSettings) -> FaithfulnessCheck:
    """The cached deletion/insertion check of the scan's heatmap, or a plain error that stops the page."""
    return _or_stop(cached.faithfulness, scan, checkpoint, settings)


def road(scan: Scan, checkpoint: str, settings: ExplainSettings) -> RoadCheck:
    """The cached ROAD check of the scan's heatmap, or a plain error that stops the page."""
    return _or_stop(cached.road, scan, checkpoint, settings)


def sanity(scan: Scan, checkpoint: str, settings: ExplainSettings) -> SanityCheck:
    """The cached randomisation check of the scan's heatmap, or a plain error that stops the page."""
    return _or_stop(cached.sanity, scan, checkpoint, settings)


def _or_stop(compute, scan: Scan, checkpoint: str, option):
    """compute(checkpoint, scan..., option) from the cache; a user error is shown and stops the page."""
    try:
        return compute(checkpoint, scan.data, scan.filename, scan.slice_index, scan.axis, option)
    except USER_ERRORS as error:
        st.error(str(error))
        st.stop()


def pick_scan(key: str) -> Scan | None:
    """Upload or sample picker plus, for volumes, a slice/frame slider."""
    source = st.radio("Image", ["Upload a scan", "Use a sample"], horizontal=True, key=f"{key}_source")
    if source == "Upload a scan":
        upload = st.file_uploader(
            f"PNG, JPEG, BMP, TIFF (up to {MAX_FILE_BYTES // 2**20} MB); DICOM (any file name), NIfTI or a ZIP of "
            f"one DICOM series (up to {MAX_VOLUME_FILE_BYTES // 2**20} MB)",
            key=f"{key}_upload",  # any name: hospitals' DICOM files often have no suffix, ".IMA" or a UID
        )
        if upload is None:
            st.info("Upload a brain MRI slice, or choose a sample.")
            return None
        data, filename = upload.getvalue(), upload.name
    else:
        samples = sorted(p.name for p in SAMPLE_DIR.iterdir() if not p.name.startswith("."))
        filename = st.selectbox("Sample", samples, key=f"{key}_sample")
        data = (SAMPLE_DIR / filename).read_bytes()

    axis = PLANE_AXES["axial"]
    if upload_kind(filename, data) == "NIfTI":
        axis = st.radio(
            "Slice orientation",
            list(PLANE_AXES.values()),
            horizontal=True,
            key=f"{key}_axis",
            format_func={axis: plane for plane, axis in PLANE_AXES.items()}.get,
        )
    try:
        first = cached.image(data, filename, None, axis)
        slice_index = None
        if first.num_slices > 1:
            label = {"DICOM": "Frame", "NIfTI": "Slice", "DICOM series": "Slice"}.get(first.file_format, "Page")
            slice_index = st.slider(label, 0, first.num_slices - 1, first.slice_index, key=f"{key}_slice")
        image = cached.image(data, filename, slice_index, axis)
    except ImageInputError as error:
        st.error(str(error))
        return None
    where = f", {position}" if (position := image.position) else ""
    height, width = image.pixels.shape if image.trim is None else image.trim[2:]
    trimmed = "" if image.trim is None else f" (trimmed to {image.pixels.shape[1]}x{image.pixels.shape[0]})"
    st.caption(f"**{filename}**: {image.file_format}, {width}x{height} pixels{trimmed}{where}")
    return Scan(data, filename, slice_index, axis, image)


def volume_section(scan: Scan, checkpoint: str, mask_input: bool, key: str) -> VolumeScores | None:
    """For a volume: score every slice when asked, chart the class probabilities along it, and
    jump to the most suspicious slice or to a clicked point (the slice slider follows).
    Returns the scores once the volume has been scored."""
    count = scan.image.num_slices
    if count <= 1:
        return None
    slider, chart_key = f"{key}_slice", f"{key}_volume_chart"
    request = (checkpoint, scan.sha256, scan.filename, scan.axis, mask_input)
    if st.session_state.get(f"{key}_volume") != request:
        how = "One forward pass per slice, in batches: the chart shows where the model sees a tumour."
        st.button(f"Score all {count} slices", key=f"{key}_score_volume", help=how, on_click=_set_state,
                  args=(f"{key}_volume", request))  # fmt: skip
        return None  # a click sets the request before the next run, which scores
    bar = st.progress(0.0, text=f"Scoring {count} slices...")

    def progress(done: int, total: int) -> None:
        bar.progress(done / total, text=f"Scored {done} of {total} slices")

    try:
        scores = cached.volume_scores(request, checkpoint, scan.data, scan.filename, scan.axis, mask_input, progress)
    except ImageInputError as error:
        bar.empty()
        st.error(str(error))
        return None
    bar.empty()

    def jump_to_clicked() -> None:
        points = st.session_state[chart_key].selection.get("points", [])
        if points:
            st.session_state[slider] = int(points[0]["x"])

    current = scan.image.slice_index
    st.plotly_chart(render.volume_figure(scores, current), key=chart_key, on_select=jump_to_clicked,
                    selection_mode="points", width="stretch")  # fmt: skip
    failed = sum(s.error is not None for s in scores.slices)
    top = scores.most_suspicious(1)
    if top:
        best = scores.slices[top[0]]
        go, note = st.columns([1, 2])
        go.button(f"Go to the most suspicious slice ({top[0]})", key=f"{key}_go_top", on_click=_set_state,
                  args=(slider, top[0]), disabled=top[0] == current)  # fmt: skip
        note.caption(f"Slice {top[0]}: {best.prediction}, tumour probability {scores.suspicion(best):.0%}"
                     + ("; unlike the training images" if best.unfamiliar else "") + ". Click a point to go to its "
                     "slice; open circles mark slices unlike the training images"
                     + (f"; {failed} slice(s) could not be read (blank or damaged)." if failed else "."))  # fmt: skip
    return scores


def _set_state(key: str, value) -> None:
    st.session_state[key] = value


def report_button(place, scan: Scan, loaded: LoadedModel, result: Explanation, settings: ExplainSettings, *,
                  display: dict, faithfulness: str | None, warnings: tuple[str, ...], volume: VolumeScores | None,
                  include_patient: bool) -> None:  # fmt: skip
    """The "Download case report (PDF)" button: the PDF is made only when clicked (core.report.scan_report)."""

    def make() -> bytes:
        return scan_report(loaded, scan.data, scan.filename, scan.image, result, settings, axis=scan.axis,
                           display=display, faithfulness=faithfulness, warnings=warnings,
                           include_patient=include_patient, volume=volume)  # fmt: skip

    stem = Path(scan.filename).name.split(".")[0] or "scan"
    place.download_button("Download case report (PDF)", make, f"{stem}_report.pdf", "application/pdf",
                          on_click="ignore")  # fmt: skip


def pick_outline(scan: Scan, key: str) -> np.ndarray | None:
    """An optional LabelMe outline of the tumour on this slice, as a mask (None without one;
    a file that does not fit says why)."""
    with st.expander("Radiologist's tumour outline (optional LabelMe JSON): compare the heatmap with it"):
        upload = st.file_uploader("LabelMe JSON drawn on this slice", type=["json"], key=f"{key}_outline")
        if upload is None:
            return None
        outline = outline_from_labelme(upload.getvalue(), scan.image.pixels.shape, scan.image.trim)
        if outline.mask is None:
            st.error(f"The outline cannot be used: {outline.reason}.")
        return outline.mask


def outline_metrics(place, result: Explanation, tumour: np.ndarray, threshold: float) -> None:
    """IoU, pointing game and heatmap mass inside the uploaded outline, for this image."""
    metrics = localisation_metrics(result.heatmap, tumour, threshold, head=result.brain_mask)
    columns = place.columns(4)
    columns[0].metric(f"IoU at threshold {threshold:.2f}", f"{metrics['iou']:.2f}")
    columns[1].metric("IoU at Otsu's threshold", f"{metrics['iou_otsu']:.2f}")
    columns[2].metric("Pointing game", "hit" if metrics["pointing_game"] else "miss",
                      help="Whether the heatmap's hottest pixel lies inside the outline.")  # fmt: skip
    columns[3].metric("Heatmap mass inside the outline", f"{metrics['mass_inside_tumour']:.0%}")
    place.caption("Against the uploaded outline (green on black on the overlay). One image: see the Gallery for "
                  "these measures over a split, beside the trivial baselines.")  # fmt: skip
