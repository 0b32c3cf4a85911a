"""Whole volumes: a ZIP of a DICOM series in anatomical order, every slice scored, the CLI's rows."""

from __future__ import annotations

import csv
import io
import json
import zipfile

import numpy as np
import pytest
from pydicom.uid import generate_uid

from core.checkpoint import load_checkpoint
from core.cli import main
from core.dicom_series import open_series
from core.image_input import MAX_DECODED_BYTES, ImageInputError, load_image
from core.volume import SliceScore, VolumeScores, score_volume, slice_reader
from tests.conftest import head_phantom
from tests.test_image_input import make_dicom, nifti_bytes
from tests.test_report import pdf_text

AXIAL = [1, 0, 0, 0, 1, 0]


def series_zip(slices: dict[str, dict], extra: dict[str, bytes] | None = None) -> bytes:
    """A ZIP of single-frame DICOMs: file name -> DICOM fields (each slice's pixels differ by its 'value')."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, fields in slices.items():
            pixels = np.zeros((48, 48), np.uint16)
            pixels[8:40, 8:40] = fields.pop("value")
            archive.writestr(name, make_dicom(pixels, **fields))
        for name, data in (extra or {}).items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_series_is_sorted_along_the_slice_normal_not_by_name():
    uid = generate_uid()
    # Written in shuffled order; the position along the normal (z here) decides the order.
    heights = {"a.dcm": 10.0, "b.dcm": -20.0, "c.dcm": 0.0, "d.dcm": -10.0}
    data = series_zip(
        {
            name: {
                "value": 100,
                "SeriesInstanceUID": uid,
                "ImageOrientationPatient": AXIAL,
                "ImagePositionPatient": [0, 0, z],
                "InstanceNumber": 1,
            }  # fmt: skip
            for name, z in heights.items()
        },
        {"DICOMDIR.txt": b"not an image", "__MACOSX/._a.dcm": b"x"},
    )
    series = open_series(data, MAX_DECODED_BYTES)
    assert series.members == ("b.dcm", "d.dcm", "c.dcm", "a.dcm") and series.order == "position"
    assert series.skipped == 1  # the text file; macOS's copies are not counted as slices
    loaded = load_image(data, "study.zip", slice_index=3)
    assert (loaded.file_format, loaded.num_slices, loaded.slice_index) == ("DICOM series", 4, 3)
    assert "ImagePositionPatient" in loaded.notes[0] and "1 file(s)" in loaded.notes[0]


def test_every_slice_of_a_series_with_rectangular_pixels_is_read_as_load_image_reads_it():
    """Scoring every slice reads them one by one: each must be resampled to square pixels as
    the slice shown on the page is, or the chart would score other pixels than the page shows."""
    uid = generate_uid()
    fields = {"SeriesInstanceUID": uid, "ImageOrientationPatient": AXIAL, "PixelSpacing": [1.0, 0.5]}
    data = series_zip({f"{z}.dcm": {"value": 100 + z, "ImagePositionPatient": [0, 0, z], **fields} for z in range(3)})
    count, read = slice_reader(data, "study.zip")
    for index in range(count):
        shown = load_image(data, "study.zip", slice_index=index)
        assert shown.pixels.shape == (96, 48) and shown.pixel_spacing_mm == (0.5, 0.5)
        np.testing.assert_array_equal(read(index).pixels, shown.pixels)


def test_series_without_positions_uses_instance_numbers():
    uid = generate_uid()
    data = series_zip({f"{name}.dcm": {"value": 50 + number, "SeriesInstanceUID": uid, "InstanceNumber": number}
                       for name, number in (("x", 3), ("y", 1), ("z", 2))})  # fmt: skip
    assert open_series(data, MAX_DECODED_BYTES).members == ("y.dcm", "z.dcm", "x.dcm")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"PK\x03\x04 broken", "not a readable ZIP"),
        (series_zip({}, {"readme.txt": b"hello"}), "no DICOM image"),
        (
            series_zip(
                {
                    "a.dcm": {"value": 10, "SeriesInstanceUID": "1.2.3", "SeriesDescription": "T1"},
                    "b.dcm": {"value": 20, "SeriesInstanceUID": "1.2.4", "SeriesDescription": "FLAIR"},
                }
            ),
            "mixes 2 series: T1 \\(1 slice\\), FLAIR \\(1 slice\\)",
        ),  # fmt: skip
    ],
)
def test_bad_series_are_refused_with_a_reason(data, message):
    with pytest.raises(ImageInputError, match=message):
        load_image(data, "study.zip")


def test_a_study_export_with_several_series_says_which_folder_holds_each():
    """A PACS export zipped whole holds a folder per series; the message names each series, its
    slice count and its folder, so the user can zip the one they want."""
    t1, flair = {"SeriesInstanceUID": "1.2.3", "SeriesDescription": "T1 AX POST"}, {"SeriesInstanceUID": "1.2.4"}
    data = series_zip({"DICOM/S1/a.dcm": {"value": 10, **t1}, "DICOM/S1/b.dcm": {"value": 20, **t1},
                       "DICOM/S2/c": {"value": 30, **flair}}, {"DICOMDIR": b"not an image"})  # fmt: skip
    with pytest.raises(ImageInputError) as error:
        load_image(data, "study.zip")
    message = str(error.value)
    assert "T1 AX POST (2 slices, in DICOM/S1/)" in message and "unnamed (1 slice, in DICOM/S2/)" in message
    assert "Zip one series" in message


def test_multi_frame_dicom_decodes_only_the_frame_asked_for():
    frames = np.stack([np.full((40, 40), 10 + i, dtype=np.uint16) for i in range(4)])
    frames[:, :, :20] = 0
    data = make_dicom(frames)
    count, read = slice_reader(data, "cine.dcm")
    assert count == 4
    for index in range(count):
        assert np.array_equal(read(index).pixels, load_image(data, "cine.dcm", slice_index=index).pixels)


def test_every_slice_is_scored_and_blank_slices_say_why(checkpoint_root):
    volume = np.stack([head_phantom(64, seed) for seed in range(6)], axis=2).astype(np.float32)
    volume[:, :, 0] = 0  # a blank edge slice
    data = nifti_bytes(volume, gz=True)
    count, read = slice_reader(data, "head.nii.gz")
    seen = []
    scores = score_volume(load_checkpoint(checkpoint_root / "tiny_convnext"), count, read, batch_size=4,
                          on_progress=lambda done, total: seen.append((done, total)))  # fmt: skip
    assert count == 6 and [s.index for s in scores.slices] == list(range(6)) and seen == [(4, 6), (6, 6)]
    assert scores.slices[0].error and scores.slices[0].probabilities is None
    assert all(abs(sum(s.probabilities) - 1) < 1e-6 for s in scores.slices[1:])
    top = scores.most_suspicious(2)
    assert 0 not in top and scores.suspicion(scores.slices[top[0]]) >= scores.suspicion(scores.slices[top[1]])


def test_unfamiliar_slices_rank_after_familiar_ones():
    names = ("glioma", "meningioma", "notumor", "pituitary")
    scores = VolumeScores(names, (SliceScore(0, (0.9, 0, 0.1, 0), "glioma", 0.01, True, False),
                                  SliceScore(1, (0.5, 0, 0.5, 0), "glioma", 0.5, False, True),
                                  SliceScore(2, (0, 0, 1, 0), "notumor", 0.5, False, False),
                                  SliceScore(3, error="blank")))  # fmt: skip
    assert scores.most_suspicious(3) == [1, 2, 0]


def test_cli_all_slices_writes_a_row_per_slice_and_the_top_slices_pictures(checkpoint_root, tmp_path):
    volume = np.stack([head_phantom(64, seed) for seed in range(5)], axis=2).astype(np.float32)
    (tmp_path / "head.nii").write_bytes(nifti_bytes(volume))
    (tmp_path / "broken.zip").write_bytes(b"PK not a zip")
    volumes = [str(tmp_path / "head.nii"), str(tmp_path / "broken.zip")]
    checkpoint = str(checkpoint_root / "tiny_convnext")
    code = main(
        [
            "explain",
            *volumes,
            "--checkpoint",
            checkpoint,
            "--all-slices",
            "--top",
            "2",
            "--report",
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert code == 1  # one volume failed, in its row
    rows = list(csv.DictReader((tmp_path / "o" / "summary.csv").open()))
    assert [r["slice"] for r in rows] == ["0", "1", "2", "3", "4", ""] and "not a readable ZIP" in rows[-1]["error"]
    assert all(r["prediction"] and float(r["p_glioma"]) >= 0 for r in rows[:5])
    run = json.loads((tmp_path / "o" / "results.json").read_text())
    top = run["volumes"][0]["most_suspicious"]
    assert len(top) == 2 and all((tmp_path / "o" / f"head_slice{i:03d}_overlay.png").is_file() for i in top)
    assert sorted(r["slice"] for r in rows if r["overlay"]) == sorted(str(i) for i in top)
    pages = pdf_text((tmp_path / "o" / "report.pdf").read_bytes())  # the volume's two pages, none for the ZIP
    assert len(pages) == 2 and f"slice {top[0]} of 0-4" in pages[0] and "Every slice of head.nii" in pages[1]


def test_cli_plane_cuts_volumes_in_the_plane_asked_for(checkpoint_root, tmp_path):
    """`--plane coronal` scores one row per coronal slice; a single explanation of a volume is its
    middle slice in that plane, pixels made square (this volume's voxels are 1 x 1.5 x 2 mm)."""
    volume = np.stack([head_phantom(48, seed) for seed in range(6)], axis=2).astype(np.float32)
    (tmp_path / "head.nii").write_bytes(nifti_bytes(volume))
    checkpoint = str(checkpoint_root / "tiny_convnext")
    scan = str(tmp_path / "head.nii")
    assert main(["explain", scan, "--checkpoint", checkpoint, "--all-slices", "--plane", "coronal",
                 "--out", str(tmp_path / "all")]) == 0  # fmt: skip
    rows = list(csv.DictReader((tmp_path / "all" / "summary.csv").open()))
    assert len(rows) == 48  # the coronal slices: one per row of the 48 x 48 axial slices
    assert main(["explain", scan, "--checkpoint", checkpoint, "--plane", "sagittal",
                 "--out", str(tmp_path / "one")]) == 0  # fmt: skip
    entry = json.loads((tmp_path / "one" / "results.json").read_text())["images"][0]
    assert any("2 mm tall and 1.5 mm wide" in note for note in entry["image_notes"])
