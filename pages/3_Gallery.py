"""Gallery: true positives, false positives and false negatives against tumour outlines."""

import json

import pandas as pd
import plotly.express as px
import streamlit as st

import cached
import ui
from core.config import preferred_checkpoint
from core.evaluate import DEFAULT_THRESHOLD, cached_evaluation
from core.evaluation_store import cache_dir, cached_summaries
from core.explanation import GALLERY_METHODS, ExplainSettings
from core.gallery import OUTCOMES, SORTS, find_dataset, panels, select, splits_in
from core.sweep import method_table

PAGE_SIZE = 12

st.set_page_config(page_title="Gallery", layout="wide")
ui.page_links()
st.title("Gallery: where the model looks, against the radiologists' outlines")

names = ui.require_models()
with st.sidebar:
    typed = st.text_input("Dataset folder", key="gallery_root", placeholder="default: auto-detect")
    root = find_dataset(typed)
if root is None:
    st.warning(
        (f"There is no folder `{typed.strip()}`. " if typed.strip() else "No dataset found. ")
        + "Enter a folder in the sidebar, set BRAIN_XAI_DATA, or place it at "
        "`./data/brain-tumor-mri`. Expected layout: `ROOT/SPLIT/<class>/<image>` (for example "
        "`ROOT/test/glioma/001.jpg`), with optional LabelMe outlines in `ROOT/annotations/<image stem>.json`."
    )
    st.stop()
with st.sidebar:
    st.caption(f"Dataset: {root}")
    checkpoint = st.selectbox("Model", names, index=preferred_checkpoint(names))
    split_names = splits_in(root)
    split = st.selectbox("Split", split_names, index=split_names.index("test") if "test" in split_names else 0)
    default_method = ui.load_model(checkpoint).config.default_method
    method = st.selectbox(
        "Method (at the model's default layer)", GALLERY_METHODS,
        index=GALLERY_METHODS.index(default_method) if default_method in GALLERY_METHODS else 0,
        help="Opens on the model's default. Score-CAM and the input attributions are too slow for a whole split.",
    )  # fmt: skip
    brain_mask = st.toggle("Brain masking", value=True)
    threshold = st.slider("Threshold (relative to each heatmap's maximum)", 0.05, 0.95, 0.5, 0.05)
    colormap = ui.colormap_picker("gallery_colormap")

# Evaluated once at the default threshold; the slider re-reads stored per-image IoU curves.
settings = ExplainSettings(method, None, None, brain_mask, brain_mask)
bar = st.progress(0.0, text="Preparing the evaluation (cached on disk after the first run)...")
try:
    folder = cached.evaluation_folder(
        checkpoint, root, split, settings,
        lambda done, total: bar.progress(done / total, text=f"Explaining image {done} of {total}..."),
    )  # fmt: skip
except ui.USER_ERRORS as error:
    bar.empty()
    st.error(str(error))
    st.stop()
bar.empty()
result = cached.evaluation_at_threshold(folder, threshold)
labels = result.label_names

filters = st.columns(3)
label = filters[0].selectbox("Class", labels)
outcome = filters[1].radio("Outcome", OUTCOMES, horizontal=True,
                           help="TP: correctly called this class; FP: wrongly called it; FN: missed it.")  # fmt: skip
sort = filters[2].selectbox("Sort by", SORTS)
chosen = select(result.rows, label, outcome, sort)
st.write(f"**{len(chosen)}** {outcome} images for **{label}** on `{split}` ({method}, threshold {threshold:.2f}).")


def show_detail(image: str | None) -> None:
    st.session_state["gallery_selected"] = image


selected = next((r for r in result.rows if r.image == st.session_state.get("gallery_selected")), None)
if selected:  # above the grid, where the user looks after "Open"
    heading, close = st.columns([5, 1])
    heading.subheader(selected.image)
    close.button("Close", key="close_detail", on_click=show_detail, args=(None,))
    view = panels(root, selected, result.heatmaps[selected.image], threshold, colormap=colormap)
    iou = f"IoU {selected.iou:.2f}" if selected.iou is not None else "no outline"
    four = st.columns(4)
    four[0].image(view.original, caption=f"Original (true: {selected.label})")
    four[1].image(view.annotation, caption="Radiologist's outline" if view.has_outline else "No annotation")
    four[2].image(view.heatmap, caption=f"{method} heatmap")
    ui.colour_bar(four[2], colormap)
    four[3].image(view.overlay, caption=f"Predicted {selected.predicted}; green: tumour, white: heatmap >= "
                                        f"{threshold:.2f}; {iou}")  # fmt: skip

