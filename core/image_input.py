"""Decode an uploaded scan (bytes + file name) into one 2-D float32 slice in [0, 1].

Nothing is written to disk: every decoder reads from memory.
"""

from __future__ import annotations

import io
import warnings
import zlib
from dataclasses import dataclass, field, replace

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_FILE_BYTES = 50 * 1024 * 1024  # a single image
MAX_VOLUME_FILE_BYTES = 200 * 1024 * 1024  # a volume or series: NIfTI, DICOM, a ZIP of a DICOM series
MAX_PIXELS = 16_000_000  # per slice: a 4000x4000 image; MRI slices are rarely over 1024x1024
# a DICOM image may be larger (large-format radiographs, digitised film): it is decoded, then one
# pixel in k along each side kept to fit MAX_PIXELS, before any float copy is made
MAX_DICOM_PIXELS = 40_000_000
MAX_DECODED_BYTES = 512 * 1024 * 1024  # a decoded series, NIfTI volume or DICOM frame, checked from headers first
MIN_SIDE = 2  # a single row or column is not a slice
PLANE_AXES = {"axial": 2, "coronal": 1, "sagittal": 0}  # the planes a NIfTI volume is sliced in: load_image's axis
# Rows and columns spaced more than 5 % differently are resampled to square pixels. Below that a
# viewer shows no visible difference, and the interpolation alone moved familiarity: 60 `val`
# slices given 4 % taller pixels went from 1 to 3-4 called unfamiliar (10 %: 1 to 1-3).
SQUARE_PIXEL_TOLERANCE = 0.05
MAX_PIXEL_ASPECT = 50  # a header giving pixels more elongated than this is taken to be wrong
SMALL_SIDE = 32  # below this a slice is a thumbnail, icon or dose grid: read, but with a warning

RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
DICOM_SUFFIXES = (".dcm", ".dicom")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
SERIES_SUFFIXES = (".zip",)  # a ZIP of one DICOM series
VOLUME_SUFFIXES = DICOM_SUFFIXES + NIFTI_SUFFIXES + SERIES_SUFFIXES
SUPPORTED_SUFFIXES = RASTER_SUFFIXES + VOLUME_SUFFIXES
RASTER_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"BM", b"II*\x00", b"MM\x00*")  # PNG, JPEG, BMP, TIFF
# A DICOM file written without its 128-byte preamble and "DICM" (older systems, some exports)
# starts with its first element's tag: group 0002 (file meta) or 0008 (identification), little-endian,
# or group 0008 big-endian (a dataset written without its file meta in explicit VR big endian).
DICOM_FIRST_GROUPS = (b"\x02\x00", b"\x08\x00", b"\x00\x08")

# Stop Pillow from silently decoding decompression bombs; we raise our own message.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS


class ImageInputError(ValueError):
    """An uploaded file cannot be used; the message says what to do instead."""


@dataclass(frozen=True)
class LoadedImage:
    """One slice ready for the model, plus what the viewer needs to know about it."""

    pixels: np.ndarray  # 2-D float32 in [0, 1]
    file_format: str  # "PNG", "JPEG", "DICOM", "NIfTI", ...
    num_slices: int = 1  # frames (DICOM) or slices along the chosen axis (NIfTI)
    slice_index: int = 0
    pixel_spacing_mm: tuple[float, float] | None = None  # (row, column)
    notes: tuple[str, ...] = field(default_factory=tuple)
    # (top, left, height, width): where `pixels` lie in the slice as read, when an empty border was trimmed
    trim: tuple[int, int, int, int] | None = None

    @property
    def position(self) -> str:
        return slice_position(self.slice_index, self.num_slices)


CONTENT_LEVEL = 0.05  # what a slice shows: brighter than this share of its range (as core.preprocess.head_box)
MOSTLY_EMPTY_SIDE = 0.4  # trimmed when what it shows spans less of its side (the dataset's slices: 0.5 or more)
TRIMMED_SPAN = 0.9  # ... to a frame whose side it spans this share of
COLOUR_NOTE = (
    "This image is in colour (a heatmap overlay, a colour map or a screenshot?). MRI is grey: the colours were "
    "turned into grey, which changes what the model sees. Upload the original grey scan."
)


def slice_position(index: int, count: int) -> str:
    """Where a slice is in its file, numbered from 0 as the slider, the API and the CLI number it
    ("slice 1 of 0-3"); empty for a single image."""
    return f"slice {index} of 0-{count - 1}" if count > 1 else ""


def load_image(
    data: bytes,
    filename: str,
    *,
    slice_index: int | None = None,
    axis: int = 2,
) -> LoadedImage:
    """Decode bytes into a 2-D float32 image in [0, 1].

    Args:
        data: the file's bytes.
        filename: used for its suffix only (never opened).
        slice_index: frame of a multi-frame DICOM or TIFF, slice of a NIfTI volume or of a
            ZIP of a DICOM series; default the middle one.
        axis: NIfTI axis to slice along (0 sagittal, 1 coronal, 2 axial).

    Returns:
        A LoadedImage.

    Raises:
        ImageInputError: with a message a clinician can act on.
    """
    if not data:
        raise ImageInputError("The file is empty (0 bytes). Please upload the scan again.")
    kind = upload_kind(filename, data)
    if kind is None:
        raise ImageInputError(
            f"'{filename}' is not a supported format. Upload PNG, JPEG, BMP, TIFF, "
            "DICOM, NIfTI (.nii, .nii.gz) or a ZIP of one DICOM series."
        )
    if message := oversize_message(kind, len(data)):
        raise ImageInputError(message)
    suffix = filename.rsplit(".", 1)[-1].upper() if "." in filename else ""
    decode = {
        "ZIP": lambda: _load_series(data, slice_index),
        "NIfTI": lambda: _load_nifti(data, slice_index, axis),
        "DICOM": lambda: _load_dicom(data, slice_index),
        "image": lambda: _load_raster(data, slice_index, suffix),
    }[kind]
    try:
        loaded = decode()
    except ImageInputError:
        raise
    except MemoryError as error:
        raise ImageInputError(f"The {kind} file needs more memory than allowed; export a smaller image.") from error
    except Exception as error:  # noqa: BLE001 - third-party parsers raise many types on malformed bytes
        raise ImageInputError(
            f"The {kind} file is truncated or corrupt and cannot be read. Export it again and re-upload."
        ) from error
    return _finished(loaded)


