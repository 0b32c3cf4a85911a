"""Explaining files and folders: mirrored output names, the same pictures as the app."""

from __future__ import annotations

import csv
import json

import cv2
import numpy as np

from core.batch import expand_inputs, explain_files
from core.checkpoint import load_checkpoint
from core.explain import explain
from core.explanation import ExplainSettings
from core.image_input import load_image
from core.render import explanation_panels
from tests.conftest import encode, head_phantom


def test_folders_are_searched_and_repeated_names_numbered(tmp_path):
    (tmp_path / "scans" / "deep").mkdir(parents=True)
    for path in ("scans/a.png", "scans/deep/b.nii.gz", "scans/notes.txt", "a.png"):
        (tmp_path / path).write_bytes(b"x")
    pairs = [(file.relative_to(tmp_path).as_posix(), stem.as_posix()) for file, stem in
             expand_inputs([tmp_path / "scans", tmp_path / "a.png", tmp_path / "a.png"])]  # fmt: skip
    assert pairs == [("scans/a.png", "scans/a"), ("scans/deep/b.nii.gz", "scans/deep/b"), ("a.png", "a"),
                     ("a.png", "a_2")]  # fmt: skip


def test_a_dicom_export_folder_is_read_whatever_its_files_are_named(tmp_path):
    """PACS exports name files IM0001, *.IMA or by UID, often without the preamble: such files
    are found by their bytes; other files, hidden ones and the DICOMDIR index are left out."""
    from pydicom.data import get_testdata_file

    dicom = open(get_testdata_file("MR_small.dcm"), "rb").read()
    (tmp_path / "export" / "SE1").mkdir(parents=True)
    files = {"IM0001": dicom, "IM0002.IMA": dicom[132:], "1.2.840.113619.2.55.3": dicom[132:], "DICOMDIR.txt": b"x",
             ".DS_Store": b"\x08\x00", "LOCKFILE": b"busy", "scan.jpe": encode(head_phantom(64), "JPEG"),
             "notes.docx": b"PK\x03\x04" + bytes(60), "DICOMDIR": dicom}  # fmt: skip
    for name, data in files.items():
        (tmp_path / "export" / "SE1" / name).write_bytes(data)
    found = sorted(file.name for file, _ in expand_inputs([tmp_path / "export"]))
    assert found == ["1.2.840.113619.2.55.3", "IM0001", "IM0002.IMA", "scan.jpe"]
    assert all(load_image((tmp_path / "export" / "SE1" / name).read_bytes(), name).pixels.size for name in found)


def test_pictures_are_the_apps_panels_and_rows_say_what_failed(checkpoint_root, tmp_path):
    scan = tmp_path / "scan.png"
    scan.write_bytes(encode(head_phantom(96), "PNG"))
    (tmp_path / "bad.png").write_bytes(b"\x89PNG broken")
    (tmp_path / "icon.png").write_bytes(encode(head_phantom(96)[:20, :20], "PNG"))
    settings = ExplainSettings("HiResCAM", target="glioma")
    results = explain_files([scan, tmp_path / "bad.png", tmp_path / "icon.png"], checkpoint_root / "tiny_convnext",
                            tmp_path / "out", settings, progress=False)  # fmt: skip
    assert results[0]["target_class"] == "glioma" and results[0]["method"] == "HiResCAM"
    assert results[0]["image_notes"] == [] and "only 20x20 pixels" in results[2]["image_notes"][0]
    assert "error" in results[1] and "prediction" not in results[1]

    image = load_image(scan.read_bytes(), scan.name).pixels
    expected = explanation_panels(image, explain(load_checkpoint(checkpoint_root / "tiny_convnext"), image,
                                                 settings).heatmap)  # fmt: skip
    written = cv2.cvtColor(cv2.imread(str(tmp_path / "out" / "scan_overlay.png")), cv2.COLOR_BGR2RGB)
    assert np.array_equal(written, expected.overlay)
    rows = list(csv.DictReader((tmp_path / "out" / "summary.csv").open()))
    assert [r["prediction"] != "" for r in rows] == [True, False, True] and rows[1]["error"]
    assert json.loads((tmp_path / "out" / "results.json").read_text())["images"] == results
