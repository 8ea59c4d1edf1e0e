"""The promotion gate both ways: two real bundles scored by the inference engine on the same
evaluation scans, and the decision rule with its tolerance."""
from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import pytest

from config import SettingsError, load_settings
from tasks.gate import GATE_METRICS, decide, evaluate_and_decide
from tests.helpers.tiny_bundle import make_tiny_bundle, synthetic_images
from training.datasets import LabelledImage


@pytest.fixture(scope="module")
def cnn_bundle(tmp_path_factory) -> Path:
    """A second real bundle (the custom CNN alone) that answers differently from the tiny five-model one."""
    return make_tiny_bundle(tmp_path_factory.mktemp("cnn") / "cnn", image_size=32, models=("custom_cnn",))


@pytest.fixture(scope="module")
def scans(tmp_path_factory, cnn_bundle) -> list[LabelledImage]:
    """32-px scans labelled with what the CNN bundle answers, so it is right on every one."""
    from models.engine import InferenceEngine

    images, _ = synthetic_images(per_class=3, image_size=32, seed=5)
    folder = tmp_path_factory.mktemp("evaluation")
    answers = InferenceEngine.from_bundle(cnn_bundle).classify(images)
    items = []
    for index, (image, answer) in enumerate(zip(images, answers)):
        path = folder / f"{index:02d}.png"
        cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        items.append(LabelledImage(str(path), answer["ensemble"]["label"],
                                   hashlib.sha256(path.read_bytes()).hexdigest()))
    return items


def test_a_better_candidate_is_promoted_and_a_worse_one_is_not(tiny_bundle, cnn_bundle, scans):
    better = evaluate_and_decide((2, cnn_bundle), (1, tiny_bundle), scans, tolerance=0.005)
    assert better.candidate["accuracy"] == 1.0 and better.candidate["macro_f1"] == 1.0
    worse_accuracy = better.active["accuracy"]
    assert worse_accuracy < 0.9, "the tiny bundle must answer differently on some scans for this test"
    assert better.promoted and better.reason.startswith("promoted over version 1")
    assert better.evaluation_size == len(scans) == better.candidate["size"] == better.active["size"]
    assert set(better.candidate["per_model"]) == {"custom_cnn", "ensemble"}
    assert better.as_json()["active"]["version"] == 1

    # The other way round, on the same scores: the five-model bundle as the candidate, the CNN one active.
    worse = decide(dict(better.active, version=3), dict(better.candidate, version=2), 2, 0.005,
                   better.evaluation_size)
    assert not worse.promoted and worse.reason.startswith("kept active version 2")
    assert f"accuracy {worse_accuracy:.4f}" in worse.reason
    # A tolerance as wide as the gap lets it through.
    gap = max(better.candidate[m] - better.active[m] for m in GATE_METRICS)
    assert decide(worse.candidate, worse.active, 2, gap, worse.evaluation_size).promoted


def test_a_first_version_is_promoted_and_an_unscorable_active_one_blocks(cnn_bundle, scans, tmp_path):
    first = evaluate_and_decide((1, cnn_bundle), None, scans, tolerance=0.005)
    assert first.promoted and first.active is None and first.candidate["size"] == len(scans)
    missing = evaluate_and_decide((2, cnn_bundle), (1, tmp_path / "gone"), scans, tolerance=0.005)
    assert not missing.promoted and "active version 1 could not be scored" in missing.reason
    unknown = [LabelledImage(scans[0].source, "astrocytoma", scans[0].sha256)]
    odd = evaluate_and_decide((2, cnn_bundle), (1, cnn_bundle), unknown, tolerance=0.005)
    assert not odd.promoted and "astrocytoma" in odd.reason
    empty = evaluate_and_decide((2, cnn_bundle), (1, cnn_bundle), [], tolerance=0.005)
    assert not empty.promoted and "evaluation split is empty" in empty.reason and empty.evaluation_size == 0


@pytest.mark.parametrize("candidate,active,tolerance,promoted", [
    ((0.900, 0.900), (0.900, 0.900), 0.0, True),     # a tie is not worse
    ((0.895, 0.900), (0.900, 0.900), 0.005, True),   # exactly the tolerance below
    ((0.894, 0.900), (0.900, 0.900), 0.005, False),  # accuracy beyond the tolerance
    ((0.950, 0.880), (0.900, 0.900), 0.005, False),  # better accuracy does not buy worse macro-F1
    ((0.950, 0.898), (0.900, 0.900), 0.005, True),   # unless that is within the tolerance
    ((0.800, 0.800), (0.900, 0.900), 0.2, True),     # a wide tolerance
])
def test_each_metric_must_hold_within_the_tolerance(candidate, active, tolerance, promoted):
    def figures(values, version):
        return {"version": version, **dict(zip(GATE_METRICS, values))}

    decision = decide(figures(candidate, 2), figures(active, 1), 1, tolerance, 40)
    assert decision.promoted is promoted, decision.reason
    # A candidate promoted while below on a metric says so.
    lower = any(new < old for new, old in zip(candidate, active))
    assert ("within the tolerance" in decision.reason) is (promoted and lower)
    assert decision.as_json()["evaluation_size"] == 40 and decision.as_json()["tolerance"] == tolerance


def test_promotion_tolerance_setting(tmp_path):
    base = {"DATA_DIR": str(tmp_path), "APP_ENV": "test"}
    assert load_settings(base).promotion_tolerance == 0.005
    assert load_settings({**base, "PROMOTION_TOLERANCE": "0.02"}).promotion_tolerance == 0.02
    for bad in ("-0.1", "2", "nan", "lots"):
        with pytest.raises(SettingsError, match="PROMOTION_TOLERANCE"):
            load_settings({**base, "PROMOTION_TOLERANCE": bad})
