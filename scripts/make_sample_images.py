"""Write sample_images/ from openly licensed data that pip installs.

- MNI152 T1 template, shipped with nilearn (ICBM 2009, free licence; see nilearn's docs):
  an axial PNG, a coronal JPEG and the whole volume as NIfTI.
- pydicom's MR_small.dcm test file (pydicom's MIT-licensed test data), with the
  patient fields blanked.
These are healthy-brain images: the models have never seen them, so they show how the
app behaves, not what a tumour looks like. Run: python scripts/make_sample_images.py
"""

from __future__ import annotations

from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import pydicom
from nilearn.datasets import load_mni152_template
from pydicom.data import get_testdata_file

OUT = Path(__file__).resolve().parent.parent / "sample_images"


def to_uint8(plane: np.ndarray) -> np.ndarray:
    plane = plane.astype(np.float64)
    return np.uint8(255 * (plane - plane.min()) / max(plane.max() - plane.min(), 1e-9))


def main() -> None:
    OUT.mkdir(exist_ok=True)
    template = load_mni152_template(resolution=1)
    volume = np.asarray(template.get_fdata())
    # radiological convention, as core.image_input shows a NIfTI slice: the patient's right on the left
    axial = np.rot90(volume[:, :, volume.shape[2] // 2 + 10])[:, ::-1]
    coronal = np.rot90(volume[:, volume.shape[1] // 2, :])[:, ::-1]
    # Upsample to a typical MRI matrix so overlays look as they would on a clinical slice.
    cv2.imwrite(
        str(OUT / "mni152_axial.png"), cv2.resize(to_uint8(axial), None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)
    )
    cv2.imwrite(
        str(OUT / "mni152_coronal.jpg"),
        cv2.resize(to_uint8(coronal), None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC),
        [cv2.IMWRITE_JPEG_QUALITY, 92],
    )

    small = load_mni152_template(resolution=2)
    nifti = nib.Nifti1Image(to_uint8(small.get_fdata()), small.affine)
    nifti.header.set_xyzt_units("mm")
    nib.save(nifti, str(OUT / "mni152_t1_2mm.nii.gz"))

    dataset = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "InstitutionName", "ReferringPhysicianName"):
        if keyword in dataset:
            setattr(dataset, keyword, "")
    dataset.save_as(str(OUT / "pydicom_mr_small.dcm"))
    print("wrote", sorted(p.name for p in OUT.iterdir()))


if __name__ == "__main__":
    main()
