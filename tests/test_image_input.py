"""Every supported format decodes to a 2-D float32 slice in [0, 1]; every bad input gets a clear error."""

from __future__ import annotations

import gzip
import io
import re
import struct
import tracemalloc
import zlib
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from core.image_input import (
    COLOUR_NOTE,
    MAX_FILE_BYTES,
    ImageInputError,
    load_image,
    patient_fields,
    to_unit_range,
    upload_kind,
)
from tests.conftest import SHARED_DATA, encode, head_phantom


def assert_valid(loaded, shape=None):
    assert loaded.pixels.dtype == np.float32 and loaded.pixels.ndim == 2
    assert 0.0 <= loaded.pixels.min() and loaded.pixels.max() <= 1.0
    assert loaded.pixels.max() > loaded.pixels.min()
    if shape is not None:
        assert loaded.pixels.shape == shape


# --- raster formats --------------------------------------------------------


@pytest.mark.parametrize("fmt, name", [("PNG", "a.png"), ("JPEG", "a.jpg"), ("BMP", "a.bmp"), ("TIFF", "a.tif")])
def test_8_bit_grey_formats(fmt, name):
    phantom = head_phantom(96)
    loaded = load_image(encode(phantom, fmt), name)
    assert_valid(loaded, (96, 96))
    assert loaded.file_format == fmt
    assert np.corrcoef(loaded.pixels.ravel(), phantom.ravel())[0, 1] > 0.95


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P", "CMYK", "LA"])
def test_colour_modes_become_grey(mode):
    grey = Image.fromarray(np.uint8(head_phantom(64) * 255))
    image = grey.convert(mode)
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    assert_valid(load_image(encode(image, fmt), "scan." + fmt.lower()), (64, 64))


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16_bit_keeps_full_range(fmt):
    values = (head_phantom(64) * 60000).astype(np.uint16)
    loaded = load_image(encode(Image.fromarray(values), fmt), "scan." + fmt.lower())
    assert_valid(loaded, (64, 64))
    expected = (values - values.min()) / (values.max() - values.min())
    assert np.abs(loaded.pixels - expected).max() < 1e-4


def test_float_tiff_with_nan_and_inf():
    values = head_phantom(64).astype(np.float32) * 1000
    values[0, 0], values[0, 1] = np.nan, np.inf
    loaded = load_image(encode(Image.fromarray(values, mode="F"), "TIFF"), "scan.tiff")
    assert_valid(loaded, (64, 64))
    assert loaded.pixels[0, 0] == 0 and loaded.pixels[0, 1] == 0


def test_exif_orientation_is_applied():
    image = Image.fromarray(np.uint8(np.tile(np.linspace(0, 255, 80), (40, 1))))  # 80 wide, 40 high
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    data = encode(image, "JPEG", exif=exif.tobytes())
    assert load_image(data, "photo.jpg").pixels.shape == (80, 40)


def test_a_colour_image_is_read_as_grey_with_a_warning_and_grey_in_rgb_without_one(phantom):
    """A screenshot of a heatmap overlay or a colour-mapped slice turns into a grey that is not
    an MRI intensity; the note says so. Grey stored in three channels, even as a JPEG with its
    few levels of chroma, is an ordinary slice."""
    grey = np.uint8(phantom * 255)
    as_rgb = np.stack([grey] * 3, axis=-1)
    for fmt in ("PNG", "JPEG"):
        assert COLOUR_NOTE not in load_image(encode(Image.fromarray(as_rgb), fmt), f"grey.{fmt}").notes
    overlay = as_rgb.copy()
    overlay[20:80, 30:90] = (255, 40, 0)  # a hot spot painted over a tenth of the slice
    loaded = load_image(encode(Image.fromarray(overlay), "PNG"), "overlay.png")
    assert COLOUR_NOTE in loaded.notes and loaded.pixels.ndim == 2


def test_a_small_head_in_a_wide_empty_frame_is_trimmed_to_it_and_a_framed_one_is_not(phantom):
    """A dark viewer's screenshot or a wide field of view: the head spans a third of the side,
    where every training slice's spans at least half. It is cut down to the head with a border,
    as a training slice is framed, and the page says so; a usual slice is left alone."""
    canvas = np.zeros((384, 480), dtype=np.float32)
    canvas[150:278, 200:328] = phantom  # 128 px of 480
    loaded = load_image(encode(canvas, "PNG"), "screenshot.png")
    assert any("empty border" in note and "trimmed" in note for note in loaded.notes), loaded.notes
    top, left, height, width = loaded.trim
    assert (height, width) == (384, 480) and max(loaded.pixels.shape) < 160
    content = loaded.pixels > 0.05
    assert 0.85 < max(np.ptp(np.nonzero(content)[0]), np.ptp(np.nonzero(content)[1])) / max(loaded.pixels.shape)
    head = loaded.pixels[150 - top : 278 - top, 200 - left : 328 - left]
    np.testing.assert_allclose(head, phantom / phantom.max(), atol=0.01)  # the head itself untouched
    framed = load_image(encode(np.pad(phantom, 30), "PNG"), "framed.png")
    assert framed.trim is None and framed.pixels.shape == (188, 188)


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"dataset not found at {SHARED_DATA}")
def test_no_dataset_slice_is_trimmed():
    """The trim must not touch what the models were trained and measured on (its narrowest
    slice spans 0.497 of its side; the trim starts under 0.4)."""
    paths = sorted(SHARED_DATA.glob("*/*/*.jpg"))[::5]
    trimmed = [path.name for path in paths if load_image(path.read_bytes(), path.name).trim is not None]
    assert len(paths) > 600 and not trimmed, trimmed


def test_content_wins_over_a_wrong_extension():
    assert_valid(load_image(encode(head_phantom(64), "PNG"), "scan.jpg"))


# --- DICOM -----------------------------------------------------------------


def make_dicom(pixels: np.ndarray, **fields) -> bytes:
    frames = pixels.shape[0] if pixels.ndim == 3 else 1
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = pydicom.Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID, dataset.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
    dataset.Modality = "MR"
    dataset.PatientName = "Secret^Patient"
    dataset.Rows, dataset.Columns = pixels.shape[-2:]
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = "MONOCHROME2"
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 16, 16, 15
    dataset.PixelRepresentation = 0
    if frames > 1:
        dataset.NumberOfFrames = frames
    for key, value in fields.items():
        setattr(dataset, key, value)
    dataset.PixelData = pixels.astype(np.uint16).tobytes()
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def voi_lut_item(lut: np.ndarray, first: int = 0) -> pydicom.Dataset:
    item = pydicom.Dataset()
    item.LUTDescriptor = [len(lut), first, 16]
    item.add_new(0x00283006, "OW", lut.astype("<u2").tobytes())  # LUTData
    return item


