"""A bundle's calibration (temperatures) and triage rule (review threshold), as the engine applies them.

Temperature scaling divides a model's log-probabilities by T and renormalises: softmax(log p / T).
For a network whose output is softmax(z) this is exactly softmax(z / T), since log p and z differ
by a per-scan constant. T > 1 softens over-confident probabilities, T < 1 sharpens
under-confident ones; the order of the classes in a row, hence the label, never changes.
Fitting lives in training.calibration; a bundle without a "calibration" block uses T = 1
(probabilities unchanged, bit for bit), and one without a "triage" block decides no review.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

# Probabilities are floored here before the logarithm: a Random Forest gives exact zeros
# (no tree voted for a class), and log 0 would stay -inf at any temperature.
LOG_FLOOR = 1e-12
METHOD = "temperature scaling of log-probabilities, fitted by NLL on the validation split"


def temperature_scale(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T) row by row, in the input's dtype; T = 1 returns the input unchanged."""
    probs = np.asarray(probabilities)
    if temperature == 1.0:
        return probs
    logits = np.log(np.clip(probs.astype(np.float64), LOG_FLOOR, 1.0)) / float(temperature)
    logits -= logits.max(axis=-1, keepdims=True)
    scaled = np.exp(logits)
    return (scaled / scaled.sum(axis=-1, keepdims=True)).astype(probs.dtype if probs.dtype.kind == "f" else np.float64)


@dataclass(frozen=True)
class Calibration:
    """Per-model temperatures and the ensemble's (1.0 where the bundle records none)."""

    temperatures: dict[str, float] = field(default_factory=dict)
    ensemble_temperature: float = 1.0

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> "Calibration":
        """The manifest's "calibration" block; identity when there is none."""
        block = manifest.get("calibration") or {}
        temperatures = {str(k): float(v) for k, v in (block.get("temperatures") or {}).items()}
        ensemble = float((block.get("ensemble") or {}).get("temperature", 1.0))
        for name, value in {**temperatures, "ensemble": ensemble}.items():
            if not np.isfinite(value) or value <= 0:
                raise ValueError(f"calibration temperature of {name} must be a positive number, got {value}")
        return cls(temperatures, ensemble)

    def member(self, name: str, probabilities: np.ndarray) -> np.ndarray:
        """One model's calibrated probabilities."""
        return temperature_scale(probabilities, self.temperatures.get(name, 1.0))

    def ensemble(self, mixture: np.ndarray) -> np.ndarray:
        """The weighted mixture of calibrated members, calibrated as the ensemble."""
        return temperature_scale(mixture, self.ensemble_temperature)


@dataclass(frozen=True)
class Triage:
    """When a scan goes to review: ensemble confidence under `threshold` or fewer than
    `min_agreement` models agreeing with the ensemble. `threshold` None: the target accuracy
    was not reached on validation at any threshold, so every scan goes to review."""

    threshold: float | None
    min_agreement: int

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> "Triage | None":
        """The manifest's "triage" block, or None for a bundle that sets no review rule."""
        block = manifest.get("triage")
        if not block:
            return None
        threshold = block.get("confidence_threshold")
        return cls(None if threshold is None else float(threshold), int(block.get("min_agreement", 0)))

    def needs_review(self, confidence: float, agreement: int) -> bool:
        """True when this scan's ensemble answer should be checked by a person."""
        return self.threshold is None or confidence < self.threshold or agreement < self.min_agreement


def normalised_weights(weights: Mapping[str, float], names: list[str]) -> dict[str, float]:
    """Ensemble weights over `names`, non-negative and summing to 1 (equal when none are usable)."""
    present = {n: max(float(weights.get(n, 0.0)), 0.0) for n in names} if weights else {}
    total = sum(present.values())
    if not present or total <= 0:
        return {n: 1.0 / len(names) for n in names}
    return {n: w / total for n, w in present.items()}


def mixture(probabilities: Mapping[str, np.ndarray], weights: Mapping[str, float], names: list[str]) -> np.ndarray:
    """The weighted mean of the members' [N, C] probabilities, rows renormalised."""
    mixed = sum(weights[n] * probabilities[n] for n in names)
    return mixed / np.sum(mixed, axis=1, keepdims=True)


def served_probabilities(raw: Mapping[str, np.ndarray], names: list[str], weights: Mapping[str, float],
                         calibration: Calibration) -> dict[str, np.ndarray]:
    """What the engine serves from uncalibrated member probabilities: each member calibrated, and the
    'ensemble' (the `weights` mixture of calibrated members, calibrated as the ensemble)."""
    probs = {n: calibration.member(n, raw[n]) for n in names}
    probs["ensemble"] = calibration.ensemble(mixture(probs, weights, names))
    return probs
