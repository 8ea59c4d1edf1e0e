"""training.progress: staged overall progress and the shared Keras per-epoch reporter."""

from __future__ import annotations

import numpy as np

from training.progress import StagedProgress, epoch_reporter, format_epoch_logs


def test_epoch_reporter_passes_float_logs_lr_and_seconds():
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    seen: list[tuple[int, int, dict]] = []
    x = np.random.default_rng(0).random((8, 3)).astype(np.float32)
    y = np.array([0, 1] * 4)
    model.fit(x, y, validation_data=(x, y), epochs=2, batch_size=4, verbose=0,
              callbacks=[epoch_reporter(2, lambda epoch, total, logs: seen.append((epoch, total, logs)))])
    assert [(epoch, total) for epoch, total, _ in seen] == [(1, 2), (2, 2)]
    for _, _, logs in seen:
        assert {"loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds"} <= set(logs)
        assert all(type(value) is float for value in logs.values())
        assert abs(logs["lr"] - 1e-3) < 1e-9 and logs["seconds"] >= 0
    assert format_epoch_logs(seen[0][2]).startswith("loss ")


def test_epoch_reporter_without_a_callback_is_silent():
    import keras

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    model.fit(np.zeros((4, 2), np.float32), np.zeros((4, 1), np.float32), epochs=1, verbose=0,
              callbacks=[epoch_reporter(1, None)])


def test_staged_progress_is_monotonic_and_weighted():
    calls: list[tuple[str, float]] = []
    progress = StagedProgress({"a": 1.0, "b": 3.0}, lambda stage, overall, message: calls.append((stage, overall)))
    progress("a", 1.0, "a done")
    progress.stage("b")(0.5, "half of b")
    progress("a", 0.0, "late a report")
    assert calls == [("a", 0.25), ("b", 0.625), ("a", 0.625)]