def test_a_voi_lut_sequence_is_the_files_display_curve_when_it_has_no_window(phantom):
    """CR, DX and some MR exports give their display curve as a VOI LUT instead of a window;
    it is applied as a window would be (after rescale), and a damaged one is noted, not fatal."""
    stored = make_dicom(phantom * 4000)
    plain = load_image(stored, "plain.dcm")
    dataset = pydicom.dcmread(io.BytesIO(stored))
    dataset.VOILUTSequence = [voi_lut_item(np.sqrt(np.linspace(0, 1, 4096)) * 65535)]  # brightens the dark half
    curved = load_image(resaved(dataset), "curved.dcm")
    assert any("VOI LUT" in note for note in curved.notes)
    assert curved.pixels.mean() > plain.pixels.mean() + 0.1
    dataset.VOILUTSequence = [voi_lut_item(np.arange(10), first=0)]
    dataset.VOILUTSequence[0].LUTDescriptor = [4096, 0, 16]  # says 4096 entries, holds 10
    damaged = load_image(resaved(dataset), "damaged.dcm")
    np.testing.assert_allclose(damaged.pixels, plain.pixels)
    assert any("VOI LUT" in note and "full range" in note for note in damaged.notes)


def test_dicom_with_float_or_double_pixel_data_is_read(phantom):
    """Parametric maps store FloatPixelData or DoubleFloatPixelData instead of PixelData; pydicom
    decodes both, so both give an image (the double one used to be called "no pixel data")."""
    for keyword, dtype, bits in (("FloatPixelData", np.float32, 32), ("DoubleFloatPixelData", np.float64, 64)):
        dataset = pydicom.dcmread(io.BytesIO(make_dicom(phantom * 1000)))
        del dataset.PixelData, dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation
        dataset.BitsAllocated = bits
        setattr(dataset, keyword, (phantom * 3.5 - 1).astype(dtype).tobytes())
        loaded = load_image(resaved(dataset), "map.dcm")
        assert loaded.pixels.shape == phantom.shape
        assert np.corrcoef(loaded.pixels.ravel(), phantom.ravel())[0, 1] > 0.999


def test_palette_colour_dicom_shows_the_colour_table_not_its_indices():
    from pydicom.pixels import apply_color_lut

    name = "examples_palette.dcm"
    dataset = pydicom.dcmread(get_testdata_file(name))
    luma = apply_color_lut(dataset.pixel_array, dataset).astype(float) @ [0.299, 0.587, 0.114]
    loaded = load_image(open(get_testdata_file(name), "rb").read(), name)
    assert np.corrcoef(loaded.pixels.ravel(), luma.ravel())[0, 1] > 0.999  # the indices alone: 0.70
    assert any("PALETTE COLOR" in note for note in loaded.notes)
    del dataset.RedPaletteColorLookupTableDescriptor
    with pytest.raises(ImageInputError, match="colour table is missing or damaged"):
        load_image(resaved(dataset), name)


def test_a_window_that_leaves_no_contrast_is_set_aside_with_a_note(phantom):
    """A window copied from other data (every value above it) would make the slice one grey."""
    stored = (phantom * 1000 + 3000).astype(np.uint16)
    loaded = load_image(make_dicom(stored, WindowCenter=40, WindowWidth=80), "ct.dcm")
    assert np.corrcoef(loaded.pixels.ravel(), stored.ravel())[0, 1] > 0.999
    assert any("leaves no contrast" in note for note in loaded.notes)
    windowed = load_image(make_dicom(stored, WindowCenter=3500, WindowWidth=400), "ct.dcm")
    assert windowed.pixels.max() == 1 and any("Window centre 3500" in note for note in windowed.notes)


def test_a_float_dicom_without_valid_values_says_so_whatever_its_window():
    dataset = pydicom.dcmread(io.BytesIO(make_dicom(np.zeros((64, 64), np.uint16), WindowCenter=40, WindowWidth=80)))
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 32, 32, 31
    del dataset.PixelData
    dataset.FloatPixelData = np.full((64, 64), np.nan, np.float32).tobytes()
    with pytest.raises(ImageInputError, match="no valid pixel values"):
        load_image(resaved(dataset), "nan.dcm")


def test_dicom_pixel_padding_is_background_not_the_brightest_tissue(phantom):
    outside = phantom < 0.05
    stored = (phantom * 4000).astype(np.uint16)
    stored[outside] = 65535  # padding at the top of the range, as some scanners write it
    dataset = pydicom.dcmread(io.BytesIO(make_dicom(stored)))
    dataset.PixelPaddingValue = 65535
    dataset["PixelPaddingValue"].VR = "US"
    loaded = load_image(resaved(dataset), "padded.dcm")
    assert np.corrcoef(loaded.pixels.ravel(), phantom.ravel())[0, 1] > 0.99  # unhandled: -0.87
    assert loaded.pixels[outside].max() == 0 and any("padding" in note for note in loaded.notes)

    signed = (phantom * 2000 - 1000).astype(np.int16)
    signed[outside] = -2000 - np.arange(outside.sum()) % 1000  # a padding range, as CT writes it
    dataset = pydicom.dcmread(io.BytesIO(make_dicom(signed.view(np.uint16))))
    dataset.PixelRepresentation = 1
    dataset.PixelData = signed.tobytes()
    dataset.PixelPaddingValue, dataset.PixelPaddingRangeLimit = -2000, -2999
    dataset["PixelPaddingValue"].VR = dataset["PixelPaddingRangeLimit"].VR = "SS"
    loaded = load_image(resaved(dataset), "ct.dcm")
    assert np.corrcoef(loaded.pixels.ravel(), phantom.ravel())[0, 1] > 0.99
    assert loaded.pixels[outside].max() == 0


def jpeg_lossless_dicom(stored: np.ndarray, signed: bool = False, frames: int = 1) -> bytes:
    """A DICOM whose pixels are JPEG lossless (Process 14, SV1), as many PACS archives keep them."""
    import imagecodecs
    from pydicom.encaps import encapsulate

    dataset = pydicom.dcmread(io.BytesIO(make_dicom(np.zeros(stored.shape[-2:], np.uint16))))
    dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation = 12, 11, int(signed)
    raw = (stored.astype(np.int32) & 0xFFF).astype(np.uint16)  # two's complement in 12 bits when signed
    planes = raw if raw.ndim == 3 else raw[None]
    if frames > 1:
        dataset.NumberOfFrames = frames
    dataset.PixelData = encapsulate([imagecodecs.jpeg8_encode(plane, lossless=True, bitspersample=12)
                                     for plane in planes])  # fmt: skip
    dataset["PixelData"].VR = "OB"
    dataset.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.70"
    return resaved(dataset)


