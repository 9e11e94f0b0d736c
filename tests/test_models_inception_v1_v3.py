"""GoogLeNet and Inception-v3: exact counts, CIFAR and fully convolutional shapes, aux heads."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cvjax import models
from cvjax.models import __main__ as table
from cvjax.models.googlenet import aux_pool
from cvjax.models.layers import adaptive_avg_pool, max_pool_ceil
from cvjax.train.state import create_train_state
from cvjax.train.steps import loss_and_grads
from tests.model_checks import check_step_results

# Without auxiliary heads: torchvision googlenet(aux_logits=False) and timm inception_v3
# (torchvision's inception_v3 counts its aux head by default).
REFERENCE_PARAMS = {
    "googlenet": 6_624_904,
    "inception_v3": 23_834_568,
}
# With auxiliary heads: torchvision googlenet(aux_logits=True) (two heads) and inception_v3().
WITH_AUX_PARAMS = {
    "googlenet": 13_004_888,
    "inception_v3": 27_161_264,
}
AUX_NAMES = {"googlenet": {"aux1", "aux2"}, "inception_v3": {"aux"}}
# Map sizes per stage at the default input, then with cifar_stem=True at 32x32.
STAGES = {
    "googlenet": ([112, 56, 28, 14, 7], [32, 32, 32, 16, 8], [64, 192, 480, 832, 1024]),
    "inception_v3": ([147, 71, 35, 17, 8], [32, 32, 32, 15, 7], [64, 192, 288, 768, 2048]),
}


def _abstract(name, size, **kwargs):
    model = models.create(name, **kwargs)
    x = jnp.zeros((2, size, size, 3))
    return model, jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x)), x


@pytest.mark.parametrize("name", sorted(REFERENCE_PARAMS))
def test_parameter_counts_without_and_with_aux_heads(name):
    assert table.count_params(name) == REFERENCE_PARAMS[name]
    model, variables, shape = table.abstract_variables(name)
    out = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((2, *shape[1:]))), variables)
    assert out.shape == (2, 1000)
    assert not any(key.startswith("aux") for key in variables["params"])
    assert table.count_params(name, aux_logits=True) == WITH_AUX_PARAMS[name]
    _, with_aux, _ = table.abstract_variables(name, aux_logits=True)
    assert set(with_aux["params"]) - set(variables["params"]) == AUX_NAMES[name]


@pytest.mark.parametrize("name", sorted(REFERENCE_PARAMS))
def test_cifar_stem_and_aux_heads_run_at_32_in_bfloat16(name):
    model, variables, x = _abstract(
        name, 32, num_classes=10, cifar_stem=True, aux_logits=True, dtype=jnp.bfloat16
    )
    assert {p.dtype for p in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
    logits, state = jax.eval_shape(
        lambda v: model.apply(
            v, x, train=True, mutable=["batch_stats", "aux"], rngs={"dropout": jax.random.key(1)}
        ),
        variables,
    )
    assert logits.shape == (2, 10)
    aux = state["aux"]["logits"]
    assert [a.shape for a in aux] == [(2, 10)] * len(AUX_NAMES[name])
    assert {a.dtype for a in (logits, *aux)} == {jnp.dtype(jnp.float32)}
    _, eval_state = jax.eval_shape(lambda v: model.apply(v, x, mutable=["aux"]), variables)
    assert not eval_state.get("aux")  # Sown in training only.


@pytest.mark.parametrize(
    ("name", "size", "grid"), [("googlenet", 448, 14), ("inception_v3", 598, 17)]
)
def test_without_global_pool_a_larger_input_gives_a_map_of_logits(name, size, grid):
    model, variables, _ = _abstract(name, size // 2, num_classes=7, global_pool=False)
    out = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((1, size, size, 3))), variables)
    assert out.shape == (1, grid, grid, 7)


@pytest.mark.parametrize("name", sorted(REFERENCE_PARAMS))
@pytest.mark.parametrize("cifar", [False, True], ids=["default", "cifar"])
def test_feature_maps_and_pooled_embedding(name, cifar):
    imagenet_sizes, cifar_sizes, channels = STAGES[name]
    size = 32 if cifar else models.model_info(name)["input_size"]
    model, variables, x = _abstract(name, size, cifar_stem=cifar)
    maps = jax.eval_shape(lambda v: models.feature_maps(model, v, x), variables)
    sizes = cifar_sizes if cifar else imagenet_sizes
    assert list(maps) == [f"stage{i}" for i in range(1, 6)]
    assert [m.shape for m in maps.values()] == [
        (2, s, s, c) for s, c in zip(sizes, channels, strict=True)
    ]
    embedding = jax.eval_shape(lambda v: models.forward_features(model, v, x), variables)
    assert embedding.shape == (2, channels[-1])


def test_googlenet_paper_5x5_branch():
    _, variables, _ = _abstract("googlenet", 224, branch3_kernel=5)
    assert variables["params"]["inception3a"]["branch3_1"]["Conv_0"]["kernel"].shape == (
        5,
        5,
        16,
        32,
    )


# Compiling is most of these tests' time on CPU; the values they check need no optimized code.
_FAST_COMPILE = {"xla_backend_optimization_level": 0}


@pytest.mark.parametrize("name", sorted(REFERENCE_PARAMS))
def test_tiny_train_step_adds_the_aux_loss(name):
    """loss_and_grads with aux_loss_weight: a larger loss, gradients reaching the aux heads."""
    model = models.create(
        name, num_classes=5, cifar_stem=True, aux_logits=True, width_multiplier=1 / 16
    )
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 16, 16, 3))
    y = jnp.array([0, 1, 2, 3])
    init = jax.jit(
        lambda key: create_train_state(model, optax.sgd(0.1), key, x.shape),
        compiler_options=_FAST_COMPILE,
    )
    state = init(jax.random.PRNGKey(0))
    step = jax.jit(
        lambda state: loss_and_grads(
            model, state, x, y, jax.random.PRNGKey(2), 0.0, aux_loss_weight=0.3
        ),
        compiler_options=_FAST_COMPILE,
    )
    loss, grads, (logits, per_example, batch_stats) = step(state)
    # per_example is the main head's cross-entropy: the aux heads add 0.3 x theirs on top.
    assert float(loss) > float(per_example.mean()) > 0
    check_step_results(grads, state.batch_stats, batch_stats, loss=loss, all_grads_nonzero=False)
    for aux in AUX_NAMES[name]:
        assert all(float(jnp.abs(g).sum()) > 0 for g in jax.tree.leaves(grads[aux]))
    assert float(jnp.abs(grads["head"]["fc"]["kernel"]).sum()) > 0
    chex.assert_shape(logits, (4, 5))  # The aux logits are sown, never returned.
    eval_logits = jax.eval_shape(lambda v: model.apply(v, x), state.variables())
    chex.assert_shape(eval_logits, (4, 5))


def test_pooling_helpers_follow_pytorch():
    row = jnp.arange(14.0).reshape(1, 14, 1, 1) * jnp.ones((1, 1, 14, 1))
    # adaptive_avg_pool2d(14 -> 4) windows: [0, 4), [3, 7), [7, 11), [10, 14).
    np.testing.assert_allclose(adaptive_avg_pool(row, 4)[0, :, 0, 0], [1.5, 4.5, 8.5, 11.5])
    # Sec. 5's 5x5/3 pool on 14x14: [0, 5), [3, 8), [6, 11), [9, 14).
    np.testing.assert_allclose(aux_pool(row, 4)[0, :, 0, 0], [2.0, 5.0, 8.0, 11.0])
    # ceil_mode: 3x3/2 on 6 gives 3 outputs (floor mode 2), the last window clipped.
    six = jnp.arange(6.0).reshape(1, 6, 1, 1) * jnp.ones((1, 1, 6, 1))
    np.testing.assert_allclose(max_pool_ceil(six, 3, 2)[0, :, 0, 0], [2.0, 4.0, 5.0])
    assert max_pool_ceil(jnp.zeros((1, 112, 112, 1)), 3, 2).shape == (1, 56, 56, 1)
    assert max_pool_ceil(jnp.zeros((1, 5, 5, 1)), 3, 1, 1).shape == (1, 5, 5, 1)
