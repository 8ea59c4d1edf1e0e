"""Overall progress for a training run: each stage owns a share proportional to its cost."""

from __future__ import annotations

import logging
from typing import Callable

log = logging.getLogger(__name__)

ProgressFn = Callable[[str, float, str], None]


class StagedProgress:
    """Map (stage, fraction-of-stage) to one monotonic overall fraction 0..1."""

    def __init__(self, costs: dict[str, float], callback: ProgressFn | None) -> None:
        """`costs` orders the stages and weighs them (any positive unit)."""
        total = sum(max(c, 0.0) for c in costs.values()) or 1.0
        self.spans: dict[str, tuple[float, float]] = {}
        start = 0.0
        for stage, cost in costs.items():
            width = max(cost, 0.0) / total
            self.spans[stage] = (start, width)
            start += width
        self.callback = callback
        self.last = 0.0

    def __call__(self, stage: str, fraction: float, message: str) -> None:
        """Report progress within `stage` (0..1) with a human-readable message."""
        start, width = self.spans.get(stage, (self.last, 0.0))
        overall = min(1.0, max(self.last, start + width * min(max(fraction, 0.0), 1.0)))
        self.last = overall
        log.info("[%s %.0f%%] %s", stage, overall * 100, message)
        if self.callback is not None:
            self.callback(stage, overall, message)

    def stage(self, name: str) -> Callable[[float, str], None]:
        """A (fraction, message) reporter bound to one stage."""
        return lambda fraction, message: self(name, fraction, message)


def format_epoch_logs(logs: dict) -> str:
    """'loss 0.41 acc 0.862 val_loss 0.39 val_acc 0.874 lr 1e-04 (12 s)' from Keras logs."""
    parts = []
    for key, label in (("loss", "loss"), ("accuracy", "acc"), ("val_loss", "val_loss"),
                       ("val_accuracy", "val_acc")):
        if key in logs:
            parts.append(f"{label} {logs[key]:.4f}")
    if "lr" in logs:
        parts.append(f"lr {logs['lr']:.1e}")
    if "seconds" in logs:
        parts.append(f"({logs['seconds']:.0f} s)")
    return " ".join(parts)