def test_jpeg_lossless_dicom_is_read_exactly(phantom):
    """JPEG lossless (Process 14) is common in PACS archives and beyond pydicom's installed
    decoders: it is read through imagecodecs, bit for bit, signed values and frames included."""
    stored = (phantom * 4000).astype(np.uint16)
    loaded = load_image(jpeg_lossless_dicom(stored), "lossless.dcm")
    np.testing.assert_allclose(loaded.pixels, (stored - stored.min()) / np.ptp(stored), atol=1e-6)

    signed = stored.astype(np.int32) - 2000  # e.g. CT numbers before the rescale
    loaded = load_image(jpeg_lossless_dicom(signed, signed=True), "signed.dcm")
    np.testing.assert_allclose(loaded.pixels, (signed - signed.min()) / np.ptp(signed), atol=1e-6)

    frames = np.stack([stored, stored[::-1], stored[:, ::-1]])
    loaded = load_image(jpeg_lossless_dicom(frames, frames=3), "frames.dcm", slice_index=1)
    assert loaded.num_slices == 3
    np.testing.assert_allclose(loaded.pixels, (stored[::-1] - stored.min()) / np.ptp(stored), atol=1e-6)


def test_the_jpeg_size_is_read_from_its_start_of_frame_past_fill_bytes():
    import imagecodecs

    from core.image_input import _jpeg_size

    stream = imagecodecs.jpeg8_encode(np.zeros((48, 80), np.uint16), lossless=True, bitspersample=12)
    assert _jpeg_size(stream) == (48, 80)
    assert _jpeg_size(stream[:2] + b"\xff\xff" + stream[2:]) == (48, 80)
    assert _jpeg_size(b"\xff\xd8" + bytes(20)) is None


def test_jpeg_dicoms_pillow_cannot_read_are_read():
    """pydicom's own 12-bit JPEG Extended and JPEG lossless RGB files: Pillow reads neither."""
    for name, shape in (("JPGExtended.dcm", (1024, 256)), ("SC_rgb_jpeg_gdcm.dcm", (100, 100))):
        loaded = load_image(open(get_testdata_file(name), "rb").read(), name)
        assert loaded.pixels.shape == shape and loaded.pixels.std() > 0.05, name


def test_a_jpeg_stream_larger_than_its_dicom_declares_is_refused_before_decoding(phantom):
    """The decode budget is checked on Rows x Columns; the JPEG stream inside must agree."""
    import imagecodecs

    dataset = pydicom.dcmread(io.BytesIO(jpeg_lossless_dicom((phantom * 4000).astype(np.uint16))))
    from pydicom.encaps import encapsulate

    dataset.PixelData = encapsulate([imagecodecs.jpeg8_encode(np.zeros((4000, 4000), np.uint16), lossless=True)])
    with pytest.raises(ImageInputError, match="corrupt"):
        load_image(resaved(dataset), "bomb.dcm")


def resaved(dataset) -> bytes:
    """A (modified) DICOM dataset written back to bytes in memory."""
    buffer = io.BytesIO()
    dataset.save_as(buffer)
    return buffer.getvalue()


def test_dicom_test_file_decodes_with_spacing():
    data = open(get_testdata_file("MR_small.dcm"), "rb").read()
    loaded = load_image(data, "MR_small.dcm")
    assert_valid(loaded, (64, 64))
    assert loaded.file_format == "DICOM" and loaded.pixel_spacing_mm == (0.3125, 0.3125)


@pytest.mark.parametrize("name", ["IM0001", "IM0001.IMA", "1.2.840.113619.2.55.3", "scan.dcm"])
@pytest.mark.parametrize("preamble", [True, False])
def test_dicom_files_named_as_hospitals_name_them_are_read(name, preamble):
    """No suffix, Siemens' .IMA, a UID for a name, with or without the 128-byte preamble and
    "DICM" (older systems leave them out): known by their bytes, not refused by their names."""
    data = open(get_testdata_file("MR_small.dcm"), "rb").read()
    data = data if preamble else data[132:]
    loaded = load_image(data, name)
    assert_valid(loaded, (64, 64))
    assert loaded.file_format == "DICOM"
    assert patient_fields(data, name)["PatientID"] == "4MR1"  # the report reads the same file as DICOM too


