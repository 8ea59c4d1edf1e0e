"""Calibration measures against hand-computed values; temperature and threshold fitting on constructed data."""

from __future__ import annotations

import numpy as np
import pytest

from models.calibration import Calibration, Triage, temperature_scale
from training.calibration import (brier_score, default_min_agreement, select_review_rule, ece_noise_floor, expected_calibration_error,
                                  fit_calibration, fit_temperature, reliability_bins, select_review_threshold,
                                  triage_report)

# Top confidences 0.9, 0.75, 0.7, 0.62 fall in four different 1/15-wide bins; the second is wrong.
PROBS = np.array([[0.9, 0.1], [0.75, 0.25], [0.3, 0.7], [0.62, 0.38]])
LABELS = np.array([0, 1, 1, 0])


def test_ece_by_hand():
    # Each scan alone in its bin: mean |correct - confidence| = (0.1 + 0.75 + 0.3 + 0.38) / 4.
    assert expected_calibration_error(LABELS, PROBS) == pytest.approx(1.53 / 4)
    # Two more scans sharing the 0.9 bin (13: (0.8667, 0.9333]) with 0.91 right and 0.92 wrong:
    # that bin holds 0.9 (right), 0.91 (right), 0.92 (wrong): accuracy 2/3, confidence 0.91.
    probs = np.vstack([PROBS, [[0.91, 0.09], [0.92, 0.08]]])
    labels = np.append(LABELS, [0, 1])
    expected = (3 * abs(2 / 3 - 0.91) + 0.75 + 0.3 + 0.38) / 6
    assert expected_calibration_error(labels, probs) == pytest.approx(expected)


def test_reliability_bins_are_equal_width_and_right_closed():
    bins = reliability_bins(LABELS, PROBS)
    assert len(bins) == 15 and bins[0]["lo"] == 0 and bins[-1]["hi"] == 1
    filled = {i: b for i, b in enumerate(bins) if b["count"]}
    assert sorted(filled) == [9, 10, 11, 13]  # 0.62, 0.7, 0.75, 0.9
    assert filled[11]["accuracy"] == 0.0 and filled[11]["confidence"] == pytest.approx(0.75)
    # A confidence of exactly 1 sits in the last bin.
    assert reliability_bins([0], np.array([[1.0, 0.0]]))[14]["count"] == 1


