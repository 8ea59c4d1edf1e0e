"""Ensemble weights fitted on validation: never worse than the best member there."""

from __future__ import annotations

import numpy as np
import pytest

from training.ensemble import agreement_counts, combine, fit_ensemble_weights


def _noisy_model(labels, rng, skill, classes=4):
    """Probabilities whose argmax is right about `skill` of the time."""
    logits = rng.normal(0, 1, (len(labels), classes))
    logits[np.arange(len(labels)), labels] += skill
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def _accuracy(probs, labels):
    return float(np.mean(probs.argmax(axis=1) == labels))


@pytest.mark.parametrize("seed", range(12))
def test_never_below_best_member_on_fitting_data(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, 200)
    probs = {
        "resnet50": _noisy_model(labels, rng, 0.3),  # a weak (random-backbone-like) member
        "vgg16": _noisy_model(labels, rng, 0.2),
        "custom_cnn": _noisy_model(labels, rng, 3.0),  # the strong one
        "svm": _noisy_model(labels, rng, 0.5),
        "random_forest": _noisy_model(labels, rng, 1.0),
    }
    fit = fit_ensemble_weights(probs, labels)
    best = max(_accuracy(p, labels) for p in probs.values())
    assert _accuracy(combine(probs, fit.weights), labels) >= best
    assert fit.accuracy >= fit.best_member_accuracy == best
    assert all(w >= 0 for w in fit.weights.values())
    assert sum(fit.weights.values()) == pytest.approx(1.0, abs=1e-5)


def test_equal_mean_dragged_down_by_weak_members_is_not_chosen():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 300)
    probs = {"good": _noisy_model(labels, rng, 4.0)}
    probs.update({f"bad{i}": _noisy_model(labels, rng, 0.0) * 0 + np.eye(4)[rng.integers(0, 4, 300)]
                  for i in range(4)})
    equal = combine(probs, {n: 1.0 for n in probs})
    fit = fit_ensemble_weights(probs, labels)
    assert _accuracy(equal, labels) < _accuracy(probs["good"], labels)
    assert fit.weights["good"] > 0.5
    assert fit.accuracy >= _accuracy(probs["good"], labels)


def test_complementary_members_can_beat_each_alone():
    labels = np.array([0, 1, 2, 3] * 25)
    a = np.full((100, 4), 0.1)
    b = np.full((100, 4), 0.1)
    a[np.arange(100), labels] = 0.7  # right everywhere, but only just...
    a[:50, (labels[:50] + 1) % 4] = 0.75  # ...wrong on the first half
    b[np.arange(100), labels] = 0.7
    b[50:, (labels[50:] + 1) % 4] = 0.75  # wrong on the second half
    fit = fit_ensemble_weights({"a": a, "b": b}, labels)
    assert fit.accuracy == 1.0 > max(_accuracy(a, labels), _accuracy(b, labels))


def test_agreement_counts_models_matching_the_ensemble_label():
    p1 = np.array([[0.9, 0.1], [0.2, 0.8]])
    p2 = np.array([[0.6, 0.4], [0.7, 0.3]])
    ens = np.array([[0.8, 0.2], [0.3, 0.7]])
    assert agreement_counts({"a": p1, "b": p2}, ens).tolist() == [2, 1]


def test_combine_rejects_all_zero_weights():
    with pytest.raises(ValueError):
        combine({"a": np.ones((1, 2)) / 2}, {"a": 0.0})


def test_blend_keeps_accuracy_and_gains_likelihood_over_an_underconfident_best_member():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 4, 400)
    strong = _noisy_model(labels, rng, 3.0) * 0.3 + 0.25 * 0.7  # accurate but under-confident
    confident = _noisy_model(labels, rng, 1.5) ** 3
    confident /= confident.sum(axis=1, keepdims=True)
    probs = {"strong": strong, "confident": confident}
    fit = fit_ensemble_weights(probs, labels)
    alone = fit_ensemble_weights({"strong": strong}, labels)
    assert fit.accuracy >= _accuracy(strong, labels)
    assert fit.log_likelihood > alone.log_likelihood and fit.method != "best-member:strong"
