"""Explain one scan with one model of a bundle: a Grad-CAM heatmap and a PNG overlay of it on the scan.

ResNet50, VGG16 and the custom CNN are explained by Grad-CAM of their own last convolutional
map, for the class each predicted. The SVM and the Random Forest have no gradients; they
classify ResNet50's 256-d features, so they are explained through that network: Grad-CAM of
ResNet50's map for the class the SVM / Random Forest predicted (ResNet50's own head scores
that class). It shows which regions drive ResNet50 toward the estimator's class, not how the
estimator weighs the features.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from models import ESTIMATOR_NAMES, MODEL_NAMES
from models.calibration import Calibration
from models.preprocess import preprocess_for, resize_image

# The overlay keeps the picture where the heat is low: each pixel blends the colour map in by
# its own heat times this, so cold regions show the scan unchanged.
OVERLAY_OPACITY = 0.55
# Heat below this share of the map's peak is left uncoloured: Grad-CAM maps (the CNN's most) are
# faintly positive almost everywhere, which tinted the whole scan blue; "cold regions show the
# scan unchanged" should hold literally.
COLD_BELOW = 0.1
MAX_OVERLAY_SIDE = 1024  # pixels; larger scans are shrunk (the heatmap is 7x7 at 224 px anyway)


@dataclass
class Explanation:
    """One model's heatmap of one image and what it explains."""

    model: str
    label: str  # the class explained: the one this model predicted
    confidence: float  # that model's calibrated probability for it (as the engine serves it)
    heatmap: np.ndarray  # float32 [h, w] in [0, 1], on the explained feature map's grid
    layer: str  # the explained network layer, e.g. "resnet50/conv5_block3_out"
    via: str | None = None  # "resnet50" when an SVM / Random Forest is explained through it


class Explainer:
    """Grad-CAM for every model of a loaded bundle (networks are cut once, on first use)."""

    def __init__(self, bundle: Any) -> None:
        """Use `bundle`'s unfolded float32 networks (a models.bundle.Bundle)."""
        self.bundle = bundle
        self.classes: list[str] = list(bundle.classes)
        self.image_size: int = int(bundle.image_size)
        self._splits: dict[str, Any] = {}
        self._calibration = Calibration.from_manifest(getattr(bundle, "manifest", None) or {})

    @property
    def model_names(self) -> list[str]:
        """The bundle's models, all explainable (SVM/RF need ResNet50, which a bundle guarantees)."""
        return [n for n in MODEL_NAMES if n in self.bundle.model_names]

    def _split(self, network: str) -> Any:
        from models.gradcam import split_network

        if network not in self._splits:
            self._splits[network] = split_network(self.bundle.networks[network])
        return self._splits[network]

    def _estimator_class(self, name: str, inputs: np.ndarray) -> tuple[int, np.ndarray]:
        """(class index in the bundle's order, probability row) the SVM / RF predicts from ResNet50 features."""
        import keras

        from models.architectures import FEATURES_LAYER

        if "features" not in self._splits:
            resnet = self.bundle.networks["resnet50"]
            self._splits["features"] = keras.Model(resnet.inputs[0], resnet.get_layer(FEATURES_LAYER).output)
        features = self._splits["features"](inputs, training=False)
        features = np.asarray(keras.ops.convert_to_numpy(features), dtype=np.float32)
        estimator = self.bundle.estimators[name]
        proba = np.asarray(estimator.predict_proba(features), dtype=np.float32)[0]
        column = int(np.argmax(proba))
        cls = estimator.classes_[column]
        # An estimator's columns follow its own classes_ (encoded ints, or names), as in the engine.
        index = self.classes.index(cls) if isinstance(cls, str) else int(cls)
        return index, proba

    def explain(self, image: np.ndarray, model: str) -> Explanation:
        """Explain a uint8 RGB (or grayscale) image of any size with one of the bundle's models."""
        from models.gradcam import grad_cam

        if model not in self.model_names:
            raise KeyError(f"model {model!r} is not in this bundle ({', '.join(self.model_names)})")
        batch = resize_image(image, self.image_size)[None]
        network = "resnet50" if model in ESTIMATOR_NAMES else model
        inputs = preprocess_for(network, batch)
        if model in ESTIMATOR_NAMES:
            index, row = self._estimator_class(model, inputs)
            cam = grad_cam(self._split(network), inputs, class_index=index)
        else:
            cam = grad_cam(self._split(network), inputs)
            index = int(cam.class_index[0])
            row = np.asarray(cam.probabilities[0], dtype=np.float32)
        # The bundle's temperature for this model, as the engine applies it; scaling keeps the
        # order of the classes, so the top class of the row is still `index`.
        confidence = float(np.max(self._calibration.member(model, row[None])[0]))
        return Explanation(model=model, label=self.classes[index], confidence=confidence,
                           heatmap=cam.heatmaps[0], layer=cam.layer,
                           via=network if model in ESTIMATOR_NAMES else None)


def _as_rgb(image: np.ndarray) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    return np.ascontiguousarray(arr[:, :, :3].astype(np.uint8))


def overlay(image: np.ndarray, heatmap: np.ndarray, max_side: int = MAX_OVERLAY_SIDE) -> np.ndarray:
    """The scan (uint8, any size) with the heatmap stretched over it in the JET colour map (RGB uint8)."""
    rgb = _as_rgb(image)
    height, width = rgb.shape[:2]
    scale = min(1.0, max_side / max(height, width))
    if scale < 1.0:
        height, width = max(1, round(height * scale)), max(1, round(width * scale))
        rgb = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)
    # The model saw the whole scan resized to a square, so the map stretches back over all of it.
    heat = cv2.resize(np.asarray(heatmap, dtype=np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    heat = np.clip(heat, 0.0, 1.0)
    jet = cv2.applyColorMap(np.uint8(np.rint(heat * 255)), cv2.COLORMAP_JET)
    colours = cv2.cvtColor(jet, cv2.COLOR_BGR2RGB)
    alpha = np.where(heat >= COLD_BELOW, heat * OVERLAY_OPACITY, 0.0)[:, :, None]
    return np.uint8(np.rint(rgb * (1.0 - alpha) + colours * alpha))


def png(pixels: np.ndarray) -> bytes:
    """PNG bytes of an RGB uint8 image."""
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(_as_rgb(pixels), cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("could not encode the overlay as PNG")
    return encoded.tobytes()


def overlay_png(image: np.ndarray, explanation: Explanation) -> bytes:
    """The PNG overlay of an explanation on the image it explains."""
    return png(overlay(image, explanation.heatmap))
