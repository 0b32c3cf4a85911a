"""Streamlit cache wrappers around core, keyed by names and bytes (never by objects).

Models are shared singletons (`st.cache_resource`), each carrying the lock explain() takes;
results are copied per session (`st.cache_data`).
"""

from __future__ import annotations

import streamlit as st

from core.checkpoint import LoadedModel, list_checkpoints, load_checkpoint
from core.explain import Explanation, explain
from core.gallery import Evaluation, at_threshold, read_evaluation
from core.image_input import LoadedImage, load_image


@st.cache_resource(max_entries=4, show_spinner="Loading model...")
def model(name: str) -> LoadedModel:
    return load_checkpoint(name)


def installed_models() -> list[str]:
    return list_checkpoints()


@st.cache_data(max_entries=32, show_spinner=False)
def image(data: bytes, filename: str, slice_index: int | None, axis: int) -> LoadedImage:
    return load_image(data, filename, slice_index=slice_index, axis=axis)


@st.cache_data(max_entries=64, show_spinner="Computing the heatmap...")
def explanation(
    checkpoint: str,
    data: bytes,
    filename: str,
    slice_index: int | None,
    axis: int,
    method: str,
    target: str | None,
    target_layer: str | None,
    mask_input: bool,
    mask_heatmap: bool,
) -> Explanation:
    pixels = image(data, filename, slice_index, axis).pixels
    return explain(
        model(checkpoint),
        pixels,
        method=method,
        target=target,
        target_layer=target_layer,
        mask_input=mask_input,
        mask_heatmap=mask_heatmap,
    )


@st.cache_data(max_entries=16, show_spinner=False)
def evaluation(folder: str) -> Evaluation:
    """A finished evaluation read from its cache folder (the folder name is its content key)."""
    from pathlib import Path

    return read_evaluation(Path(folder))


@st.cache_data(max_entries=64, show_spinner=False)
def evaluation_at_threshold(folder: str, threshold: float) -> Evaluation:
    """The evaluation's IoU column and summary at the slider's threshold (no model call)."""
    return at_threshold(evaluation(folder), threshold)
