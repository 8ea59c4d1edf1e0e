"""A tiny network that can only see the top-right quadrant of its image, and Grad-CAM's answer on it.

Run as a script (``python -m tests.helpers.quadrant_net``) it prints that answer as JSON, so a
test can ask another Keras backend (JAX) the same question in a subprocess.
"""

from __future__ import annotations

import json

import numpy as np

SIZE = 32
HALF = SIZE // 2
SQUARE = 6
NOISE_MAX = 0.3  # background pixels in [0, 0.3]; the squares are 1.0


def build_network(masked: bool = True):
    """Mask everything but the top-right quadrant, then a bright-square detector -> GAP -> 2 classes.

    With masked=False the same detector sees the whole image (the control: its heat spreads).

    The weights are set by hand: the convolution fires (ReLU(mean of its 3x3x3 window - 0.5))
    only on bright pixels, and class 1 ("bright square seen") wins when it fires enough.
    """
    import keras
    from keras import layers

    image = keras.Input(shape=(SIZE, SIZE, 3), name="image")
    # Cropping then padding back with zeros: the pixels outside the quadrant never reach the
    # convolution, while its map keeps the image's grid (so the heatmap lines up with the image).
    x = image
    if masked:
        x = layers.Cropping2D(((0, HALF), (HALF, 0)), name="keep_top_right")(x)
        x = layers.ZeroPadding2D(((0, HALF), (HALF, 0)), name="back_to_full_size")(x)
    conv = layers.Conv2D(1, 3, padding="same", activation="relu", name="bright")
    x = conv(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    dense = layers.Dense(2, activation="softmax", name="predictions")
    outputs = dense(x)
    model = keras.Model(image, outputs, name="quadrant_net")
    conv.set_weights([np.full((3, 3, 3, 1), 1.0 / 27.0, dtype="float32"), np.array([-0.5], dtype="float32")])
    # A 6x6 square gives a pooled value of about 36 * 0.5 / 1024 = 0.018: logit 1 = 400 * pooled.
    dense.set_weights([np.array([[0.0, 400.0]], dtype="float32"), np.array([2.0, 0.0], dtype="float32")])
    return model


def image_with_squares(corners: list[tuple[int, int]], seed: int = 0) -> np.ndarray:
    """A [1, 32, 32, 3] float image: noise in [0, 0.3] with a bright 6x6 square at each (row, col)."""
    rng = np.random.default_rng(seed)
    gray = rng.uniform(0.0, NOISE_MAX, size=(SIZE, SIZE)).astype("float32")
    for row, col in corners:
        gray[row:row + SQUARE, col:col + SQUARE] = 1.0
    return np.repeat(gray[None, :, :, None], 3, axis=3)


# The same square in every quadrant, at the same place within each.
EVERY_QUADRANT = [(5, 5), (5, HALF + 5), (HALF + 5, 5), (HALF + 5, HALF + 5)]
ONLY_BOTTOM_LEFT = [(HALF + 5, 5)]


def quadrant_shares(heatmap: np.ndarray) -> dict[str, float]:
    """The share of the heatmap's mass (stretched to the image's size) in each quadrant."""
    import cv2

    heat = cv2.resize(np.asarray(heatmap, dtype="float32"), (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)
    total = float(heat.sum())
    parts = {"top_left": heat[:HALF, :HALF], "top_right": heat[:HALF, HALF:],
             "bottom_left": heat[HALF:, :HALF], "bottom_right": heat[HALF:, HALF:]}
    return {name: (float(part.sum()) / total if total > 0 else 0.0) for name, part in parts.items()}


def answer() -> dict:
    """What Grad-CAM says about the quadrant network under the current Keras backend."""
    import keras

    from models.gradcam import grad_cam

    model = build_network()
    seen = grad_cam(model, image_with_squares(EVERY_QUADRANT))
    other = grad_cam(model, image_with_squares(EVERY_QUADRANT), class_index=0)
    unseen = grad_cam(model, image_with_squares(ONLY_BOTTOM_LEFT))
    peak = np.unravel_index(int(np.argmax(seen.heatmaps[0])), seen.heatmaps[0].shape)
    return {
        "backend": keras.backend.backend(),
        "layer": seen.layer,
        "map_shape": list(seen.heatmaps.shape[1:]),
        "predicted": int(seen.class_index[0]),
        "probability": float(seen.probabilities[0, 1]),
        "shares": quadrant_shares(seen.heatmaps[0]),
        "peak": [int(peak[0]), int(peak[1])],
        "other_class_max": float(other.heatmaps.max()),
        "unseen_predicted": int(unseen.class_index[0]),
        "unmasked_shares": quadrant_shares(grad_cam(build_network(masked=False),
                                                    image_with_squares(EVERY_QUADRANT)).heatmaps[0]),
    }


if __name__ == "__main__":
    print(json.dumps(answer()))
