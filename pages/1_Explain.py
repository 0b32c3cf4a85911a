"""Explain one scan: original | heatmap | overlay, with the prediction and its controls."""

import json

import streamlit as st

import ui
from core import render
from core.config import preferred_checkpoint
from core.explanation import METHODS, ExplainSettings

st.set_page_config(page_title="Explain a scan", layout="wide")
ui.page_links()
st.title("Explain a scan")

names = ui.require_models()
with st.sidebar:
    checkpoint = st.selectbox("Model", names, index=preferred_checkpoint(names))
    loaded = ui.load_model(checkpoint)
    st.caption(ui.model_caption(loaded))
    labels = list(loaded.config.label_names)
    methods = list(METHODS)
    method = st.selectbox("Method", methods, index=methods.index(loaded.config.default_method),
                          help=ui.METHOD_HELP)  # fmt: skip
    target = ui.target_picker(labels)
    layers = ui.layer_choices(loaded)
    layer = st.selectbox("Layer", layers, index=layers.index(loaded.config.default_target_layer))
    mask_input = st.toggle("Mask the background in the model's input", value=True, help=ui.MASK_INPUT_HELP)
    mask_heatmap = st.toggle(
        "Mask heatmap outside the head", value=True, help="Display only: never changes the prediction."
    )
    st.divider()
    threshold = st.slider("Threshold (relative to this heatmap's maximum)", 0.0, 1.0, 0.5, 0.05)
    opacity = st.slider("Heatmap opacity", 0.0, 1.0, 0.4, 0.05)
    colormap = ui.colormap_picker("explain_colormap")
    show_outline = st.toggle("Draw the detected head outline", value=True)

scan = ui.pick_scan("explain")
if scan is None:
    st.stop()
volume = ui.volume_section(scan, checkpoint, mask_input, "explain")
tumour = ui.pick_outline(scan, "explain")
settings = ExplainSettings(method, target, layer, mask_input, mask_heatmap)
result = ui.explanation(scan, checkpoint, settings)
if result is None:  # a slow method cancelled or refused; the page said why
    st.stop()

pixels = scan.image.pixels
panels = render.explanation_panels(
    pixels, result.heatmap, threshold=threshold, opacity=opacity, colormap=colormap,
    head_mask=result.brain_mask if show_outline else None, tumour_mask=tumour,
    region_rgb=render.OUTLINE_RGB if tumour is None else render.REGION_RGB,
)  # fmt: skip
left, middle, right = st.columns(3)
# "stretch": the three panels share one size even when the scan is smaller than a column.
left.image(panels.original, caption=f"Original ({scan.image.file_format}, {pixels.shape[1]}x{pixels.shape[0]})",
           width="stretch")  # fmt: skip
middle.image(panels.heatmap, caption=ui.heatmap_caption(result), width="stretch")
ui.colour_bar(middle, colormap)
right.image(
    panels.overlay,
    caption=f"Overlay; {'green' if tumour is None else 'white'} outline: heatmap >= {threshold:.2f} "
    f"({panels.region.area_fraction:.1%} of the image)"
    + ("; green on black: the tumour outline" if tumour is not None else ""),
    width="stretch",
)
if tumour is not None:
    ui.outline_metrics(st, result, tumour, threshold)
st.caption(ui.DISCLAIMER)

if result.warning:
    st.warning(result.warning)
(st.info if result.brain_mask is not None else st.warning)(result.brain_mask_note)
ui.image_notes(scan.image)

ui.reliability_note(result)
prediction, chart = st.columns([1, 2])
if result.uncertain:
    prediction.metric("Prediction", "uncertain", result.headline().removeprefix("uncertain: "),
                      delta_color="off", delta_arrow="off")  # fmt: skip
    st.warning(f"{result.headline()}. {result.uncertain_reason()}")
else:
    prediction.metric("Prediction", result.predicted_label, f"{result.confidence:.1%} confidence",
                      delta_color="off", delta_arrow="off")  # fmt: skip
prediction.caption(f"{ui.duration(result.timings_ms['total'])}; probabilities are temperature-calibrated.")
other = ui.prediction(scan, checkpoint, not mask_input)
report_warnings = ui.image_warnings(scan.image)
if other != result.predicted_label:
    with_mask, without = (result.predicted_label, other) if mask_input else (other, result.predicted_label)
    report_warnings += (f"Masking the background in the model's input changes the prediction: {with_mask} with "
                        f"masking, {without} without. Treat this prediction as uncertain.",)  # fmt: skip
    st.warning(report_warnings[-1])
if result.predicted_label == "notumor":
    prediction.caption(ui.NOTUMOR_CAVEAT)
chart.plotly_chart(render.probability_figure(labels, result.probabilities, result.predicted_index), width="stretch")

st.subheader("Check this heatmap", anchor=False)
st.caption("Does the heatmap point at what the model uses? The hottest pixels are removed (deletion) or revealed "
           "(insertion) a step at a time, and the model's probability is compared with the same steps for random "
           "maps. About 2-3 seconds on a CPU.")  # fmt: skip
check_key = (checkpoint, scan.sha256, scan.slice_index, scan.axis, settings)
if st.button("Check this heatmap"):
    st.session_state["faithfulness_checked"] = check_key
faithfulness_verdict = None
if st.session_state.get("faithfulness_checked") == check_key:
    check = ui.faithfulness(scan, checkpoint, settings)
    faithfulness_verdict = check.verdict()
    (st.success if check.faithful else st.info if check.faithful is None else st.warning)(check.verdict())
    st.plotly_chart(render.faithfulness_figure(check), width="stretch")

st.caption("ROAD (Rong et al. 2022) repeats the test with the removed pixels filled in from their "
           "neighbours instead of black, so the model cannot react to the shape of the hole. About 10-15 "
           "seconds on a CPU.")  # fmt: skip
if st.button("Check with ROAD"):
    st.session_state["road_checked"] = check_key
if st.session_state.get("road_checked") == check_key:
    road = ui.road(scan, checkpoint, settings)
    (st.success if road.faithful else st.warning)(road.verdict())

st.caption("Sanity check (Adebayo et al. 2018): randomise the model's layers from the top down and see whether "
           "the heatmap changes. About a second per layer group.")  # fmt: skip
if st.button("Randomise the model and compare"):
    st.session_state["sanity_checked"] = check_key
if st.session_state.get("sanity_checked") == check_key:
    sanity = ui.sanity(scan, checkpoint, settings)
    (st.success if sanity.passed else st.warning)(sanity.verdict())
    st.plotly_chart(render.sanity_figure(sanity), width="stretch")

with st.expander("Inspect heatmap values (hover)"):
    st.plotly_chart(render.heatmap_figure(result.heatmap, colormap), width="stretch")

summary = {
    "file": scan.filename,
    "slice": scan.slice_index,
    "model": checkpoint,
    **result.summary(),
    "threshold": threshold,
    "region_area_fraction": panels.region.area_fraction,
}
include_patient = scan.image.file_format.startswith("DICOM") and st.checkbox(
    "Put the patient's name, ID, birth date and study date from the DICOM in the report", value=False
)
down_pdf, down_png, down_json = st.columns(3)
ui.report_button(down_pdf, scan, loaded, result, settings, display={"threshold": threshold, "opacity": opacity,
                 "colormap": colormap}, faithfulness=faithfulness_verdict, warnings=report_warnings, volume=volume,
                 include_patient=include_patient)  # fmt: skip
down_png.download_button("Download overlay (PNG)", render.png_bytes(panels.overlay), "overlay.png", "image/png")
down_json.download_button("Download result (JSON)", json.dumps(summary, indent=2), "result.json", "application/json")