def upload_kind(filename: str, data: bytes) -> str | None:
    """What load_image reads a file as: "ZIP", "NIfTI", "DICOM" or "image"; None when it is none
    of these. The name's suffix decides where it is one of ours; DICOM files named as hospitals
    name them (no suffix, ".IMA", a UID such as 1.2.840.113619.2.55.3) are known by their bytes."""
    name = filename.lower()
    if name.endswith(SERIES_SUFFIXES):
        return "ZIP"
    if name.endswith(NIFTI_SUFFIXES):
        return "NIfTI"
    if name.endswith(DICOM_SUFFIXES) or _looks_like_dicom(data):
        return "DICOM"
    if name.endswith(RASTER_SUFFIXES):
        return "image"
    return sniffed_kind(data) or ("image" if "." not in name else None)


def oversize_message(kind: str, size: int) -> str | None:
    """Why a file of upload_kind `kind` and `size` bytes is refused, or None when it fits."""
    limit = MAX_FILE_BYTES if kind == "image" else MAX_VOLUME_FILE_BYTES
    if size <= limit:
        return None
    return (
        f"The file is {size / 1e6:.0f} MB; the limit is {limit // 2**20} MB for this kind of file. "
        "Export a single slice, or a smaller series, and try again."
    )


def sniffed_kind(head: bytes) -> str | None:
    """What a file's first bytes (256 are enough) say it is: "ZIP", "DICOM" or "image"; or None."""
    if head.startswith(b"PK\x03\x04"):
        return "ZIP"
    if _looks_like_dicom(head) or head[:2] in DICOM_FIRST_GROUPS:
        return "DICOM"
    if head.startswith(RASTER_MAGIC):
        return "image"
    return None


def _looks_like_dicom(data: bytes) -> bool:
    return len(data) > 132 and data[128:132] == b"DICM"


def _check_size(shape: tuple[int, ...], max_pixels: int = MAX_PIXELS) -> None:
    height, width = shape[:2]
    if height * width > max_pixels:
        raise ImageInputError(
            f"The image is {width}x{height} pixels, over the {max_pixels // 1_000_000} megapixel "
            "limit. Downsample it or export one slice."
        )
    if min(height, width) < MIN_SIDE:
        raise ImageInputError(
            f"The image is {width}x{height} pixels: a line, not a slice. Upload the full-resolution slice."
        )


def thumbnail_note(shape: tuple[int, ...]) -> str | None:
    """The note for a slice smaller than a diagnostic one (the familiarity model calls such
    enlarged thumbnails unfamiliar; the note says why), None for a slice of SMALL_SIDE or more."""
    height, width = shape[:2]
    if min(height, width) >= SMALL_SIDE:
        return None
    return (
        f"This image is only {width}x{height} pixels (a thumbnail, icon or dose grid, not a diagnostic slice). "
        "It was enlarged for the model, so the prediction and heatmap say little; upload the full-resolution slice."
    )


def _finished(loaded: LoadedImage) -> LoadedImage:
    """The last steps of every slice read, from one file or from a series: square pixels, an
    empty border trimmed, then the size check (each leaves a slice that already went through
    them as it is)."""
    return _size_checked(_trimmed(_square_pixels(loaded)))


def _trimmed(loaded: LoadedImage) -> LoadedImage:
    """`loaded` cut down to what it shows when that spans under MOSTLY_EMPTY_SIDE of its side (a
    head small in a dark viewer's screenshot), so the head is framed as in a training slice
    (where it spans at least half the side, 94 % at the median). A slice that knows its pixel
    size (DICOM, NIfTI) is left as it is: a scan as acquired frames a whole head well, and its
    small content is a small part of one (the top of the skull at a volume's edge), which
    enlarging would pass off as a head."""
    if loaded.trim is not None or loaded.pixel_spacing_mm is not None:
        return loaded
    pixels = loaded.pixels
    content = pixels > CONTENT_LEVEL
    content_rows, content_columns = np.flatnonzero(content.any(axis=1)), np.flatnonzero(content.any(axis=0))
    if not content_rows.size:
        return loaded
    top, left = int(content_rows[0]), int(content_columns[0])
    height, width = int(content_rows[-1]) + 1 - top, int(content_columns[-1]) + 1 - left
    span = max(height, width) / max(pixels.shape)
    if span >= MOSTLY_EMPTY_SIDE:
        return loaded
    border = round(max(height, width) * (1 / TRIMMED_SPAN - 1) / 2)
    rows = slice(max(0, top - border), min(pixels.shape[0], top + height + border))
    columns = slice(max(0, left - border), min(pixels.shape[1], left + width + border))
    kept = np.ascontiguousarray(pixels[rows, columns])
    note = (f"Most of this image is empty border (what it shows spans {span:.0%} of its side), so it was trimmed "
            f"to the {kept.shape[1]}x{kept.shape[0]} pixels around it, framed as the training slices are.")  # fmt: skip
    return replace(loaded, pixels=kept, notes=loaded.notes + (note,),
                   trim=(rows.start, columns.start, *pixels.shape))  # fmt: skip


def _size_checked(loaded: LoadedImage) -> LoadedImage:
    """`loaded` after _check_size(), with thumbnail_note() among its notes when it is one."""
    _check_size(loaded.pixels.shape)
    note = thumbnail_note(loaded.pixels.shape)
    if note is None or note in loaded.notes:
        return loaded
    return replace(loaded, notes=loaded.notes + (note,))


