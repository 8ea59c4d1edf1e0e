"""Batched five-model inference: one pass per network, shared ResNet50 features, weighted ensemble."""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any, Callable, Sequence

import keras
import numpy as np

from models import ENSEMBLE_NAME, ESTIMATOR_NAMES, NETWORK_NAMES
from models.architectures import FEATURES_LAYER
from models.bundle import Bundle, load_bundle
from models.calibration import Calibration, Triage, mixture, normalised_weights, served_probabilities
from models.fold import fold_batchnorm
from models.precision import with_precision
from models.preprocess import preprocess_for, resize_batch

logger = logging.getLogger(__name__)

Forward = Callable[[np.ndarray], Any]
# Under "bfloat16" these networks compute in bfloat16.  ResNet50 stays float32 by default:
# its 256-d features feed the Random Forest, whose hard split thresholds flip on bfloat16
# noise (measured: 23 of 100 trees changing vote, 4/64 ensemble labels flipping with a random
# backbone), while VGG16 - three quarters of the FLOPs - carries most of the speed-up.
DEFAULT_BF16_NETWORKS: tuple[str, ...] = ("vgg16", "custom_cnn")


def _compile_forward(model: keras.Model, image_size: int) -> Forward:
    """Return a function running `model` in inference mode, traced/compiled once."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        # A fixed signature with a free batch dimension: one trace serves every batch size.
        spec = tf.TensorSpec([None, image_size, image_size, 3], tf.float32)
        return tf.function(lambda x: model(x, training=False), input_signature=[spec])
    if backend == "jax":
        return _jax_forward(model)
    return model.predict_on_batch


def _jax_forward(model: keras.Model) -> Forward:
    """`model` as one jitted pure function of (weights, batch), compiled once per batch shape.

    The weights are arguments, not constants folded into the program, so compiling stays
    fast and they live once on the device; the result stays on the device until read.
    """
    import jax

    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]

    @jax.jit
    def forward(trainable, non_trainable, batch):
        outputs, _ = model.stateless_call(trainable, non_trainable, batch, training=False)
        return outputs

    return lambda batch: forward(trainable, non_trainable, batch)


def bfloat16_networks_for(manifest: dict) -> tuple[str, ...]:
    """The networks a bundle serves in bfloat16: those its training run checked on validation
    (manifest "precision", training.precision_check), else DEFAULT_BF16_NETWORKS."""
    recorded = (manifest.get("precision") or {}).get("bfloat16_networks")
    return DEFAULT_BF16_NETWORKS if recorded is None else tuple(str(name) for name in recorded)


def _to_numpy(value: Any) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(value), dtype=np.float32)


def _single_threaded(estimator: Any) -> Any:
    """A shallow copy of a fitted estimator that predicts on one thread.

    Training fits the Random Forest with n_jobs=-1; at serving, joblib's thread dispatch costs
    more than it saves on a batch of 32 while the networks' threads hold the cores: 20.3-23.5 ms
    against 3.5-6.7 ms per batch for 100 fully grown trees on 2 cores (bench/forest_threads.py).
    The copy shares the trees.
    """
    if getattr(estimator, "n_jobs", 1) in (1, None):
        return estimator
    served = copy.copy(estimator)
    served.n_jobs = 1
    return served


class NonFiniteOutputError(RuntimeError):
    """A float32 network gave probabilities or features that are not finite numbers."""


class InferenceEngine:
    """Classify batches of scans with every model in a bundle, then ensemble them."""

    def __init__(
        self,
        bundle: Bundle,
        precision: str = "float32",
        batch_size: int = 32,
        bf16_networks: Sequence[str] | None = None,
    ) -> None:
        """Prepare compiled forward functions for `bundle` at `precision`.

        With precision "bfloat16", `bf16_networks` (default: bfloat16_networks_for(bundle)) run
        in bfloat16 and the other networks in float32.
        """
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.bundle = bundle
        self.precision = precision
        self.batch_size = int(batch_size)
        self.classes: list[str] = list(bundle.classes)
        self.image_size: int = bundle.image_size
        self.manifest: dict = bundle.manifest
        self.digest: str = bundle.digest
        self.model_names: list[str] = bundle.model_names
        self.estimators = {name: _single_threaded(est) for name, est in bundle.estimators.items()}
        low = set(bfloat16_networks_for(bundle.manifest) if bf16_networks is None else bf16_networks)
        self.network_precision = {
            n: precision if precision == "float32" or n in low else "float32" for n in bundle.networks
        }
        self.networks: dict[str, keras.Model] = {}
        self._batched: dict[str, Forward] = {}
        self._separate: dict[str, Forward] = {}  # one model at a time, compiled on first use
        for name in bundle.networks:
            self._build_network(name)
        self.ensemble_weights = self._normalised_weights(bundle.ensemble_weights)
        # Every probability the engine hands out is calibrated with the bundle's temperatures
        # (T = 1 without a calibration block); the triage rule marks scans for review.
        self.calibration = Calibration.from_manifest(bundle.manifest)
        self.triage = Triage.from_manifest(bundle.manifest)

    @classmethod
    def from_bundle(
        cls,
        bundle_dir: str | Path,
        precision: str = "float32",
        batch_size: int = 32,
        bf16_networks: Sequence[str] | None = None,
    ) -> "InferenceEngine":
        """Verify and load a bundle folder, then build the engine."""
        return cls(load_bundle(bundle_dir), precision, batch_size, bf16_networks)

    def _build_network(self, name: str) -> None:
        """(Re)build network `name` at its precision and compile its batched forward function."""
        # BatchNorm folded into the convolutions: 1.13x (ResNet50) in float32, 1.6x in bfloat16,
        # where each unfolded BatchNorm also casts (measured at 224 px, batch 32).
        model = fold_batchnorm(with_precision(self.bundle.networks[name], self.network_precision[name]))
        self.networks[name] = model
        for stale in (name, *ESTIMATOR_NAMES) if name == "resnet50" else (name,):
            self._separate.pop(stale, None)
        if name == "resnet50":
            # The batched path: ResNet50 gives head probabilities and 256-d features in one pass.
            model = keras.Model(model.inputs, [model.outputs[0], model.get_layer(FEATURES_LAYER).output])
        self._batched[name] = _compile_forward(model, self.image_size)

    def _network_outputs(self, name: str, inputs: np.ndarray) -> list[np.ndarray]:
        """Run network `name`'s batched forward on `inputs`; every output as float32 numpy.

        A bfloat16 network whose outputs are not all finite is rebuilt in float32 for good and
        run again: XLA's CPU bfloat16 convolutions under JAX were seen to give inf/NaN where
        the same layers run op by op did not, and argmax would read a NaN row as the first
        class. A float32 network with non-finite outputs raises NonFiniteOutputError.
        """
        return self._finite(name, lambda: self._batched[name](inputs))

    def _finite(self, network: str, run: Callable[[], Any]) -> list[np.ndarray]:
        """The outputs of `run()` (a forward through `network`) as float32 numpy; when any is not
        finite, `network` falls back to float32 (_fall_back_to_float32) and `run` goes again."""
        out = run()
        outputs = [_to_numpy(o) for o in (out if isinstance(out, (list, tuple)) else [out])]
        if all(np.isfinite(o).all() for o in outputs):
            return outputs
        self._fall_back_to_float32(network)
        return self._finite(network, run)

    def _fall_back_to_float32(self, network: str) -> None:
        """After non-finite outputs: serve bfloat16 `network` in float32 from now on (rebuilt, which
        also drops its compiled forwards), or raise NonFiniteOutputError when it already runs in float32."""
        if self.network_precision[network] == "float32":
            raise NonFiniteOutputError(f"{network} gave non-finite outputs in float32 "
                                       f"(bundle {self.digest[:12]}): the scans are not classified")
        logger.warning("%s gave non-finite outputs in bfloat16 on %s: serving it in float32 from now on",
                       network, keras.backend.backend())
        self.network_precision[network] = "float32"
        self._build_network(network)

    def _normalised_weights(self, weights: dict[str, float]) -> dict[str, float]:
        return normalised_weights(weights, self.model_names)

    def estimator_probabilities(self, name: str, features: np.ndarray) -> np.ndarray:
        """Run SVM or Random Forest on 256-d features; return [N,C] in the bundle's class order."""
        estimator = self.estimators[name]
        proba = np.asarray(estimator.predict_proba(features), dtype=np.float32)
        out = np.zeros((features.shape[0], len(self.classes)), dtype=np.float32)
        # An estimator's columns follow its own classes_ (encoded ints, or names).
        for column, cls in enumerate(estimator.classes_):
            index = self.classes.index(cls) if isinstance(cls, str) else int(cls)
            out[:, index] = proba[:, column]
        return out

    def ensemble_probabilities(self, probs: dict[str, np.ndarray], calibrated: bool = True) -> np.ndarray:
        """Combine per-model [N,C] probabilities (calibrated ones) with the bundle's ensemble weights,
        then apply the ensemble's temperature (`calibrated` False: the plain weighted mixture)."""
        mixed = mixture(probs, self.ensemble_weights, self.model_names)
        return self.calibration.ensemble(mixed) if calibrated else mixed

    def calibrated(self, raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """From uncalibrated member probabilities: calibrated members plus 'ensemble'."""
        return served_probabilities(raw, self.model_names, self.ensemble_weights, self.calibration)

    def uncalibrated(self, raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The members as the models give them and their weighted mixture (no temperatures)."""
        probs = {n: raw[n] for n in self.model_names}
        probs[ENSEMBLE_NAME] = self.ensemble_probabilities(probs, calibrated=False)
        return probs

    def _prepare(self, images: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        return resize_batch(images, self.image_size)

    def predict_probabilities(self, batch_uint8: np.ndarray) -> dict[str, np.ndarray]:
        """Run every model once on a [N,S,S,3] uint8 batch; return calibrated {model: [N,C]} plus 'ensemble'."""
        return self.calibrated(self.member_probabilities(batch_uint8))

    def member_probabilities(self, batch_uint8: np.ndarray) -> dict[str, np.ndarray]:
        """Run every model once on a [N,S,S,3] uint8 batch; return its uncalibrated {model: [N,C]}."""
        batch = self._prepare(batch_uint8)
        probs: dict[str, np.ndarray] = {}
        caffe = None
        for name in NETWORK_NAMES:
            if name not in self._batched:
                continue
            if name in ("resnet50", "vgg16"):
                # ResNet50 and VGG16 share one preprocessed copy of the batch.
                caffe = preprocess_for(name, batch) if caffe is None else caffe
                inputs = caffe
            else:
                inputs = preprocess_for(name, batch)
            outputs = self._network_outputs(name, inputs)
            probs[name] = outputs[0]
            if name == "resnet50":
                for est in ESTIMATOR_NAMES:
                    if est in self.estimators:
                        probs[est] = self.estimator_probabilities(est, outputs[1])
        return probs

    def predict_model_probabilities(self, name: str, batch_uint8: np.ndarray) -> np.ndarray:
        """Run one model on its own (SVM/RF recompute ResNet50 features); return calibrated [N,C] probabilities."""
        if name not in self.model_names:
            raise KeyError(f"model {name!r} is not in this bundle ({', '.join(self.model_names)})")
        batch = self._prepare(batch_uint8)
        out = self._separate_outputs(name, preprocess_for(name, batch))
        if name in ESTIMATOR_NAMES:
            out = self.estimator_probabilities(name, out)
        return self.calibration.member(name, out)

    def _separate_outputs(self, name: str, inputs: np.ndarray) -> np.ndarray:
        """Model `name` alone (SVM/RF: ResNet50's features) on preprocessed `inputs`, checked
        for non-finite outputs as in _network_outputs."""
        network = "resnet50" if name in ESTIMATOR_NAMES else name
        return self._finite(network, lambda: self._separate_forward(name)(inputs))[0]

    def _separate_forward(self, name: str) -> Forward:
        # Looked up on every call: a fall-back to float32 drops the compiled forward it replaces.
        if name not in self._separate:
            if name in ESTIMATOR_NAMES:
                resnet = self.networks["resnet50"]
                model = keras.Model(resnet.inputs, resnet.get_layer(FEATURES_LAYER).output)
            else:
                model = self.networks[name]
            self._separate[name] = _compile_forward(model, self.image_size)
        return self._separate[name]

    def _scan_result(self, probs: dict[str, np.ndarray], i: int) -> dict:
        def entry(p: np.ndarray) -> dict:
            return {
                "label": self.classes[int(np.argmax(p))],
                "probabilities": {c: float(v) for c, v in zip(self.classes, p)},
            }

        predictions = {n: entry(probs[n][i]) for n in self.model_names}
        ensemble = entry(probs[ENSEMBLE_NAME][i])
        ensemble["agreement"] = sum(p["label"] == ensemble["label"] for p in predictions.values())
        ensemble["members"] = len(predictions)
        # None: the bundle sets no review rule (trained before triage existed).
        ensemble["needs_review"] = (None if self.triage is None else
                                    self.triage.needs_review(float(np.max(probs[ENSEMBLE_NAME][i])),
                                                             ensemble["agreement"]))
        return {"predictions": predictions, "ensemble": ensemble}

    def classify(self, images: Sequence[np.ndarray] | np.ndarray) -> list[dict]:
        """Classify uint8 RGB images (any size) in batches of `batch_size`; one result dict per image."""
        batch = self._prepare(images)
        results: list[dict] = []
        for start in range(0, len(batch), self.batch_size):
            probs = self.predict_probabilities(batch[start : start + self.batch_size])
            results.extend(self._scan_result(probs, i) for i in range(len(probs[ENSEMBLE_NAME])))
        return results
