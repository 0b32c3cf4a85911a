"""Shared fixtures: tiny seeded models (no downloads) and a synthetic head phantom."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from core.checkpoint import create_model, load_checkpoint, save_checkpoint
from core.config import ModelConfig, Preprocessing

# One intra-op thread: the tests run many small models, some from 8 Python threads at once,
# where torch's default thread pool oversubscribes the cores and runs 5-25x slower.
torch.set_num_threads(1)

LABELS = ("glioma", "meningioma", "notumor", "pituitary")
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "brain-tumor-mri"
CLASSES = LABELS
needs_data = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"dataset not found at {SHARED_DATA}")
TINY_MODELS = {"tiny_convnext": ("convnext_atto", "stages.3"), "tiny_effnet": ("tf_efficientnet_lite0", "conv_head")}


def make_tiny_checkpoint(directory: Path, architecture: str, layer: str, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model = create_model(architecture, len(LABELS))
    config = ModelConfig(architecture, LABELS, Preprocessing(input_size=64), layer, temperature=1.5)
    save_checkpoint(model, config, directory)
    return directory


@pytest.fixture(scope="session")
def checkpoint_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("checkpoints")
    for name, (architecture, layer) in TINY_MODELS.items():
        make_tiny_checkpoint(root / name, architecture, layer)
    return root


@pytest.fixture(scope="session")
def tiny_model(checkpoint_root):
    return load_checkpoint(checkpoint_root / "tiny_convnext")


@pytest.fixture
def use_tiny_checkpoints(checkpoint_root, monkeypatch):
    monkeypatch.setenv("BRAIN_XAI_CHECKPOINTS", str(checkpoint_root))
    return checkpoint_root


def add_cam_method(monkeypatch, name: str, cam_class) -> None:
    """Offer a test's own pytorch-grad-cam class under `name` for this test: explain() draws it
    and ExplainSettings accepts the name."""
    import core.explain
    import core.explanation

    monkeypatch.setitem(core.explain.CAM_METHODS, name, cam_class)
    monkeypatch.setattr(core.explanation, "METHODS", (*core.explanation.METHODS, name))


def head_phantom(size: int = 128, seed: int = 0) -> np.ndarray:
    """An ellipse 'head' with a bright skull rim, darker brain and a bright 'lesion'."""
    rng = np.random.default_rng(seed)
    image = np.zeros((size, size), dtype=np.float32)
    centre = (size // 2, size // 2)
    cv2.ellipse(image, centre, (int(size * 0.38), int(size * 0.45)), 0, 0, 360, 0.9, -1)
    cv2.ellipse(image, centre, (int(size * 0.34), int(size * 0.41)), 0, 0, 360, 0.45, -1)
    cv2.circle(image, (int(size * 0.6), int(size * 0.4)), max(2, size // 12), 1.0, -1)
    image += rng.normal(0, 0.02, image.shape).astype(np.float32)
    return np.clip(image, 0, 1)


@pytest.fixture
def phantom() -> np.ndarray:
    return head_phantom()


def encode(image: np.ndarray | Image.Image, fmt: str, **options) -> bytes:
    if isinstance(image, np.ndarray):
        image = Image.fromarray(np.uint8(np.clip(image, 0, 1) * 255))
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def gallery_dataset(tmp_path_factory) -> Path:
    """Three test images per class, with their outlines, copied from the shared dataset."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"dataset not found at {SHARED_DATA}")
    return copy_shared_slice(tmp_path_factory.mktemp("gallery_data"), {"test": 3})


def copy_shared_slice(root: Path, per_split: dict[str, int]) -> Path:
    """The first images of each class of each split (with their outlines) copied to ROOT."""
    (root / "annotations").mkdir()
    for split, count in per_split.items():
        for label in LABELS:
            (root / split / label).mkdir(parents=True)
            for path in sorted((SHARED_DATA / split / label).iterdir())[:count]:
                shutil.copy(path, root / split / label / path.name)
                outline = SHARED_DATA / "annotations" / f"{path.stem}.json"
                if outline.is_file():
                    shutil.copy(outline, root / "annotations" / outline.name)
    return root


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory) -> Path:
    """Six training and three test images per class, copied from the shared dataset (never committed)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"dataset not found at {SHARED_DATA}")
    root = tmp_path_factory.mktemp("data")
    for split, count in (("train", 6), ("test", 3)):
        for label in LABELS:
            (root / split / label).mkdir(parents=True)
            for path in sorted((SHARED_DATA / split / label).iterdir())[:count]:
                shutil.copy(path, root / split / label / path.name)
    return root