def dataset_only(dataset, implicit: bool = True, little: bool = True) -> bytes:
    """The dataset without preamble or File Meta header, as older archives and some tools write it."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    buffer = DicomBytesIO()
    buffer.is_implicit_VR, buffer.is_little_endian = implicit, little
    write_dataset(buffer, pydicom.Dataset(dataset))
    return buffer.getvalue()


@pytest.mark.parametrize("implicit, little", [(True, True), (False, True), (False, False)])
def test_dicom_without_a_file_meta_header_is_read_in_the_encoding_it_was_written_in(implicit, little):
    reference = load_image(open(get_testdata_file("MR_small.dcm"), "rb").read(), "MR_small.dcm")
    source = "MR_small.dcm" if little else "MR_small_bigendian.dcm"  # pixel bytes already in that order
    data = dataset_only(pydicom.dcmread(get_testdata_file(source)), implicit, little)
    for name in ("x.dcm", "IM0001"):
        loaded = load_image(data, name)
        np.testing.assert_array_equal(loaded.pixels, reference.pixels)
        assert loaded.pixel_spacing_mm == reference.pixel_spacing_mm


def test_a_multi_frame_dicom_without_a_file_meta_header_reads_its_chosen_frame():
    frames = np.full((3, 40, 40), 100, dtype=np.uint16)
    for index, frame in enumerate(frames):
        frame[: 10 * (index + 1)] = 0  # frame 2: its first 30 rows dark
    data = dataset_only(pydicom.dcmread(io.BytesIO(make_dicom(frames))))
    chosen = load_image(data, "cine", slice_index=2)
    assert chosen.num_slices == 3 and chosen.pixels[:30].max() == 0.0 and chosen.pixels[30:].min() == 1.0


def test_a_deflated_multi_frame_dicom_reads_its_chosen_frame():
    """Deflated explicit VR: the file's bytes are not the dataset's, so a frame is decoded from
    the dataset pydicom inflated, not from the file."""
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    frames = np.full((3, 40, 40), 100, dtype=np.uint16)
    for index, frame in enumerate(frames):
        frame[: 10 * (index + 1)] = 0
    dataset = pydicom.dcmread(io.BytesIO(make_dicom(frames)))
    dataset.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    chosen = load_image(resaved(dataset), "deflated.dcm", slice_index=2)
    assert chosen.num_slices == 3 and chosen.pixels[:30].max() == 0.0 and chosen.pixels[30:].min() == 1.0


def test_compressed_dicom_without_a_file_meta_header_says_what_is_missing():
    dataset = pydicom.dcmread(get_testdata_file("MR_small_RLE.dcm"))
    with pytest.raises(ImageInputError, match="does not say how its compressed pixel data are encoded"):
        load_image(dataset_only(dataset, implicit=False), "x.dcm")


def test_files_of_unknown_names_are_read_by_their_bytes_or_refused():
    assert upload_kind("scan.xyz", encode(head_phantom(64), "PNG")) == "image"
    assert upload_kind("report.txt", b"hello") is None
    assert upload_kind("series", b"PK\x03\x04" + bytes(60)) == "ZIP"  # a ZIP of a series without .zip
    assert upload_kind("scan.png", b"\x08\x00" + bytes(200)) == "image"  # the name decides where it is ours
    with pytest.raises(ImageInputError, match="not a supported format"):
        load_image(b"hello", "report.txt")


def test_dicom_rescale_and_window_are_applied():
    pixels = np.tile(np.arange(0, 1000, 10, dtype=np.uint16), (100, 1))  # 0..990 across columns
    data = make_dicom(pixels, RescaleSlope=2, RescaleIntercept=-100, WindowCenter=500, WindowWidth=400)
    loaded = load_image(data, "x.dcm")
    # rescaled = 2 * raw - 100; the window keeps 300..700, i.e. raw 200..400
    row = loaded.pixels[0]
    assert row[:20].max() == 0.0 and row[41:].min() == 1.0
    assert 0.4 < row[30] < 0.6


def functional_group(**sequences) -> pydicom.Dataset:
    """One item of a Shared or Per-frame Functional Groups Sequence: {"PixelMeasuresSequence": {...}}."""
    group = pydicom.Dataset()
    for keyword, fields in sequences.items():
        item = pydicom.Dataset()
        for key, value in fields.items():
            setattr(item, key, value)
        setattr(group, keyword, pydicom.Sequence([item]))
    return group


def test_enhanced_mr_spacing_rescale_and_window_come_from_its_functional_groups():
    """Enhanced (multi-frame) MR and CT keep spacing, rescale and window in functional groups,
    shared by all frames or per frame, not at the top level of the file."""
    ramp = np.tile(np.arange(0, 1000, 10, dtype=np.uint16), (100, 1))  # 0..990 across columns
    shared = functional_group(
        PixelMeasuresSequence={"PixelSpacing": [0.5, 0.75], "SliceThickness": 3},
        PixelValueTransformationSequence={"RescaleSlope": 2, "RescaleIntercept": -100, "RescaleType": "US"},
    )
    windows = [
        functional_group(FrameVOILUTSequence={"WindowCenter": centre, "WindowWidth": 400}) for centre in (500, 900)
    ]
    data = make_dicom(np.stack([ramp, ramp]), SharedFunctionalGroupsSequence=pydicom.Sequence([shared]),
                      PerFrameFunctionalGroupsSequence=pydicom.Sequence(windows))  # fmt: skip
    first = load_image(data, "enhanced.dcm", slice_index=0)
    assert first.pixel_spacing_mm == (0.5, 0.5) and first.pixels.shape == (100, 150)  # columns were 0.75 mm apart
    assert any("0.5 mm tall and 0.75 mm wide" in note for note in first.notes)
    assert "Window centre 500, width 400 from the file." in first.notes
    row = first.pixels[0]  # as the top-level rescale and window test: raw 200..400 kept (columns 20-40, now 30-60)
    assert row[:29].max() == 0.0 and row[62:].min() == 1.0 and 0.4 < row[45] < 0.6
    second = load_image(data, "enhanced.dcm", slice_index=1)  # its own window: rescaled 700..1100, raw 400..600
    assert second.pixels[0][:59].max() == 0.0 and second.pixels[0][92:].min() == 1.0  # columns 40-60, now 60-90


def test_monochrome1_is_inverted():
    pixels = np.tile(np.arange(100, dtype=np.uint16), (64, 1))
    plain = load_image(make_dicom(pixels), "a.dcm").pixels
    inverted = load_image(make_dicom(pixels, PhotometricInterpretation="MONOCHROME1"), "a.dcm").pixels
    np.testing.assert_allclose(plain, 1 - inverted, atol=1e-6)


def test_multi_frame_dicom_chooses_a_frame():
    frames = np.stack([np.full((40, 40), i * 10, dtype=np.uint16) for i in range(5)])
    frames[:, :20] = 0  # each frame has contrast
    data = make_dicom(frames)
    middle = load_image(data, "series.dcm")
    assert middle.num_slices == 5 and middle.slice_index == 2
    assert load_image(data, "series.dcm", slice_index=4).slice_index == 4
    with pytest.raises(ImageInputError, match="frame number 9"):
        load_image(data, "series.dcm", slice_index=9)


def test_dicom_without_pixel_data():
    data = make_dicom(np.ones((40, 40)))
    dataset = pydicom.dcmread(io.BytesIO(data))
    del dataset.PixelData
    with pytest.raises(ImageInputError, match="is an MR Image but holds no pixel data"):
        load_image(resaved(dataset), "report.dcm")
    del dataset.SOPClassUID, dataset.file_meta.MediaStorageSOPClassUID
    with pytest.raises(ImageInputError, match="holds no image \\(no pixel data\\): it may be a report"):
        load_image(resaved(dataset), "report.dcm")


@pytest.mark.parametrize(
    "name, says",
    [
        ("DICOMDIR", "DICOMDIR: the index of a CD or DVD's files, not an image. Upload one of the image files"),
        ("rtstruct.dcm", "holds no image: it is an RT Structure Set"),
        ("test-SR.dcm", "holds no image: it is a Comprehensive SR"),
    ],
)
def test_a_dicom_file_without_an_image_is_named_by_what_it_is(name, says):
    """A hospital CD's first file is its DICOMDIR; structure sets and reports come with series."""
    with pytest.raises(ImageInputError, match=re.escape(says)):
        load_image(Path(get_testdata_file(name)).read_bytes(), name)


