"""AppTest of pages/2_Compare.py against two tiny seeded checkpoints."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from core.explanation import METHODS
from tests.conftest import LABELS, encode, head_phantom

PAGE = str(Path(__file__).resolve().parent.parent / "pages" / "2_Compare.py")


def test_compare_sample_and_method_grid(use_tiny_checkpoints):
    at = AppTest.from_file(PAGE, default_timeout=180)
    at.session_state["compare_source"] = "Use a sample"
    at.session_state["compare_sample"] = "pydicom_mr_small.dcm"
    at.run()
    assert not at.exception
    assert len(at.image) == 8  # two rows of original | heatmap + colour bar | overlay
    boxes = [box.value for box in [*at.success, *at.info, *at.warning]]
    verdicts = [text for text in boxes if text.startswith(("Both models", "The models disagree"))]
    assert len(verdicts) == 1
    shown = [header.value for header in at.subheader]
    # each model's prediction, whole, or 'uncertain' with both classes (the tiny models are near-ties)
    assert sum(header in (*LABELS, "uncertain") for header in shown) == 2
    assert any(text.value.endswith("% confidence") or text.value.startswith("uncertain: ") for text in at.markdown)
    uncertain = sum(header == "uncertain" for header in shown)
    assert sum(" points, under the " in caption.value for caption in at.caption) == uncertain  # and why
    assert any("Window centre" in caption.value for caption in at.caption)  # how the DICOM was read
    peak = next(m for m in at.metric if m.label == "Distance between peaks")
    assert peak.value.endswith("mm")  # the DICOM gives pixel spacing

    at.slider[0].set_value(0.7).run()
    assert not at.exception and "0.70" in at.image[3].captions[0]

    at.toggle(key="run_grid").set_value(True).run()
    assert not at.exception
    assert len(at.image) == 8 + len(METHODS)  # every method, the two input attributions included


def test_a_thumbnail_is_compared_under_a_warning_that_it_is_one(use_tiny_checkpoints):
    at = AppTest.from_file(PAGE, default_timeout=180).run()
    at.file_uploader(key="compare_upload").set_value(("icon.png", encode(head_phantom(160)[::8, ::8], "PNG"),
                                                      "image/png")).run()  # fmt: skip
    assert not at.exception and len(at.image) == 8
    assert any("only 20x20 pixels" in warning.value for warning in at.warning)


def test_one_model_is_not_enough(tmp_path, monkeypatch, checkpoint_root):
    import shutil

    shutil.copytree(checkpoint_root / "tiny_convnext", tmp_path / "only")
    monkeypatch.setenv("BRAIN_XAI_CHECKPOINTS", str(tmp_path))
    at = AppTest.from_file(PAGE).run()
    assert not at.exception and "needs two installed models" in at.warning[0].value


def test_model_a_is_the_one_with_the_better_record(tmp_path, monkeypatch, checkpoint_root):
    """The stronger model is listed first, so its numbers are not read as the weaker one's."""
    import json
    import shutil

    for name, accuracy in (("a_convnext", 0.87), ("b_effnet", 0.92)):
        shutil.copytree(checkpoint_root / ("tiny_convnext" if "convnext" in name else "tiny_effnet"), tmp_path / name)
        config = tmp_path / name / "config.json"
        config.write_text(json.dumps({**json.loads(config.read_text()), "metrics": {"accuracy": accuracy}}))
    monkeypatch.setenv("BRAIN_XAI_CHECKPOINTS", str(tmp_path))
    at = AppTest.from_file(PAGE, default_timeout=120).run()
    assert not at.exception
    assert [at.sidebar.selectbox[0].value, at.sidebar.selectbox[1].value] == ["b_effnet", "a_convnext"]
