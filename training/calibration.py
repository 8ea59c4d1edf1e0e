"""Calibration measured (ECE, Brier, reliability bins) and fitted (temperatures, review threshold).

ECE: the top-label expected calibration error over ECE_BINS equal-width confidence bins; bin b
holds the scans whose top probability lies in (b/15, (b+1)/15], and ECE is the scan-weighted
mean of |accuracy - mean confidence| over the bins. Brier: the multi-class Brier score, the
mean over scans of sum_c (p_c - y_c)^2 (0 is perfect, 2 the worst).

fit_calibration is what training (and `python -m training calibrate`) runs on the validation
split: a temperature per model (models.calibration), ensemble weights fitted on the calibrated
members, a temperature for the weighted mixture, and the review threshold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from models.calibration import METHOD, Calibration, temperature_scale

ECE_BINS = 15
DEFAULT_REVIEW_TARGET_ACCURACY = 0.995
# Temperatures are searched in this range (log scale); the fitted ones sit well inside it.
TEMPERATURE_RANGE = (0.05, 20.0)


def _top(y_true: np.ndarray, probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    probs = np.asarray(probabilities, dtype=np.float64)
    return probs.max(axis=1), (probs.argmax(axis=1) == np.asarray(y_true, dtype=int)).astype(np.float64)


def reliability_bins(y_true: np.ndarray, probabilities: np.ndarray, bins: int = ECE_BINS) -> list[dict]:
    """Per equal-width confidence bin (lo, hi]: scans, mean confidence and accuracy (None when empty)."""
    return _bins(*_top(y_true, probabilities), bins)


def _bins(confidence: np.ndarray, correct: np.ndarray, bins: int) -> list[dict]:
    index = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    out = []
    for b in range(bins):
        mask = index == b
        count = int(mask.sum())
        out.append({"lo": b / bins, "hi": (b + 1) / bins, "count": count,
                    "confidence": float(confidence[mask].mean()) if count else None,
                    "accuracy": float(correct[mask].mean()) if count else None})
    return out


def expected_calibration_error(y_true: np.ndarray, probabilities: np.ndarray, bins: int = ECE_BINS) -> float:
    """Top-label ECE over `bins` equal-width confidence bins (0 when there are no scans)."""
    total = len(np.asarray(y_true))
    if total == 0:
        return 0.0
    return float(sum(b["count"] / total * abs(b["accuracy"] - b["confidence"])
                     for b in reliability_bins(y_true, probabilities, bins) if b["count"]))


def ece_noise_floor(confidence: np.ndarray, bins: int = ECE_BINS, draws: int = 200, seed: int = 0) -> float:
    """The mean ECE a perfectly calibrated model with these top-label confidences would show on this
    many scans (each right with probability equal to its confidence): ECE measured below it is noise."""
    conf = np.asarray(confidence, dtype=np.float64)
    if len(conf) == 0:
        return 0.0
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(draws):
        right = (rng.random(len(conf)) < conf).astype(np.float64)
        values.append(sum(b["count"] / len(conf) * abs(b["accuracy"] - b["confidence"])
                          for b in _bins(conf, right, bins) if b["count"]))
    return float(np.mean(values))


def brier_score(y_true: np.ndarray, probabilities: np.ndarray) -> float:
    """Multi-class Brier score: mean over scans of the squared distance to the one-hot truth."""
    probs = np.asarray(probabilities, dtype=np.float64)
    if len(probs) == 0:
        return 0.0
    onehot = np.eye(probs.shape[1])[np.asarray(y_true, dtype=int)]
    return float(np.mean(np.sum((probs - onehot) ** 2, axis=1)))


def model_metrics(y_true: np.ndarray, probabilities: np.ndarray, classes) -> dict:
    """training.metrics.classification_metrics plus "ece" and "brier" (the metrics.json entry of a model)."""
    from training.metrics import classification_metrics

    return {**classification_metrics(y_true, probabilities, classes),
            "ece": expected_calibration_error(y_true, probabilities), "brier": brier_score(y_true, probabilities)}


def negative_log_likelihood(y_true: np.ndarray, probabilities: np.ndarray) -> float:
    """Mean -log p(true class), probabilities floored at 1e-12."""
    probs = np.asarray(probabilities, dtype=np.float64)
    picked = probs[np.arange(len(probs)), np.asarray(y_true, dtype=int)]
    return float(-np.mean(np.log(np.clip(picked, 1e-12, 1.0))))


def fit_temperature(probabilities: np.ndarray, y_true: np.ndarray) -> float:
    """The T minimising the NLL of softmax(log p / T) on (probabilities, y_true).

    A bounded scalar search over log T (scipy's Brent method): one parameter, a smooth convex
    objective in 1/T, so a library line search beats hand-written gradient steps.
    """
    from scipy.optimize import minimize_scalar

    probs = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(y_true, dtype=int)
    if len(y) == 0:
        return 1.0
    log_p = np.log(np.clip(probs, 1e-12, 1.0))

    def nll(log_t: float) -> float:
        z = log_p / math.exp(log_t)
        z -= z.max(axis=1, keepdims=True)
        return float(np.mean(np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(y)), y]))

    lo, hi = (math.log(v) for v in TEMPERATURE_RANGE)
    result = minimize_scalar(nll, bounds=(lo, hi), method="bounded", options={"xatol": 1e-4})
    temperature = math.exp(float(result.x))
    # Keep T = 1 unless fitting actually lowers the NLL (a perfectly separated set has no optimum).
    return round(temperature, 6) if nll(float(result.x)) < nll(0.0) else 1.0


def select_review_threshold(confidence: np.ndarray, correct: np.ndarray, agreement_ok: np.ndarray,
                            target_accuracy: float) -> float | None:
    """The lowest confidence threshold t such that the scans accepted (confidence >= t and
    agreement_ok) are right at least `target_accuracy` of the time; None when no t reaches it.

    Accepted sets are the most confident agreeing scans, ties kept together; the lowest t is
    the largest such set that reaches the target (accuracy need not fall monotonically as t
    drops, so every candidate is checked).
    """
    conf = np.asarray(confidence, dtype=np.float64)[np.asarray(agreement_ok, dtype=bool)]
    right = np.asarray(correct, dtype=np.float64)[np.asarray(agreement_ok, dtype=bool)]
    if len(conf) == 0:
        return None
    order = np.argsort(-conf, kind="stable")
    conf, right = conf[order], right[order]
    accuracy = np.cumsum(right) / np.arange(1, len(right) + 1)
    # Only the end of a run of equal confidences is a possible accepted set.
    ends = np.append(conf[1:] != conf[:-1], True)
    reaching = np.flatnonzero(ends & (accuracy >= target_accuracy - 1e-12))
    return float(conf[reaching[-1]]) if len(reaching) else None


def select_review_rule(confidence: np.ndarray, correct: np.ndarray, agreement: np.ndarray, members: int,
                       target_accuracy: float) -> tuple[int, float | None]:
    """(min_agreement, confidence threshold): of the agreement rules from every member down to
    none, the one whose lowest reaching threshold accepts the most validation scans (ties: the
    stricter rule); (the majority, None) when none reaches the target.

    On the whole-folder bundle the majority rule sent scans to review that the confident ensemble
    had right (the weaker members disagreed): choosing the rule on validation raised the share of
    unseen scans accepted from 83.5 % to 86.9 % at the same accuracy (README, review queue)."""
    confidence, agreement = np.asarray(confidence), np.asarray(agreement)
    best: tuple[int, int, float | None] = (-1, default_min_agreement(members), None)
    for rule in range(members, -1, -1):
        allowed = agreement >= rule
        threshold = select_review_threshold(confidence, correct, allowed, target_accuracy)
        if threshold is None:
            continue
        accepted = int((allowed & (confidence >= threshold)).sum())
        if accepted > best[0]:
            best = (accepted, rule, threshold)
    return best[1], best[2]


def default_min_agreement(members: int) -> int:
    """A strict majority of the members must give the ensemble's label (3 of 5)."""
    return members // 2 + 1


def triage_report(y_true: np.ndarray, ensemble: np.ndarray, members: Mapping[str, np.ndarray],
                  threshold: float | None, min_agreement: int) -> dict:
    """Coverage (share accepted without review) and the accuracy on accepted and reviewed scans."""
    confidence, correct = _top(y_true, ensemble)
    label = np.asarray(ensemble).argmax(axis=1)
    agreement = sum((np.asarray(p).argmax(axis=1) == label).astype(int) for p in members.values())
    accepted = (agreement >= min_agreement) & (confidence >= threshold if threshold is not None
                                               else np.zeros(len(confidence), bool))
    n, k = len(confidence), int(accepted.sum())
    return {"images": n, "accepted": k, "review": n - k, "coverage": k / n if n else 0.0,
            "accepted_accuracy": float(correct[accepted].mean()) if k else None,
            "review_accuracy": float(correct[~accepted].mean()) if n - k else None,
            "confidence_threshold": threshold, "min_agreement": min_agreement}


@dataclass
class CalibrationFit:
    """What fit_calibration chose, the calibrated validation probabilities and its report."""

    calibration: Calibration
    ensemble_fit: object  # training.ensemble.EnsembleFit, fitted on the calibrated members
    probabilities: dict[str, np.ndarray]  # calibrated members plus "ensemble"
    manifest: dict  # the bundle's "calibration" block
    triage: dict  # the bundle's "triage" block


def fit_calibration(probabilities: Mapping[str, np.ndarray], y_true: np.ndarray,
                    target_accuracy: float = DEFAULT_REVIEW_TARGET_ACCURACY) -> CalibrationFit:
    """Fit temperatures, ensemble weights, the ensemble temperature and the review threshold on
    validation probabilities {model: [N, C]} (uncalibrated, in the bundle's class order).

    Order: each member's temperature; ensemble weights on the calibrated members (the weights
    then mix probabilities that mean what they say, and fit_ensemble_weights still never scores
    below the best member); a temperature for the mixture (averaging calibrated members leaves
    it under-confident); the review threshold on the calibrated ensemble confidence.
    """
    from training.ensemble import combine, fit_ensemble_weights

    y = np.asarray(y_true, dtype=int)
    raw = {name: np.asarray(p, dtype=np.float64) for name, p in probabilities.items()}
    temperatures = {name: fit_temperature(p, y) for name, p in raw.items()}
    members = {name: temperature_scale(p, temperatures[name]) for name, p in raw.items()}
    raw_fit = fit_ensemble_weights(raw, y)
    fit = fit_ensemble_weights(members, y)
    mixture = combine(members, fit.weights)
    ensemble_temperature = fit_temperature(mixture, y)
    calibration = Calibration(temperatures, ensemble_temperature)
    ensemble = calibration.ensemble(mixture)
    raw_ensemble = combine(raw, raw_fit.weights)

    def scores(p: np.ndarray) -> dict:
        return {"ece": expected_calibration_error(y, p), "brier": brier_score(y, p),
                "nll": negative_log_likelihood(y, p), "accuracy": float(np.mean(p.argmax(1) == y))}

    confidence, correct = _top(y, ensemble)
    agreement = sum((p.argmax(axis=1) == ensemble.argmax(axis=1)).astype(int) for p in members.values())
    min_agreement, threshold = select_review_rule(confidence, correct, agreement, len(members), target_accuracy)
    calibrated = {**members, "ensemble": ensemble}
    block = {
        "method": METHOD,
        "temperatures": temperatures,
        "ensemble": {"temperature": ensemble_temperature,
                     "weights": "fitted on the calibrated members' probabilities"},
        "validation": {
            "images": int(len(y)),
            "before": {**{n: scores(p) for n, p in raw.items()}, "ensemble": scores(raw_ensemble)},
            "after": {n: scores(p) for n, p in calibrated.items()},
            # What a perfectly calibrated ensemble would measure on this many scans (ECE's noise).
            "ece_noise_floor": ece_noise_floor(ensemble.max(axis=1)),
            # The ensemble's labels under the weights fitted on uncalibrated members, for comparison.
            "uncalibrated_weights": raw_fit.weights,
        },
    }
    triage = {
        "target_accuracy": float(target_accuracy),
        "confidence_threshold": threshold,
        "min_agreement": min_agreement,
        "target_reached": threshold is not None,
        "rule": "needs review when the calibrated ensemble confidence is below confidence_threshold "
                "or fewer than min_agreement models give the ensemble's label (every scan when no "
                "threshold reached the target on validation); min_agreement and the threshold are "
                "chosen together on validation for the most scans accepted at the target accuracy",
        "validation": triage_report(y, ensemble, members, threshold, min_agreement),
    }
    return CalibrationFit(calibration, fit, calibrated, block, triage)
