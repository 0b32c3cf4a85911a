#!/usr/bin/env bash
# The GPU step of issue #27 (docs/training.md, ninth round): K1's recipe (counterfactuals with control
# fills, MNI152 slices, guidance 0.3, randomisation on 10 % of images, learning from the shipped weights)
# for EPOCHS with SEEDS side by side on one GPU, training only, on the shrunk copy with its outlines:
#   here:   python scripts/shrink_dataset.py ../shared/data/brain-tumor-mri .device_data/brain-tumor-mri \
#             --max-side 256 --quality 70        (24 MB with outlines and MNI152 slices)
#           scripts/device_wheels.sh             (.whl/, 3.3 MB: what the GPU image lacks)
#           (the tracked tree is 37 MB; all three must fit the 64 MiB sent: 61.6 MiB on 2026-12-02)
#   device: run with carry [".device_data", ".whl"] and the command
#           python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
#           && PYTHONPATH=/tmp/site PYTHON=python3 EPOCHS=8 bash scripts/gpu_seeds.sh
#   here:   for each $OUT/seedN.tar: tar -xf seedN.tar -C runs/, then
#           MEASURE=1 SKIP_TRAIN=1 scripts/train_robust.sh runs/seedN   (judged on the original images)
# Each seed's weights come back as one tar (the device returns at most 8 files, 16 MiB each).
# Since the tenth round, checkpoints/efficientnet_lite0 is itself an average of such runs (K8a, K8b, K1),
# so INIT and TEACHER (default: that checkpoint) now start a new line from it; the rule for it must be
# written in docs/training.md first. Then `python -m core soup` the seeds and judge the average
# by the same rule (soup refuses runs from different starts).
# The ConvNeXt (eleventh round: 3 CPU epochs were far too few) would go on from its hold-out-clean
# weights, extracted here first (git show a37dcc8:checkpoints/convnext_atto/{config.json,model.safetensors}
# into .device_data/convnext_start/) and sent with the data:
#   ARCH=convnext_atto INIT=.device_data/convnext_start LR=2e-4 EPOCHS=... bash scripts/gpu_seeds.sh
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:?set OUT to the folder whose files come back}
work=${WORK:-/tmp/gpu_seeds}
mkdir -p "$work"
for seed in ${SEEDS:-0 1 2}; do
  INIT=${INIT:-checkpoints/efficientnet_lite0} TEACHER=${TEACHER:-checkpoints/efficientnet_lite0} DISTILL=0.9 EPOCHS=${EPOCHS:-8} \
    LR=${LR:-3e-4} RANDOMISE=0.1 CONTROLS=0.25 SEED=$seed HOLDOUT_SEED=0 THREADS=${THREADS:-4} DEVICE=${DEVICE:-cuda} MEASURE=0 \
    scripts/train_robust.sh "$work/seed$seed" "${DATA:-.device_data/brain-tumor-mri}" > "$out/seed$seed.log" 2>&1 &
done
wait
for seed in ${SEEDS:-0 1 2}; do
  tar -cf "$out/seed$seed.tar" -C "$work" "seed$seed/model"
done
