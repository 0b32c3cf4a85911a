"""The stress test: seeded shifts, the shift table, occlusion sensitivity and the command."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.cli import main
from core.stress import SHIFTS, conditions, shifted, stress_test
from tests.conftest import head_phantom, needs_data


@pytest.mark.parametrize("shift", SHIFTS, ids=lambda shift: shift.name)
def test_each_shift_is_seeded_stays_in_range_and_grows_with_its_level(shift):
    image = head_phantom(96)
    levels = [shifted(image, shift, level, seed=3) for level in range(3)]
    assert all(np.array_equal(a, shifted(image, shift, i, seed=3)) for i, a in enumerate(levels))
    assert all(out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1 for out in levels)
    if shift.name != "crop":  # a crop changes the shape, not the pixels it keeps
        change = [np.abs(out - image).mean() for out in levels]
        assert change[0] > 0 and change[0] < change[2]


def test_conditions_are_clean_then_every_shift_at_three_levels():
    names = [name for name, _, _ in conditions()]
    assert names[0] == "clean" and len(names) == 1 + 3 * len(SHIFTS) and len(set(names)) == len(names)


@needs_data
def test_stress_reports_every_condition_and_occlusion_on_a_small_split(gallery_dataset, checkpoint_root, tmp_path):
    report = stress_test(checkpoint_root / "tiny_effnet", gallery_dataset, "test", progress=False)
    assert report["num_images"] == 12
    assert [row["condition"] for row in report["table"]] == [name for name, _, _ in conditions()]
    for row in report["table"]:
        assert 0 <= row["accuracy"] <= 1 and 0 <= row["ece"] <= 1 and "recall glioma" in row
    for name, row in report["occlusion"].items():
        assert name != "notumor" and row["images"] >= 1
        assert 0 <= row["sensitivity (median fill)"] <= 1 and 0 <= row["sensitivity (ns fill)"] <= 1

    out = tmp_path / "stress"
    code = main(["stress", "--checkpoint", str(checkpoint_root / "tiny_effnet"), "--data", str(gallery_dataset),
                 "--split", "test", "--limit", "1", "--out", str(out)])  # fmt: skip
    assert code == 0
    written = json.loads((out / "stress.json").read_text())
    assert written["num_images"] == 4 and (out / "stress.csv").read_text().startswith("condition,accuracy")


def test_stress_needs_a_split_or_the_holdout(capsys):
    with pytest.raises(SystemExit):
        main(["stress", "--checkpoint", "x", "--data", "."])
    assert "--split" in capsys.readouterr().err


def test_a_temperature_fitted_with_shifted_images_is_judged_on_shifts_it_did_not_see():
    from core.stress import shift_temperature

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 400)
    clean = np.eye(4)[labels] * 4 + rng.normal(0, 1, (400, 4))
    # Under shift the model stays just as sure but is often wrong: overconfident.
    shifted = {f"{family} (strong)": np.eye(4)[rng.integers(0, 4, 400)] * 4 + rng.normal(0, 1, (400, 4))
               for family in ("blur", "noise", "gamma", "jpeg")}  # fmt: skip
    report = shift_temperature({"clean": clean, **shifted}, labels, clean_temperature=1.0)
    assert report["pooled_temperature"] > 1.5
    unseen = report["mean_ece_on_unseen_shifts"]
    assert unseen["pooled"] < unseen["clean"]
    assert report["clean_ece"]["clean"] < report["clean_ece"]["pooled"]  # the price on clean images
