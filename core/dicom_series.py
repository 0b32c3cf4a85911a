"""A ZIP of one DICOM series: its slices in anatomical order, read one file at a time.

Order: by ImagePositionPatient projected on the slice normal (from ImageOrientationPatient),
as viewers stack a series; else by InstanceNumber; else by file name (said in a note). Files
that are not DICOM images (a DICOMDIR, a text file, macOS's __MACOSX copies) are skipped and
counted; two series in one ZIP are refused, naming each and its folder. Nothing is extracted to disk.
"""

from __future__ import annotations

import io
import posixpath
import zipfile
from dataclasses import dataclass

import numpy as np

from core.image_input import ImageInputError

MAX_SERIES_FILES = 2000


class SeriesError(ImageInputError):
    """The ZIP is not one readable DICOM series; the message says what to upload instead."""


@dataclass(frozen=True)
class DicomSeries:
    """The series' member names in slice order, and how that order was found."""

    archive: zipfile.ZipFile
    members: tuple[str, ...]
    order: str  # "position", "instance number" or "file name"
    skipped: int  # members that were not DICOM images

    @property
    def notes(self) -> tuple[str, ...]:
        how = {
            "position": "Slices ordered by ImagePositionPatient along the slice normal.",
            "instance number": "Slices ordered by InstanceNumber (the files give no usable position).",
            "file name": "Slices ordered by file name: the files give neither position nor InstanceNumber.",
        }[self.order]
        skipped = f" {self.skipped} file(s) in the ZIP were not DICOM images and were left out." if self.skipped else ""
        return (how + skipped,)

    def member_bytes(self, index: int) -> bytes:
        return self.archive.read(self.members[index])


def open_series(data: bytes, max_bytes: int) -> DicomSeries:
    """Read the ZIP's directory and every member's header (not its pixels) and order the slices.

    Raises:
        SeriesError: not a ZIP, too large, no DICOM image, two series, or a multi-frame member.
    """
    import pydicom

    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = [i for i in archive.infolist() if not i.is_dir() and not i.filename.startswith("__MACOSX/")]
    except (zipfile.BadZipFile, OSError, ValueError) as error:
        raise SeriesError("This file is named .zip but is not a readable ZIP archive. Zip the series again.") from error
    if len(infos) > MAX_SERIES_FILES:
        raise SeriesError(f"The ZIP holds {len(infos)} files; at most {MAX_SERIES_FILES} slices are read.")
    declared = sum(i.file_size for i in infos)
    if declared > max_bytes:
        raise SeriesError(
            f"The ZIP expands to {declared / 2**20:.0f} MB, over the {max_bytes // 2**20} MB limit. "
            "Upload fewer slices or one series."
        )
    headers = {}
    for info in infos:
        try:
            with archive.open(info) as member:
                header = pydicom.dcmread(member, stop_before_pixels=True, force=True)
        except Exception:  # noqa: BLE001 - any member that pydicom cannot parse is not a slice
            continue
        if "Rows" in header and "Columns" in header:  # an image, not a DICOMDIR or a report
            headers[info.filename] = header
    if not headers:
        raise SeriesError(
            "The ZIP holds no DICOM image. Zip the folder of one DICOM series (the .dcm files) and upload that."
        )
    series = {str(h.get("SeriesInstanceUID", "")) for h in headers.values()}
    if len(series) > 1:
        raise SeriesError(
            f"The ZIP mixes {len(series)} series: {_describe_series(headers)}. Zip one series (for a PACS export, "
            "the files of one folder) and upload that."
        )
    if any(int(h.get("NumberOfFrames", 1) or 1) > 1 for h in headers.values()):
        raise SeriesError("The ZIP holds a multi-frame DICOM: upload that file on its own, not in a ZIP.")
    names, order = _ordered(headers)
    return DicomSeries(archive, tuple(names), order, len(infos) - len(headers))


def _describe_series(headers: dict, shown: int = 6) -> str:
    """Each series' description, slice count and folder in the ZIP, largest first."""
    members: dict[str, list[str]] = {}
    for name, header in headers.items():
        members.setdefault(str(header.get("SeriesInstanceUID", "")), []).append(name)
    described = []
    for names in sorted(members.values(), key=lambda names: (-len(names), names[0])):
        title = str(headers[names[0]].get("SeriesDescription", "") or "unnamed")
        folder = posixpath.commonpath([posixpath.dirname(name) for name in names])
        where = f", in {folder}/" if folder else ""
        described.append(f"{title} ({len(names)} slice{'s' * (len(names) > 1)}{where})")
    rest = f" and {len(described) - shown} more" if len(described) > shown else ""
    return ", ".join(described[:shown]) + rest


def _ordered(headers: dict) -> tuple[list[str], str]:
    positions = {name: _position_along_normal(header) for name, header in headers.items()}
    if all(p is not None for p in positions.values()) and len(set(positions.values())) == len(positions):
        return sorted(headers, key=lambda name: (positions[name], name)), "position"
    instances = {name: _integer(header.get("InstanceNumber")) for name, header in headers.items()}
    if all(i is not None for i in instances.values()) and len(set(instances.values())) == len(instances):
        return sorted(headers, key=lambda name: instances[name]), "instance number"
    return sorted(headers), "file name"


def _position_along_normal(header) -> float | None:
    try:
        orientation = np.array([float(v) for v in header.ImageOrientationPatient], dtype=np.float64)
        position = np.array([float(v) for v in header.ImagePositionPatient], dtype=np.float64)
    except (AttributeError, TypeError, ValueError):
        return None
    if orientation.shape != (6,) or position.shape != (3,) or not np.isfinite([*orientation, *position]).all():
        return None
    normal = np.cross(orientation[:3], orientation[3:])
    length = np.linalg.norm(normal)
    return float(position @ normal / length) if length > 1e-6 else None


def _integer(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
