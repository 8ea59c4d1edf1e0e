"""PNG plots: confusion matrices, accuracy comparison, ROC curves, reliability diagrams, training history (Agg)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

log = logging.getLogger(__name__)


def _pyplot():
    """Import pyplot on the non-interactive Agg backend (no display on servers)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def confusion_matrix_axes(ax, matrix: Sequence[Sequence[int]], classes: Sequence[str], title: str) -> None:
    """Draw one confusion matrix: rows (y axis) = true class, columns (x axis) = predicted."""
    cm = np.asarray(matrix, dtype=float)
    ax.imshow(cm, cmap="Blues")
    ticks = np.arange(len(classes))
    ax.set_xticks(ticks, labels=list(classes), rotation=45, ha="right")
    ax.set_yticks(ticks, labels=list(classes))
    ax.set_xlabel("Predicted class")
    ax.set_ylabel("True class")
    ax.set_title(title)
    threshold = cm.max() / 2.0 if cm.size else 0.0
    for row in range(cm.shape[0]):
        for col in range(cm.shape[1]):
            ax.text(col, row, f"{int(cm[row, col])}", ha="center", va="center",
                    color="white" if cm[row, col] > threshold else "black", fontsize=8)


def plot_confusion_matrix(matrix, classes: Sequence[str], title: str, path: str | Path) -> Path:
    """Write one confusion-matrix PNG; return its path."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 4.5))
    confusion_matrix_axes(ax, matrix, classes, title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def plot_accuracy_comparison(accuracies: Mapping[str, float], path: str | Path) -> Path:
    """Bar chart of accuracy per model (and ensemble); return the PNG path."""
    plt = _pyplot()
    names = list(accuracies)
    values = [accuracies[n] for n in names]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bars = ax.bar(names, values, color=["tab:orange" if n == "ensemble" else "tab:blue" for n in names])
    for bar, value in zip(bars, values):
        ax.text(bar.get_x() + bar.get_width() / 2, value, f"{value:.1%}", ha="center", va="bottom",
                fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("Accuracy")
    ax.set_title("Accuracy by model")
    ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def _panel_grid(plt, panels: int, panel_height: float):
    """A figure with up to three 4-inch-wide panels per row, enough rows for `panels`."""
    cols = min(3, max(1, panels))
    rows = max(1, int(np.ceil(panels / cols)))
    return plt.subplots(rows, cols, figsize=(4 * cols, panel_height * rows), squeeze=False)


def _save_panels(plt, fig, axes, used: int, path: str | Path) -> Path:
    """Blank the panels past `used`, write the figure as PNG, close it; return the path."""
    for ax in list(axes.flat)[used:]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def plot_roc_curves(
    curves: Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray]]], path: str | Path
) -> Path:
    """One panel per model with a one-vs-rest ROC curve per class; return the PNG path."""
    plt = _pyplot()
    names = list(curves)
    fig, axes = _panel_grid(plt, len(names), panel_height=3.6)
    for ax, name in zip(axes.flat, names):
        for label, (fpr, tpr) in curves[name].items():
            ax.plot(fpr, tpr, label=label)
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":")
        ax.set_title(name)
        ax.set_xlabel("False positive rate")
        ax.set_ylabel("True positive rate")
        ax.legend(fontsize=7, loc="lower right")
    return _save_panels(plt, fig, axes, len(names), path)


def plot_training_history(histories: Mapping[str, Mapping[str, Sequence[float]]], path: str | Path) -> Path:
    """Accuracy and loss per epoch (train and validation) for each trained network."""
    plt = _pyplot()
    names = [n for n in histories if histories[n].get("loss")]
    fig, axes = plt.subplots(2, max(1, len(names)), figsize=(4 * max(1, len(names)), 6), squeeze=False)
    for col, name in enumerate(names):
        history = histories[name]
        for row, metric in enumerate(("accuracy", "loss")):
            ax = axes[row][col]
            for key, style in ((metric, "-"), (f"val_{metric}", "--")):
                if history.get(key):
                    epochs = np.arange(1, len(history[key]) + 1)
                    ax.plot(epochs, history[key], style, label=key)
            ax.set_title(f"{name} {metric}")
            ax.set_xlabel("epoch")
            ax.legend(fontsize=7)
    if not names:
        axes[0][0].text(0.5, 0.5, "no network was trained", ha="center")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def plot_reliability_diagram(calibrated: Mapping[str, Sequence[dict]], uncalibrated: Mapping[str, Sequence[dict]],
                             path: str | Path) -> Path:
    """One panel per model: accuracy against confidence per bin (training.calibration.reliability_bins),
    as served (bars) and without the bundle's temperatures (dashed), beside the diagonal."""
    plt = _pyplot()
    names = list(calibrated)
    fig, axes = _panel_grid(plt, len(names), panel_height=3.8)
    for ax, name in zip(axes.flat, names):
        bins = [b for b in calibrated[name] if b["count"]]
        ax.bar([(b["lo"] + b["hi"]) / 2 for b in bins], [b["accuracy"] for b in bins],
               width=[b["hi"] - b["lo"] for b in bins], edgecolor="tab:blue", alpha=0.6, label="calibrated")
        raw = [b for b in uncalibrated.get(name, ()) if b["count"]]
        if raw:
            ax.plot([b["confidence"] for b in raw], [b["accuracy"] for b in raw], "o--", color="tab:red",
                    markersize=3, label="uncalibrated")
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_title(name)
        ax.set_xlabel("Confidence (top label)")
        ax.set_ylabel("Accuracy")
        ax.legend(fontsize=7, loc="upper left")
    return _save_panels(plt, fig, axes, len(names), path)
