#!/usr/bin/env bash
# Measure a trained checkpoint on the test split and write its model card.
# Usage: scripts/measure.sh NAME [DATA_ROOT]   (methods: $METHODS, default all but Score-CAM)
set -euo pipefail
cd "$(dirname "$0")/.."
name=$1
data=${2:-../shared/data/brain-tumor-mri}
methods=${METHODS:-"Grad-CAM HiResCAM XGrad-CAM Grad-CAM++ LayerCAM Eigen-CAM"}
python=${PYTHON:-python}
commit=$(git rev-parse --short HEAD)
out=out/measure/$name
mkdir -p "$out"
$python -m core evaluate --checkpoint "$name" --data "$data" --split test --out "$out/test"
summaries=()
for method in $methods; do
  $python -m core evaluate --checkpoint "$name" --data "$data" --split test --method "$method" --cache \
    --out "$out/heatmaps-$method"
  summaries+=("$out/heatmaps-$method/summary.json")
done
$python -m core card --checkpoint "$name" --test "$out/test/summary.json" --localisation "${summaries[@]}" \
  --commit "$commit"
