"""The case report: a PDF page per scan whose text says what the page shows, patient fields only on request."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pypdf
import pypdfium2

from core.batch import explain_files
from core.checkpoint import load_checkpoint
from core.explain import explain
from core.explanation import ExplainSettings
from core.image_input import load_image, patient_fields
from core.model_card import card_summary
from core.report import ReportScan, case_report
from tests.conftest import encode, head_phantom
from tests.test_image_input import make_dicom


def pdf_text(data: bytes) -> list[str]:
    return [" ".join(page.extract_text().split()) for page in pypdf.PdfReader(io.BytesIO(data)).pages]


def test_cli_report_has_a_page_per_explained_scan(checkpoint_root, tmp_path):
    scan = tmp_path / "scan.png"
    scan.write_bytes(encode(head_phantom(96), "PNG"))
    dicom = tmp_path / "study.dcm"
    dicom.write_bytes(make_dicom(np.uint16(head_phantom(64) * 1000)))  # carries PatientName Secret^Patient
    (tmp_path / "broken.png").write_bytes(b"\x89PNG no")
    checkpoint = checkpoint_root / "tiny_convnext"
    results = explain_files([scan, dicom, tmp_path / "broken.png"], checkpoint, tmp_path / "out",
                            ExplainSettings("Grad-CAM"), progress=False, report=True)  # fmt: skip
    pages = pdf_text((tmp_path / "out" / "report.pdf").read_bytes())
    assert len(pages) == 2  # the broken file has no page
    for page, path, result in zip(pages, (scan, dicom), results):
        assert f"Prediction: {result['prediction']}" in page or "uncertain" in page
        assert hashlib.sha256(path.read_bytes()).hexdigest() in page.replace(" ", "")
        assert "Grad-CAM at layer stages.3" in page and "not a medical device" in page and path.name in page
        assert "tiny_convnext" in page
    assert "Secret" not in pages[1]  # no patient field unless asked for


def test_report_page_renders_and_carries_patient_fields_only_when_given(checkpoint_root):
    loaded = load_checkpoint(checkpoint_root / "tiny_convnext")
    data = make_dicom(np.uint16(head_phantom(64) * 1000), PatientID="ID-42")
    image = load_image(data, "study.dcm")
    page = ReportScan("study.dcm", hashlib.sha256(data).hexdigest(), image.file_format, image.pixels,
                      explain(loaded, image.pixels), colormap="Cividis", faithfulness="Faithful: checked.",
                      patient=patient_fields(data, "study.dcm"))  # fmt: skip
    pdf = case_report([page], "tiny_convnext", card_summary(checkpoint_root / "tiny_convnext"))
    text = pdf_text(pdf)[0]
    assert "Secret^Patient" in text and "ID-42" in text and "Faithfulness check: Faithful: checked." in text
    assert "No test measurement is recorded" in text  # the tiny model has no card
    picture = np.asarray(pypdfium2.PdfDocument(pdf)[0].render(scale=1).to_pil().convert("RGB"))
    assert picture.shape[0] > picture.shape[1] > 500  # A4 portrait
    top = picture[: picture.shape[0] // 3]
    colourful = np.abs(top.astype(int) - top.mean(axis=2, keepdims=True)).max(axis=2) > 40
    assert colourful.mean() > 0.01  # the heatmap and overlay were drawn, in colour
    assert patient_fields(encode(head_phantom(64), "PNG"), "a.png") == {}


def test_explain_page_report_for_a_scored_volume_adds_its_chart_page(checkpoint_root):
    from core.report import scan_report
    from core.volume import score_volume, slice_reader
    from tests.test_image_input import nifti_bytes

    loaded = load_checkpoint(checkpoint_root / "tiny_convnext")
    data = nifti_bytes(np.stack([head_phantom(64, seed) for seed in range(4)], axis=2).astype(np.float32))
    image = load_image(data, "head.nii", slice_index=1)
    settings = ExplainSettings("Grad-CAM")
    volume = score_volume(loaded, *slice_reader(data, "head.nii"))
    pdf = scan_report(loaded, data, "head.nii", image, explain(loaded, image.pixels, settings), settings,
                      display={"threshold": 0.3, "colormap": "Viridis"}, warnings=("Masking changes it.",),
                      volume=volume, top=2)  # fmt: skip
    first, second = pdf_text(pdf)
    assert "slice 1 of 0-3" in first and "Warning: Masking changes it." in first and "heatmap >= 0.30" in first
    assert "Every slice of head.nii" in second and "4 slices." in second
    assert sum(f"slice {i}:" in second for i in volume.most_suspicious(2)) == 2