def test_brier_by_hand():
    # (0.01+0.01) + (0.5625+0.5625) + (0.09+0.09) + (0.1444+0.1444), over 4 scans.
    assert brier_score(LABELS, PROBS) == pytest.approx(1.6138 / 4)
    assert brier_score([0, 1], np.eye(2)) == 0.0
    assert brier_score([1], np.array([[1.0, 0.0]])) == 2.0


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _overconfident(n=20000, factor=2.0, seed=0):
    """Labels drawn from softmax(z); the "model" says softmax(factor * z): over-confident by `factor`."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, size=(n, 4))
    truth = _softmax(z)
    labels = np.array([rng.choice(4, p=p) for p in truth])
    return _softmax(factor * z), labels


def test_temperature_scaling_is_logit_division_and_keeps_the_label():
    z = np.random.default_rng(1).normal(size=(50, 4))
    probs = _softmax(z)
    np.testing.assert_allclose(temperature_scale(probs, 2.5), _softmax(z / 2.5), rtol=1e-9)
    assert (temperature_scale(probs, 0.3).argmax(1) == probs.argmax(1)).all()
    assert temperature_scale(probs, 1.0) is probs  # T = 1: untouched
    assert temperature_scale(probs.astype(np.float32), 2.0).dtype == np.float32


def test_fit_temperature_recovers_an_overconfidence_factor():
    probs, labels = _overconfident()
    temperature = fit_temperature(probs, labels)
    assert temperature == pytest.approx(2.0, rel=0.05)
    before = expected_calibration_error(labels, probs)
    after = expected_calibration_error(labels, temperature_scale(probs, temperature))
    assert before > 0.08 and after < 0.02


def test_threshold_is_the_lowest_reaching_the_target():
    conf = np.array([0.99, 0.98, 0.97, 0.90, 0.80, 0.70])
    right = np.array([1, 1, 1, 0, 1, 1])
    ok = np.ones(6, bool)
    # Accepted-set accuracy from the top: 1, 1, 1, 3/4, 4/5, 5/6 (not monotone).
    assert select_review_threshold(conf, right, ok, 0.75) == 0.70
    assert select_review_threshold(conf, right, ok, 0.80) == 0.70
    assert select_review_threshold(conf, right, ok, 0.84) == 0.97
    assert select_review_threshold(conf, right, ok, 1.0) == 0.97
    # Scans that fail the agreement rule are never accepted, so they do not count.
    assert select_review_threshold(conf, right, np.array([1, 1, 1, 0, 1, 1], bool), 1.0) == 0.70
    # Tied confidences are accepted or refused together.
    assert select_review_threshold(np.array([0.9, 0.9, 0.8]), np.array([1, 0, 1]), np.ones(3, bool), 1.0) is None
    assert select_review_threshold(np.array([0.9, 0.8]), np.array([0, 0]), np.ones(2, bool), 0.5) is None


def test_triage_rule_and_report():
    rule = Triage(threshold=0.8, min_agreement=3)
    assert rule.needs_review(0.79, 5) and rule.needs_review(0.95, 2) and not rule.needs_review(0.8, 3)
    assert Triage(threshold=None, min_agreement=3).needs_review(1.0, 5)
    assert Triage.from_manifest({}) is None and default_min_agreement(5) == 3 and default_min_agreement(4) == 3
    ensemble = np.array([[0.9, 0.1], [0.7, 0.3], [0.95, 0.05], [0.85, 0.15]])
    members = {"a": np.array([[1, 0], [1, 0], [0, 1], [1, 0]]), "b": np.array([[1, 0], [1, 0], [0, 1], [0, 1]])}
    report = triage_report(np.array([0, 0, 0, 1]), ensemble, members, threshold=0.8, min_agreement=2)
    # Scan 1: below 0.8; scan 2: only 0 of 2 agree; scan 3: 1 of 2. Scan 0 accepted, right.
    assert report["accepted"] == 1 and report["coverage"] == 0.25 and report["accepted_accuracy"] == 1.0
    assert report["review"] == 3 and report["review_accuracy"] == pytest.approx(2 / 3)


def test_fit_calibration_on_overconfident_members():
    """Members over-confident by different factors: calibrated, weighted, ensemble ECE < 0.02, labels kept."""
    rng = np.random.default_rng(3)
    n = 6000
    z = rng.normal(0, 2.0, size=(n, 4))
    labels = np.array([rng.choice(4, p=p) for p in _softmax(z)])
    members = {name: _softmax(factor * (z + rng.normal(0, 0.3, size=z.shape)))
               for name, factor in (("resnet50", 2.5), ("vgg16", 1.5), ("svm", 0.7))}
    fit = fit_calibration(members, labels, target_accuracy=0.95)
    temps = fit.manifest["temperatures"]
    assert temps["resnet50"] > temps["vgg16"] > 1.0 > temps["svm"]
    for name, probs in members.items():
        assert (fit.probabilities[name].argmax(1) == probs.argmax(1)).all()
    after = fit.manifest["validation"]["after"]
    assert after["ensemble"]["ece"] < 0.02 < fit.manifest["validation"]["before"]["resnet50"]["ece"]
    assert sum(fit.ensemble_fit.weights.values()) == pytest.approx(1.0, abs=1e-5)
    calibration = Calibration(temps, fit.manifest["ensemble"]["temperature"])
    assert calibration.member("svm", members["svm"]) == pytest.approx(fit.probabilities["svm"])
    triage = fit.triage
    assert triage["target_reached"] and 0 <= triage["min_agreement"] <= 3
    assert triage["validation"]["accepted_accuracy"] >= 0.95 and 0 < triage["validation"]["coverage"] < 1
    # The threshold is the lowest that reaches the target: the next lower confidence falls short
    # (unless the scans it adds all fail the agreement rule, which leaves the accepted set as it was).
    conf = fit.probabilities["ensemble"].max(1)
    lower = conf[conf < triage["confidence_threshold"]].max()
    looser = triage_report(labels, fit.probabilities["ensemble"], {n: fit.probabilities[n] for n in members},
                           lower, triage["min_agreement"])
    assert looser["accepted_accuracy"] < 0.95 or looser["accepted"] == triage["validation"]["accepted"]


def test_calibration_block_is_read_with_identity_defaults():
    assert Calibration.from_manifest({}) == Calibration({}, 1.0)
    block = {"calibration": {"temperatures": {"svm": 2.0}, "ensemble": {"temperature": 0.5}}}
    assert Calibration.from_manifest(block) == Calibration({"svm": 2.0}, 0.5)
    with pytest.raises(ValueError, match="positive"):
        Calibration.from_manifest({"calibration": {"temperatures": {"svm": 0}}})


def test_ece_noise_floor_shrinks_with_more_scans_and_vanishes_at_certainty():
    rng = np.random.default_rng(0)
    few, many = rng.uniform(0.6, 1.0, 100), rng.uniform(0.6, 1.0, 10000)
    assert ece_noise_floor(few) > 2 * ece_noise_floor(many) > 0
    assert ece_noise_floor(np.ones(50)) == 0.0


def test_the_review_rule_is_chosen_on_validation_for_the_most_scans_accepted():
    """Weak members that disagree with a confident, right ensemble: requiring a majority sends
    those scans to review for nothing, so no agreement rule accepts more at the same accuracy.
    Where disagreement is what marks the errors, the strict rule wins."""
    confidence = np.array([0.99] * 90 + [0.98] * 10)
    correct = np.array([True] * 90 + [True] * 9 + [False])
    # 30 right scans where only the ensemble's strongest member agrees; the one error too.
    agreement = np.array([5] * 60 + [1] * 30 + [5] * 9 + [1])
    rule, threshold = select_review_rule(confidence, correct, agreement, 5, 0.99)
    assert (rule, threshold) == (1, 0.98)  # all 100 at 0.99 accuracy (ties: the stricter rule); a majority: 69
    # The error now comes with full agreement and the 30 disagreeing scans are wrong: strict is better.
    correct = np.array([True] * 60 + [False] * 30 + [True] * 9 + [False])
    agreement = np.array([5] * 60 + [1] * 30 + [4] * 9 + [5])
    rule, threshold = select_review_rule(confidence, correct, agreement, 5, 0.99)
    assert (rule, threshold) == (5, 0.99)  # the 60 right, fully agreeing ones, not the 30 (ties: the stricter)
    # Nothing reaches the target: the majority rule and no threshold (every scan goes to review).
    assert select_review_rule(confidence, np.zeros(100, bool), agreement, 5, 0.99) == (3, None)
