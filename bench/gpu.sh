#!/usr/bin/env bash
# The five-model engine on an NVIDIA GPU under JAX, in at most 10 minutes: labels against the
# CPU engine on the same scans, then scans/s for batch sizes 32..512 in float32 and bfloat16.
#
#   bench/gpu.sh [bench/gpu.py options, e.g. --bundle var/bundles/v1 --data DIR]
#
# Needs a Python with JAX (CUDA build), Keras 3, scikit-learn, OpenCV, pydicom and Pillow;
# TensorFlow is not needed. PYTHON picks it (default: .venv-jax/bin/python, else python3).
# --allow-cpu runs the same path without a GPU (what the tests do).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv-jax/bin/python ]]; then PYTHON=.venv-jax/bin/python; else PYTHON=python3; fi
fi
export KERAS_BACKEND=jax
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# Quiet TensorFlow-free JAX start-up; keep the CPU reference child off the GPU (bench/gpu.py sets it).
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"

case " $* " in
  *" --allow-cpu "*) ;;
  *)
    if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
      echo "bench/gpu.sh: no NVIDIA GPU answers nvidia-smi (--allow-cpu runs on the CPU)" >&2
      exit 2
    fi
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    ;;
esac
"$PYTHON" - <<'PY'
import importlib.util, sys
missing = [m for m in ("jax", "keras", "sklearn", "cv2", "pydicom", "PIL") if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"bench/gpu.sh: {sys.executable} lacks {', '.join(missing)}")
if importlib.util.find_spec("tensorflow") is not None:
    print("bench/gpu.sh: note: TensorFlow is installed too; KERAS_BACKEND=jax keeps it unused", file=sys.stderr)
PY
# The whole run, CPU reference and compiling included, stays within 10 minutes; bench/gpu.py
# skips (and lists) batch sizes that would not finish within its own --budget-s (540 s).
exec timeout --signal=TERM --kill-after=10 600 "$PYTHON" bench/gpu.py "$@"