def test_compressed_dicom_without_decoder():
    dataset = pydicom.dcmread(get_testdata_file("MR_small_jpeg_ls_lossless.dcm"))
    dataset.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG-2 video: no decoder installed
    with pytest.raises(ImageInputError, match="compressed \\(MPEG2.*no decoder"):
        load_image(resaved(dataset), "video.dcm")


def test_jpeg_ls_and_jpeg_2000_dicoms_decode_with_the_installed_decoders():
    for name in ("MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm"):
        loaded = load_image(open(get_testdata_file(name), "rb").read(), name)
        reference = load_image(open(get_testdata_file("MR_small.dcm"), "rb").read(), "MR_small.dcm")
        assert loaded.pixels.shape == (64, 64) and np.allclose(loaded.pixels, reference.pixels, atol=1e-6)


def test_truncated_dicom():
    data = make_dicom((head_phantom(64) * 1000).astype(np.uint16))
    with pytest.raises(ImageInputError, match="truncated or corrupt"):
        load_image(data[: len(data) - 3000], "cut.dcm")


# --- NIfTI -----------------------------------------------------------------


def nifti_bytes(volume: np.ndarray, gz: bool = False) -> bytes:
    data = nib.Nifti1Image(volume, np.diag([1.0, 1.5, 2.0, 1.0])).to_bytes()
    return gzip.compress(data) if gz else data


@pytest.mark.parametrize("gz", [False, True])
def test_nifti_defaults_to_middle_axial_slice(gz):
    volume = np.zeros((40, 50, 9), dtype=np.float32)
    for k in range(9):
        volume[5:35, 5:45, k] = k + 1
    volume[10:20, 10:20, :] = 50
    loaded = load_image(nifti_bytes(volume, gz), "brain.nii.gz" if gz else "brain.nii")
    assert loaded.num_slices == 9 and loaded.slice_index == 4
    assert loaded.pixels.shape == (75, 40)  # rotated for display; 50 rows 1.5 mm apart become 75 at 1 mm
    assert loaded.pixel_spacing_mm == (1.0, 1.0)


def test_nifti_slices_are_shown_as_radiologists_and_the_dicom_of_the_same_scan_show_them():
    """Radiological convention, as PACS viewers and a standard DICOM slice shown as stored: the
    patient's right on the image's left in axial and coronal slices, anterior on the left in
    sagittal ones, superior or anterior at the top. A marker at the patient's right, anterior and
    superior corner must therefore be top left in every plane."""
    volume = np.zeros((40, 40, 40), dtype=np.float32)  # RAS: indices grow to the right, anterior, superior
    volume[5:35, 5:35, 5:35] = 1.0
    volume[28:35, 28:35, 28:35] = 5.0
    for axis in (0, 1, 2):
        pixels = load_image(nifti_bytes(volume), "v.nii", slice_index=31, axis=axis).pixels
        rows, columns = np.nonzero(pixels > 0.9)
        top_left = rows.mean() < pixels.shape[0] / 2 and columns.mean() < pixels.shape[1] / 2
        assert top_left, (axis, rows.mean(), columns.mean())
    axial = np.zeros((40, 40), dtype=np.uint16)  # a DICOM axial slice (rows to the patient's left, then posterior)
    axial[5:35, 5:35], axial[5:12, 5:12] = 100, 500  # right and anterior: first columns, first rows
    dicom = load_image(make_dicom(axial, ImageOrientationPatient=[1, 0, 0, 0, 1, 0]), "axial.dcm").pixels
    rows, columns = np.nonzero(dicom > 0.9)
    assert rows.mean() < 20 and columns.mean() < 20


@pytest.mark.parametrize("codes", [("L", "P", "S"), ("R", "A", "I"), ("P", "S", "R"), ("S", "L", "A")])
def test_nifti_stored_in_any_axis_order_shows_the_same_slices(codes):
    """Volumes are stored in the scanner's or the converter's voxel order (ITK's LPS, a sagittal
    acquisition's PSR, ...); the axial, coronal and sagittal slices must be the same ones, the
    same way up, as for the volume stored in the standard RAS order."""
    rng = np.random.default_rng(0)
    ras = nib.Nifti1Image(rng.random((20, 24, 28)).astype(np.float32), np.diag([1.0, 1.5, 2.0, 1.0]))
    turn = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt(("R", "A", "S")),
                                           nib.orientations.axcodes2ornt(codes))  # fmt: skip
    stored = ras.as_reoriented(turn)
    assert nib.aff2axcodes(stored.affine) == codes
    for axis in (0, 1, 2):
        for index in (None, 3):
            expected = load_image(ras.to_bytes(), "a.nii", slice_index=index, axis=axis)
            loaded = load_image(stored.to_bytes(), "b.nii", slice_index=index, axis=axis)
            np.testing.assert_array_equal(loaded.pixels, expected.pixels)
            assert (loaded.num_slices, loaded.slice_index) == (expected.num_slices, expected.slice_index)
            assert loaded.pixel_spacing_mm == expected.pixel_spacing_mm
            assert any("".join(codes) in note for note in loaded.notes)


def test_nifti_axis_and_slice_are_selectable():
    volume = np.random.default_rng(0).random((40, 50, 60)).astype(np.float32)
    loaded = load_image(nifti_bytes(volume), "v.nii", axis=0, slice_index=3)
    # 60 slices 2 mm apart by 50 rows 1.5 mm apart, shown with square 1.5 mm pixels
    assert loaded.num_slices == 40 and loaded.slice_index == 3 and loaded.pixels.shape == (80, 50)


def test_nifti_with_nans_decodes():
    volume = np.random.default_rng(0).random((40, 40, 5)).astype(np.float32)
    volume[0, :, :] = np.nan
    assert_valid(load_image(nifti_bytes(volume), "nan.nii"))


def test_4d_nifti_is_refused():
    with pytest.raises(ImageInputError, match="4-D"):
        load_image(nifti_bytes(np.ones((40, 40, 5, 3), dtype=np.float32)), "fmri.nii")


