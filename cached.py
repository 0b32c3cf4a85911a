"""Streamlit cache wrappers around core, keyed by names, bytes and settings (never by objects).

Models are shared singletons (`st.cache_resource`), each carrying the lock explain() takes;
results are copied per session (`st.cache_data`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import streamlit as st

from core import evaluate
from core.checkpoint import LoadedModel, checkpoint_stamp, list_checkpoints, load_checkpoint
from core.evaluation_store import Evaluation, at_threshold, cache_dir, read_evaluation
from core.explain import ExplainSettings, Explanation, explain
from core.faithfulness import FaithfulnessCheck, check_heatmap
from core.image_input import LoadedImage, load_image
from core.sweep import baseline_summary


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
    checkpoint: str, data: bytes, filename: str, slice_index: int | None, axis: int, settings: ExplainSettings
) -> Explanation:
    return explain(model(checkpoint), image(data, filename, slice_index, axis).pixels, settings)


@st.cache_data(max_entries=32, show_spinner="Removing and revealing the hottest pixels...")
def faithfulness(
    checkpoint: str, data: bytes, filename: str, slice_index: int | None, axis: int, settings: ExplainSettings
) -> FaithfulnessCheck:
    pixels = image(data, filename, slice_index, axis).pixels
    result = explanation(checkpoint, data, filename, slice_index, axis, settings)
    return check_heatmap(model(checkpoint), pixels, result, settings)


def evaluation_folder(
    checkpoint: str, root: Path, split: str, settings: ExplainSettings, on_progress: Callable[[int, int], None]
) -> str:
    """The evaluation's cache folder, computed on first use with progress. Its key is cached
    by the checkpoint's size-and-time stamp, so a rerun does not hash 13 MB of weights."""
    folder = Path(_evaluation_folder(checkpoint, checkpoint_stamp(checkpoint), str(root), split, settings))
    evaluate.cached_evaluation(checkpoint, root, split, cache_dir(), settings=settings, folder=folder, progress=False,
                      on_progress=on_progress)  # fmt: skip
    return str(folder)


@st.cache_data(max_entries=64, show_spinner=False)
def _evaluation_folder(checkpoint: str, stamp: tuple, root: str, split: str, settings: ExplainSettings) -> str:
    return str(evaluate.evaluation_folder(checkpoint, Path(root), split, cache_dir(), settings=settings))


@st.cache_data(max_entries=8, show_spinner="Scoring the trivial baselines on this split...")
def baselines(root: str, split: str) -> list[dict]:
    return baseline_summary(Path(root), split)


@st.cache_data(max_entries=16, show_spinner=False)
def evaluation(folder: str) -> Evaluation:
    """A finished evaluation read from its cache folder (the folder name is its content key)."""
    return read_evaluation(Path(folder))


@st.cache_data(max_entries=64, show_spinner=False)
def evaluation_at_threshold(folder: str, threshold: float) -> Evaluation:
    """The evaluation's IoU column and summary at the slider's threshold (no model call)."""
    return at_threshold(evaluation(folder), threshold)
