"""End to end through the CLI: train -> evaluate -> predict on a tiny synthetic folder (32 px)."""

from __future__ import annotations

import json

import pytest

from models import MODEL_NAMES
from tests.helpers.labelled_folder import CLASSES, write_labelled_folder
from tests.helpers.split_data import write_split_folder
from training.cli import main

METRIC_KEYS = {"accuracy", "macro_f1", "per_class", "confusion_matrix", "roc_auc", "ece", "brier"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """Train one tiny bundle (1 epoch, 1 view, random backbones) shared by the tests below.

    Per class 6 files outside the fixed evaluation split and 1 in it: the test part.
    """
    root = tmp_path_factory.mktemp("cli")
    data = write_split_folder(root / "data", train_per_class=6, evaluation_per_class=1, size=48)
    bundle = root / "bundle"
    code = main(["train", "--data", str(data), "--out", str(bundle), "--image-size", "32",
                 "--epochs", "1", "--views", "1", "--backbone-weights", "none", "--seed", "3"])
    assert code == 0
    return {"root": root, "data": data, "bundle": bundle}


def test_train_writes_a_verified_bundle_with_full_manifest(trained, capsys):
    from models.bundle import verify_bundle

    manifest = verify_bundle(trained["bundle"])
    assert manifest["models"] == list(MODEL_NAMES)
    assert manifest["classes"] == list(CLASSES) and manifest["image_size"] == 32
    assert manifest["backbone_weights"]["mode"] == "none"
    assert manifest["custom_cnn_variant"] == "deep"
    assert len(manifest["training_data_sha256"]) == 64
    assert set(manifest["validation_metrics"]) == {*MODEL_NAMES, "ensemble"}
    assert set(manifest["ensemble_weights"]) == set(MODEL_NAMES)
    assert manifest["seed"] == 3 and manifest["views"] == 1
    assert manifest["training"]["resnet50"]["bn_recalibrated_layers"] == 0  # off by default
    assert {"resnet50", "vgg16", "custom_cnn", "svm", "random_forest"} <= set(manifest["timings"])
    assert (trained["bundle"] / "plots" / "training_history.png").read_bytes()[:4] == b"\x89PNG"


def test_ensemble_not_below_best_member_on_validation(trained):
    manifest = json.loads((trained["bundle"] / "manifest.json").read_text())
    metrics = manifest["validation_metrics"]
    best = max(metrics[m]["accuracy"] for m in MODEL_NAMES)
    assert metrics["ensemble"]["accuracy"] >= best


def test_evaluate_writes_metrics_json_and_plots(trained, capsys):
    report = trained["root"] / "report"
    code = main(["evaluate", "--models", str(trained["bundle"]), "--data", str(trained["data"]),
                 "--report", str(report)])
    assert code == 0
    metrics = json.loads((report / "metrics.json").read_text())
    assert list(metrics)[0] == "models" and {"precision", "files"} <= set(metrics)
    assert metrics["files"] == {"listed": 28, "evaluated": 28, "images": 28, "skipped": []}
    assert metrics["precision"]["used"] in ("float32", "bfloat16")
    assert set(metrics["models"]) == {*MODEL_NAMES, "ensemble"}
    for entry in metrics["models"].values():
        assert set(entry) == METRIC_KEYS
        assert list(entry["per_class"]) == list(CLASSES)
        assert sum(map(sum, entry["confusion_matrix"])) == 28
        assert [sum(row) for row in entry["confusion_matrix"]] == [7, 7, 7, 7]  # rows = true class
    for name in ("accuracy.png", "roc_curves.png", "confusion_ensemble.png", "confusion_svm.png", "reliability.png"):
        assert (report / name).read_bytes()[:4] == b"\x89PNG"
    # Calibration and triage: the served (calibrated) ECE per model, the uncalibrated one beside
    # it, and the review rule's coverage and accuracy on accepted scans.
    assert set(metrics["uncalibrated"]) == {*MODEL_NAMES, "ensemble"}
    assert metrics["calibration"]["fitted"] is True and metrics["calibration"]["ensemble_ece_noise_floor"] >= 0
    triage = metrics["triage"]
    assert triage["images"] == 28 and triage["accepted"] + triage["review"] == 28
    assert triage["coverage"] == triage["accepted"] / 28
    out = capsys.readouterr().out
    assert "ensemble" in out and "ece" in out and "review:" in out


def test_train_fits_calibration_and_a_review_threshold_on_validation(trained):
    """Temperatures per model, weights on calibrated members, the ensemble temperature and the
    triage rule are in the manifest; the validation figures are the calibrated ones."""
    manifest = json.loads((trained["bundle"] / "manifest.json").read_text())
    calibration, triage = manifest["calibration"], manifest["triage"]
    assert set(calibration["temperatures"]) == set(MODEL_NAMES)
    assert all(0.05 <= t <= 20 for t in calibration["temperatures"].values())
    assert calibration["ensemble"]["temperature"] > 0
    assert set(calibration["validation"]["after"]) == {*MODEL_NAMES, "ensemble"}
    for name in MODEL_NAMES:  # temperature scaling never changes a model's accuracy
        assert calibration["validation"]["after"][name]["accuracy"] == calibration["validation"]["before"][name]["accuracy"]
    assert manifest["validation_metrics"]["ensemble"]["ece"] == pytest.approx(
        calibration["validation"]["after"]["ensemble"]["ece"])
    assert triage["target_accuracy"] == 0.995 and 0 <= triage["min_agreement"] <= 5
    val = triage["validation"]
    assert val["images"] == manifest["dataset"]["validation"]
    if triage["target_reached"]:
        assert val["accepted_accuracy"] >= 0.995
    else:
        assert triage["confidence_threshold"] is None and val["accepted"] == 0


def test_calibrate_refits_a_bundle_into_a_new_one(trained, tmp_path, capsys):
    """`calibrate` reads the bundle's validation items back from the folder and writes a new bundle."""
    from models.bundle import bundle_digest, verify_bundle

    out = tmp_path / "recalibrated"
    code = main(["calibrate", "--models", str(trained["bundle"]), "--data", str(trained["data"]),
                 "--out", str(out), "--review-target-accuracy", "0.5"])
    assert code == 0
    manifest, original = verify_bundle(out), verify_bundle(trained["bundle"])
    assert manifest["files"] == original["files"]  # the very same model files
    assert manifest["triage"]["target_accuracy"] == 0.5
    assert manifest["recalibrated"]["digest"] == bundle_digest(trained["bundle"])
    assert manifest["recalibrated"]["validation_images"] == original["dataset"]["validation"]
    # Fitted on the same validation probabilities as training, up to the engine's float32 path.
    for name, value in original["calibration"]["temperatures"].items():
        assert manifest["calibration"]["temperatures"][name] == pytest.approx(value, rel=0.05, abs=0.05)
    report = json.loads((out / "calibration_report.json").read_text())
    test = report["test"]
    assert test["images"] == 4 and test["triage"]["images"] == 4 and test["ece_noise_floor"] >= 0
    assert report["validation"]["ece_noise_floor"] >= 0
    assert test["triage_before"]["confidence_threshold"] == original["triage"]["confidence_threshold"]
    # "before" is what the original bundle serves on the test part (its test_metrics.json).
    scored = json.loads((trained["bundle"] / "test_metrics.json").read_text())
    for name, figures in test["before"].items():
        assert figures["accuracy"] == pytest.approx(scored["models"][name]["accuracy"])
        assert figures["ece"] == pytest.approx(scored["models"][name]["ece"], abs=1e-5)
    for name in MODEL_NAMES:  # temperatures never change a model's label
        assert test["after"][name]["accuracy"] == test["before"][name]["accuracy"]
    assert "val_ece_after" in capsys.readouterr().out
    assert main(["calibrate", "--models", str(trained["bundle"]), "--data", str(trained["data"]),
                 "--out", str(out)]) == 2  # refuses to overwrite a bundle


def test_evaluate_refuses_unknown_class_folder(trained, tmp_path, capsys):
    data = write_labelled_folder(tmp_path / "data", per_class=2, size=32)
    (data / "glioma").rename(data / "astrocytoma")
    code = main(["evaluate", "--models", str(trained["bundle"]), "--data", str(data),
                 "--report", str(tmp_path / "r")])
    assert code == 2
    assert "astrocytoma" in capsys.readouterr().err


def test_predict_json_lists_undecodable_files(trained, tmp_path, capsys):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    code = main(["predict", "--models", str(trained["bundle"]), str(trained["data"] / "notumor"),
                 str(bad), "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert len(result["scans"]) == 7
    scan = result["scans"][0]
    assert set(scan["predictions"]) == set(MODEL_NAMES)
    assert scan["ensemble"]["label"] in CLASSES and 1 <= scan["ensemble"]["agreement"] <= 5
    assert [e["path"] for e in result["errors"]] == [str(bad)] and result["errors"][0]["error"]


def test_predict_table_and_exit_code_when_nothing_classified(trained, tmp_path, capsys):
    code = main(["predict", "--models", str(trained["bundle"]), str(trained["data"] / "glioma" / "000.png")])
    out = capsys.readouterr().out
    assert code == 0 and "ensemble" in out and "1 scan(s) classified" in out
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    code = main(["predict", "--models", str(trained["bundle"]), str(empty), str(tmp_path / "missing")])
    out = capsys.readouterr().out
    assert code == 1 and "could not be classified" in out and "no such file" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--data", "/nonexistent/data", "--out", "x", "--backbone-weights", "none"], "not found"),
        (["train", "--data", ".", "--out", "x", "--models", "svm"], "resnet50"),
        (["evaluate", "--models", "/nonexistent/bundle", "--data", ".", "--report", "r"], "bundle"),
    ],
)
def test_bad_input_gives_a_message_not_a_traceback(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err and "Traceback" not in err


def test_tampered_bundle_is_refused(trained, tmp_path, capsys):
    import shutil

    copy = tmp_path / "bundle"
    shutil.copytree(trained["bundle"], copy)
    with open(copy / "svm.joblib", "ab") as handle:
        handle.write(b"x")
    code = main(["predict", "--models", str(copy), str(trained["data"] / "glioma" / "000.png")])
    assert code == 2 and "svm.joblib" in capsys.readouterr().err


def test_views_must_not_be_negative(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--data", ".", "--out", "x", "--views", "-1"])
    assert exit_info.value.code == 2 and "--views" in capsys.readouterr().err


def test_an_internal_value_error_keeps_its_traceback(monkeypatch, tmp_path):
    import training.recipe

    def broken(options, progress):  # stands in for a bug deep inside training
        raise ValueError("internal bug")

    monkeypatch.setattr(training.recipe, "train_bundle", broken)
    with pytest.raises(ValueError, match="internal bug"):
        main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "out"), "--backbone-weights", "none"])


