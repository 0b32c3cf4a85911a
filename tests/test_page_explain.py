"""AppTest of pages/1_Explain.py against tiny seeded checkpoints."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import encode, head_phantom

PAGE = str(Path(__file__).resolve().parent.parent / "pages" / "1_Explain.py")


def run_page(**session) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=120)
    for key, value in session.items():
        at.session_state[key] = value
    return at.run()


def upload(at: AppTest, name: str, data: bytes, mime: str = "image/png") -> AppTest:
    at.file_uploader(key="explain_upload").set_value((name, data, mime))
    return at.run()


def test_no_checkpoint_says_so_plainly(tmp_path, monkeypatch):
    monkeypatch.setenv("BRAIN_XAI_CHECKPOINTS", str(tmp_path))
    at = run_page()
    assert not at.exception
    assert "No trained model is installed" in at.warning[0].value
    assert not at.image


def test_upload_toggle_mask_move_threshold(use_tiny_checkpoints):
    at = run_page()
    assert not at.exception
    at = upload(at, "scan.png", encode(head_phantom(160), "PNG"))
    assert not at.exception
    assert len(at.image) == 4
    assert at.metric[0].value in ("glioma", "meningioma", "notumor", "pituitary", "uncertain")
    assert any("Head region found" in info.value for info in at.info)

    at.toggle[0].set_value(False).run()
    at.toggle[1].set_value(False).run()
    assert not at.exception and len(at.image) == 4
    assert any("Brain masking is off" in note.value for note in at.info)

    at.slider[0].set_value(0.8).run()
    assert not at.exception and len(at.image) == 4
    assert "0.80" in at.image[3].captions[0]


def test_bad_upload_shows_a_clear_error(use_tiny_checkpoints):
    at = upload(run_page(), "broken.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 100)
    assert not at.exception
    assert "not a readable PNG image" in at.error[0].value or "truncated" in at.error[0].value
    assert not at.image


def test_a_thumbnail_is_explained_under_a_warning_that_it_is_one(use_tiny_checkpoints):
    at = upload(run_page(), "icon.png", encode(head_phantom(160)[::8, ::8], "PNG"))
    assert not at.exception and len(at.image) == 4
    assert any("only 20x20 pixels" in warning.value for warning in at.warning)


@pytest.mark.parametrize("sample", ["mni152_t1_2mm.nii.gz", "pydicom_mr_small.dcm", "mni152_axial.png"])
def test_samples_render(use_tiny_checkpoints, sample):
    at = run_page(explain_source="Use a sample", explain_sample=sample)
    assert not at.exception
    assert len(at.image) == 4
    if sample.endswith(".nii.gz"):
        assert at.slider(key="explain_slice").value == 47  # middle axial slice of 95


def test_damaged_checkpoint_is_reported_not_raised(checkpoint_root, tmp_path, monkeypatch):
    import shutil

    shutil.copytree(checkpoint_root / "tiny_convnext", tmp_path / "broken")
    weights = tmp_path / "broken" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    monkeypatch.setenv("BRAIN_XAI_CHECKPOINTS", str(tmp_path))
    at = run_page()
    assert not at.exception
    assert "truncated or damaged" in at.error[0].value


def test_model_caption_does_not_round_accuracy_up_to_a_target():
    import ui

    metrics = {"accuracy": 714 / 768, "macro_f1": 0.93021, "num_images": 768, "split": "test"}
    loaded = SimpleNamespace(name="effnet", config=SimpleNamespace(metrics=metrics))
    caption = ui.model_caption(loaded)
    assert caption.startswith("Test accuracy 92.97% (714 of 768 images of the `test` split), macro-F1 0.930")
    assert "checkpoints/effnet/README.md" in caption
    assert ui.model_caption(SimpleNamespace(name="x", config=SimpleNamespace(metrics={}))).startswith("No test metrics")


def test_check_this_heatmap_draws_the_curves_with_a_verdict(use_tiny_checkpoints):
    at = upload(run_page(), "scan.png", encode(head_phantom(128), "PNG"))
    assert not at.exception and not at.get("plotly_chart")[1:2] == []  # probabilities and hover figure only
    charts_before = len(at.get("plotly_chart"))
    next(button for button in at.button if button.label == "Check this heatmap").click().run()
    assert not at.exception
    verdicts = [box.value for box in [*at.success, *at.info, *at.warning] if "AUC" in box.value]
    assert len(verdicts) == 1 and verdicts[0].split(":")[0] in ("Faithful", "Not faithful", "Mixed")
    assert len(at.get("plotly_chart")) == charts_before + 1
    at.slider[1].set_value(0.7).run()  # opacity: the check stays, from the cache
    assert not at.exception and any("AUC" in box.value for box in [*at.success, *at.info, *at.warning])


def test_eigen_cam_is_captioned_as_the_same_for_every_class(use_tiny_checkpoints):
    at = upload(run_page(), "scan.png", encode(head_phantom(128), "PNG"))
    at.selectbox[1].set_value("Eigen-CAM").run()
    assert not at.exception
    assert "(the same for every class)" in at.image[1].captions[0]
    at.selectbox[1].set_value("Grad-CAM").run()
    assert "for '" in at.image[1].captions[0]
    at.selectbox[1].set_value("Integrated Gradients").run()
    assert at.image[1].captions[0].startswith("Integrated Gradients (input pixels) for '")  # no layer


def test_sanity_check_on_request(use_tiny_checkpoints):
    at = upload(run_page(), "scan.png", encode(head_phantom(128), "PNG"))
    next(button for button in at.button if button.label == "Randomise the model and compare").click().run()
    assert not at.exception
    verdicts = [box.value for box in [*at.success, *at.warning] if "randomised" in box.value]
    assert len(verdicts) == 1 and verdicts[0].split(":")[0] in ("Passes", "Fails")


def test_the_page_says_when_masking_the_input_changes_the_prediction(use_tiny_checkpoints, monkeypatch):
    import core.inference

    real = core.inference.slice_logits

    def masking_flips_the_class(loaded, images, mask_input=True):
        logits = real(loaded, images, mask_input)
        return logits if mask_input else logits[:, ::-1].copy()  # another class wins without the mask

    monkeypatch.setattr("cached.slice_logits", masking_flips_the_class)
    import streamlit as st

    st.cache_data.clear()  # earlier tests cached this scan's predictions
    at = upload(run_page(), "scan.png", encode(head_phantom(128), "PNG"))
    assert not at.exception
    warnings = [w.value for w in at.warning if "changes the prediction" in w.value]
    metric = at.metric[0]
    shown = metric.delta.split(" ")[0] if metric.value == "uncertain" else metric.value  # 'glioma 30% or ...'
    assert len(warnings) == 1 and f"{shown} with masking" in warnings[0]


def test_times_over_a_second_are_given_in_seconds():
    import ui

    assert ui.duration(84.4) == "84 ms" and ui.duration(354367) == "354.4 s"


def test_a_near_tie_is_shown_as_uncertain_with_both_classes(use_tiny_checkpoints):
    at = upload(run_page(), "scan.png", encode(head_phantom(160), "PNG"))
    warnings = [box.value for box in at.warning if box.value.startswith("uncertain: ")]
    assert at.metric[0].value == "uncertain"  # an untrained model: its classes are within a few points
    assert len(warnings) == 1 and " or " in warnings[0] and "%" in warnings[0]
    assert warnings[0].split(". ")[0].removeprefix("uncertain: ") == at.metric[0].delta
    assert "points, under the default 20 points (this checkpoint has no fitted margin)" in warnings[0]
    assert any("no familiarity check" in caption.value for caption in at.caption)


def test_volume_scores_every_slice_and_jumps_to_the_most_suspicious(use_tiny_checkpoints):
    import numpy as np

    from core.checkpoint import load_checkpoint
    from core.volume import score_volume, slice_reader
    from tests.test_image_input import nifti_bytes

    volume = np.stack([head_phantom(64, seed) for seed in range(7)], axis=2).astype(np.float32)
    data = nifti_bytes(volume, gz=True)
    at = upload(run_page(), "head.nii.gz", data, "application/gzip")
    assert not at.exception and at.slider(key="explain_slice").value == 3
    at = at.button(key="explain_score_volume").click().run()
    assert not at.exception
    assert "explain_score_volume" not in [b.key for b in at.button]  # scored: the button has done its job
    go = at.button(key="explain_go_top")
    top = score_volume(load_checkpoint("tiny_convnext"), *slice_reader(data, "head.nii.gz")).most_suspicious(1)[0]
    assert f"({top})" in go.label
    if top != 3:
        at = go.click().run()
        assert not at.exception and at.slider(key="explain_slice").value == top
    assert any(c.value.startswith(f"Slice {top}:") for c in at.caption)


def test_uploaded_outline_is_drawn_and_scored(use_tiny_checkpoints):
    import json

    import numpy as np

    from core.annotations import outline_from_labelme
    from core.checkpoint import load_checkpoint
    from core.explain import explain
    from core.image_input import load_image
    from core.localisation import localisation_metrics

    data = encode(head_phantom(160), "PNG")
    at = upload(run_page(), "scan.png", data)
    outline = {"shapes": [{"shape_type": "polygon", "points": [[50, 50], [100, 50], [100, 100], [50, 100]]}],
               "imageHeight": 160, "imageWidth": 160}  # fmt: skip
    at.file_uploader(key="explain_outline").set_value(("scan.json", json.dumps(outline).encode(), "application/json"))
    at = at.run()
    assert not at.exception
    pixels = load_image(data, "scan.png").pixels
    result = explain(load_checkpoint("tiny_convnext"), pixels)
    expected = localisation_metrics(result.heatmap, outline_from_labelme(json.dumps(outline).encode(), (160, 160)).mask,
                                    0.5, head=result.brain_mask)  # fmt: skip
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["IoU at threshold 0.50"] == f"{expected['iou']:.2f}"
    assert metrics["Pointing game"] == ("hit" if expected["pointing_game"] else "miss")
    assert np.isclose(float(metrics["Heatmap mass inside the outline"].rstrip("%")) / 100,
                      expected["mass_inside_tumour"], atol=0.006)  # fmt: skip

    at.file_uploader(key="explain_outline").set_value(("notes.json", b"[1, 2", "application/json"))
    at = at.run()
    assert not at.exception and "not a LabelMe outline" in at.error[0].value


def test_full_file_name_is_shown_and_patient_box_only_for_dicom(use_tiny_checkpoints):
    import numpy as np

    from tests.test_image_input import make_dicom

    long_name = "brain_mri_study_2026_11_30_series_0042_axial_t1_post_contrast_slice_017.png"
    at = upload(run_page(), long_name, encode(head_phantom(160), "PNG"))
    assert not at.exception and any(long_name in c.value for c in at.caption)
    assert not at.checkbox  # a PNG has no patient fields to offer
    at = upload(at, "study.dcm", make_dicom(np.uint16(head_phantom(96) * 1000)), "application/dicom")
    assert not at.exception
    assert [c.label for c in at.checkbox] == ["Put the patient's name, ID, birth date and study date from the DICOM "
                                              "in the report"]  # fmt: skip
    assert not at.checkbox[0].value  # off unless the user opts in


def test_a_slow_method_runs_in_a_worker_and_shows_its_result(use_tiny_checkpoints):
    at = upload(run_page(), "scan.png", encode(head_phantom(128), "PNG"))
    at.selectbox[1].set_value("Score-CAM").run()
    assert not at.exception
    assert at.image[1].captions[0].startswith("Score-CAM at ") and " for '" in at.image[1].captions[0]
    assert not [b for b in at.button if b.label.startswith("Cancel")]  # gone once the job is done
    assert not at.get("progress")


def test_road_check_on_request(use_tiny_checkpoints):
    at = upload(run_page(), "scan.png", encode(head_phantom(128), "PNG"))
    next(button for button in at.button if button.label == "Check with ROAD").click().run()
    assert not at.exception
    verdicts = [box.value for box in [*at.success, *at.warning] if "ROAD" in box.value and "random map" in box.value]
    assert len(verdicts) == 1 and verdicts[0].startswith(("ROAD agrees", "ROAD does not confirm"))


def test_a_colour_image_is_explained_with_a_warning_that_it_is_not_grey(use_tiny_checkpoints):
    """A screenshot of a heatmap overlay, uploaded again: the page says the colours changed what
    the model sees."""
    import numpy as np
    from PIL import Image

    grey = np.uint8(head_phantom(160) * 255)
    overlay = np.stack([grey, grey // 2, 255 - grey], axis=-1)  # a colour map over the whole slice
    at = upload(run_page(), "overlay.png", encode(Image.fromarray(overlay), "PNG"))
    assert not at.exception and len(at.image) == 4
    assert any(box.value.startswith("This image is in colour") for box in at.warning)


def test_a_trimmed_screenshot_gives_its_size_as_uploaded_and_as_trimmed(use_tiny_checkpoints):
    import numpy as np

    canvas = np.zeros((400, 500), dtype=np.float32)
    canvas[150:250, 200:300] = head_phantom(100)
    at = upload(run_page(), "screenshot.png", encode(canvas, "PNG"))
    assert not at.exception and len(at.image) == 4
    assert any("PNG, 500x400 pixels (trimmed to " in caption.value for caption in at.caption)
    assert any("empty border" in caption.value for caption in at.caption)
