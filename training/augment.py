"""Random affine augmentation of uint8 image batches (rotation, shift, zoom, flip) with OpenCV."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class AugmentParams:
    """The SPEC.md augmentation: rotation +-20 deg, shifts 0.2, zoom 0.15, horizontal flip."""

    rotation_deg: float = 20.0
    shift: float = 0.2  # fraction of width/height, uniform in [-shift, +shift]
    zoom: float = 0.15  # scale factor uniform in [1 - zoom, 1 + zoom]
    horizontal_flip: bool = True


@dataclass(frozen=True)
class AffineDraw:
    """One random draw of the augmentation parameters (kept for tests and logging)."""

    angle_deg: float
    shift_x: float
    shift_y: float
    scale: float
    flip: bool


def draw_affine(rng: np.random.Generator, params: AugmentParams) -> AffineDraw:
    """Draw one set of augmentation parameters uniformly within the configured ranges."""
    return AffineDraw(
        angle_deg=float(rng.uniform(-params.rotation_deg, params.rotation_deg)),
        shift_x=float(rng.uniform(-params.shift, params.shift)),
        shift_y=float(rng.uniform(-params.shift, params.shift)),
        scale=float(rng.uniform(1.0 - params.zoom, 1.0 + params.zoom)),
        flip=bool(params.horizontal_flip and rng.random() < 0.5),
    )


def affine_matrix(draw: AffineDraw, height: int, width: int) -> np.ndarray:
    """Return the 2x3 matrix that rotates/zooms about the centre, then shifts (and flips)."""
    # Pixel centres sit on integer coordinates, so the image centre is at (size - 1) / 2.
    centre = ((width - 1) / 2.0, (height - 1) / 2.0)
    matrix = cv2.getRotationMatrix2D(centre, draw.angle_deg, draw.scale)
    matrix[0, 2] += draw.shift_x * width
    matrix[1, 2] += draw.shift_y * height
    if draw.flip:
        # Mirror the output horizontally: x' = (width - 1) - x, applied after the warp.
        flip = np.array([[-1.0, 0.0, width - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
        matrix = (flip @ np.vstack([matrix, [0.0, 0.0, 1.0]]))[:2]
    return matrix


def augment_image(image: np.ndarray, draw: AffineDraw) -> np.ndarray:
    """Apply one drawn affine transform to a uint8 HxWx3 image; uncovered areas become black."""
    height, width = image.shape[:2]
    matrix = affine_matrix(draw, height, width)
    # MRI slices sit on a black background, so a constant black fill adds no fake anatomy
    # (Keras' default "nearest" fill would smear edge pixels into streaks).
    out = cv2.warpAffine(
        image,
        matrix,
        (width, height),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(0, 0, 0),
    )
    return out.reshape(image.shape)


def augment_batch(
    images: np.ndarray, rng: np.random.Generator, params: AugmentParams = AugmentParams()
) -> np.ndarray:
    """Return a new uint8 batch with an independent random transform applied to every image."""
    batch = np.asarray(images)
    out = np.empty_like(batch)
    for i in range(batch.shape[0]):
        out[i] = augment_image(batch[i], draw_affine(rng, params))
    return out