def test_evaluate_at_a_workers_bfloat16_reports_agreement_and_skipped_files(trained, tmp_path, capsys):
    """evaluate runs at the workers' precision and counts what it could not read (issue 13)."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(trained["data"], data)
    (data / CLASSES[0] / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    report = tmp_path / "report"
    code = main(["evaluate", "--models", str(trained["bundle"]), "--data", str(data),
                 "--report", str(report), "--precision", "bfloat16"])
    assert code == 0
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["precision"]["setting"] == "bfloat16" and metrics["precision"]["used"] == "bfloat16"
    agreement = metrics["precision"]["label_agreement_with_float32"]
    assert set(agreement) == {*MODEL_NAMES, "ensemble"} and all(0.0 <= v <= 1.0 for v in agreement.values())
    files = metrics["files"]
    assert (files["listed"], files["evaluated"]) == (29, 28)
    [skipped] = files["skipped"]
    assert skipped["file"].endswith("broken.png") and "PNG" in skipped["reason"]
    out = capsys.readouterr().out
    assert "label agreement with float32" in out and "28 of 29 evaluated, 1 skipped" in out


def test_predict_records_the_precision_it_ran_at(trained, capsys):
    files = sorted((trained["data"] / CLASSES[1]).iterdir())[:2]
    assert main(["predict", "--models", str(trained["bundle"]), "--json", "--precision", "float32",
                 *map(str, files)]) == 0
    assert json.loads(capsys.readouterr().out)["precision"] == "float32"


def test_train_holds_out_an_untouched_test_part_and_scores_it_once(trained):
    """The fixed evaluation split is the test part: not trained on, scored at the end (issue 13)."""
    from training.datasets import list_labelled
    from training.holdout import TEST_METRICS_FILE
    from training.pool import in_evaluation_split
    from training.recipe import DATASET_LIST, read_dataset_list

    test_shas = {item.sha256 for item in list_labelled(trained["data"]) if in_evaluation_split(item.sha256)}
    assert len(test_shas) == 4
    listed = read_dataset_list(trained["bundle"] / DATASET_LIST)
    used = {row["sha256"] for row in listed if row["split"] in ("train", "validation")}
    assert {row["sha256"] for row in listed if row["split"] == "test"} == test_shas  # the bundle lists all three
    manifest = json.loads((trained["bundle"] / "manifest.json").read_text())
    # Near copies of a test image are not trained on either.
    assert not used & test_shas and len(used) + manifest["dataset"]["near_copies_of_evaluation_dropped"] == 24
    assert manifest["evaluation_split"]["test_part"] is True and manifest["split"]["method"] == "near-copy groups"
    scored = json.loads((trained["bundle"] / TEST_METRICS_FILE).read_text())
    assert scored["images"] == 4 and set(scored["models"]) == {*MODEL_NAMES, "ensemble", "nearest_neighbour_baseline"}
    assert {"ece", "brier"} <= set(scored["models"]["ensemble"]) and "ensemble" in scored["uncalibrated"]
    assert scored["triage"]["images"] == 4 and scored["triage"]["target_accuracy"] == 0.995
    for entry in scored["models"].values():
        assert sum(map(sum, entry["confusion_matrix"])) == 4
    near, far = scored["with_near_copy_in_training"], scored["without_near_copy_in_training"]
    assert near["images"] + far["images"] == 4 and scored["near_copy_cosine"] == 0.95


def test_evaluate_says_which_files_the_bundle_learned_from(trained, tmp_path, capsys, caplog):
    """Evaluating on training files measures memory: evaluate counts them and scores the rest apart."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(trained["data"], data)
    copy = data / CLASSES[2] / "reencoded.jpg"  # a near copy of a training file: other bytes, same picture
    import cv2

    source = sorted((data / CLASSES[2]).glob("00[0-5].png"))[0]
    cv2.imwrite(str(copy), cv2.imread(str(source)), [cv2.IMWRITE_JPEG_QUALITY, 85])
    report = tmp_path / "report"
    assert main(["evaluate", "--models", str(trained["bundle"]), "--data", str(data), "--report", str(report)]) == 0
    metrics = json.loads((report / "metrics.json").read_text())
    overlap = metrics["overlap_with_training"]
    from training.recipe import DATASET_LIST, read_dataset_list

    learned = [row for row in read_dataset_list(trained["bundle"] / DATASET_LIST) if row["split"] != "test"]
    assert overlap["known"] and overlap["exact"]["test"] == 4
    assert overlap["exact"].get("train", 0) + overlap["exact"].get("validation", 0) == len(learned)
    assert overlap["near_copies"] >= 1  # the re-encoded copy
    assert overlap["images_seen"] == len(learned) + overlap["near_copies"]
    assert overlap["images_seen"] + overlap["images_unseen"] == 29
    assert sum(map(sum, metrics["models_unseen"]["ensemble"]["confusion_matrix"])) == overlap["images_unseen"]
    assert "trained or validated on by this bundle" in caplog.text


def test_train_records_which_networks_may_serve_in_bfloat16(trained):
    """The run checked every network in bfloat16 on its validation scans (where the CPU has
    bfloat16) and recorded the answer; the engine built from the bundle follows it."""
    from models.engine import InferenceEngine
    from models.precision import bfloat16_supported

    manifest = json.loads((trained["bundle"] / "manifest.json").read_text())
    block = manifest["precision"]
    assert block["checked"] is bfloat16_supported() and "rule" in block
    allowed = block["bfloat16_networks"]
    assert allowed in (["resnet50", "vgg16", "custom_cnn"], ["vgg16", "custom_cnn"])
    if block["checked"]:
        assert block["images"] == manifest["dataset"]["validation"]
        assert 0 <= block["every_network_agreement"] <= 1 and block["flips"] >= 0
        engine = InferenceEngine.from_bundle(trained["bundle"], precision="bfloat16")
        assert sorted(n for n, p in engine.network_precision.items() if p == "bfloat16") == sorted(allowed)
