"""Grad-CAM (Selvaraju et al., 2017) for Keras 3 networks, under the TensorFlow and JAX backends.

A network is cut at its last convolutional feature map A (k channels): `features` maps the
input to A and `head` maps A to the class scores before the softmax. The heatmap for class c
is ReLU(sum_k alpha_k * A_k) with alpha_k the spatial mean of d score_c / d A_k, scaled to
[0, 1]. Keras has no backend-neutral gradient, so `score_gradients` holds one small shim per
backend (tf.GradientTape, jax.grad on the head's stateless call); everything else is keras.ops.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import keras
import numpy as np
from keras import ops

# Layers that keep a convolution's map (same grid, same meaning): the explained map is the
# last of these, so ResNet50 gives conv5_block3_out (after its residual Add and ReLU), VGG16
# block5_conv3 and the custom CNN its last ReLU, not the pooling or cropping after them.
_MAP_LAYERS = ("Conv2D", "DepthwiseConv2D", "SeparableConv2D", "BatchNormalization", "Activation",
               "ReLU", "LeakyReLU", "ELU", "Add")


class GradCamError(ValueError):
    """The network cannot be explained (no convolutional map, an unsupported backend)."""


@dataclass
class SplitNetwork:
    """A network cut at its explained feature map: input -> map (`features`), map -> logits (`head`)."""

    layer: str  # path of the explained layer, e.g. "resnet50/conv5_block3_out"
    features: keras.Model
    head: keras.Model


def _node_of(model: keras.Model, layer: Any) -> Any:
    """The call of `layer` inside `model`'s graph (a layer built on its own is called there too)."""
    # Keras keeps each functional model's graph by depth; a nested application (ResNet50 in our
    # transfer models) has an extra node from the model it was first built in, so the node is
    # looked up in this graph, not taken as the layer's first.
    for nodes in model._nodes_by_depth.values():
        for node in nodes:
            if node.operation is layer:
                return node
    raise GradCamError(f"{layer.name} is not called in {model.name}")


def _map_path(model: keras.Model) -> list[str] | None:
    """Layer names from `model` down to its last convolutional map layer, or None."""
    for layer in reversed(model.layers):
        if isinstance(layer, keras.Model):
            inner = _map_path(layer)
            if inner is not None:
                return [layer.name, *inner]
            continue
        shape = getattr(layer, "output", None)
        if type(layer).__name__ in _MAP_LAYERS and shape is not None and len(shape.shape) == 4:
            return [layer.name]
    return None


def _inputs(model: keras.Model) -> Any:
    """The model's input tensor (a one-element list would make Keras warn on every call with a tensor)."""
    return model.inputs[0] if len(model.inputs) == 1 else model.inputs


def _logits_model(model: keras.Model) -> keras.Model:
    """`model` with its final softmax removed: Grad-CAM differentiates the score before the softmax,
    whose gradient vanishes as a probability saturates."""
    last = model.outputs[0]._keras_history.operation
    incoming = _node_of(model, last).input_tensors[0]
    activation = getattr(getattr(last, "activation", None), "__name__", "")
    if isinstance(last, keras.layers.Dense) and activation == "softmax":
        logits = keras.layers.Dense(last.units, name=f"{last.name}_logits", dtype="float32")
        outputs = logits(incoming)
        logits.set_weights(last.get_weights())
        return keras.Model(_inputs(model), outputs, name=f"{model.name}_logits")
    if isinstance(last, keras.layers.Softmax) or (isinstance(last, keras.layers.Activation)
                                                   and activation == "softmax"):
        return keras.Model(_inputs(model), incoming, name=f"{model.name}_logits")
    return model


def _split(model: keras.Model, path: Sequence[str]) -> tuple[keras.Model, keras.Model | None]:
    """(input -> map, map -> outputs or None when the map is the output) for a layer path."""
    layer = model.get_layer(path[0])
    node = _node_of(model, layer)
    if len(path) == 1:
        fmap = node.output_tensors[0]
        features = keras.Model(_inputs(model), fmap)
        head = None if fmap is model.outputs[0] else keras.Model(fmap, model.outputs[0])
        return features, head
    # A nested model (the frozen ResNet50/VGG16 inside a transfer model): cut it inside, then
    # wrap what comes before and after its call in this graph around the two halves.
    inner_features, inner_head = _split(layer, path[1:])
    before, after = node.input_tensors[0], node.output_tensors[0]
    image = keras.Input(shape=model.inputs[0].shape[1:], name="image")
    x = image if before is model.inputs[0] else keras.Model(_inputs(model), before)(image)
    features = keras.Model(image, inner_features(x))
    fmap = keras.Input(shape=inner_features.outputs[0].shape[1:], name="feature_map")
    y = fmap if inner_head is None else inner_head(fmap)
    if after is not model.outputs[0]:
        y = keras.Model(after, model.outputs[0])(y)
    return features, (None if y is fmap else keras.Model(fmap, y))


