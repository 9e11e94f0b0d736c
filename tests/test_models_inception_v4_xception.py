"""Inception-v4, Inception-ResNet-v2 and Xception: exact counts, shapes, CIFAR stems, behaviour."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cvjax import models
from cvjax.models import __main__ as table
from cvjax.models.inception_v4 import InceptionResidual
from tests.model_checks import check_train_step

# timm (huggingface/pytorch-image-models): inception_v4, inception_resnet_v2 and legacy_xception
# (Cadene's port of the Keras Xception), ImageNet-1k heads.
REFERENCE_PARAMS = {
    "inception_v4": 42_679_816,
    "inception_resnet_v2": 55_843_464,
    "xception": 22_855_952,
}

# Channels and sides of the five sown stages at the default 299x299 and with cifar_stem at 32x32.
STAGES = {
    "inception_v4": ([64, 192, 384, 1024, 1536], [147, 71, 35, 17, 8], [32, 32, 16, 7, 3]),
    "inception_resnet_v2": ([64, 192, 320, 1088, 1536], [147, 71, 35, 17, 8], [32, 32, 16, 7, 3]),
    "xception": ([64, 128, 256, 728, 2048], [147, 74, 37, 19, 10], [32, 32, 16, 8, 4]),
}


def _key(seed: int) -> jax.Array:
    # XLA's RngBitGenerator: an initialization compiles in a fraction of threefry's time.
    return jax.random.key(seed, impl="unsafe_rbg")


@functools.cache
def _abstract(name: str):
    """The default model's variable shapes; every option tested below keeps them."""
    model = models.create(name)
    return jax.eval_shape(lambda: model.init(_key(0), jnp.zeros((1, 299, 299, 3))))


@pytest.mark.parametrize("name", sorted(REFERENCE_PARAMS))
def test_parameter_count_and_output_shape(name):
    assert table.count_params(name) == REFERENCE_PARAMS[name]
    model = models.create(name)
    out = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((2, 299, 299, 3))), _abstract(name))
    assert out.shape == (2, 1000) and out.dtype == jnp.float32


@pytest.mark.parametrize("name", sorted(REFERENCE_PARAMS))
def test_feature_maps_and_pooled_embedding(name):
    model = models.create(name)
    x = jnp.zeros((2, 299, 299, 3))
    maps = jax.eval_shape(lambda v: models.feature_maps(model, v, x), _abstract(name))
    channels, sides, _ = STAGES[name]
    assert list(maps) == [f"stage{i}" for i in range(1, 6)]
    assert [m.shape for m in maps.values()] == [
        (2, s, s, c) for s, c in zip(sides, channels, strict=True)
    ]
    pooled = jax.eval_shape(lambda v: models.forward_features(model, v, x), _abstract(name))
    assert pooled.shape == (2, channels[-1])


@pytest.mark.parametrize("name", sorted(REFERENCE_PARAMS))
def test_cifar_stem_keeps_a_map_through_every_reduction(name):
    # The same layers and parameters as the ImageNet model, fewer early reductions.
    model = models.create(name, cifar_stem=True)
    x = jnp.zeros((2, 32, 32, 3))
    out, state = jax.eval_shape(
        lambda v: model.apply(v, x, mutable=["intermediates"]), _abstract(name)
    )
    assert out.shape == (2, 1000)
    sides = [state["intermediates"][f"stage{i}"][0].shape[1] for i in range(1, 6)]
    assert sides == STAGES[name][2]


@pytest.mark.parametrize("name", sorted(REFERENCE_PARAMS))
def test_without_global_pool_a_larger_input_gives_a_map_of_logits(name):
    model = models.create(name, global_pool=False)
    out = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((1, 598, 598, 3))), _abstract(name))
    side = {"xception": 19}.get(name, 17)
    assert out.shape == (1, side, side, 1000)


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("inception_resnet_v2", dict(depths=(1, 1, 1), drop_path_rate=0.2)),
        ("xception", dict(middle_blocks=1)),
    ],
)
def test_tiny_forward_backward(name, kwargs):
    # One compiled model per file: Inception-ResNet-v2 also runs Inception-v4's block kinds.
    model = models.create(
        name, num_classes=5, cifar_stem=True, width=1 / 16, drop_rate=0.1, **kwargs
    )
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 16, 16, 3))
    variables = jax.jit(lambda key: model.init(key, x))(_key(0))
    check_train_step(model, x, variables, rng=_key(2), all_grads_nonzero=False, eval_mode="shape")


def test_residual_block_relu_drop_path_and_unactivated_last_block():
    x = jax.random.normal(jax.random.PRNGKey(0), (8, 4, 4, 12))
    block = InceptionResidual("block8", 0.2, width=1 / 32, drop_path_rate=0.5)
    variables = block.init(_key(1), x, train=False)
    y = block.apply(variables, x, train=False)
    assert float(y.min()) >= 0.0 and y.shape == x.shape
    # Drop path: a dropped sample's output is exactly relu(x); the others differ.
    y_train, _ = block.apply(
        variables, x, train=True, mutable=["batch_stats"], rngs={"dropout": _key(3)}
    )
    relu_x = jax.nn.relu(x)
    dropped = np.array([np.array_equal(a, b) for a, b in zip(y_train, relu_x, strict=True)])
    assert dropped.any() and not dropped.all()
    # Inception-ResNet-v2's last block (scale 1, no ReLU; same parameters) can output negatives.
    last = InceptionResidual("block8", 1.0, activate=False, width=1 / 32)
    assert float(last.apply(variables, x, train=False).min()) < 0.0


def test_inception_resnet_v2_layout():
    params = _abstract("inception_resnet_v2")["params"]
    assert len([k for k in params if k.startswith(("repeat", "block8"))]) == 10 + 20 + 10
    assert params["repeat_0"]["conv2d"]["bias"].shape == (320,)  # The up-projection has a bias.
    assert "bias" not in params["repeat_0"]["branch0"]["Conv_0"]  # Conv-BN layers have none.


def test_xception_layout_follows_the_reference():
    params = _abstract("xception")["params"]
    # No leading ReLU in block1: its separable convs sit at timm's rep.0 / rep.3, else rep.1 / 4.
    assert {"rep_0", "rep_1", "rep_3", "rep_4", "skip", "skipbn"} == set(params["block1"])
    assert {"rep_1", "rep_2", "rep_4", "rep_5", "skip", "skipbn"} == set(params["block2"])
    # Middle flow: three 728-wide separable convs, identity shortcut.
    assert {"rep_1", "rep_2", "rep_4", "rep_5", "rep_7", "rep_8"} == set(params["block11"])
    assert params["block11"]["rep_1"]["depthwise"]["kernel"].shape == (3, 3, 1, 728)
    assert params["block11"]["rep_1"]["pointwise"]["kernel"].shape == (1, 1, 728, 728)
    # Exit flow grows on its last separable conv (728 -> 728 -> 1024).
    assert params["block12"]["rep_1"]["pointwise"]["kernel"].shape == (1, 1, 728, 728)
    assert params["block12"]["rep_4"]["pointwise"]["kernel"].shape == (1, 1, 728, 1024)
