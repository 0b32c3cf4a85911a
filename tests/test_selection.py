"""Paired comparisons for choosing checkpoints: statistics by hand, then on a small slice."""

from __future__ import annotations

import json
import shutil
from math import comb
from pathlib import Path

import numpy as np
import pytest

from core.cli import main
from core.dataset import grouped_holdout, list_splits
from core.selection import compare_checkpoints, mcnemar_exact, wilcoxon_paired
from tests.conftest import SHARED_DATA, copy_shared_slice


def test_mcnemar_counts_discordant_images_and_gives_the_exact_binomial_p():
    # 15 images right only for the candidate, 5 only for the reference, 10 right for both, 3 for neither
    reference = np.array([False] * 15 + [True] * 5 + [True] * 10 + [False] * 3)
    candidate = np.array([True] * 15 + [False] * 5 + [True] * 10 + [False] * 3)
    result = mcnemar_exact(reference, candidate)
    assert (result.better, result.worse) == (15, 5)
    by_hand = 2 * sum(comb(20, k) for k in range(6)) / 2**20  # two-sided, P(X <= 5 | n = 20)
    assert result.p_value == pytest.approx(by_hand)  # 0.0414
    assert mcnemar_exact(candidate, reference).p_value == pytest.approx(by_hand)
    assert mcnemar_exact(reference, reference).p_value == 1.0


def test_wilcoxon_says_which_way_each_image_moved():
    reference = np.arange(10) / 10
    higher = reference + np.linspace(0.01, 0.1, 10)
    gain = wilcoxon_paired(reference, higher, higher_is_better=True)
    assert (gain.better, gain.worse) == (10, 0)
    assert gain.p_value == pytest.approx(2 / 2**10)  # exact: every sign positive
    loss = wilcoxon_paired(reference, higher, higher_is_better=False)  # e.g. mass outside the brain
    assert (loss.better, loss.worse) == (0, 10)
    assert wilcoxon_paired(reference, reference, higher_is_better=True).p_value == 1.0


@pytest.fixture(scope="module")
def outlined_dataset(tmp_path_factory) -> Path:
    """Four training and two outlined validation images per class, copied from the shared data."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"dataset not found at {SHARED_DATA}")
    return copy_shared_slice(tmp_path_factory.mktemp("selection_data"), {"train": 4, "val": 2})


def test_candidates_are_compared_with_the_reference_on_the_grouped_holdout(checkpoint_root, outlined_dataset, tmp_path):
    reference = checkpoint_root / "tiny_convnext"
    candidate = checkpoint_root / "tiny_effnet"
    records = list_splits(outlined_dataset, ("train", "val"))
    held = grouped_holdout(records, 0.5, seed=0)

    same, other = compare_checkpoints(
        [reference, candidate], outlined_dataset, fraction=0.5, placement_split="val", cache=tmp_path
    )
    assert same.holdout_images == other.holdout_images == held.sum()
    assert same.mcnemar is None and same.placement_tests is None
    # the reference's accuracy is what the McNemar counts imply for the candidate
    m = other.mcnemar
    assert other.accuracy == pytest.approx(same.accuracy + (m.better - m.worse) / held.sum())
    assert 0 <= m.p_value <= 1
    outside = other.placement_tests["mass_outside_brain"]
    assert outside.better + outside.worse <= 8  # one paired value per val image
    assert set(other.placement) == {"iou", "mass_outside_brain"}

    itself = compare_checkpoints([reference, reference], outlined_dataset, fraction=0.5)[1]
    assert (itself.mcnemar.better, itself.mcnemar.worse, itself.mcnemar.p_value) == (0, 0, 1.0)
    assert itself.accuracy == same.accuracy and itself.ece_after_temperature == same.ece_after_temperature


def test_select_command_prints_and_writes_the_comparison(checkpoint_root, outlined_dataset, tmp_path, capsys):
    names = [str(checkpoint_root / "tiny_convnext"), str(checkpoint_root / "tiny_effnet")]
    out = tmp_path / "selection.json"
    assert (
        main(["select", *names, "--data", str(outlined_dataset), "--holdout-fraction", "0.5", "--out", str(out)]) == 0
    )
    printed = capsys.readouterr().out
    assert "exact McNemar p = " in printed and names[1] in printed
    written = json.loads(out.read_text())
    assert [entry["checkpoint"] for entry in written] == names
    assert written[1]["mcnemar"]["better"] >= 0

    assert main(["select", *names, "--data", str(tmp_path / "missing")]) == 2
    assert "missing" in capsys.readouterr().err


def test_a_checkpoint_refit_on_the_holdout_is_refused(checkpoint_root, outlined_dataset, tmp_path, capsys):
    refit = tmp_path / "refit"
    shutil.copytree(checkpoint_root / "tiny_convnext", refit)
    config = json.loads((refit / "config.json").read_text())
    config["refit_without_holdout"] = True
    (refit / "config.json").write_text(json.dumps(config))
    names = [str(checkpoint_root / "tiny_convnext"), str(refit)]
    assert main(["select", *names, "--data", str(outlined_dataset), "--holdout-fraction", "0.5"]) == 2
    assert "refit on every training image" in capsys.readouterr().err
