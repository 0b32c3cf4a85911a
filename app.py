"""Brain-MRI explainability dashboard. Run: streamlit run app.py"""

import streamlit as st

import cached
import ui

st.set_page_config(page_title="Brain-MRI explainability", page_icon=":brain:", layout="wide")
ui.page_links()
st.title("Brain-MRI classifier explainability")
st.markdown(
    """
See where a brain-MRI classifier looks when it predicts **glioma, meningioma, pituitary
tumour or no tumour**, using Grad-CAM and related methods.

- **Explain**: upload a scan (PNG, JPEG, BMP, TIFF, DICOM, NIfTI, or a ZIP of one DICOM series)
  or pick a sample, and see the original, the heatmap and the overlay with the model's
  prediction; score every slice of a volume, compare the heatmap with a radiologist's outline,
  and download a PDF case report.
- **Compare**: the ConvNeXt and the EfficientNet on the same scan, whether they agree on the
  class and on where they look, and the same image under every CAM method.
- **Gallery**: true positives, false positives and false negatives of a dataset split, with
  heatmaps against the radiologists' tumour outlines, and localisation metrics per method.

Models are trained on a public dataset with known biases (see each model card). This is a
research tool, **not a medical device**: never use it for diagnosis.
"""
)
models = cached.installed_models()
if models:
    with st.spinner("Loading the models (only the first visit after a server start waits for this)..."):
        usable = [name for name in models if ui.loads(name)]
    st.success(f"Installed models: {', '.join(usable)}. Open a page in the sidebar.")
    if len(usable) < len(models):
        st.warning(f"Not usable (see the Explain page for why): {', '.join(sorted(set(models) - set(usable)))}.")
else:
    st.warning("No trained model is installed yet; see the README to train one.")