def _square_pixels(loaded: LoadedImage) -> LoadedImage:
    """`loaded` resampled to square pixels at its finer spacing when its rows and columns are
    spaced differently (a coronal or sagittal slice of a volume with thick slices, a DICOM with
    rectangular pixels), so the anatomy keeps its shape for the viewer and the model; coarser
    square pixels where the finer ones would pass the megapixel limit."""
    if loaded.pixel_spacing_mm is None:
        return loaded
    row_mm, column_mm = loaded.pixel_spacing_mm
    if not all(np.isfinite(mm) and mm > 0 for mm in (row_mm, column_mm)):
        return loaded  # a header without a usable spacing: shown as stored
    if abs(row_mm / column_mm - 1) <= SQUARE_PIXEL_TOLERANCE:
        return loaded
    if not 1 / MAX_PIXEL_ASPECT <= row_mm / column_mm <= MAX_PIXEL_ASPECT:
        note = f"Its pixel spacing ({row_mm:.3g} x {column_mm:.3g} mm) is implausible, so it is shown as stored."
        return replace(loaded, notes=loaded.notes + (note,))
    height, width = loaded.pixels.shape
    side_mm = max(min(row_mm, column_mm), np.sqrt(height * row_mm * width * column_mm / MAX_PIXELS))
    size = (max(1, round(width * column_mm / side_mm)), max(1, round(height * row_mm / side_mm)))
    resampled = Image.fromarray(loaded.pixels, mode="F").resize(size, Image.Resampling.BILINEAR)
    note = (
        f"Its pixels are {row_mm:.3g} mm tall and {column_mm:.3g} mm wide: resampled to square "
        f"{side_mm:.3g} mm pixels ({width}x{height} to {size[0]}x{size[1]}) so the anatomy keeps its shape."
    )
    return replace(
        loaded,
        pixels=np.clip(np.asarray(resampled, dtype=np.float32), 0.0, 1.0),
        pixel_spacing_mm=(side_mm, side_mm),
        notes=loaded.notes + (note,),
    )


def to_unit_range(values: np.ndarray) -> np.ndarray:
    """Scale finite values to [0, 1]; NaN/Inf become 0. Raises for a constant image."""
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    if not finite.any():
        raise ImageInputError("The image holds no valid pixel values (all NaN or infinite).")
    low, high = values[finite].min(), values[finite].max()
    if high - low <= 0:
        raise ImageInputError(
            "Every pixel has the same value, so there is nothing to explain. "
            "Check that the right series or slice was exported."
        )
    scaled = np.where(finite, (values - low) / (high - low), 0.0)
    return scaled.astype(np.float32)


# --- PNG, JPEG, BMP, TIFF -------------------------------------------------


def _load_raster(data: bytes, frame: int | None = None, suffix: str = "") -> LoadedImage:
    num_frames, index = 1, 0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            _check_size((image.height, image.width))
            num_frames = int(getattr(image, "n_frames", 1) or 1)
            if num_frames > 1:  # a multi-page TIFF: one page at a time, as DICOM frames
                index = _choose_index(frame, num_frames, "page")
                image.seek(index)
                _check_size((image.height, image.width))
            image.load()
            file_format = image.format or "image"
            image = ImageOps.exif_transpose(image)
    except ImageInputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageInputError(
            f"The image declares more than {MAX_PIXELS // 1_000_000} megapixels. Downsample it or export one slice."
        ) from error
    except UnidentifiedImageError as error:
        named = {"JPG": "JPEG", "TIF": "TIFF"}.get(suffix, suffix)
        if named:
            raise ImageInputError(
                f"This file is named .{suffix.lower()} but is not a readable {named} image: it is damaged, or another "
                "kind of file was renamed. Export the slice again (PNG, JPEG, BMP, TIFF, DICOM or NIfTI)."
            ) from error
        raise ImageInputError(
            "This file is not an image we can read. Upload PNG, JPEG, BMP, TIFF, DICOM or NIfTI."
        ) from error
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageInputError("The image file is truncated or corrupt. Export it again and re-upload.") from error
    pixels, colour = _raster_to_grey(image)
    return LoadedImage(pixels=pixels, file_format=file_format, num_slices=num_frames, slice_index=index,
                       notes=(COLOUR_NOTE,) if colour else ())  # fmt: skip


def _raster_to_grey(image: Image.Image) -> tuple[np.ndarray, bool]:
    """The image in grey, and whether it was in colour (not grey stored in three channels)."""
    if image.mode in ("P", "PA", "CMYK", "RGBA", "LA", "YCbCr", "HSV", "LAB", "1"):
        image = image.convert("RGBA" if "A" in image.mode or image.mode == "P" else "RGB")
    pixels = np.asarray(image)
    colour = False
    if pixels.ndim == 3:
        if pixels.shape[2] == 4:  # composite transparency onto black, the MRI background
            alpha = pixels[..., 3:4].astype(np.float64) / 255.0
            pixels = pixels[..., :3] * alpha
        pixels, colour = _rgb_to_grey(pixels)
    return to_unit_range(pixels), colour


def _rgb_to_grey(rgb: np.ndarray) -> tuple[np.ndarray, bool]:
    """The luminance (ITU-R 601) of RGB values (a fourth channel ignored), and whether they carried
    colour (in_colour)."""
    rgb = np.asarray(rgb, dtype=np.float64)[..., :3]
    return rgb @ np.array([0.299, 0.587, 0.114]), in_colour(rgb)


def in_colour(rgb: np.ndarray) -> bool:
    """Whether an RGB image carries colour: over 10 % of its pixels with channels more than a tenth
    of the range apart. Grey saved as a JPEG keeps a few levels of chroma; a viewer's coloured
    frame or lettering covers under 5 % (the dataset's slices: at most 4.8 %); a heatmap overlay
    or a colour-mapped slice covers the head."""
    rgb = np.asarray(rgb, dtype=np.float64)
    spread = rgb.max(axis=-1) - rgb.min(axis=-1)
    return bool(np.mean(spread > 0.1 * max(float(rgb.max()), 1e-9)) > 0.1)


# --- DICOM ---------------------------------------------------------------

PIXEL_DATA_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")  # what pydicom decodes
# PhotometricInterpretation values pydicom decodes, by samples per pixel; the first is assumed when a
# file leaves the value out or gives one that does not fit its samples
PHOTOMETRIC_BY_SAMPLES = {
    1: ("MONOCHROME2", "MONOCHROME1", "PALETTE COLOR"),
    3: ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "YBR_PARTIAL_420", "YBR_PARTIAL_422", "XYB"),
}
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"  # the SOP class of a DICOMDIR, the index of a CD or DVD


