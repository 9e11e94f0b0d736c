"""DenseNet and FractalNet: exact parameter counts, shapes, features, training, drop-path."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cvjax import models
from cvjax.models import __main__ as table
from cvjax.models.densenet import DenseNet
from cvjax.models.fractalnet import ConvUnit, FractalNet, local_keep_mask
from tests.model_checks import check_train_step, train_step

REFERENCE_PARAMS = {
    # torchvision.models.densenet* (ImageNet, 1000 classes).
    "densenet121": 7_978_856,
    "densenet161": 28_681_000,
    "densenet169": 14_149_480,
    "densenet201": 20_013_928,
    # Table 1 of Huang et al. 2017 (k = 32, blocks 6-12-64-48, 7x7 stem). timm has no such model
    # (only densenet264d: k = 48 and a deep stem), so this is the torchvision-style arithmetic of
    # `densenet_arithmetic` below; the test checks that arithmetic against the four above.
    "densenet264": 33_337_704,
    # CIFAR-10 DenseNet-BC; osmr/imgclsmob (densenet100_k12_bc_cifar10: 769,162;
    # densenet250_k24_bc_cifar10: 15,324,406), a port of the authors' Torch code
    # (liuzhuang13/DenseNet, models/densenet.lua) with bias-free convolutions as in cuDNN >= 4
    # there. The paper's Table 2 rounds them to 0.8M and 15.3M.
    "densenet_bc_100_k12": 769_162,
    "densenet_bc_250_k24": 15_324_406,
    # FractalNet, CIFAR-10, B = 5, C = 3 (20 layers): osmr/imgclsmob fractalnet_cifar10
    # (33,724,618). Arithmetic, channels (64, 128, 256, 512, 512), 3x3 kernels: a block with
    # input c_in and width w has C = 3 first units (c_in -> w) and 2^C - 1 - C = 4 inner ones
    # (w -> w); each unit is 9 * c_in * w weights + 2w BatchNorm scale/bias:
    #   block1  3 * (9*3*64     + 128)  + 4 * (9*64*64   + 128)  =    153_536
    #   block2  3 * (9*64*128   + 256)  + 4 * (9*128*128 + 256)  =    812_800
    #   block3  3 * (9*128*256  + 512)  + 4 * (9*256*256 + 512)  =  3_247_616
    #   block4  3 * (9*256*512  + 1024) + 4 * (9*512*512 + 1024) = 12_983_296
    #   block5  7 * (9*512*512  + 1024)                          = 16_522_240
    #   head    512 * 10 + 10                                    =      5_130
    # total 33,724,618. The paper's Table 1 says 38.6M for this 20-layer network; neither the
    # authors' Caffe generator (gustavla/fractalnet: 33,714,314 with conv biases and
    # affine-free BatchNorm) nor any port reaches it (khanrc/pt.fractalnet's notes: 33.7M; 38.9M
    # only after adding 1x1 channel-doubling convolutions that the paper does not describe).
    # The brief's "C = 4 (20 layers)" is inconsistent: depth is B * 2^(C-1), so C = 4 is 40
    # layers (76,106,634 parameters with these widths).
    "fractalnet": 33_724_618,
}


def densenet_arithmetic(blocks, k, stem, bn_size=4, classes=1000, stem_kernel=7, stem_norm=True):
    """Parameters of a DenseNet-BC counted by hand: convs without bias, BN scale + bias."""
    count = stem_kernel**2 * 3 * stem + (2 * stem if stem_norm else 0)
    channels = stem
    for i, layers in enumerate(blocks):
        for _ in range(layers):
            width = bn_size * k
            count += 2 * channels + channels * width + 2 * width + 9 * width * k
            channels += k
        if i < len(blocks) - 1:
            count += 2 * channels + channels * (channels // 2)
            channels //= 2
    return count + 2 * channels + channels * classes + classes


def test_every_family_model_has_a_reference_count():
    family = set(models.list_models("densenet*")) | set(models.list_models("fractalnet*"))
    assert family == set(REFERENCE_PARAMS)


def test_densenet_arithmetic_reproduces_torchvision_and_gives_densenet264():
    assert densenet_arithmetic((6, 12, 24, 16), 32, 64) == REFERENCE_PARAMS["densenet121"]
    assert densenet_arithmetic((6, 12, 36, 24), 48, 96) == REFERENCE_PARAMS["densenet161"]
    assert densenet_arithmetic((6, 12, 32, 32), 32, 64) == REFERENCE_PARAMS["densenet169"]
    assert densenet_arithmetic((6, 12, 48, 32), 32, 64) == REFERENCE_PARAMS["densenet201"]
    assert densenet_arithmetic((6, 12, 64, 48), 32, 64) == REFERENCE_PARAMS["densenet264"]
    bc100 = densenet_arithmetic((16,) * 3, 12, 24, classes=10, stem_kernel=3, stem_norm=False)
    assert bc100 == REFERENCE_PARAMS["densenet_bc_100_k12"]


@pytest.mark.parametrize("name", sorted(REFERENCE_PARAMS))
def test_parameter_count_and_output_shape(name):
    # One trace gives both (what `table.count_params` counts, and the logits): these are deep.
    info = models.model_info(name)
    model = models.create(name)
    x = jnp.zeros((2, info["input_size"], info["input_size"], 3))
    out, variables = jax.eval_shape(lambda: model.init_with_output(jax.random.PRNGKey(0), x))
    assert (
        sum(int(np.prod(p.shape)) for p in jax.tree.leaves(variables["params"]))
        == (REFERENCE_PARAMS[name])
    )
    assert out.shape == (2, info["num_classes"])


def test_count_params_agrees():
    assert table.count_params("densenet_bc_100_k12") == REFERENCE_PARAMS["densenet_bc_100_k12"]


def _abstract(model, size):
    x = jnp.zeros((2, size, size, model.in_channels))
    return x, jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x))


@pytest.mark.parametrize(
    "name, kwargs, size, stages",
    [
        ("densenet121", {}, 224, [(56, 256), (28, 512), (14, 1024), (7, 1024)]),
        ("densenet121", {"cifar_stem": True}, 32, [(32, 256), (16, 512), (8, 1024), (4, 1024)]),
        ("densenet_bc_100_k12", {}, 32, [(32, 216), (16, 300), (8, 342)]),
        ("fractalnet", {}, 32, [(16, 64), (8, 128), (4, 256), (2, 512), (1, 512)]),
    ],
)
def test_feature_maps_and_pooled_embedding(name, kwargs, size, stages):
    model = models.create(name, num_classes=10, **kwargs)
    x, variables = _abstract(model, size)
    maps = jax.eval_shape(lambda v: models.feature_maps(model, v, x), variables)
    assert list(maps) == [f"stage{i + 1}" for i in range(len(stages))]
    assert [m.shape for m in maps.values()] == [(2, s, s, c) for s, c in stages]
    embedding = jax.eval_shape(lambda v: models.forward_features(model, v, x), variables)
    assert embedding.shape == (2, stages[-1][1])


@pytest.mark.parametrize(
    "name, size, larger, grid", [("densenet121", 224, 448, 14), ("fractalnet", 32, 64, 2)]
)
def test_without_global_pool_a_larger_input_gives_a_map_of_logits(name, size, larger, grid):
    model = models.create(name, num_classes=7, global_pool=False)
    _, variables = _abstract(model, size)
    out = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((1, larger, larger, 3))), variables)
    assert out.shape == (1, grid, grid, 7)


TINY = {
    "densenet": lambda **kw: DenseNet(
        block_sizes=(2, 2), growth_rate=4, stem_width=8, cifar_stem=True, block_dropout=0.1, **kw
    ),
    # Local drop-path only: a global batch leaves off-path units' BatchNorm means unchanged.
    "fractalnet": lambda **kw: FractalNet(
        widths=(4, 8), block_dropout=(0.1, 0.1), global_drop_ratio=0.0, local_drop_rate=0.5, **kw
    ),
}


@pytest.mark.parametrize("kind", sorted(TINY))
def test_tiny_forward_backward(kind):
    model = TINY[kind](num_classes=5, drop_rate=0.1)
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 16, 16, 3))
    check_train_step(model, x, all_grads_nonzero=False)


def test_densenet_remat_changes_memory_not_results():
    model = TINY["densenet"](num_classes=3)
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 16, 16, 3))
    variables = model.init(jax.random.PRNGKey(0), x)
    rng = jax.random.PRNGKey(2)
    plain = train_step(model, x, eval_mode=None)(variables, rng)
    remat = train_step(model.clone(remat=True), x, eval_mode=None)(variables, rng)
    chex.assert_trees_all_close(plain.logits, remat.logits, atol=1e-5)  # Same dropout masks too.
    chex.assert_trees_all_close(plain.grads, remat.grads, atol=1e-5)


def _tiny_fractal(**kw):
    return FractalNet(widths=(4, 8), block_dropout=(0.0, 0.0), num_classes=3, **kw)


def _single_column(variables, x, column, columns=3):
    """Column `column` of every block run alone, unit by unit, then the head: a plain chain."""
    params, stats = variables["params"], variables["batch_stats"]
    for b, width in enumerate((4, 8)):
        block = f"block{b + 1}"
        for n in range(2**column):
            unit = f"col{column}_conv{n + 1}"
            x = ConvUnit(width).apply(
                {"params": params[block][unit], "batch_stats": stats[block][unit]}, x, False
            )
        x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
    x = jnp.mean(x, axis=(1, 2))
    head = params["head"]["fc"]
    return x @ head["kernel"] + head["bias"]


def test_forced_column_is_that_column_computed_alone():
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 16, 16, 3))
    variables = _tiny_fractal().init(jax.random.PRNGKey(0), x)
    for column in range(3):
        out = _tiny_fractal(column=column).apply(variables, x, train=False)
        np.testing.assert_allclose(out, _single_column(variables, x, column), rtol=1e-5, atol=1e-5)


def test_global_drop_path_runs_one_column_for_the_whole_network():
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 16, 16, 3))
    variables = _tiny_fractal().init(jax.random.PRNGKey(0), x)

    def train_out(model, seed):
        rngs = {"dropout": jax.random.PRNGKey(seed)}
        return model.apply(variables, x, train=True, rngs=rngs, mutable=["batch_stats"])[0]

    # Train-mode BatchNorm uses batch statistics: a forced column is deterministic here too.
    per_column = [train_out(_tiny_fractal(column=c), 0) for c in range(3)]
    chosen = set()
    for seed in range(8):
        out = train_out(_tiny_fractal(global_drop_ratio=1.0), seed)
        matches = [c for c in range(3) if np.allclose(out, per_column[c], atol=1e-5)]
        assert len(matches) == 1
        chosen.add(matches[0])
    assert len(chosen) > 1  # The column is drawn per mini-batch, not fixed.


def test_local_drop_path_keeps_at_least_one_input():
    keys = jax.random.split(jax.random.PRNGKey(0), 4000)
    for rate in (0.15, 0.9):
        keep = jax.vmap(lambda k, r=rate: local_keep_mask(k, 3, r))(keys)
        assert bool(keep.any(axis=1).all())
    np.testing.assert_allclose(
        jax.vmap(lambda k: local_keep_mask(k, 3, 0.15))(keys).mean(), 0.85, atol=0.02
    )
    assert (jax.vmap(lambda k: local_keep_mask(k, 4, 1.0))(keys).sum(axis=1) == 1).all()


def test_fractalnet_eval_is_deterministic_and_training_is_not():
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 16, 16, 3))
    model = _tiny_fractal(local_drop_rate=0.5)
    variables = model.init(jax.random.PRNGKey(0), x)
    evals = [
        model.apply(variables, x, train=False, rngs={"dropout": jax.random.PRNGKey(s)})
        for s in range(3)
    ]
    for out in evals[1:]:
        np.testing.assert_array_equal(out, evals[0])
    trains = [
        model.apply(
            variables, x, train=True, rngs={"dropout": jax.random.PRNGKey(s)}, mutable=True
        )[0]
        for s in range(6)
    ]
    assert any(not np.allclose(t, trains[0]) for t in trains[1:])
