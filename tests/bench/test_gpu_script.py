"""bench/gpu.sh and the engine under JAX, everything but the device: run on the CPU with JAX.

The JAX tests need a Python with JAX and Keras (no TensorFlow needed): the current one if it
has JAX, else the one JAX_PYTHON names (e.g. a separate virtualenv); without either they skip.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]


def _jax_python() -> str | None:
    candidates = [os.environ.get("JAX_PYTHON"), sys.executable]
    for python in filter(None, candidates):
        probe = subprocess.run([python, "-c", "import jax, keras"], env={**os.environ, "KERAS_BACKEND": "jax"},
                               capture_output=True, timeout=120)
        if probe.returncode == 0:
            return python
    return None


JAX_PYTHON = _jax_python()
# A mark, not a fixture: skipping must not first build the session's tiny bundle.
needs_jax = pytest.mark.skipif(JAX_PYTHON is None, reason="no Python with JAX here (set JAX_PYTHON to one)")


def _scans(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for cls in ("glioma", "notumor"):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            cv2.imwrite(str(root / cls / f"{i}.jpg"), rng.integers(0, 256, size=(48, 48, 3), dtype=np.uint8))
    return root


def test_without_a_gpu_the_script_says_so_and_exits_2(tmp_path):
    env = {"PATH": str(tmp_path), "PYTHON": sys.executable}  # no nvidia-smi on this PATH
    (tmp_path / "timeout").symlink_to(shutil.which("timeout"))
    done = subprocess.run(["/bin/bash", str(REPO / "bench" / "gpu.sh")], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2 and "no NVIDIA GPU" in done.stderr, done.stderr


@needs_jax
def test_gpu_script_runs_its_whole_path_on_the_cpu(tmp_path, tiny_bundle):
    # A bundle saved under TensorFlow, served under JAX: what a GPU machine without TensorFlow does.
    done = subprocess.run(
        [str(REPO / "bench" / "gpu.sh"), "--allow-cpu", "--data", str(_scans(tmp_path / "scans")), "--bundle",
         str(tiny_bundle), "--batch-sizes", "2,4", "--check-scans", "6", "--check-batch", "3", "--rounds", "1"],
        env={**os.environ, "PYTHON": JAX_PYTHON}, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    record = json.loads(done.stdout.strip().splitlines()[-1])
    assert record["keras_backend"] == "jax" and record["device"] == "cpu" and not record["tensorflow_imported"]
    assert record["image_size"] == 32 and record["image_size_source"] == "bundle" and record["check_scans"] == 6
    assert set(record["results"]) == {"float32", "bfloat16"} and record["skipped"] == []
    fp32, bf16 = record["results"]["float32"], record["results"]["bfloat16"]
    # Same code, same device kind: float32 must match the CPU reference to the last label.
    assert fp32["label_agreement"] == 1.0 and fp32["networks_in_bf16"] == []
    assert bf16["networks_in_bf16"] == ["custom_cnn", "vgg16"] and 0.0 <= bf16["label_agreement"] <= 1.0
    for entry in (fp32, bf16):
        assert [b["batch_size"] for b in entry["batches"]] == [2, 4]
        assert all(b["engine_scans_per_s"] > 0 and b["networks_scans_per_s"] > 0 for b in entry["batches"])


@needs_jax
def test_engine_under_jax_gives_the_tensorflow_engines_probabilities(tiny_bundle, tmp_path):
    from models.engine import InferenceEngine
    from tests.helpers.tiny_bundle import synthetic_images

    images, _ = synthetic_images(per_class=2, image_size=32, seed=9)
    np.save(tmp_path / "images.npy", images)
    script = ("import sys, numpy as np\n"
              "from models.engine import InferenceEngine\n"
              "engine = InferenceEngine.from_bundle(sys.argv[1], precision='float32', batch_size=8)\n"
              "probs = engine.predict_probabilities(np.load(sys.argv[2]))\n"
              "np.savez(sys.argv[3], **probs)\n"
              "assert 'tensorflow' not in sys.modules\n")
    subprocess.run([JAX_PYTHON, "-c", script, str(tiny_bundle), str(tmp_path / "images.npy"),
                    str(tmp_path / "jax.npz")], cwd=REPO, check=True, timeout=300,
                   env={**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)})
    under_jax = np.load(tmp_path / "jax.npz")
    under_tf = InferenceEngine.from_bundle(tiny_bundle, precision="float32", batch_size=8).predict_probabilities(images)
    assert set(under_jax.files) == set(under_tf)
    for name, probs in under_tf.items():
        np.testing.assert_allclose(under_jax[name], probs, atol=2e-4, err_msg=name)
    assert (under_jax["ensemble"].argmax(1) == under_tf["ensemble"].argmax(1)).all()


@needs_jax
def test_vgg16_in_bfloat16_under_jax_on_the_cpu_labels_as_in_float32(tmp_path):
    """XLA's CPU bfloat16 convolutions gave inf/NaN for VGG16 at 64 px and more (jax 0.12, the
    same layers op by op gave finite values); the engine must serve it in float32 then, not
    hand out NaN rows that argmax reads as the first class."""
    script = ("import sys, tempfile, numpy as np\n"
              "from pathlib import Path\n"
              "from models.engine import InferenceEngine\n"
              "from tests.helpers.tiny_bundle import make_tiny_bundle, synthetic_images\n"
              "bundle = make_tiny_bundle(Path(sys.argv[1]), image_size=64, models=('vgg16',))\n"
              "images, _ = synthetic_images(per_class=2, image_size=64, seed=5)\n"
              "bf16 = InferenceEngine.from_bundle(bundle, precision='bfloat16', batch_size=8)\n"
              "fp32 = InferenceEngine.from_bundle(bundle, precision='float32', batch_size=8)\n"
              "a, b = bf16.predict_probabilities(images), fp32.predict_probabilities(images)\n"
              "assert np.isfinite(a['vgg16']).all(), a['vgg16']\n"
              "assert np.abs(a['vgg16'] - b['vgg16']).max() < 0.02, np.abs(a['vgg16'] - b['vgg16']).max()\n"
              "print('vgg16 served in', bf16.network_precision['vgg16'])\n")
    done = subprocess.run([JAX_PYTHON, "-c", script, str(tmp_path / "bundle")], cwd=REPO, timeout=300,
                          capture_output=True, text=True,
                          env={**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert "vgg16 served in" in done.stdout


def test_agreement_counts_a_nan_row_as_disagreeing_and_keeps_the_record_valid_json():
    from bench.gpu import agreement

    reference = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    # argmax reads a NaN row as class 0, which here would "agree" with the reference's label
    probabilities = np.array([[0.2, 0.8], [np.nan, np.nan], [0.25, 0.75]])
    record = agreement(reference, probabilities)
    assert record == {"label_agreement": round(2 / 3, 4), "max_probability_diff": 0.1, "nonfinite_scans": 1}
    json.dumps(record, allow_nan=False)
    every_row_nan = agreement(reference, np.full_like(reference, np.nan))
    assert every_row_nan["label_agreement"] == 0.0 and every_row_nan["max_probability_diff"] is None


def test_the_cpu_reference_child_keeps_the_callers_python_path(tmp_path, monkeypatch):
    """Packages carried to a device machine are found through PYTHONPATH: the child needs it too."""
    import bench.gpu as gpu

    seen = {}

    def fake_run(command, env, check):
        seen.update(env)
        np.save(command[command.index("--cpu-reference") + 1], np.zeros((1, 4)))

    monkeypatch.setenv("PYTHONPATH", "/carried/site")
    monkeypatch.setattr(gpu.subprocess, "run", fake_run)
    gpu.run_cpu_reference(tmp_path / "bundle", np.zeros((1, 8, 8, 3), np.uint8), tmp_path, 1)
    assert seen["PYTHONPATH"].split(os.pathsep) == [str(REPO), "/carried/site"]
    assert seen["JAX_PLATFORMS"] == "cpu"