def _no_image_message(dataset) -> str:
    """What a DICOM file without pixel data is (its SOP class), and what to upload instead."""
    from pydicom.uid import UID

    sop_class = str(dataset.get("SOPClassUID") or getattr(dataset, "file_meta", {}).get("MediaStorageSOPClassUID", ""))
    if sop_class == MEDIA_STORAGE_DIRECTORY or "DirectoryRecordSequence" in dataset:
        return (
            "This is a DICOMDIR: the index of a CD or DVD's files, not an image. Upload one of the image "
            "files in the folders beside it, or a ZIP of one series."
        )
    name = UID(sop_class).name.removesuffix(" Storage") if sop_class else ""
    if not name or name == sop_class:  # no SOP class, or one pydicom does not know
        return (
            "This DICOM file holds no image (no pixel data): it may be a report or structured "
            "document. Export the image series instead."
        )
    article = "an" if name[0] in "AEIOU" or name.startswith(("MR ", "RT ")) else "a"
    if "Image" in name:  # an image whose pixels were left out
        return (
            f"This DICOM file is {article} {name} but holds no pixel data (a header-only export, or a "
            "damaged file). Export it again from the PACS with its pixels."
        )
    return f"This DICOM file holds no image: it is {article} {name} object. Export the image series instead."


def _load_dicom(data: bytes, frame: int | None) -> LoadedImage:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        dataset = pydicom.dcmread(io.BytesIO(data), force=True)
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError) as error:
        raise ImageInputError("The DICOM file is truncated or corrupt. Export it again from the PACS.") from error
    if not any(keyword in dataset for keyword in PIXEL_DATA_KEYWORDS):
        raise ImageInputError(_no_image_message(dataset))
    _infer_transfer_syntax(dataset)
    rows, columns = _dicom_int(dataset, "Rows"), _dicom_int(dataset, "Columns")
    if not rows or not columns:
        raise ImageInputError(
            "This DICOM file does not say how large its image is (Rows or Columns missing or zero): it is "
            "damaged or not an image. Export it again from the PACS."
        )
    _check_size((rows, columns), MAX_DICOM_PIXELS)
    frames = max(1, _dicom_int(dataset, "NumberOfFrames") or 1)
    samples = max(1, _dicom_int(dataset, "SamplesPerPixel") or 1)
    header_notes = _fill_pixel_fields(dataset, rows * columns * samples * frames, samples)
    bits = max(8, _dicom_int(dataset, "BitsAllocated") or 16)
    declared = rows * columns * samples * bits // 8  # one frame: frames are decoded one at a time
    if declared > MAX_DECODED_BYTES:
        raise ImageInputError(
            f"The DICOM declares frames of {columns}x{rows} with {samples} sample(s) of {bits} bits "
            f"({declared / 2**20:.0f} MB each, decoded), over the {MAX_DECODED_BYTES // 2**20} MB limit. "
            "Export a smaller image."
        )
    num_frames = frames
    frame = _choose_index(frame, frames, "frame") if frames > 1 else 0
    photometric_note = _repair_photometric(dataset, samples)
    _lift_functional_groups(dataset, frame)
    try:
        pixels = _decode_frame(dataset, frame if frames > 1 else None)
    except (NotImplementedError, RuntimeError) as error:
        syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
        if "does not support" in str(error):  # a decoder for the syntax, not for this variant (12-bit JPEG)
            raise ImageInputError(
                f"This DICOM is compressed ({getattr(syntax, 'name', syntax)}, "
                f"{_dicom_int(dataset, 'BitsStored') or '?'}-bit), a variant the installed decoders cannot read. "
                "Export it uncompressed (explicit VR little endian) and re-upload."
            ) from error
        if _decoder_available(syntax):
            raise ImageInputError(
                f"The DICOM's compressed pixel data ({getattr(syntax, 'name', syntax)}) is corrupt and cannot be "
                "decoded. Export it again from the PACS."
            ) from error
        raise ImageInputError(
            f"This DICOM is compressed ({getattr(syntax, 'name', syntax)}) and no decoder for it "
            "is installed. Export it uncompressed (explicit VR little endian) and re-upload."
        ) from error
    except (ValueError, AttributeError, TypeError, KeyError, EOFError) as error:
        raise ImageInputError("The DICOM pixel data is truncated or corrupt. Export it again from the PACS.") from error

    is_colour = samples > 1
    if pixels.ndim != (3 if is_colour else 2):  # pydicom found more frames, or fewer samples, than declared
        raise ImageInputError(
            f"The DICOM's pixel data do not fit the image it declares ({columns}x{rows}, {samples} sample(s) per "
            f"pixel, {frames} frame(s)): the file is damaged. Export it again from the PACS."
        )
    notes = header_notes + ([photometric_note] if photometric_note else [])
    step = _decimation(pixels.shape[:2])
    if step > 1:  # strided, not averaged: palette indices and padding values stay what they are
        height, width = pixels.shape[:2]
        pixels = np.ascontiguousarray(pixels[::step, ::step])
        notes.append(f"A {width}x{height} image, over the {MAX_PIXELS // 1_000_000} megapixels of a slice: one "
                     f"pixel in {step} along each side is used ({pixels.shape[1]}x{pixels.shape[0]}).")  # fmt: skip
    photometric = str(dataset.get("PhotometricInterpretation", "")).upper()
    if not is_colour and photometric == "PALETTE COLOR":
        pixels, is_colour = _palette_to_rgb(pixels, dataset), True
        notes.append("PALETTE COLOR: the file's colour table applied, then shown in grey.")
    if is_colour:
        pixels, colour = _rgb_to_grey(pixels)
        notes += [COLOUR_NOTE] if colour else []
    else:
        padding = _padding_mask(pixels, dataset)
        pixels, note = _modality(pixels, dataset)
        notes += [note] if note else []
        if padding is not None:  # black on screen: the lowest value, or the highest under MONOCHROME1
            pixels[padding] = pixels[~padding].max() if photometric == "MONOCHROME1" else pixels[~padding].min()
            notes.append("Pixel padding (outside the scanned area) shown as background.")
    window = _dicom_window(dataset)
    if window is not None:
        centre, width = window
        windowed = np.clip(pixels, centre - width / 2, centre + width / 2)
        if _has_contrast(windowed) or not _has_contrast(pixels):
            pixels = windowed
            notes.append(f"Window centre {centre:g}, width {width:g} from the file.")
        else:  # every value on one side of the window: a window meant for other data
            notes.append(f"The file's window (centre {centre:g}, width {width:g}) leaves no contrast in this "
                         "image, so its full range is shown.")  # fmt: skip
    elif not is_colour and dataset.get("VOILUTSequence"):
        pixels, note = _voi_lut(pixels, dataset)
        notes.append(note)
    if photometric == "MONOCHROME1":
        pixels = pixels.max() - pixels  # MONOCHROME1 shows low values as white
        notes.append("MONOCHROME1: intensities inverted for display.")
    spacing_mm = _pixel_spacing(dataset)
    if spacing_mm is not None and step > 1:
        spacing_mm = (spacing_mm[0] * step, spacing_mm[1] * step)
    if spacing_mm is None and "PixelSpacing" in dataset:
        notes.append("The file's PixelSpacing is unreadable, so distances are given in pixels.")
    return LoadedImage(
        pixels=to_unit_range(pixels),
        file_format="DICOM",
        num_slices=num_frames,
        slice_index=frame,
        pixel_spacing_mm=spacing_mm,
        notes=tuple(notes),
    )


