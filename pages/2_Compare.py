"""Compare two models on one scan: predictions, heatmaps and how much they agree."""

import streamlit as st

import ui
from core import render
from core.compare import heatmap_agreement, verdict
from core.config import preferred_checkpoint
from core.explanation import METHODS, ExplainSettings

st.set_page_config(page_title="Compare models", layout="wide")
ui.page_links()
st.title("Compare two models")

names = ui.require_models()
if len(names) < 2:
    st.warning(f"Comparison needs two installed models; only {names[0]} is installed.")
    st.stop()
default_a = preferred_checkpoint(names)  # the better record first, so its numbers are not read as the other's
default_b = next(i for i in range(len(names)) if i != default_a)
with st.sidebar:
    model_a = st.selectbox("Model A", names, index=default_a)
    model_b = st.selectbox("Model B", names, index=default_b)
    method = st.selectbox("Method (both)", [ui.EACH_DEFAULT, *METHODS], help=ui.METHOD_HELP)
    method = None if method == ui.EACH_DEFAULT else method
    target = ui.target_picker(list(ui.load_model(model_a).config.label_names), "Explain class (both)")
    brain_mask = st.toggle("Brain masking (input and heatmap)", value=True)
    threshold = st.slider("Threshold (relative to each heatmap's maximum)", 0.0, 1.0, 0.5, 0.05)
    opacity = st.slider("Heatmap opacity", 0.0, 1.0, 0.4, 0.05)
    colormap = ui.colormap_picker("compare_colormap")

scan = ui.pick_scan("compare")
if scan is None:
    st.stop()
settings = ExplainSettings(method, target, None, brain_mask, brain_mask)
results = {name: ui.explanation(scan, name, settings, place=f"compare_{side}")
           for side, name in (("a", model_a), ("b", model_b))}  # fmt: skip
if None in results.values():  # a slow method cancelled or refused; the page said why
    st.stop()
first, second = results[model_a], results[model_b]
records = {name: ui.load_model(name).config.metrics.get("accuracy") for name in (model_a, model_b)}
together = verdict((model_a, model_b), first, second, records)
{"agree": st.success, "neutral": st.info, "disagree": st.warning}[together.kind](together.sentence)
ui.image_notes(scan.image)

pixels = scan.image.pixels
for name, result in results.items():
    st.subheader(name)
    panels = render.explanation_panels(pixels, result.heatmap, threshold=threshold, opacity=opacity,
                                       colormap=colormap)  # fmt: skip
    columns = st.columns([3, 3, 3, 2])
    columns[0].image(panels.original, caption="Original", width="stretch")
    columns[1].image(panels.heatmap, caption=ui.heatmap_caption(result), width="stretch")
    ui.colour_bar(columns[1], colormap)
    columns[2].image(panels.overlay, caption=f"Overlay; outline >= {threshold:.2f} ({panels.region.area_fraction:.1%})",
                     width="stretch")  # fmt: skip
    columns[3].caption("Prediction")  # a subheader wraps a long class name; st.metric would cut it
    columns[3].subheader("uncertain" if result.uncertain else result.predicted_label, anchor=False)
    columns[3].markdown(result.headline() if result.uncertain else f"{result.confidence:.1%} confidence")
    if result.uncertain:
        columns[3].caption(result.uncertain_reason())
    ui.reliability_note(result, columns[3])
    columns[3].caption(f"{ui.duration(result.timings_ms['total'])}. {result.brain_mask_note}")
    if result.warning:
        st.warning(result.warning)
st.caption(ui.DISCLAIMER)

st.subheader("Do they look at the same place?")
agreement = heatmap_agreement(first.heatmap, second.heatmap, threshold, scan.image.pixel_spacing_mm)
iou, pearson, peaks = st.columns(3)
iou.metric(f"IoU of regions >= {threshold:.2f}", "n/a" if agreement.iou is None else f"{agreement.iou:.2f}")
pearson.metric("Pearson correlation", "n/a" if agreement.pearson is None else f"{agreement.pearson:.2f}")
peaks.metric("Distance between peaks", f"{agreement.peak_distance:.1f} {agreement.peak_unit}")
st.plotly_chart(render.difference_figure(agreement.difference, (model_a, model_b)), width="stretch")
st.caption(f"Red: {model_a} weighs the region more; blue: {model_b} does.")

st.subheader("How much does the picture depend on the method?")
grid_model = st.selectbox("Model for the method grid", [model_a, model_b], key="grid_model")
if st.toggle("Run every method on this image (Score-CAM and the noise tunnel take a while)", key="run_grid"):
    columns = st.columns(4)
    for i, grid_method in enumerate(METHODS):
        result = ui.explanation(scan, grid_model, ExplainSettings(grid_method, target, None, brain_mask, brain_mask),
                                place=f"grid_{i}")  # fmt: skip
        if result is None:
            continue
        panels = render.explanation_panels(pixels, result.heatmap, opacity=opacity, colormap=colormap)
        columns[i % 4].image(
            panels.overlay, caption=f"{grid_method}: {ui.duration(result.timings_ms['model_and_cam'])}"
        )