if chosen:
    pages = max(1, -(-len(chosen) // PAGE_SIZE))
    page = st.number_input("Page", 1, pages, 1) if pages > 1 else 1
    columns = st.columns(4)
    for i, row in enumerate(chosen[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]):
        card = panels(root, row, result.heatmaps[row.image], threshold, colormap=colormap)
        iou = f", IoU {row.iou:.2f}" if row.iou is not None else ""
        with columns[i % 4]:
            st.image(card.overlay, caption=f"true {row.label}, predicted {row.predicted} ({row.confidence:.0%}){iou}"
                     f"{ui.reliability_flags(row)}")  # fmt: skip
            # A callback runs before the rerun, so the detail above the grid already shows this image.
            st.button("Open", key=f"open_{row.image}", on_click=show_detail, args=(row.image,))

st.caption(ui.DISCLAIMER + " The no-tumour images come from another source and MRI sequence: heat on the "
           "skull or background of those images is a sign of shortcut learning.")  # fmt: skip

st.header("Summary")
summary = result.summary
matrix = summary["confusion_matrix"]
left, right = st.columns(2)
left.plotly_chart(
    px.imshow(matrix["rows_true_columns_predicted"], x=matrix["labels"], y=matrix["labels"], text_auto=True,
              labels={"x": "predicted", "y": "true", "color": "images"}, color_continuous_scale="Blues"),
    width="stretch",
)  # fmt: skip
right.dataframe(pd.DataFrame(summary["per_class"]).T.round(3), column_config=ui.CLASS_INDEX)
right.write(f"Accuracy {summary['accuracy']:.2%}, macro-F1 {summary['macro_f1']:.3f}, "
            f"{summary['num_images']} images; ECE {summary['ece_15_bins']['after_temperature']:.3f}.")  # fmt: skip

st.subheader("Localisation per class (mean, 95 % bootstrap interval)")
per_class = {
    name: {metric: (f"{v['mean']:.3f} [{v['ci95'][0]:.3f}, {v['ci95'][1]:.3f}]" if v["mean"] is not None else "n/a")
           for metric, v in values.items()}
    for name, values in summary["localisation"]["per_class"].items()
}  # fmt: skip
st.dataframe(pd.DataFrame(per_class).T, column_config=ui.CLASS_INDEX)

st.subheader(f"Every method on this split (IoU at threshold {DEFAULT_THRESHOLD})")
st.caption("The baselines know nothing of the model (uniform in the head, a centred Gaussian, the slice's "
           "brightness); a method's lift is its value over the best baseline's: below 1, the heatmap places the "
           "tumour no better than a guess.")  # fmt: skip
summaries = cached_summaries(cache_dir(), root, split, DEFAULT_THRESHOLD)
st.dataframe(pd.DataFrame(method_table(summaries, cached.baselines(str(root), split))).round(3))
if st.button("Compute the missing methods for this model (a few minutes)"):
    for other in GALLERY_METHODS:
        other_settings = ExplainSettings(other, None, None, brain_mask, brain_mask)
        cached_evaluation(checkpoint, root, split, cache_dir(), settings=other_settings, progress=False)
    st.rerun()

st.subheader("Sanity check: does each method depend on the model's weights?")
st.caption("Adebayo et al. 2018: the model's layers are randomised from the top down and each method's heatmap "
           "recomputed on 4 outlined tumours of this split. A method whose map keeps its rank correlation with the "
           "original (0.5 or more) shows the image, not the model.")  # fmt: skip
if st.button("Run the sanity check for every method (a minute or two)"):
    st.session_state["gallery_sanity"] = (checkpoint, str(root), split, brain_mask)
if st.session_state.get("gallery_sanity") == (checkpoint, str(root), split, brain_mask):
    st.dataframe(pd.DataFrame(cached.sanity_table(checkpoint, str(root), split, brain_mask)).round(3))

filtered = pd.DataFrame([row.columns(labels) for row in chosen])
export = st.columns(2)
export[0].download_button("Download the filtered table (CSV)", filtered.to_csv(index=False), "gallery.csv", "text/csv")
export[1].download_button("Download the summary (JSON)", json.dumps(summary, indent=2), "summary.json")