def _fill_pixel_fields(dataset, values: int, samples: int) -> list[str]:
    """Old ACR-NEMA and hand-made files leave out fields pydicom needs to read PixelData, though
    each has one safe reading: BitsAllocated from the size of uncompressed pixel data (`values`
    samples in all), BitsStored from HighBit or BitsAllocated, unsigned values, colour samples
    interleaved, and the samples per pixel the caller read (one when nothing says). Fills them in and
    returns a note for each."""
    if "PixelData" not in dataset:  # float and double pixel data need none of these
        return []
    notes = []
    if "BitsAllocated" not in dataset:
        element = dataset["PixelData"]
        size = None if element.is_undefined_length else len(element.value or b"")
        fitting = [width for width in (1, 2, 4) if size in (values * width, values * width + 1)]  # +1: even padding
        if not fitting:
            raise ImageInputError(
                "This DICOM file does not say how many bits each pixel takes (BitsAllocated missing), and the size "
                "of its pixel data does not tell. Export it again from the PACS."
            )
        dataset.BitsAllocated = 8 * fitting[0]
        notes.append(f"BitsAllocated missing: {8 * fitting[0]} bits per value, from the size of the pixel data.")
    allocated = _dicom_int(dataset, "BitsAllocated")
    if "BitsStored" not in dataset and allocated:
        high = _dicom_int(dataset, "HighBit")
        dataset.BitsStored = high + 1 if 0 < high < allocated else allocated
        notes.append(f"BitsStored missing: {dataset.BitsStored} of each {allocated} bits used.")
    if "SamplesPerPixel" not in dataset:
        dataset.SamplesPerPixel = samples
        notes.append(f"SamplesPerPixel missing: {samples} per pixel, as the file's other fields say.")
    if "PixelRepresentation" not in dataset:
        dataset.PixelRepresentation = 0
        notes.append("PixelRepresentation missing: values read as unsigned.")
    if samples > 1 and "PlanarConfiguration" not in dataset:
        dataset.PlanarConfiguration = 0
        notes.append("PlanarConfiguration missing: colour samples read as interleaved (RGBRGB...).")
    return notes


def _repair_photometric(dataset, samples: int) -> str | None:
    """Old ACR-NEMA files and some converters leave PhotometricInterpretation (and SamplesPerPixel)
    out, or write 'monochrome2', 'MONOCHROME 2' or 'MONO2'; pydicom then refuses the pixels. A
    misspelt known value is corrected; a missing one, or one that does not fit the samples per
    pixel, becomes the usual one for them (MONOCHROME2 for grey). Returns the note saying so."""
    known = PHOTOMETRIC_BY_SAMPLES.get(samples)
    written = str(dataset.get("PhotometricInterpretation", "") or "")
    if known is None or written in known:
        return None

    def letters(value: str) -> str:
        return "".join(character for character in value.upper() if character.isalnum())

    spellings = {letters(value): value for values in PHOTOMETRIC_BY_SAMPLES.values() for value in values}
    spellings |= {"MONO1": "MONOCHROME1", "MONO2": "MONOCHROME2"}
    meant = spellings.get(letters(written))
    if meant in known:
        dataset.PhotometricInterpretation = meant
        return f"The file's PhotometricInterpretation '{written}' is read as {meant}."
    dataset.PhotometricInterpretation = known[0]
    said = f"'{written}' for {samples} sample(s) per pixel" if written.strip() else "missing"
    return (f"The file does not say how its pixel values are shown (PhotometricInterpretation {said}), so it is "
            f"read as {known[0]}" + (": low values dark. If it looks inverted, it was meant as MONOCHROME1."
                                     if samples == 1 else "."))  # fmt: skip


def _has_contrast(values: np.ndarray) -> bool:
    """Whether the finite values are not all one value (False for none at all)."""
    finite = values[np.isfinite(values)]
    return finite.size > 0 and finite.max() > finite.min()


