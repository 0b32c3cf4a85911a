#!/usr/bin/env bash
# Wheels a GPU machine lacks for `python -m core train` (its image has torch, timm, OpenCV, scikit-learn,
# SciPy, pandas and matplotlib, Python 3.12, and reaches no package index): written to .whl/ (ignored),
# 3.3 MB. Training with the shrunk copy's MNI152 slices needs no nilearn, nibabel or pydicom.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python}
mkdir -p .whl
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
$python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${platforms[@]}" \
  -d .whl captum==0.9.0 ttach==0.0.3 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 \
  typing-inspection==0.4.5 typing-extensions==4.16.0
$python -m pip wheel -q --no-deps -w .whl grad-cam==1.5.7  # published as a source archive only
ls .whl
