"""Which networks a new bundle may serve in bfloat16, decided at training time on its validation split.

Every network in bfloat16 is the fastest engine on a CPU with bfloat16 (1.84x float32 against
1.55x with ResNet50 kept in float32, on the default bundle), but whether the ensemble keeps its
labels depends on the bundle: ResNet50's features feed the SVM and the Random Forest, whose
decision edges can be sensitive to the last bits, and how much they count depends on the fitted
ensemble weights. So each bundle is checked once, here, and records its answer in the manifest
(`precision`); the engine follows it (models.engine.bfloat16_networks_for).
"""
from __future__ import annotations

from typing import Any

import numpy as np

# The ensemble labels of every network in bfloat16 must agree with float32 at least this often
# on validation, and its validation accuracy must not fall, for a bundle to serve them all so.
BF16_MIN_AGREEMENT = 0.995


def allows_every_network(agreement: float, accuracy_every: float, accuracy_default: float) -> bool:
    """True when every network in bfloat16 keeps at least BF16_MIN_AGREEMENT of float32's ensemble
    labels and loses no accuracy against what would be served otherwise (the default networks in
    bfloat16): what ResNet50 itself changes, not what the default already does."""
    return agreement >= BF16_MIN_AGREEMENT and accuracy_every >= accuracy_default


def _ensemble_labels(engine: Any, images: np.ndarray, batch_size: int) -> np.ndarray:
    return np.concatenate([np.argmax(engine.predict_probabilities(images[start:start + batch_size])["ensemble"],
                                     axis=1) for start in range(0, len(images), batch_size)])


def check_bfloat16(bundle: Any, images: np.ndarray, float32_labels: np.ndarray, truth: np.ndarray,
                   batch_size: int = 32) -> dict[str, Any]:
    """The manifest's "precision" block: run `bundle` (a models.bundle.Bundle, saved or not) on the
    validation images with the default networks and with every network in bfloat16, compare their
    ensemble labels with the float32 ones (`float32_labels`) and with the truth, and decide."""
    from models import NETWORK_NAMES
    from models.engine import DEFAULT_BF16_NETWORKS, InferenceEngine
    from models.precision import bfloat16_supported

    every = [name for name in NETWORK_NAMES if name in bundle.networks]
    default = [name for name in DEFAULT_BF16_NETWORKS if name in bundle.networks]
    rule = (f"every network in bfloat16 when its ensemble labels agree with float32 on at least "
            f"{BF16_MIN_AGREEMENT} of the validation scans and its accuracy is not below that of "
            f"{', '.join(DEFAULT_BF16_NETWORKS)} in bfloat16; else those only")
    if len(images) == 0 or not bfloat16_supported():
        why = "no validation scans" if len(images) == 0 else "this CPU has no bfloat16 instructions"
        return {"checked": False, "reason": f"not checked: {why}", "bfloat16_networks": default, "rule": rule}
    labels = {"every": _ensemble_labels(InferenceEngine(bundle, "bfloat16", batch_size, bf16_networks=every),
                                        images, batch_size),
              "default": _ensemble_labels(InferenceEngine(bundle, "bfloat16", batch_size, bf16_networks=default),
                                          images, batch_size)}
    accuracy = {"float32": float(np.mean(float32_labels == truth)),
                **{f"bfloat16_{name}": float(np.mean(found == truth)) for name, found in labels.items()}}
    agreement = {name: float(np.mean(found == float32_labels)) for name, found in labels.items()}
    allowed = allows_every_network(agreement["every"], accuracy["bfloat16_every"], accuracy["bfloat16_default"])
    return {"checked": True, "images": int(len(images)),
            "every_network_agreement": round(agreement["every"], 4),
            "flips": int(np.sum(labels["every"] != float32_labels)),
            "default_networks_agreement": round(agreement["default"], 4),
            "default_networks_flips": int(np.sum(labels["default"] != float32_labels)),
            "accuracy": {k: round(v, 4) for k, v in accuracy.items()},
            "bfloat16_networks": every if allowed else default, "rule": rule}
