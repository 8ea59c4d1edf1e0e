"""bench/precision.py at toy size: float32, bfloat16 and TFLite float32/int8 of a real tiny bundle on
scans it never trained on, with rates, agreement with float32 and accuracy for each."""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from tests.helpers.tiny_bundle import CLASSES, synthetic_images

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def test_precision_bench_measures_every_variant_on_unseen_scans(tmp_path, tiny_bundle):
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    images, labels = synthetic_images(per_class=4, image_size=32, seed=3)
    rows, trained = ["sha256\tframe\tlabel\tsplit"], set()
    for i, (image, label) in enumerate(zip(images, labels)):
        path = tmp_path / "data" / CLASSES[label] / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), image)
        if i % 4 == 0:  # one file per class was "trained on": never among the measured scans
            trained.add(hashlib.sha256(path.read_bytes()).hexdigest())
            rows.append(f"{hashlib.sha256(path.read_bytes()).hexdigest()}\t0\t{CLASSES[label]}\ttrain")
    (bundle / "dataset.tsv").write_text("\n".join(rows) + "\n")
    # A bundle whose own check let every network serve in bfloat16: the "VGG16, CNN" variant must
    # still keep ResNet50 (and the SVM/RF on its features) in float32.
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["precision"] = {"bfloat16_networks": ["resnet50", "vgg16", "custom_cnn"], "checked": True}
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    out = subprocess.run([sys.executable, "-m", "bench.precision", "--bundle", str(bundle), "--data",
                          str(tmp_path / "data"), "--scans", "40", "--calibration-scans", "4", "--batch-size", "4",
                          "--repeats", "1", "--json"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-4000:]
    record = json.loads(out.stdout.strip().splitlines()[-1])
    assert record["scans"] == 12 and record["calibration_scans"] == 4  # 16 files less the 4 trained on
    variants = record["variants"]
    expected = {"float32", "tflite float32", "tflite int8"}
    if record["bf16_supported"]:
        expected |= {"bfloat16 (VGG16, CNN)", "bfloat16 (every network)"}
    assert set(variants) == expected
    assert variants["float32"]["ensemble_agreement"] == 1.0 and variants["float32"]["speed_vs_float32"] == 1.0
    # The same float32 networks through TFLite give the same labels; int8 is measured, not assumed.
    assert variants["tflite float32"]["ensemble_agreement"] >= 0.9
    for record_ in variants.values():
        assert record_["scans_per_s"] > 0 and 0 <= record_["ensemble_accuracy"] <= 1
        assert set(record_["model_agreement"]) == {"resnet50", "vgg16", "custom_cnn", "svm", "random_forest",
                                                   "ensemble"}
    assert set(variants["tflite int8"]["convert_seconds"]) == {"resnet50", "vgg16", "custom_cnn"}
    assert variants["float32"]["bfloat16_networks"] == []
    if record["bf16_supported"]:
        assert variants["bfloat16 (VGG16, CNN)"]["bfloat16_networks"] == ["custom_cnn", "vgg16"]
        assert variants["bfloat16 (every network)"]["bfloat16_networks"] == ["custom_cnn", "resnet50", "vgg16"]
        kept = variants["bfloat16 (VGG16, CNN)"]["model_agreement"]
        assert (kept["resnet50"], kept["svm"], kept["random_forest"]) == (1.0, 1.0, 1.0)
