"""TrainOptions: settings that cannot work together are refused with the flag to change."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from core.training.options import TrainOptions


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_training_on_a_gpu_that_is_not_there_says_so():
    with pytest.raises(ValueError, match="no CUDA GPU"):
        TrainOptions(arch="convnext_atto", data=Path("unused"), out=Path("unused"), device="cuda")


def test_holdout_fraction_must_leave_something_to_train_on():
    with pytest.raises(ValueError, match="--holdout-fraction"):
        TrainOptions(arch="convnext_atto", data=Path("d"), out=Path("o"), holdout_fraction=1.0)
