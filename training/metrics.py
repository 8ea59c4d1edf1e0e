"""Classification metrics in the metrics.json shape (accuracy, macro F1, per class, CM, ROC AUC)."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def classification_metrics(
    y_true: np.ndarray, probabilities: np.ndarray, classes: Sequence[str]
) -> dict:
    """Metrics for one model: rows of the confusion matrix are true classes, columns predicted.

    `y_true` holds class indices in encoder order; `probabilities` is [N, C] in the same order.
    roc_auc is the macro one-vs-rest AUC, or None where a class has no positive sample.
    """
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_auc_score

    y_true = np.asarray(y_true, dtype=int)
    probs = np.asarray(probabilities, dtype=np.float64)
    labels = list(range(len(classes)))
    y_pred = probs.argmax(axis=1)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    # Macro F1 over the classes that occur in the truth or in the predictions: absent classes
    # would drag a small report to 0, but a class only ever predicted wrongly must count.
    present = (support > 0) | np.isin(labels, y_pred)
    per_class = {
        str(name): {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(classes)
    }
    roc_auc: float | None = None
    if (support > 0).all() and len(y_true) > 0:
        try:
            value = roc_auc_score(y_true, probs, multi_class="ovr", average="macro", labels=labels)
            roc_auc = None if math.isnan(value) else float(value)
        except ValueError:
            roc_auc = None
    return {
        "accuracy": float(np.mean(y_pred == y_true)) if len(y_true) else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_class": per_class,
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).astype(int).tolist(),
        "roc_auc": roc_auc,
    }


def roc_curves(
    y_true: np.ndarray, probabilities: np.ndarray, classes: Sequence[str]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """One-vs-rest ROC curve (fpr, tpr) per class that has both positives and negatives."""
    from sklearn.metrics import roc_curve

    y_true = np.asarray(y_true, dtype=int)
    curves = {}
    for i, name in enumerate(classes):
        positives = y_true == i
        if positives.any() and (~positives).any():
            fpr, tpr, _ = roc_curve(positives.astype(int), probabilities[:, i])
            curves[str(name)] = (fpr, tpr)
    return curves
