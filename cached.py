"""Streamlit cache wrappers around core, keyed by names, bytes and settings (never by objects).

Models are shared singletons (`st.cache_resource`), each carrying the lock explain() takes;
results are copied per session (`st.cache_data`).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import streamlit as st

from core import evaluate
from core.checkpoint import LoadedModel, checkpoint_stamp, load_checkpoint
from core.config import list_checkpoints
from core.evaluation_store import Evaluation, at_threshold, cache_dir, read_evaluation
from core.explain import explain
from core.explanation import ExplainSettings, Explanation
from core.faithfulness import FaithfulnessCheck, RoadCheck, check_heatmap, road_check
from core.image_input import LoadedImage, load_image
from core.inference import slice_logits
from core.sanity import SanityCheck, randomisation_check
from core.sanity import sanity_table as core_sanity_table
from core.sweep import baseline_summary
from core.volume import VolumeScores, score_volume, slice_reader
from core.workers import SLOW_NICE, WorkerPool


@st.cache_resource(show_spinner="Starting the workers for slow methods (once per server)...")
def worker_pool() -> WorkerPool:
    """The slow methods' workers, shared by every session: two processes, each with its own
    model replicas and one torch thread, so a Score-CAM occupies a worker, not the shared model,
    and at a lower CPU priority than the pages' own fast explanations."""
    return WorkerPool(workers=2, queue_limit=8, nice=SLOW_NICE)


class SlowResults:
    """Finished slow explanations, shared by every session (bounded, oldest dropped first)."""

    def __init__(self, capacity: int = 32):
        self.capacity, self._items, self._lock = capacity, OrderedDict(), threading.Lock()

    def get(self, key: tuple) -> Explanation | None:
        with self._lock:
            return self._items.get(key)

    def put(self, key: tuple, result: Explanation) -> None:
        with self._lock:
            self._items[key] = result
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)


@st.cache_resource(show_spinner=False)
def slow_results() -> SlowResults:
    return SlowResults()


def slow_key(checkpoint: str, sha256: str, slice_index: int | None, axis: int, settings: ExplainSettings) -> tuple:
    return checkpoint, checkpoint_stamp(checkpoint), sha256, slice_index, axis, settings


def _explained(
    checkpoint: str, data: bytes, filename: str, slice_index: int | None, axis: int, settings: ExplainSettings
) -> Explanation:
    """The explanation the page shows: a slow method's from the workers' results, so that a check
    of its heatmap does not compute it again here, under the shared model's lock."""
    if settings.slow:
        key = slow_key(checkpoint, hashlib.sha256(data).hexdigest(), slice_index, axis, settings)
        found = slow_results().get(key)
        if found is not None:
            return found
    return explanation(checkpoint, data, filename, slice_index, axis, settings)


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


@st.cache_data(max_entries=64, show_spinner=False)
def prediction(
    checkpoint: str, data: bytes, filename: str, slice_index: int | None, axis: int, mask_input: bool
) -> str:
    """The predicted class alone (one forward pass), with or without the input masked."""
    loaded = model(checkpoint)
    with loaded.lock:  # no CAM hooks of another session may see this forward pass
        logits = slice_logits(loaded, [image(data, filename, slice_index, axis).pixels], mask_input)
    return loaded.config.label_names[int(logits[0].argmax())]


def volume_scores(
    key: tuple, checkpoint: str, data: bytes, filename: str, axis: int, mask_input: bool, on_progress=None
) -> VolumeScores:
    """Every slice of the volume scored (forward passes in batches; core.volume), kept for this
    browser session under `key` (the last volume only). Not st.cache_data: that would replay
    the caller's progress bar into a later run, where it no longer exists."""
    kept = st.session_state.get("volume_scores")
    if kept is None or kept[0] != key:
        count, read = slice_reader(data, filename, axis)
        kept = (key, score_volume(model(checkpoint), count, read, mask_input=mask_input, on_progress=on_progress))
        st.session_state["volume_scores"] = kept
    return kept[1]


@st.cache_data(max_entries=32, show_spinner="Removing and revealing the hottest pixels...")
def faithfulness(
    checkpoint: str, data: bytes, filename: str, slice_index: int | None, axis: int, settings: ExplainSettings
) -> FaithfulnessCheck:
    pixels = image(data, filename, slice_index, axis).pixels
    result = _explained(checkpoint, data, filename, slice_index, axis, settings)
    return check_heatmap(model(checkpoint), pixels, result, settings)


@st.cache_data(max_entries=32, show_spinner="Filling the removed pixels in from their neighbours (ROAD)...")
def road(
    checkpoint: str, data: bytes, filename: str, slice_index: int | None, axis: int, settings: ExplainSettings
) -> RoadCheck:
    pixels = image(data, filename, slice_index, axis).pixels
    result = _explained(checkpoint, data, filename, slice_index, axis, settings)
    return road_check(model(checkpoint), pixels, result, settings)


@st.cache_data(max_entries=32, show_spinner="Randomising the model's layers from the top down...")
def sanity(
    checkpoint: str, data: bytes, filename: str, slice_index: int | None, axis: int, settings: ExplainSettings
) -> SanityCheck:
    return randomisation_check(model(checkpoint), [image(data, filename, slice_index, axis).pixels], settings)


@st.cache_data(max_entries=8, show_spinner="Randomising the model for every method (a minute or two)...")
def sanity_table(checkpoint: str, root: str, split: str, mask: bool, images: int = 4) -> list[dict]:
    """The randomisation check of every Gallery method on outlined tumours of the split."""
    return core_sanity_table(model(checkpoint), Path(root), split, mask, images)


def evaluation_folder(
    checkpoint: str, root: Path, split: str, settings: ExplainSettings, on_progress: Callable[[int, int], None]
) -> str:
    """The evaluation's cache folder, computed on first use with progress. Its key is cached
    by the checkpoint's size-and-time stamp, so a rerun does not hash 13 MB of weights."""
    folder = Path(_evaluation_folder(checkpoint, checkpoint_stamp(checkpoint), str(root), split, settings,
                                     str(cache_dir())))  # fmt: skip
    evaluate.cached_evaluation(checkpoint, root, split, cache_dir(), settings=settings, folder=folder, progress=False,
                      on_progress=on_progress)  # fmt: skip
    return str(folder)


@st.cache_data(max_entries=64, show_spinner=False)
def _evaluation_folder(
    checkpoint: str, stamp: tuple, root: str, split: str, settings: ExplainSettings, cache: str
) -> str:
    return str(evaluate.evaluation_folder(checkpoint, Path(root), split, Path(cache), settings=settings))


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