def test_truncated_nifti():
    data = nifti_bytes(np.random.default_rng(0).random((64, 64, 20)).astype(np.float32), gz=True)
    with pytest.raises(ImageInputError, match="truncated or corrupt"):
        load_image(data[: len(data) // 2], "cut.nii.gz")


# --- bad input -------------------------------------------------------------


def png_with_declared_size(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    "data, name, message",
    [
        (b"", "empty.png", "empty"),
        (b"\x00" * (MAX_FILE_BYTES + 1), "big.png", "limit is 50 MB"),
        (np.random.default_rng(1).bytes(5000), "noise.png", "not a readable PNG image: it is damaged"),
        (np.random.default_rng(1).bytes(5000), "noise", "not an image we can read"),
        (b"hello, this is a text file", "notes.txt", "not a supported format"),
        (png_with_declared_size(100_000, 100_000), "bomb.png", "megapixel"),
        (encode(head_phantom(64)[:1, :], "PNG"), "line.png", "a line, not a slice"),
        (encode(np.full((64, 64), 0.5), "PNG"), "flat.png", "same value"),
    ],
)
def test_bad_input_gets_a_clear_message(data, name, message):
    with pytest.raises(ImageInputError, match=message):
        load_image(data, name)


def test_a_thumbnail_is_read_with_a_note_that_it_is_one():
    """Thumbnails, icons and dose grids give a result (enlarged for the model) and say why it means little."""
    loaded = load_image(encode(head_phantom(64)[:20, :24], "PNG"), "tiny.png")
    assert loaded.pixels.shape == (20, 24)
    assert any("only 24x20 pixels" in note and "full-resolution" in note for note in loaded.notes)
    assert not load_image(encode(head_phantom(64), "PNG"), "full.png").notes


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_raster(fmt):
    data = encode(head_phantom(256, seed=3), fmt)
    with pytest.raises(ImageInputError, match="truncated or corrupt"):
        load_image(data[: len(data) // 2], "cut." + fmt.lower())


# --- hostile and unusual files (the hardening issue) -------------------------


def test_dicom_modality_lut_is_applied_to_the_integer_pixels():
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    stored = np.tile(np.arange(64, dtype=np.uint16) % 16, (64, 1))
    lut = Dataset()
    lut.LUTDescriptor = [16, 0, 16]
    lut.ModalityLUTType = "OD"
    lut.LUTData = np.array([0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120, 130, 140, 2000], "<u2").tobytes()
    loaded = load_image(make_dicom(stored, ModalityLUTSequence=Sequence([lut])), "lut.dcm")
    # the LUT maps stored value 15 to 2000: after it, 14 (-> 140) is far below 15 (-> 2000)
    assert loaded.pixels[0, 15] == pytest.approx(1.0) and loaded.pixels[0, 14] < 0.1
    assert not loaded.notes


def test_dicom_with_an_empty_modality_lut_still_shows_and_says_so():
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    loaded = load_image(make_dicom((head_phantom(64) * 1000).astype(np.uint16),
                                   ModalityLUTSequence=Sequence([Dataset()])), "empty-lut.dcm")  # fmt: skip
    assert_valid(loaded)
    assert any("Modality LUT is damaged" in note for note in loaded.notes)


def test_dicom_whose_pixel_data_do_not_fit_its_declared_size_is_called_damaged():
    """Columns damaged from 48 to 2: pydicom read the 48x48 pixels as 24 frames of 48x2, and a
    three-dimensional 'slice' went on to the model (found by the fuzz test)."""
    data = make_dicom(np.ones((48, 48)) * 100)
    dataset = pydicom.dcmread(io.BytesIO(data))
    dataset.Columns = 2
    with pytest.raises(ImageInputError, match="do not fit the image it declares .2x48"):
        load_image(resaved(dataset), "x.dcm")


@pytest.mark.parametrize("written", ["monochrome2", "MONOCHROME 2", "MONO2", "", None, "YBR_FULL", "MONOCHROME3"])
def test_a_missing_or_misspelt_photometric_interpretation_is_read_as_grey_with_a_note(phantom, written):
    """Old ACR-NEMA files and some converters leave PhotometricInterpretation out or misspell it;
    pydicom then refuses to decode, and the file was called "truncated or corrupt". One sample
    per pixel is grey: the file is read as MONOCHROME2 and the page says so."""
    stored = (phantom * 1000).astype(np.uint16)
    dataset = pydicom.dcmread(io.BytesIO(make_dicom(stored)))
    if written is None:
        del dataset.PhotometricInterpretation, dataset.SamplesPerPixel
    else:
        dataset.PhotometricInterpretation = written
    loaded = load_image(resaved(dataset), "acr-nema.ima")
    np.testing.assert_allclose(loaded.pixels, to_unit_range(stored.astype(np.float64)), atol=1e-6)
    assert any("read as MONOCHROME2" in note for note in loaded.notes), loaded.notes


def test_a_colour_dicom_without_its_photometric_interpretation_is_read_as_rgb(phantom):
    rgb = np.stack([phantom * 200, phantom * 100, phantom * 50], axis=-1).astype(np.uint8)
    dataset = pydicom.dcmread(io.BytesIO(make_dicom(phantom)))
    dataset.SamplesPerPixel, dataset.PlanarConfiguration = 3, 0
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 8, 8, 7
    dataset.PixelData = rgb.tobytes()
    del dataset.PhotometricInterpretation
    loaded = load_image(resaved(dataset), "capture.dcm")
    assert np.corrcoef(loaded.pixels.ravel(), phantom.ravel())[0, 1] > 0.999
    assert any("read as RGB" in note for note in loaded.notes), loaded.notes


@pytest.mark.parametrize("missing", [("BitsStored",), ("BitsStored", "HighBit"), ("PixelRepresentation",),
                                     ("BitsAllocated",), ("BitsAllocated", "BitsStored", "HighBit"),
                                     ("SamplesPerPixel",)])  # fmt: skip
def test_pixel_fields_an_old_file_leaves_out_are_filled_from_what_it_holds(phantom, missing):
    """ACR-NEMA and hand-made files leave out fields pydicom needs; each has one safe reading:
    bits stored = bits allocated, unsigned, bits allocated from the size of the pixel data."""
    stored = (phantom * 1000).astype(np.uint16)
    dataset = pydicom.dcmread(io.BytesIO(make_dicom(stored)))
    for keyword in missing:
        delattr(dataset, keyword)
    loaded = load_image(resaved(dataset), "old.ima")
    np.testing.assert_allclose(loaded.pixels, to_unit_range(stored.astype(np.float64)), atol=1e-6)
    assert any(missing[0] in note for note in loaded.notes), loaded.notes


def test_a_colour_dicom_without_planar_configuration_is_read_interleaved(phantom):
    rgb = np.stack([phantom * 200, phantom * 100, phantom * 50], axis=-1).astype(np.uint8)
    dataset = pydicom.dcmread(io.BytesIO(make_dicom(phantom)))
    dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 3, "RGB"
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 8, 8, 7
    dataset.PixelData = rgb.tobytes()
    loaded = load_image(resaved(dataset), "capture.dcm")
    assert np.corrcoef(loaded.pixels.ravel(), phantom.ravel())[0, 1] > 0.999
    assert any("PlanarConfiguration" in note for note in loaded.notes), loaded.notes


def test_pixel_fields_that_cannot_be_guessed_are_named_in_the_message(phantom):
    dataset = pydicom.dcmread(io.BytesIO(make_dicom((phantom * 1000).astype(np.uint16))))
    del dataset.BitsAllocated
    dataset.PixelData = dataset.PixelData + b"\0"  # one byte too many: no bit depth fits
    with pytest.raises(ImageInputError, match="does not say how many bits each pixel takes"):
        load_image(resaved(dataset), "odd.dcm")


def test_dicom_without_rows_says_what_is_missing():
    data = make_dicom((head_phantom(64) * 1000).astype(np.uint16))
    dataset = pydicom.dcmread(io.BytesIO(data))
    del dataset.Rows
    with pytest.raises(ImageInputError, match="Rows or Columns missing"):
        load_image(resaved(dataset), "norows.dcm")


def test_dicom_declaring_frames_it_does_not_hold_is_refused_without_decoding_them():
    data = make_dicom(np.zeros((64, 64), dtype=np.uint16), NumberOfFrames=200_000)
    tracemalloc.start()
    with pytest.raises(ImageInputError, match="truncated or corrupt"):
        load_image(data, "many.dcm")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 50 * 2**20, peak


def test_a_long_compressed_cine_is_read_one_frame_at_a_time():
    """300 frames of 1024x1024 at 16 bits decode to 600 MB, over the 512 MB budget for a whole
    volume; compressed, the file is small, and only the frame asked for is decoded."""
    import imagecodecs
    from pydicom.encaps import encapsulate

    frame = (np.add.outer(np.arange(1024), np.arange(1024)) // 8).astype(np.uint16)  # smooth: compresses well
    dataset = pydicom.dcmread(io.BytesIO(jpeg_lossless_dicom((head_phantom(64) * 4000).astype(np.uint16))))
    dataset.Rows = dataset.Columns = 1024
    dataset.NumberOfFrames = 300
    dataset.PixelData = encapsulate([imagecodecs.jpeg8_encode(frame, lossless=True, bitspersample=12)] * 300)
    data = resaved(dataset)
    assert len(data) < 50 * 2**20
    tracemalloc.start()
    loaded = load_image(data, "cine.dcm", slice_index=150)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert loaded.num_slices == 300 and loaded.slice_index == 150 and loaded.pixels.shape == (1024, 1024)
    assert peak < 200 * 2**20, peak


def test_a_large_format_radiograph_is_read_at_a_stride_that_fits_a_slice():
    """A 4300x4300 detector (18.5 megapixels) is over the 16 megapixels of a slice: one pixel in
    2 along each side is used, the spacing doubled, and the note says so; 41 megapixels are refused."""
    stored = cv2.resize((head_phantom(256) * 4000).astype(np.uint16), (4300, 4300), interpolation=cv2.INTER_NEAREST)
    loaded = load_image(make_dicom(stored, PixelSpacing=[0.1, 0.1]), "dx.dcm")
    assert loaded.pixels.shape == (2150, 2150) and loaded.pixel_spacing_mm == (0.2, 0.2)
    assert any("one pixel in 2 along each side" in note for note in loaded.notes), loaded.notes
    dataset = pydicom.dcmread(io.BytesIO(make_dicom(np.zeros((64, 64), np.uint16))))
    dataset.Rows, dataset.Columns = 6400, 6400
    with pytest.raises(ImageInputError, match="40 megapixel"):
        load_image(resaved(dataset), "huge.dcm")


def test_a_frame_larger_than_the_budget_is_refused_before_decoding():
    data = make_dicom(np.zeros((64, 64), dtype=np.uint16))
    dataset = pydicom.dcmread(io.BytesIO(data))
    dataset.Rows = dataset.Columns = 4000
    dataset.SamplesPerPixel = 20
    with pytest.raises(ImageInputError, match="over the 512 MB limit"):
        load_image(resaved(dataset), "wide.dcm")


def test_a_small_nifti_bomb_is_refused_from_its_header():
    header = nib.Nifti1Header()
    header.set_data_shape((680, 680, 680))
    header.set_data_dtype(np.int16)
    # 348-byte header, 4 bytes of extension flag, then a few MB of zeros: it claims ~600 MB
    data = gzip.compress(header.binaryblock + b"\0" * 4 + b"\0" * 8_000_000)
    assert len(data) < 100_000
    with pytest.raises(ImageInputError, match="over the 512 MB limit"):
        load_image(data, "bomb.nii.gz")


def test_a_nifti_with_a_long_header_extension_is_read():
    """Converters and toolkits add header extensions (AFNI's XML, DICOM tags, CIFTI, JSON
    sidecars) of several kilobytes between the header and the voxels; they must not make the
    file look truncated."""
    volume = np.random.default_rng(2).random((40, 40, 5)).astype(np.float32)
    image = nib.Nifti1Image(volume, np.eye(4))
    image.header.extensions.append(nib.nifti1.Nifti1Extension("comment", b"converter notes " * 400))
    for gz in (False, True):
        data = gzip.compress(image.to_bytes()) if gz else image.to_bytes()
        loaded = load_image(data, "extended.nii.gz" if gz else "extended.nii")
        assert loaded.num_slices == 5 and loaded.pixels.max() == pytest.approx(1.0)


def test_a_nifti_whose_voxels_are_said_to_start_gigabytes_in_is_refused_before_decompressing():
    header = nib.Nifti1Header()
    header.set_data_shape((40, 40, 5))
    header.set_data_dtype(np.float32)
    header.set_data_offset(3 * 2**30)  # a 3 GB "extension" of zeros, 3 MB once compressed
    data = gzip.compress(header.binaryblock + b"\0" * 4 + b"\0" * 6_000_000)
    with pytest.raises(ImageInputError, match="over the 512 MB limit"):
        load_image(data, "far.nii.gz")


def test_nifti2_rgb_and_complex_volumes():
    volume = np.random.default_rng(1).random((40, 40, 5)).astype(np.float32)
    nifti2 = nib.Nifti2Image(volume, np.eye(4)).to_bytes()
    assert load_image(nifti2, "v2.nii").num_slices == 5

    rgb = np.zeros((40, 40, 5), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    rgb["R"][10:30, 10:30] = 200
    loaded = load_image(nib.Nifti1Image(rgb, np.eye(4)).to_bytes(), "rgb.nii")
    assert loaded.pixels.shape == (40, 40) and loaded.pixels.max() == pytest.approx(1.0)

    complex_volume = (volume + 1j * volume).astype(np.complex64)
    with pytest.raises(ImageInputError, match="complex-valued"):
        load_image(nib.Nifti1Image(complex_volume, np.eye(4)).to_bytes(), "kspace.nii")


def test_a_multi_page_tiff_is_read_page_by_page():
    pages = [Image.fromarray(np.uint8(head_phantom(64, seed) * 255)) for seed in range(3)]
    buffer = io.BytesIO()
    pages[0].save(buffer, format="TIFF", save_all=True, append_images=pages[1:])
    first, last = load_image(buffer.getvalue(), "stack.tif"), load_image(buffer.getvalue(), "stack.tif", slice_index=2)
    assert first.num_slices == 3 and first.slice_index == 1  # the middle page by default
    assert last.slice_index == 2 and not np.array_equal(first.pixels, last.pixels)
    with pytest.raises(ImageInputError, match="page number 5 does not exist"):
        load_image(buffer.getvalue(), "stack.tif", slice_index=5)


def test_a_malformed_pixel_spacing_is_noted_not_fatal():
    data = make_dicom((head_phantom(64) * 1000).astype(np.uint16), PixelSpacing=["0.5", "0.5"])
    assert data.count(b"0.5\\0.5") == 1
    loaded = load_image(data.replace(b"0.5\\0.5", b"x.y\\z.w"), "s.dcm")  # not decimal strings
    assert loaded.pixel_spacing_mm is None and any("PixelSpacing" in note for note in loaded.notes)


def test_corrupt_rle_is_called_corrupt_not_undecodable():
    dataset = pydicom.dcmread(get_testdata_file("MR_small_RLE.dcm"))
    dataset.PixelData = dataset.PixelData[:200] + b"\xff" * 64 + dataset.PixelData[264:600]
    with pytest.raises(ImageInputError) as error:
        load_image(resaved(dataset), "rle.dcm")
    assert "no decoder" not in str(error.value) and "corrupt" in str(error.value)


def test_corrupt_rle_dicom_that_panics_the_rust_decoder_gets_a_message():
    """Found by the fuzzer: pylibjpeg-rle panics (pyo3's PanicException, not an Exception)."""
    data = open(get_testdata_file("MR_small_RLE.dcm"), "rb").read()
    junk = bytes.fromhex("d71484f8cf9bf4b76f47904730")
    with pytest.raises(ImageInputError, match="corrupt"):
        load_image(data[:6917] + junk + data[6917 + len(junk) :], "rle.dcm")


def _ball(shape: tuple[int, ...], spacing: tuple[float, ...], radius_mm: float) -> np.ndarray:
    """A ball of `radius_mm` at the centre of a grid of `shape` voxels `spacing` mm apart."""
    axes = np.meshgrid(*[(np.arange(n) - (n - 1) / 2) * s for n, s in zip(shape, spacing)], indexing="ij")
    return (np.sqrt(sum(a**2 for a in axes)) <= radius_mm).astype(np.float32)


def _extent_ratio(pixels: np.ndarray) -> float:
    """Height over width of the bright region: 1 for a disc shown with square pixels."""
    rows, columns = np.nonzero(pixels > 0.5)
    return (np.ptp(rows) + 1) / (np.ptp(columns) + 1)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_a_slice_of_thick_slices_keeps_its_shape(axis):
    """Clinical volumes have thick slices (here 0.9 x 0.9 x 4.5 mm): their coronal and sagittal
    slices have pixels 5 times taller than wide, and a ball must still look round."""
    spacing = (0.9, 0.9, 4.5)
    image = nib.Nifti1Image(_ball((100, 100, 20), spacing, 30.0), np.diag([*spacing, 1.0]))
    loaded = load_image(image.to_bytes(), "thick.nii", axis=axis)
    assert 0.9 < _extent_ratio(loaded.pixels) < 1.1
    assert loaded.pixel_spacing_mm == pytest.approx((0.9, 0.9))
    if axis != 2:
        assert loaded.pixels.shape == (100, 100)
        assert any("4.5 mm tall and 0.9 mm wide" in note for note in loaded.notes)
    else:
        assert not any("resampled" in note for note in loaded.notes)


def test_a_dicom_with_rectangular_pixels_keeps_its_shape():
    """PixelSpacing gives the rows' spacing first, then the columns': 1.0 and 0.5 mm here."""
    disc = _ball((60, 120), (1.0, 0.5), 25.0) * 1000
    loaded = load_image(make_dicom(disc, PixelSpacing=[1.0, 0.5]), "rect.dcm")
    assert loaded.pixels.shape == (120, 120) and loaded.pixel_spacing_mm == (0.5, 0.5)
    assert 0.9 < _extent_ratio(loaded.pixels) < 1.1


@pytest.mark.parametrize("zooms", [(1.0, 0.0), (1.0, float("nan")), (1.0, float("inf")), (1e-30, 1e30), (1.0, 200.0)])
def test_an_unusable_or_implausible_spacing_leaves_the_slice_as_stored(zooms):
    header = nib.Nifti1Header()
    header.set_data_shape((40, 50))
    header["pixdim"][1:3] = zooms
    image = nib.Nifti1Image(np.random.default_rng(0).random((40, 50)).astype(np.float32), None, header)
    loaded = load_image(image.to_bytes(), "flat.nii")
    assert loaded.pixels.shape == (50, 40)


def test_nearly_square_pixels_are_left_as_stored():
    """Under 5 % apart (0.94 and 0.9 mm) the slice is not interpolated: no visible difference."""
    loaded = load_image(make_dicom(np.uint16(head_phantom(80) * 1000), PixelSpacing=[0.94, 0.9]), "near.dcm")
    assert loaded.pixels.shape == (80, 80) and loaded.pixel_spacing_mm == (0.94, 0.9)


def test_a_scan_that_knows_its_pixel_size_is_never_trimmed(phantom):
    """The top of the skull at a volume's edge is small in its frame; enlarging it would pass
    it off as a whole head."""
    canvas = np.zeros((384, 384), dtype=np.uint16)
    canvas[150:214, 150:214] = (phantom[::2, ::2] * 1000).astype(np.uint16)
    loaded = load_image(make_dicom(canvas, PixelSpacing=[0.5, 0.5]), "edge.dcm")
    assert loaded.trim is None and loaded.pixels.shape == (384, 384)