def _decimation(shape: tuple[int, int]) -> int:
    """The smallest k for which one pixel in k along each axis fits MAX_PIXELS."""
    step = 1
    while -(-shape[0] // step) * -(-shape[1] // step) > MAX_PIXELS:
        step += 1
    return step


def _palette_to_rgb(indices: np.ndarray, dataset) -> np.ndarray:
    """A PALETTE COLOR image's stored values are indices into the file's colour table, not
    intensities: the table turns them into RGB."""
    from pydicom.pixels import apply_color_lut

    try:
        return apply_color_lut(indices, dataset)
    except (ValueError, AttributeError, KeyError, TypeError, IndexError) as error:
        raise ImageInputError(
            "This DICOM is a PALETTE COLOR image whose colour table is missing or damaged, so its "
            "pixels cannot be turned into intensities. Export it again from the PACS."
        ) from error


def _infer_transfer_syntax(dataset) -> None:
    """A file without the File Meta header (older archives, some research tools) does not name
    its transfer syntax, which pydicom needs to decode the pixels. Uncompressed pixels are read
    in the encoding the dataset was found in; compressed ones cannot be guessed."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    if _syntax(dataset):
        return
    try:
        compressed = "PixelData" in dataset and dataset["PixelData"].is_undefined_length
    except (KeyError, ValueError, TypeError, AttributeError):
        compressed = False  # a damaged element: decoding says so
    if compressed:
        raise ImageInputError(
            "This DICOM file has no File Meta header, so it does not say how its compressed pixel data are "
            "encoded. Export it again from the PACS as a complete DICOM file (Part 10)."
        )
    implicit, little = getattr(dataset, "original_encoding", None) or (True, True)
    if getattr(dataset, "file_meta", None) is None:
        dataset.file_meta = FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = (
        ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian if little else ExplicitVRBigEndian
    )


def _decode_frame(dataset, frame: int | None) -> np.ndarray:
    """Every frame's pixels, or with `frame` only that one (a 300-frame series is not decoded
    300 times to show each of its slices).

    A decoder written in Rust (pylibjpeg-rle) panics on some corrupt data with an exception
    outside Exception's tree; it is reported as a decoding failure like the others."""
    from pydicom.pixels import pixel_array

    try:
        return dataset.pixel_array if frame is None else pixel_array(dataset, index=frame)
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as error:  # noqa: BLE001 - pyo3's PanicException derives from BaseException
        if _syntax(dataset) in JPEG_SYNTAXES and isinstance(error, (RuntimeError, NotImplementedError)):
            return _decode_jpeg(dataset, frame or 0)
        if isinstance(error, Exception):
            raise
        raise RuntimeError(f"the pixel decoder failed: {error}") from error


# JPEG baseline, extended (12-bit), lossless and lossless first-order (Process 14, SV1): what
# pydicom's Pillow decoder cannot read of them, libjpeg-turbo 3 (through imagecodecs) can.
JPEG_SYNTAXES = ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70")


