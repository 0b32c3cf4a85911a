#!/usr/bin/env bash
# Measure a checkpoint on the test split (evaluation, heatmaps, stress test) and write its model card.
# Usage: scripts/measure.sh NAME [DATA_ROOT]
# $METHODS: the heatmaps to report, each 'default', 'METHOD' (at the default layer) or
# 'METHOD@LAYER' (default: the checkpoint's default heatmap only).
set -euo pipefail
cd "$(dirname "$0")/.."
name=$1
data=${2:-../shared/data/brain-tumor-mri}
methods=${METHODS:-"default"}
python=${PYTHON:-python}
commit=$(git rev-parse --short HEAD)
out=out/measure/$name
mkdir -p "$out"
$python -m core evaluate --checkpoint "$name" --data "$data" --split test --out "$out/test"
summaries=()
for entry in $methods; do
  method=${entry%@*}
  layer=()
  [[ $entry == *@* ]] && layer=(--layer "${entry#*@}")
  folder="$out/heatmaps-${entry//[@+]/_}"
  $python -m core evaluate --checkpoint "$name" --data "$data" --split test --method "$method" "${layer[@]}" \
    --cache --out "$folder"
  summaries+=("$folder/summary.json")
done
# $STRESS_LIMIT: images per class for the stress test (a seeded random sample; 0: all). 25 conditions
# per image make it the slowest step: about 40 CPU-minutes for all 768 test images.
limit=()
[[ ${STRESS_LIMIT:-100} != 0 ]] && limit=(--limit "${STRESS_LIMIT:-100}")
$python -m core stress --checkpoint "$name" --data "$data" --split test "${limit[@]}" --out "$out/stress"
$python -m core card --checkpoint "$name" --test "$out/test/summary.json" --localisation "${summaries[@]}" \
  --commit "$commit" --stress "$out/stress/stress.json"
