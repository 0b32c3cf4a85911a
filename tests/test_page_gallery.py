"""AppTest of pages/3_Gallery.py on a small fixture dataset copied from the shared data."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

PAGE = str(Path(__file__).resolve().parent.parent / "pages" / "3_Gallery.py")


def test_gallery_browses_cards_and_opens_one(use_tiny_checkpoints, gallery_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("BRAIN_XAI_DATA", str(gallery_dataset))
    monkeypatch.setenv("BRAIN_XAI_CACHE", str(tmp_path / "cache"))
    at = AppTest.from_file(PAGE, default_timeout=300).run()
    assert not at.exception
    assert "12 images" in at.markdown[-1].value or any("Accuracy" in m.value for m in at.markdown)
    # Find a class/outcome with cards, then open the first card.
    outcome_radio = at.radio[0]
    for outcome in ("TP", "FN", "FP"):
        outcome_radio.set_value(outcome).run()
        if at.button and at.button[0].label == "Open":
            break
    assert not at.exception
    cards = len(at.image)
    assert cards >= 1
    at.button[0].click().run()
    assert not at.exception
    assert len(at.image) == cards + 5  # original, annotation, heatmap + colour bar, overlay
    opened = at.session_state["gallery_selected"]
    assert at.subheader[0].value == opened  # the detail comes first, above the grid, where the user looks
    at.button(key="close_detail").click().run()
    assert at.session_state["gallery_selected"] is None and len(at.image) == cards
    at.button(key=f"open_{opened}").click().run()

    at.slider[0].set_value(0.3).run()  # IoU re-read from the stored curves: no new evaluation
    assert not at.exception
    assert len(list((tmp_path / "cache").iterdir())) == 1
    assert any("threshold 0.30" in m.value for m in at.markdown)
    at.slider[0].set_value(0.95).run()  # most IoUs are 0 here: still shown, not taken for "no outline"
    captions = [c for image in at.image for c in image.captions if c.startswith("true ")]
    outlined = [c for c in captions if not c.startswith("true notumor")]
    assert outlined and all("IoU" in c for c in outlined), captions


def test_missing_dataset_explains_the_layout(use_tiny_checkpoints, tmp_path, monkeypatch):
    import core.gallery

    monkeypatch.setenv("BRAIN_XAI_DATA", str(tmp_path / "nowhere"))
    monkeypatch.setattr(core.gallery, "DEFAULT_DATA_ROOTS", ())
    at = AppTest.from_file(PAGE).run()
    assert not at.exception
    assert "ROOT/SPLIT/<class>/<image>" in at.warning[0].value


def test_a_typed_folder_that_does_not_exist_is_named_not_replaced(use_tiny_checkpoints, tmp_path):
    at = AppTest.from_file(PAGE)
    at.session_state["gallery_root"] = str(tmp_path / "typo")
    at.run()
    assert not at.exception
    assert f"There is no folder `{tmp_path / 'typo'}`" in at.warning[0].value


def test_method_table_has_the_baselines_and_the_sanity_check_runs(use_tiny_checkpoints, gallery_dataset, tmp_path,
                                                                   monkeypatch):  # fmt: skip
    monkeypatch.setenv("BRAIN_XAI_DATA", str(gallery_dataset))
    monkeypatch.setenv("BRAIN_XAI_CACHE", str(tmp_path / "cache"))
    at = AppTest.from_file(PAGE, default_timeout=300).run()
    assert not at.exception
    table = next(frame.value for frame in at.dataframe if "pointing_game_lift" in frame.value.columns)
    assert {"uniform in head", "centred Gaussian", "brightness in head"} <= set(table["method"])
    assert (
        table[table["model"] == "tiny_convnext"]["pointing_game_lift"].notna().all()
        or table["pointing_game"].max() == 0
    )
    next(b for b in at.button if b.label.startswith("Run the sanity check")).click().run()
    assert not at.exception
    sanity = next(frame.value for frame in at.dataframe if "passes" in frame.value.columns)
    assert len(sanity) == 6 and sanity["rank correlation, all randomised"].between(-1, 1).all()
