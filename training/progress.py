"""Overall progress for a training run: each stage owns a share proportional to its cost."""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

log = logging.getLogger(__name__)

ProgressFn = Callable[[str, float, str], None]
# (epoch counted from 1, total epochs, logs with float values plus "lr" and "seconds")
EpochCallback = Callable[[int, int, dict], None]


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


def epoch_reporter(total: int, on_epoch: EpochCallback | None) -> Any:
    """A Keras callback passing each epoch's logs, the current LR and its seconds to `on_epoch`."""
    import keras  # only when training: progress lines must not need Keras

    class EpochReporter(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            values = {key: float(value) for key, value in (logs or {}).items()}
            values["lr"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
            values["seconds"] = time.perf_counter() - self.started
            self.started = time.perf_counter()
            if on_epoch is not None:
                on_epoch(epoch + 1, total, values)

    return EpochReporter()
