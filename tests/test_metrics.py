from __future__ import annotations

import numpy as np
import pytest

from core.metrics import classification_summary, expected_calibration_error, fit_temperature, softmax


def test_summary_against_hand_computed_values():
    labels = np.array([0, 0, 0, 1, 1, 2])
    predicted = np.array([0, 0, 1, 1, 2, 2])
    probabilities = np.eye(3)[predicted] * 0.7 + 0.1
    summary = classification_summary(labels, probabilities, ["a", "b", "c"])
    assert summary["accuracy"] == pytest.approx(4 / 6)
    # a: P 2/2 R 2/3; b: P 1/2 R 1/2; c: P 1/2 R 1/1
    assert summary["per_class"]["a"]["precision"] == 1.0
    assert summary["per_class"]["a"]["recall"] == pytest.approx(2 / 3)
    assert summary["per_class"]["c"]["f1"] == pytest.approx(2 / 3)
    f1 = [2 * 1 * (2 / 3) / (1 + 2 / 3), 0.5, 2 / 3]
    assert summary["macro_f1"] == pytest.approx(np.mean(f1))
    assert summary["confusion_matrix"]["rows_true_columns_predicted"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]


def test_auc_hand_computed_and_undefined_case():
    labels = np.array([0, 0, 1, 1])
    scores = np.array([0.1, 0.6, 0.4, 0.9])  # positive>negative in 3 of 4 pairs
    probabilities = np.stack([1 - scores, scores], axis=1)
    summary = classification_summary(labels, probabilities, ["neg", "pos"])
    assert summary["per_class"]["pos"]["roc_auc"] == pytest.approx(0.75)
    only_one = classification_summary(np.array([0, 0]), np.array([[0.9, 0.1], [0.8, 0.2]]), ["neg", "pos"])
    assert only_one["per_class"]["pos"]["roc_auc"] is None


def test_ece_hand_computed():
    # Two bins used: 0.9 confidence (2 right of 2) and 0.6 confidence (1 right of 2).
    probabilities = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]])
    labels = np.array([0, 0, 0, 1])
    expected = 0.5 * abs(1.0 - 0.9) + 0.5 * abs(0.5 - 0.6)
    assert expected_calibration_error(probabilities, labels) == pytest.approx(expected)


def test_perfectly_calibrated_predictions_have_zero_ece():
    assert expected_calibration_error(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([0, 1])) == 0.0


def test_temperature_recovers_overconfidence():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 2, (4000, 4))
    labels = np.array([rng.choice(4, p=p) for p in softmax(true_logits)])
    temperature = fit_temperature(true_logits * 3.0, labels)  # logits 3x too sharp
    assert temperature == pytest.approx(3.0, rel=0.1)
    before = expected_calibration_error(softmax(true_logits * 3.0), labels)
    after = expected_calibration_error(softmax(true_logits * 3.0, temperature), labels)
    assert after < before / 2
