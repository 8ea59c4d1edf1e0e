"""Metrics shape, confusion-matrix orientation (rows true, columns predicted) and plots."""

from __future__ import annotations

import numpy as np
import pytest

from training.metrics import classification_metrics, roc_curves
from training.plots import (
    _pyplot, confusion_matrix_axes, plot_accuracy_comparison, plot_confusion_matrix, plot_roc_curves,
    plot_training_history,
)

CLASSES = ["glioma", "meningioma", "notumor", "pituitary"]


def _onehot(pred, classes=4):
    return np.eye(classes)[pred] * 0.9 + 0.1 / classes


def test_metrics_shape_and_values():
    y = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    pred = np.array([0, 1, 1, 1, 2, 2, 3, 0])
    m = classification_metrics(y, _onehot(pred), CLASSES)
    assert set(m) == {"accuracy", "macro_f1", "per_class", "confusion_matrix", "roc_auc"}
    assert m["accuracy"] == pytest.approx(6 / 8)
    assert list(m["per_class"]) == CLASSES
    assert set(m["per_class"]["glioma"]) == {"precision", "recall", "f1", "support"}
    assert m["per_class"]["meningioma"] == {"precision": 2 / 3, "recall": 1.0, "f1": pytest.approx(0.8),
                                           "support": 2}
    assert 0.0 <= m["roc_auc"] <= 1.0


def test_confusion_matrix_rows_are_true_columns_are_predicted():
    y = np.array([0, 0, 0, 2])  # three glioma scans all predicted as meningioma
    pred = np.array([1, 1, 1, 2])
    cm = classification_metrics(y, _onehot(pred), CLASSES)["confusion_matrix"]
    assert cm[0][1] == 3 and cm[1][0] == 0
    assert cm[2][2] == 1
    assert sum(map(sum, cm)) == 4


def test_roc_auc_is_none_when_a_class_is_absent():
    y = np.array([0, 1, 1])
    m = classification_metrics(y, _onehot(np.array([0, 1, 1])), CLASSES)
    assert m["roc_auc"] is None
    assert m["macro_f1"] == 1.0  # over the classes present


def test_macro_f1_counts_a_class_that_is_only_ever_predicted():
    """Averaging over true classes only ignored a class predicted for scans of others (issue 13)."""
    y = np.array([0, 0, 1, 1])
    pred = np.array([0, 3, 1, 1])  # pituitary never occurs, but one glioma is called pituitary
    m = classification_metrics(y, _onehot(pred), CLASSES)
    # glioma F1 2/3, meningioma 1, pituitary 0: their mean, not (2/3 + 1) / 2.
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1 + 0) / 3)


def test_confusion_plot_axes_are_labelled_in_encoder_order():
    plt = _pyplot()
    fig, ax = plt.subplots()
    matrix = [[5, 3, 0, 0], [0, 7, 0, 0], [0, 0, 9, 0], [1, 0, 0, 4]]
    confusion_matrix_axes(ax, matrix, CLASSES, "t")
    assert ax.get_xlabel() == "Predicted class" and ax.get_ylabel() == "True class"
    assert [t.get_text() for t in ax.get_xticklabels()] == CLASSES
    assert [t.get_text() for t in ax.get_yticklabels()] == CLASSES
    # The "3" (true glioma, predicted meningioma) sits at x = column 1, y = row 0.
    cells = {(t.get_position(), t.get_text()) for t in ax.texts}
    assert ((1, 0), "3") in cells and ((0, 3), "1") in cells
    # Row 0 is drawn at the top: the y axis is inverted (image origin upper left).
    bottom, top = ax.get_ylim()
    assert top < bottom
    plt.close(fig)


def test_plot_files_are_png(tmp_path):
    y = np.array([0, 1, 2, 3, 0, 1, 2, 3])
    probs = _onehot(np.array([0, 1, 2, 3, 1, 1, 2, 3]))
    paths = [
        plot_confusion_matrix([[1, 0], [0, 1]], ["a", "b"], "m", tmp_path / "cm.png"),
        plot_accuracy_comparison({"resnet50": 0.8, "ensemble": 0.9}, tmp_path / "acc.png"),
        plot_roc_curves({"m": roc_curves(y, probs, CLASSES)}, tmp_path / "roc.png"),
        plot_training_history({"m": {"loss": [1.0, 0.5], "val_loss": [1.1, 0.7],
                                     "accuracy": [0.5, 0.8], "val_accuracy": [0.4, 0.7]}},
                              tmp_path / "hist.png"),
    ]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
