"""AppTest of app.py, the home page: it loads the models once and says which are usable."""

from __future__ import annotations

import shutil
from pathlib import Path

from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parent.parent / "app.py")


def test_home_lists_the_models_it_loaded(use_tiny_checkpoints):
    at = AppTest.from_file(APP, default_timeout=120).run()
    assert not at.exception
    assert "tiny_convnext, tiny_effnet" in at.success[0].value and not at.warning


def test_home_names_a_damaged_checkpoint(checkpoint_root, tmp_path, monkeypatch):
    root = tmp_path / "checkpoints"
    shutil.copytree(checkpoint_root, root)
    (root / "tiny_effnet" / "config.json").write_text('{"schema_version": 1}')
    monkeypatch.setenv("BRAIN_XAI_CHECKPOINTS", str(root))
    import streamlit as st

    st.cache_resource.clear()
    at = AppTest.from_file(APP, default_timeout=120).run()
    assert not at.exception
    assert "tiny_convnext" in at.success[0].value and "tiny_effnet" in at.warning[0].value
