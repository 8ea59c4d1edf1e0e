"""Run a loaded Keras network at a chosen precision by rebuilding it under a dtype policy."""

from __future__ import annotations

import logging
from typing import Any

import keras

logger = logging.getLogger(__name__)

PRECISIONS: tuple[str, ...] = ("float32", "bfloat16")
# Layers that stay float32 under bfloat16: the dense heads cost a few MFLOP, and keeping
# them (and the softmax) in float32 keeps probabilities and 256-d features accurate.
_KEEP_FLOAT32 = {"Dense", "Softmax", "InputLayer"}
_CONTAINERS = {"Functional", "Sequential", "Model"}


def _rewrite(layer_configs: list[dict], policy: str) -> int:
    changed = 0
    for layer in layer_configs:
        cls = layer.get("class_name")
        config = layer.get("config", {})
        if cls in _CONTAINERS:
            changed += _rewrite(config.get("layers", []), policy)
            continue
        if cls in _KEEP_FLOAT32:
            continue
        dtype = config.get("dtype")
        if isinstance(dtype, dict) and dtype.get("class_name") == "DTypePolicy":
            dtype["config"]["name"] = policy
            changed += 1
        elif isinstance(dtype, str):
            config["dtype"] = policy
            changed += 1
    return changed


def with_precision(model: keras.Model, precision: str) -> keras.Model:
    """Return `model` itself for float32, or a copy whose conv layers compute in bfloat16.

    The copy uses the "mixed_bfloat16" policy: float32 variables (copied from `model`),
    bfloat16 arithmetic, so BatchNorm statistics and the dense heads keep full precision.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {PRECISIONS}")
    if precision == "float32":
        return model
    config: dict[str, Any] = model.get_config()
    changed = _rewrite(config.get("layers", []), "mixed_bfloat16")
    clone = model.__class__.from_config(config)
    clone.set_weights(model.get_weights())
    logger.info("%s: %d layers switched to mixed_bfloat16", model.name, changed)
    return clone


def bfloat16_supported() -> bool:
    """True where bfloat16 arithmetic is fast: a CPU with AVX512-BF16/AMX, or a visible GPU."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as handle:
            flags = handle.read()
        if "avx512_bf16" in flags or "amx_bf16" in flags:
            return True
    except OSError:
        pass
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    if backend == "jax":
        import jax

        return any(d.platform == "gpu" for d in jax.devices())
    return False


PRECISION_SETTINGS = ("auto", "float32", "bfloat16")
"""What INFERENCE_PRECISION (workers) and --precision (evaluate, predict) accept."""


def resolve_precision(setting: str) -> str:
    """A precision setting -> the engine's precision: 'auto' picks bfloat16 on bf16 CPUs or GPUs."""
    if setting in ("float32", "bfloat16"):
        return setting
    if setting != "auto":
        raise ValueError(f"unknown inference precision {setting!r}")
    return "bfloat16" if bfloat16_supported() else "float32"
