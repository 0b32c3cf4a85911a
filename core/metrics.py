"""Classification metrics, calibration (ECE) and temperature scaling."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_auc_score


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    scaled -= scaled.max(axis=1, keepdims=True)
    exp = np.exp(scaled)
    return exp / exp.sum(axis=1, keepdims=True)


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """ECE with equal-width confidence bins (Guo et al. 2017, eq. 3)."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    total = 0.0
    for low, high in zip(edges[:-1], edges[1:]):
        in_bin = (confidence > low) & (confidence <= high)
        if in_bin.any():
            total += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(total)


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature minimising held-out negative log-likelihood (Guo et al. 2017)."""
    logits_t = torch.as_tensor(logits, dtype=torch.float64)
    labels_t = torch.as_tensor(labels, dtype=torch.long)
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200)

    def closure():
        optimiser.zero_grad()
        loss = torch.nn.functional.cross_entropy(logits_t / log_t.exp(), labels_t)
        loss.backward()
        return loss

    optimiser.step(closure)
    return float(log_t.detach().exp().clamp(0.05, 20.0))


def classification_summary(labels: np.ndarray, probabilities: np.ndarray, label_names: list[str]) -> dict:
    """Accuracy, macro-F1, per-class P/R/F1, confusion matrix and one-vs-rest ROC AUC."""
    labels = np.asarray(labels)
    predicted = probabilities.argmax(axis=1)
    indices = list(range(len(label_names)))
    precision, recall, f1, support = precision_recall_fscore_support(labels, predicted, labels=indices, zero_division=0)
    per_class = {
        name: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
            "roc_auc": _one_vs_rest_auc(labels == i, probabilities[:, i]),
        }
        for i, name in enumerate(label_names)
    }
    return {
        "num_images": int(labels.size),
        "accuracy": float((predicted == labels).mean()) if labels.size else float("nan"),
        "macro_f1": float(np.mean(f1)),
        "per_class": per_class,
        "confusion_matrix": {
            "labels": list(label_names),
            "rows_true_columns_predicted": confusion_matrix(labels, predicted, labels=indices).tolist(),
        },
    }


def _one_vs_rest_auc(is_class: np.ndarray, scores: np.ndarray) -> float | None:
    if is_class.all() or not is_class.any():
        return None  # undefined with one class present
    return float(roc_auc_score(is_class, scores))


def holdout_calibration(logits: np.ndarray, labels: np.ndarray, label_names: list[str]) -> tuple[float, dict]:
    """The temperature fitted on hold-out logits, and the hold-out's numbers a training record
    keeps: size, accuracy and macro-F1 at that temperature, ECE before and after it."""
    temperature = fit_temperature(logits, labels)
    summary = classification_summary(labels, softmax(logits, temperature), label_names)
    return temperature, {
        "num_images": len(labels),
        "accuracy": summary["accuracy"],
        "macro_f1": summary["macro_f1"],
        "ece_before_temperature": expected_calibration_error(softmax(logits), labels),
        "ece_after_temperature": expected_calibration_error(softmax(logits, temperature), labels),
    }
