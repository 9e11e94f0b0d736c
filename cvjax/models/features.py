"""What a model gives besides logits: the pooled embedding, per-stage maps, a new classifier.

These work on every registered model through the contract in `cvjax/models/layers.py`: stages sow
their output maps into "intermediates", and the final linear layer is the submodule "head".
"""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp

from cvjax.errors import UserError, unknown_name

_STAGE = re.compile(r"^stage(\d+)$")


def _intermediates(model: nn.Module, variables, x: jax.Array, train: bool) -> dict:
    mutable = ["intermediates", "batch_stats"] if train else ["intermediates"]
    _, state = model.apply(variables, x, train=train, mutable=mutable)
    return state["intermediates"]


def forward_features(model: nn.Module, variables, x: jax.Array, train: bool = False) -> jax.Array:
    """The pooled embedding, (N, C): what the final linear layer sees (timm's pre-logits).

    With `global_pool=False` it is the (N, H, W, C) map instead.
    """
    return _intermediates(model, variables, x, train)["head"]["pre_logits"][0]


def gem_pool(feature_map: jax.Array, p: float = 3.0, eps: float = 1e-6) -> jax.Array:
    """Generalized-mean pooling of an (N, H, W, C) map to (N, C): (mean_hw max(x, eps)^p)^(1/p).

    Radenovic, Tolias & Chum 2018 ("Fine-tuning CNN Image Retrieval with No Human Annotation"),
    with the fixed p = 3 and the clamp at eps = 1e-6 of their GeM layer; p = 1 is average pooling
    and p -> inf max pooling. `layers.GeM` is the same with a learnable p. Computed in float32.
    """
    x = jnp.maximum(feature_map.astype(jnp.float32), eps) ** p
    return jnp.mean(x, axis=(1, 2)) ** (1.0 / p)


POOLS = ("avg", "gem", "max")


def pooled_features(
    model: nn.Module, variables, x: jax.Array, pool: str = "avg", train: bool = False
) -> jax.Array:
    """The embedding (N, C), float32, with the classifier's input pooled by `pool`.

    "avg" is the pre-logits embedding exactly as the classifier sees it (`forward_features`).
    "gem" (`gem_pool`) and "max" pool the pre-logits map that the model computes with
    `global_pool=False`; for most families that is the map that "avg" averages, while models with
    layers between the last map and the classifier (VGG and AlexNet's fc6/fc7, MobileNet-v3's
    hidden layer) apply those layers to every position first.
    """
    if pool not in POOLS:
        raise unknown_name("pooling", pool, POOLS)
    if pool == "avg":
        return forward_features(model.clone(global_pool=True), variables, x, train).astype(
            jnp.float32
        )
    found = forward_features(model.clone(global_pool=False), variables, x, train)
    if found.ndim != 4 or 0 in found.shape[1:3]:
        # E.g. VGG's fc6 without its adaptive pooling needs a 7x7 map: 224 px, not 32.
        raise UserError(
            f"{type(model).__name__} has no pre-logits map to pool at this input size (shape "
            f"{tuple(found.shape)} with global_pool=False); use pool='avg'"
        )
    if pool == "gem":
        return gem_pool(found)
    return jnp.max(found, axis=(1, 2)).astype(jnp.float32)


def feature_maps(
    model: nn.Module, variables, x: jax.Array, train: bool = False
) -> dict[str, jax.Array]:
    """Each stage's output map, in order: {"stage1": (N, H1, W1, C1), "stage2": ...}.

    A stage ends where the resolution drops (or at a family's natural block boundary); the last
    one is the map that the classifier pools.
    """
    found = _intermediates(model, variables, x, train)
    stages = sorted((int(m.group(1)), key) for key in found if (m := _STAGE.match(key)) is not None)
    return {key: found[key][0] for _, key in stages}


def reset_classifier(
    model: nn.Module, variables, num_classes: int, rng: jax.Array, input_shape=None
) -> tuple[nn.Module, dict]:
    """The same backbone with a freshly initialized classifier for `num_classes` classes.

    Every parameter outside "head" (and auxiliary heads, "aux*") keeps its value; those are
    initialized anew. `input_shape` (N, H, W, C) defaults to 1 x 224 x 224 x in_channels and only
    has to be valid for the model.
    """
    new_model = model.clone(num_classes=num_classes)
    if input_shape is None:
        input_shape = (1, 224, 224, model.in_channels)
    fresh = jax.jit(lambda key: new_model.init(key, jnp.zeros(input_shape), train=False))(rng)
    params = dict(variables["params"])
    for name, value in fresh["params"].items():
        if name == "head" or name.startswith("aux") or name not in params:
            params[name] = value
    return new_model, {**variables, "params": params}
