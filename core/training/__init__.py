"""Training: options, augmentation, distillation, the loop, the training record, calibration.

- options: TrainOptions, the one place each training flag and its default live.
- data: the training splits decoded once into memory.
- augmentation: per-image MRI-friendly augmentation; mixup/CutMix.
- distillation: teacher targets and attention transfer.
- loop: fit(), train() (writes a checkpoint) and cross_validate().
- record: the training.json a run writes (recipe, history, lineage, machine, commit).
- calibrate: give a run refit without a hold-out its twin's temperature.
"""