def split_network(model: keras.Model, layer: str | None = None) -> SplitNetwork:
    """Cut `model` at `layer` ("outer/inner" for a nested model; default: its last convolutional map).

    The head returns logits (the final softmax is dropped).
    """
    path = layer.split("/") if layer else _map_path(model)
    if not path:
        raise GradCamError(f"{model.name} has no convolutional feature map to explain")
    features, head = _split(_logits_model(model), path)
    if head is None:
        raise GradCamError(f"{'/'.join(path)} is {model.name}'s output; nothing follows it to explain")
    return SplitNetwork("/".join(path), features, head)


def score_gradients(head: keras.Model, feature_map: Any, class_index: np.ndarray) -> tuple[Any, Any]:
    """(scores [N,C], d scores[n, class_index[n]] / d feature_map) through the current Keras backend."""
    backend = keras.backend.backend()
    index = np.asarray(class_index, dtype="int32").reshape(-1, 1)
    if backend == "tensorflow":
        import tensorflow as tf

        fmap = tf.convert_to_tensor(feature_map)
        with tf.GradientTape() as tape:
            tape.watch(fmap)
            scores = head(fmap, training=False)
            target = tf.reduce_sum(tf.experimental.numpy.take_along_axis(scores, index, axis=1))
        return scores, tape.gradient(target, fmap)
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        trainable = [v.value for v in head.trainable_variables]
        non_trainable = [v.value for v in head.non_trainable_variables]

        def target(fmap):
            # stateless_call: the head's weights are plain arguments, so jax can trace it.
            scores, _ = head.stateless_call(trainable, non_trainable, fmap, training=False)
            return jnp.sum(jnp.take_along_axis(scores, jnp.asarray(index), axis=1)), scores

        grads, scores = jax.grad(target, has_aux=True)(jnp.asarray(feature_map))
        return scores, grads
    raise GradCamError(f"Grad-CAM supports the tensorflow and jax Keras backends, not {backend!r}")


@dataclass
class GradCam:
    """Heatmaps [N,h,w] in [0,1] on the feature map's grid, the explained classes and the softmax."""

    heatmaps: np.ndarray
    class_index: np.ndarray
    probabilities: np.ndarray
    layer: str


def grad_cam(network: keras.Model | SplitNetwork, inputs: np.ndarray,
             class_index: int | Sequence[int] | None = None) -> GradCam:
    """Grad-CAM of preprocessed `inputs` [N,H,W,C] for `class_index` (default: each input's top class)."""
    split = network if isinstance(network, SplitNetwork) else split_network(network)
    fmap = split.features(ops.convert_to_tensor(np.asarray(inputs, dtype="float32")), training=False)
    logits = ops.convert_to_numpy(split.head(fmap, training=False))
    n = logits.shape[0]
    if class_index is None:
        chosen = np.argmax(logits, axis=1)
    else:
        chosen = np.broadcast_to(np.asarray(class_index, dtype="int64"), (n,)).copy()
    _, grads = score_gradients(split.head, fmap, chosen)
    # alpha_k: how much the chosen score rises per unit of channel k, averaged over the map.
    alpha = ops.mean(grads, axis=(1, 2), keepdims=True)
    cam = ops.relu(ops.sum(alpha * fmap, axis=-1))
    peak = ops.max(cam, axis=(1, 2), keepdims=True)
    # A map with no positive evidence anywhere stays all zero instead of dividing by zero.
    cam = ops.where(peak > 0, cam / ops.maximum(peak, 1e-12), ops.zeros_like(cam))
    probabilities = ops.convert_to_numpy(ops.softmax(ops.convert_to_tensor(logits), axis=-1))
    return GradCam(np.asarray(ops.convert_to_numpy(cam), dtype=np.float32), chosen,
                   np.asarray(probabilities, dtype=np.float32), split.layer)