def _syntax(dataset) -> str:
    return str(getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", "") or "")


def _decode_jpeg(dataset, index: int) -> np.ndarray:
    """One frame of a JPEG-compressed DICOM through imagecodecs, after checking that the JPEG
    stream's own size is the one the DICOM declares (a small file cannot expand into a bomb)."""
    import imagecodecs
    from pydicom.encaps import get_frame

    rows, columns = _dicom_int(dataset, "Rows"), _dicom_int(dataset, "Columns")
    frames = max(1, _dicom_int(dataset, "NumberOfFrames") or 1)
    try:
        stream = get_frame(dataset.PixelData, index, number_of_frames=frames)
    except (ValueError, KeyError, IndexError, TypeError) as error:
        raise RuntimeError(f"the JPEG frame cannot be found: {error}") from error
    size = _jpeg_size(stream)
    if size != (rows, columns):
        raise RuntimeError(f"the JPEG stream is {size}, not the declared {rows}x{columns}")
    try:
        pixels = imagecodecs.jpeg8_decode(stream)
    except (imagecodecs.Jpeg8Error, ValueError, MemoryError) as error:
        raise RuntimeError(f"the JPEG decoder failed: {error}") from error
    bits = _dicom_int(dataset, "BitsStored")
    if _dicom_int(dataset, "PixelRepresentation") == 1 and 1 < bits <= 16 and pixels.dtype == np.uint16:
        values = pixels.astype(np.int32) & ((1 << bits) - 1)  # two's complement in `bits` bits
        pixels = np.where(values >= 1 << (bits - 1), values - (1 << bits), values)
    return pixels


def _jpeg_size(stream: bytes) -> tuple[int, int] | None:
    """(rows, columns) from a JPEG stream's start-of-frame marker, None when it has none."""
    at = 2
    while at + 9 <= len(stream):
        if stream[at] != 0xFF:
            return None
        if stream[at + 1] == 0xFF:  # a fill byte before the marker
            at += 1
            continue
        marker, length = stream[at + 1], int.from_bytes(stream[at + 2 : at + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return int.from_bytes(stream[at + 5 : at + 7], "big"), int.from_bytes(stream[at + 7 : at + 9], "big")
        at += 2 + length
    return None


def _load_series(data: bytes, slice_index: int | None) -> LoadedImage:
    from core.dicom_series import open_series

    series = open_series(data, MAX_DECODED_BYTES)
    return series_slice(series, _choose_index(slice_index, len(series.members), "slice"))


def series_slice(series, index: int) -> LoadedImage:
    """Slice `index` of an opened core.dicom_series.DicomSeries."""
    member = series.members[index]
    try:
        loaded = _load_dicom(series.member_bytes(index), None)
    except ImageInputError as error:
        raise ImageInputError(f"Slice {index} ({member}): {error}") from error
    except Exception as error:  # noqa: BLE001 - a damaged member of a valid ZIP
        raise ImageInputError(f"Slice {index} ({member}) of the ZIP is damaged and cannot be read.") from error
    loaded = replace(loaded, file_format="DICOM series", num_slices=len(series.members), slice_index=index,
                     notes=series.notes + loaded.notes)  # fmt: skip
    return _finished(loaded)


def _decoder_available(syntax) -> bool:
    """Whether the installed pydicom has a working decoder for this transfer syntax."""
    from pydicom.pixels import get_decoder

    if str(syntax or "") in JPEG_SYNTAXES:
        return True  # imagecodecs, when pydicom's own decoders cannot
    try:
        return bool(syntax) and get_decoder(syntax).is_available
    except (NotImplementedError, ValueError, TypeError):
        return False


# Where enhanced (multi-frame) DICOM keeps what the classic objects hold at the top level.
FUNCTIONAL_GROUP_ATTRIBUTES = {
    "PixelMeasuresSequence": ("PixelSpacing",),
    "PixelValueTransformationSequence": ("RescaleSlope", "RescaleIntercept"),
    "FrameVOILUTSequence": ("WindowCenter", "WindowWidth"),
}


def _lift_functional_groups(dataset, frame: int) -> None:
    """Copy spacing, rescale and window of an enhanced DICOM's frame (its per-frame functional
    group, else the shared one) to the top level, where the rest of the loader reads them.
    Attributes already at the top level stay; a damaged group is skipped."""
    groups = [_sequence_item(dataset, "PerFrameFunctionalGroupsSequence", frame),
              _sequence_item(dataset, "SharedFunctionalGroupsSequence", 0)]  # fmt: skip
    for sequence, keywords in FUNCTIONAL_GROUP_ATTRIBUTES.items():
        if any(keyword in dataset for keyword in keywords):
            continue
        items = (_sequence_item(group, sequence, 0) for group in groups if group is not None)
        item = next((item for item in items if item is not None and all(k in item for k in keywords)), None)
        if item is not None:
            for keyword in keywords:
                dataset[keyword] = item[keyword]


def _sequence_item(dataset, keyword: str, index: int):
    """Item `index` of the sequence `keyword` as a Dataset, or None when missing or damaged."""
    from pydicom import Dataset

    try:
        item = dataset[keyword].value[index]
    except (KeyError, IndexError, TypeError, AttributeError, ValueError):
        return None
    return item if isinstance(item, Dataset) else None


def _pixel_spacing(dataset) -> tuple[float, float] | None:
    """(row, column) spacing in mm, or None when missing or malformed (not a reason to refuse)."""
    try:
        spacing = dataset.get("PixelSpacing")
        values = (float(spacing[0]), float(spacing[1])) if spacing is not None and len(spacing) == 2 else None
    except (TypeError, ValueError, IndexError):
        return None
    return values if values and all(np.isfinite(v) and v > 0 for v in values) else None


def _dicom_int(dataset, keyword: str) -> int:
    """An integer attribute, 0 when missing or malformed."""
    try:
        return int(dataset.get(keyword, 0) or 0)
    except (TypeError, ValueError):
        return 0


def _modality(pixels: np.ndarray, dataset) -> tuple[np.ndarray, str | None]:
    """Stored values to modality values (rescale slope/intercept or the Modality LUT), applied
    to the integer pixels as the standard defines them; a damaged LUT falls back to the raw values."""
    from pydicom.pixels import apply_modality_lut

    try:
        return np.asarray(apply_modality_lut(pixels, dataset), dtype=np.float64), None
    except (TypeError, ValueError, IndexError, KeyError, AttributeError):
        return np.asarray(pixels, dtype=np.float64), (
            "The file's rescale or Modality LUT is damaged, so stored pixel values are shown as they are."
        )


def _padding_mask(stored: np.ndarray, dataset) -> np.ndarray | None:
    """Where the stored values are PixelPaddingValue (or within PixelPaddingRangeLimit of it):
    not tissue but fill outside the scanned area, often the largest value a pixel can hold,
    which would otherwise turn the background white and squeeze the head into a few greys.
    None when the file declares no padding, or every pixel or none is padding."""
    try:
        value = int(dataset.get("PixelPaddingValue"))
        limit = dataset.get("PixelPaddingRangeLimit")
        limit = value if limit is None else int(limit)
    except (TypeError, ValueError):
        return None
    if np.issubdtype(stored.dtype, np.signedinteger):  # read as US while the pixels are signed
        bits = 8 * stored.dtype.itemsize
        value, limit = (v - 2**bits if v >= 2 ** (bits - 1) else v for v in (value, limit))
    mask = (stored >= min(value, limit)) & (stored <= max(value, limit))
    return mask if mask.any() and not mask.all() else None


def _dicom_window(dataset) -> tuple[float, float] | None:
    centre, width = dataset.get("WindowCenter"), dataset.get("WindowWidth")
    if centre is None or width is None:
        return None
    try:  # multi-valued windows: the first is the default view
        centre = float(centre[0] if hasattr(centre, "__len__") else centre)
        width = float(width[0] if hasattr(width, "__len__") else width)
    except (TypeError, ValueError, IndexError):
        return None
    return (centre, width) if width > 0 else None


def _voi_lut(pixels: np.ndarray, dataset) -> tuple[np.ndarray, str]:
    """The file's VOI LUT (a display curve given as a table, where others give a window) applied
    to the rescaled values; a damaged table leaves them as they are."""
    import struct

    from pydicom.pixels import apply_voi

    damaged = pixels, "The file's VOI LUT (its display curve) is damaged, so its full range is shown."
    if not np.isfinite(pixels).all():
        return damaged
    try:
        curved = apply_voi(np.rint(pixels).astype(np.int64), dataset).astype(np.float64)
    except (struct.error, ValueError, TypeError, AttributeError, KeyError, IndexError, NotImplementedError):
        return damaged
    if not _has_contrast(curved) and _has_contrast(pixels):
        return (
            pixels,
            "The file's VOI LUT (its display curve) leaves no contrast in this image, so its full range is shown.",
        )
    return curved, "The file's VOI LUT (its display curve) applied."


def _choose_index(index: int | None, count: int, what: str) -> int:
    if index is None:
        return count // 2
    if not 0 <= index < count:
        raise ImageInputError(f"The {what} number {index} does not exist; choose 0 to {count - 1}.")
    return index


# --- NIfTI ----------------------------------------------------------------


def _load_nifti(data: bytes, slice_index: int | None, axis: int) -> LoadedImage:
    import nibabel as nib

    compressed = data[:2] == b"\x1f\x8b"
    broken = (zlib.error, EOFError, OSError, ValueError, nib.filebasedimages.ImageFileError,
              nib.spatialimages.HeaderDataError)  # fmt: skip
    try:
        # The header first (decompressing only its bytes): the declared size is checked before
        # the data are decompressed or decoded.
        head = gunzip_at_most(data, 1024) if compressed else data[:1024]
        kind = nib.Nifti2Image if _is_nifti2(head) else nib.Nifti1Image
        # The fixed-size header alone: extensions (kilobytes of XML or JSON) may run past `head`.
        size = kind.header_class.template_dtype.itemsize
        header = kind.header_class(binaryblock=head[:size], check=True)
        shape = tuple(int(s) for s in header.get_data_shape())
        dtype = header.get_data_dtype()
        offset = int(header.get_data_offset())
    except broken as error:
        raise ImageInputError("The NIfTI file is truncated or corrupt. Export it again and re-upload.") from error
    if len(shape) < 2 or len(shape) > 4 or (len(shape) == 4 and shape[3] != 1):
        raise ImageInputError(
            f"The NIfTI volume has shape {shape}; one 2-D or 3-D volume is expected "
            "(for a 4-D series, export a single volume)."
        )
    if dtype.kind == "c":
        raise ImageInputError(
            "The NIfTI volume is complex-valued (raw MRI data, not an image). Export the magnitude image."
        )
    declared = int(np.prod(shape)) * dtype.itemsize
    if declared > MAX_DECODED_BYTES:
        raise ImageInputError(
            f"The NIfTI volume declares {'x'.join(map(str, shape))} voxels ({declared / 2**20:.0f} MB), over the "
            f"{MAX_DECODED_BYTES // 2**20} MB limit. Export a cropped or single volume."
        )
    if offset + declared > MAX_DECODED_BYTES:
        raise ImageInputError(
            f"The NIfTI header says its voxels start {offset / 2**20:.0f} MB into the file, over the "
            f"{MAX_DECODED_BYTES // 2**20} MB limit. Export the volume again without header extensions."
        )
    try:
        raw = gunzip_at_most(data, offset + declared) if compressed else data
        image = kind.from_bytes(raw)
    except broken as error:
        raise ImageInputError("The NIfTI file is truncated or corrupt. Export it again and re-upload.") from error
    zooms = header.get_zooms()
    if len(shape) == 2:
        rows_mm, columns_mm = float(zooms[1]), float(zooms[0])  # rotated for display: rows run along y
        return LoadedImage(pixels=to_unit_range(_radiological(_nifti_values(image, ()))), file_format="NIfTI",
                           pixel_spacing_mm=(rows_mm, columns_mm))  # fmt: skip
    if axis not in PLANE_AXES.values():
        raise ImageInputError("The slicing axis must be 0 (sagittal), 1 (coronal) or 2 (axial).")
    world, direction, notes = _voxel_orientation(image.affine)
    stored = world.index(axis)  # the stored axis that runs along the one asked for
    count = shape[stored]
    index = _choose_index(slice_index, count, "slice")
    # Only the chosen slice is read from the file's data, never the whole volume as floats.
    at = index if direction[stored] > 0 else count - 1 - index  # counted from left, posterior, inferior
    where = tuple(at if i == stored else slice(None) for i in range(3)) + ((0,) if len(shape) == 4 else ())
    plane = _nifti_values(image, where)
    rest = [i for i in range(3) if i != stored]  # the plane's stored axes, put in world order below
    if world[rest[0]] > world[rest[1]]:
        plane, rest = plane.T, rest[::-1]
    for dimension, i in enumerate(rest):
        if direction[i] < 0:
            plane = np.flip(plane, dimension)
    in_plane = [float(zooms[i]) for i in rest]
    return LoadedImage(
        pixels=to_unit_range(_radiological(plane)),
        file_format="NIfTI",
        num_slices=count,
        slice_index=index,
        pixel_spacing_mm=(in_plane[1], in_plane[0]),
        notes=notes,
    )


def _radiological(plane: np.ndarray) -> np.ndarray:
    """A plane indexed [towards right or anterior, towards anterior or superior] (world order),
    as radiologists, PACS viewers and a standard DICOM slice shown as stored display it: superior
    or anterior at the top, the patient's right on the image's left (axial, coronal), anterior
    on the left (sagittal)."""
    return np.ascontiguousarray(np.rot90(plane)[:, ::-1])


def _voxel_orientation(affine) -> tuple[list[int], list[int], tuple[str, ...]]:
    """For each stored voxel axis, the world axis it runs along (0 left-right, 1 posterior-anterior,
    2 inferior-superior) and its direction (+1 towards right, anterior, superior), from the
    volume's affine; a volume whose affine says nothing is taken as stored in RAS order."""
    import nibabel as nib

    try:
        orientation = nib.orientations.io_orientation(affine)
    except (ValueError, np.linalg.LinAlgError):
        orientation = np.full((3, 2), np.nan)
    if not np.isfinite(orientation).all() or sorted(orientation[:, 0]) != [0, 1, 2]:
        return [0, 1, 2], [1, 1, 1], ()
    world, direction = [int(w) for w in orientation[:, 0]], [int(d) for d in orientation[:, 1]]
    if world == [0, 1, 2] and direction == [1, 1, 1]:
        return world, direction, ()
    codes = "".join(nib.orientations.ornt2axcodes(orientation))
    return world, direction, (f"Stored in {codes} voxel order; shown in the standard orientation.",)


def _nifti_values(image, where: tuple) -> np.ndarray:
    """The voxels at `where`, as float64; RGB voxels become grey."""
    try:
        values = np.asarray(image.dataobj[where] if where else image.dataobj)
    except (EOFError, OSError, ValueError) as error:
        raise ImageInputError("The NIfTI image data is truncated or corrupt. Export it again and re-upload.") from error
    if values.dtype.names:  # RGB(A) voxels: a structured dtype with one field per channel
        channels = [values[name].astype(np.float64) for name in values.dtype.names[:3]]
        values = 0.299 * channels[0] + 0.587 * channels[1] + 0.114 * channels[2]
    return np.asarray(values, dtype=np.float64)


def _is_nifti2(raw: bytes) -> bool:
    """NIfTI-2 headers are 540 bytes long (NIfTI-1: 348), in either byte order."""
    return len(raw) >= 4 and (int.from_bytes(raw[:4], "little") == 540 or int.from_bytes(raw[:4], "big") == 540)


def gunzip_at_most(data: bytes, limit: int) -> bytes:
    """At most `limit` bytes of gzip `data` decompressed: a small .nii.gz that would expand to
    gigabytes is never held in memory whole."""
    return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data, limit)


PATIENT_FIELDS = ("PatientName", "PatientID", "PatientBirthDate", "StudyDate")


def patient_fields(data: bytes, filename: str) -> dict[str, str]:
    """A DICOM's (or a DICOM series ZIP's first file's) patient fields, for a report the user
    asked to carry them; empty for other formats or when none is present."""
    import pydicom

    kind = upload_kind(filename, data)
    try:
        if kind == "ZIP":
            from core.dicom_series import open_series

            data = open_series(data, MAX_DECODED_BYTES).member_bytes(0)
        elif kind != "DICOM":
            return {}
        header = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=True)
    except Exception:  # noqa: BLE001 - no readable header, no fields
        return {}
    return {key: str(header.get(key)) for key in PATIENT_FIELDS if str(header.get(key, "") or "").strip()}
