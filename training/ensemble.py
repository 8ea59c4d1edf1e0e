"""Ensemble weights fitted on validation so the ensemble never scores below its best member."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EnsembleFit:
    """Chosen weights, how they were chosen, and their validation accuracy/log-likelihood."""

    weights: dict[str, float]
    method: str
    accuracy: float
    log_likelihood: float
    best_member: str
    best_member_accuracy: float


def combine(probabilities: dict[str, np.ndarray], weights: dict[str, float]) -> np.ndarray:
    """Weighted mean of per-model probability matrices (weights renormalised to sum 1)."""
    names = [n for n in probabilities if weights.get(n, 0.0) > 0]
    if not names:
        raise ValueError("at least one model needs a positive ensemble weight")
    total = sum(weights[n] for n in names)
    return sum(probabilities[n] * (weights[n] / total) for n in names)


def _score(probs: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    accuracy = float(np.mean(probs.argmax(axis=1) == labels))
    log_likelihood = float(np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-7, 1.0))))
    return accuracy, log_likelihood


def _max_likelihood_weights(stack: np.ndarray, labels: np.ndarray, steps: int = 500) -> np.ndarray:
    """Simplex weights maximising mean log p(true class), by exponentiated gradient ascent."""
    models = stack.shape[0]
    picked = stack[:, np.arange(len(labels)), labels]  # [M, N] probability of the true class
    weights = np.full(models, 1.0 / models)
    rate = 0.5
    for _ in range(steps):
        mixture = np.clip(weights @ picked, 1e-7, None)
        gradient = (picked / mixture).mean(axis=1)  # d mean log(mixture) / d w
        # Multiplicative update keeps weights on the simplex without projections.
        weights = weights * np.exp(rate * (gradient - gradient.max()))
        weights /= weights.sum()
    return weights


def fit_ensemble_weights(
    probabilities: dict[str, np.ndarray], labels: np.ndarray
) -> EnsembleFit:
    """Choose non-negative weights on validation data, never worse than the best member.

    Candidates: weights maximising validation log-likelihood, equal weights, each single
    model alone, and blends of the best member with the likelihood optimum. The most
    accurate candidate wins (ties: higher likelihood), so the ensemble's validation
    accuracy is at least its best member's by construction.
    """
    if not probabilities:
        raise ValueError("no model probabilities to ensemble")
    names = list(probabilities)
    labels = np.asarray(labels)
    stack = np.stack([np.asarray(probabilities[n], dtype=np.float64) for n in names])
    members = [(*_score(stack[i], labels), i) for i in range(len(names))]
    best_index = max(members)[2]
    likelihood_weights = _max_likelihood_weights(stack, labels)
    candidates: list[tuple[str, np.ndarray]] = [
        ("max-likelihood", likelihood_weights),
        ("equal", np.full(len(names), 1.0 / len(names))),
    ]
    candidates += [(f"best-member:{n}", np.eye(len(names))[i]) for i, n in enumerate(names)]
    # Blends between the best member and the likelihood optimum: label smoothing leaves a
    # strong model under-confident, so the optimum alone can trade accuracy for likelihood.
    candidates += [
        (f"blend:{alpha:.1f}", alpha * likelihood_weights + (1 - alpha) * np.eye(len(names))[best_index])
        for alpha in np.arange(1, 10) / 10.0
    ]
    scored = []
    for method, w in candidates:
        # Score the rounded weights that will be stored, not the unrounded optimum.
        w = np.round(w, 6)
        w = w / w.sum()
        accuracy, likelihood = _score(np.tensordot(w, stack, axes=1), labels)
        scored.append((accuracy, likelihood, method, w))
    member_scores = [(s[0], s[1], s[2]) for s in scored if s[2].startswith("best-member:")]
    best_acc, _, best_method = max(member_scores)
    accuracy, likelihood, method, w = max(scored, key=lambda s: (s[0], s[1]))
    weights = {n: round(float(x), 6) for n, x in zip(names, w)}
    log.info("ensemble weights (%s): %s, validation accuracy %.4f", method, weights, accuracy)
    return EnsembleFit(
        weights=weights,
        method=method,
        accuracy=accuracy,
        log_likelihood=likelihood,
        best_member=best_method.split(":", 1)[1],
        best_member_accuracy=best_acc,
    )


def agreement_counts(probabilities: dict[str, np.ndarray], ensemble_probs: np.ndarray) -> np.ndarray:
    """Per sample: how many models' argmax labels equal the ensemble's argmax label."""
    ens = ensemble_probs.argmax(axis=1)
    return sum((p.argmax(axis=1) == ens).astype(int) for p in probabilities.values())
