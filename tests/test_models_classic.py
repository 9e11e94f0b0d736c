"""LeNet-5, AlexNet and VGG: exact parameter counts, shapes, and each family's own behaviour."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cvjax import models
from cvjax.errors import UserError
from cvjax.models import __main__ as table
from cvjax.models.layers import adaptive_avg_pool
from cvjax.models.lenet import C3_TABLE, ConnectionTableConv, pad_background, scaled_tanh
from cvjax.models.vgg import local_response_norm
from tests.model_checks import check_count_and_output_shape, check_train_step

REFERENCE_PARAMS = {
    # LeCun et al. 1998, Sec. II.B: C1 156 + S2 12 + C3 1,516 + S4 32 + C5 48,120 + F6 10,164
    # = 60,000, plus a linear head 84 * 10 + 10 = 850 in place of the fixed RBF units.
    "lenet5": 60_850,
    # torchvision (pytorch/vision torchvision/models/alexnet.py, vgg.py).
    "alexnet": 61_100_840,
    "vgg11": 132_863_336,
    "vgg11_bn": 132_868_840,
    "vgg13": 133_047_848,
    "vgg13_bn": 133_053_736,
    "vgg16": 138_357_544,
    "vgg16_bn": 138_365_992,
    "vgg19": 143_667_240,
    "vgg19_bn": 143_678_248,
    # Simonyan & Zisserman 2015, Table 2 (133M for A and A-LRN, 134M for C); exact counts from the
    # architecture: LRN has no parameters, so A-LRN = vgg11. C = D (vgg16) with the last 3x3
    # convolution of stages 3-5 made 1x1, which removes 8 * 256 * 256 + 8 * 512 * 512 * 2
    # = 524,288 + 2 * 2,097,152 = 4,718,592 weights: 138,357,544 - 4,718,592 = 133,638,952.
    "vgg11_lrn": 132_863_336,
    "vgg16_c": 133_638_952,
}


def _variables(model, x):
    return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x))


def _size(tree) -> int:
    return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(tree))


@pytest.mark.parametrize("name", sorted(REFERENCE_PARAMS))
def test_parameter_count_and_output_shape(name):
    out = check_count_and_output_shape(name, REFERENCE_PARAMS[name])
    assert out.dtype == jnp.float32


def test_lenet5_layers_have_the_papers_parameter_counts():
    _, variables, _ = table.abstract_variables("lenet5")
    sizes = {name: _size(tree) for name, tree in variables["params"].items()}
    assert sizes == dict(C1=156, S2=12, C3=1516, S4=32, C5=48120, F6=10164, head=850)
    assert models.model_info("lenet5")["in_channels"] == 1
    assert table.count_params("lenet5", c3_table=False) == 60_850 + 900  # C3: 16 * 151.
    assert table.count_params("lenet5", subsampling="avg") == 60_850 - 44
    with pytest.raises(UserError, match="unknown subsampling"):
        table.count_params("lenet5", subsampling="max")


def test_lenet5_c3_follows_table_1():
    # Table I by rows (S2 maps): the columns (C3 maps) each one feeds.
    rows = {
        0: {0, 4, 5, 6, 9, 10, 11, 12, 14, 15},
        1: {0, 1, 5, 6, 7, 10, 11, 12, 13, 15},
        2: {0, 1, 2, 6, 7, 8, 11, 13, 14, 15},
        3: {1, 2, 3, 6, 7, 8, 9, 12, 14, 15},
        4: {2, 3, 4, 7, 8, 9, 10, 12, 13, 15},
        5: {3, 4, 5, 8, 9, 10, 11, 13, 14, 15},
    }
    assert {i: {j for j, ins in enumerate(C3_TABLE) if i in ins} for i in range(6)} == rows
    layer = ConnectionTableConv()
    variables = layer.init(jax.random.PRNGKey(0), jnp.zeros((1, 5, 5, 6)))
    for i in range(6):
        x = jnp.zeros((1, 5, 5, 6)).at[..., i].set(1.0)
        reached = np.flatnonzero(np.abs(layer.apply(variables, x) - layer.apply(variables, 0 * x)))
        assert set(reached.tolist()) == rows[i]


def test_lenet5_pads_mnist_to_32_and_squashes_like_the_paper():
    assert float(scaled_tanh(jnp.array(1.0))) == pytest.approx(1.0, abs=1e-4)
    model = models.create("lenet5", pad=2)
    x = jnp.zeros((2, 28, 28, 1))
    variables = _variables(model, x)
    maps = jax.eval_shape(lambda v: models.feature_maps(model, v, x), variables)
    assert maps["stage1"].shape == (2, 14, 14, 6)  # C1 on 32x32 -> 28x28, S2 -> 14x14.
    with pytest.raises(UserError, match="pad=2"):
        _variables(models.create("lenet5"), x)
    # The padding is background: the image's minimum (after normalization), not zero.
    image = jnp.full((1, 2, 2, 1), 3.0).at[0, 0, 0, 0].set(-1.0)
    np.testing.assert_array_equal(pad_background(image, 1)[0, :, 1, 0], [-1, -1, 3, -1])


def test_adaptive_avg_pool_matches_torch_bins():
    x = jnp.arange(8.0)[None, :, None, None] * jnp.ones((1, 8, 8, 1))
    pooled = adaptive_avg_pool(x, 7)
    # torch bins for 8 -> 7: [0, 2), [1, 3), [2, 4), [3, 5), [4, 6), [5, 7), [6, 8).
    np.testing.assert_allclose(pooled[0, :, 0, 0], np.arange(7) + 0.5)
    np.testing.assert_allclose(adaptive_avg_pool(jnp.ones((1, 1, 1, 2)), 7), jnp.ones((1, 7, 7, 2)))


def test_local_response_norm_is_alexnets_formula():
    x = jax.random.normal(jax.random.PRNGKey(0), (1, 2, 2, 8)) * 30
    expected = np.zeros(x.shape)
    a = np.asarray(x)
    for c in range(8):
        window = (a[..., max(0, c - 2) : c + 3] ** 2).sum(-1)
        expected[..., c] = a[..., c] / (2.0 + 1e-4 * window) ** 0.75
    np.testing.assert_allclose(local_response_norm(x), expected, rtol=1e-5)


def test_parameter_names_follow_torchvision():
    _, variables, _ = table.abstract_variables("vgg16_bn")
    convs = [0, 3, 7, 10, 14, 17, 20, 24, 27, 30, 34, 37, 40]
    expected = {f"features_{i}" for i in convs} | {f"features_{i + 1}" for i in convs}
    assert set(variables["params"]) == expected | {"classifier_0", "classifier_3", "head"}
    _, variables, _ = table.abstract_variables("alexnet")
    assert set(variables["params"]) == {f"features_{i}" for i in (0, 3, 6, 8, 10)} | {
        "classifier_1",
        "classifier_4",
        "head",
    }
    assert variables["params"]["classifier_1"]["kernel"].shape == (6, 6, 256, 4096)
    _, variables, _ = table.abstract_variables("vgg16_c")
    kernels = {k: v["kernel"].shape[:2] for k, v in variables["params"].items() if "features" in k}
    assert [k for k, s in kernels.items() if s == (1, 1)] == [
        "features_14",
        "features_21",
        "features_28",
    ]


@pytest.mark.parametrize(
    "name, size, expected",
    [("lenet5", 64, (1, 9, 9, 7)), ("alexnet", 288, (1, 3, 3, 7)), ("vgg16", 448, (1, 8, 8, 7))],
)
def test_without_global_pool_a_larger_input_gives_a_map_of_logits(name, size, expected):
    model = models.create(name, num_classes=7, global_pool=False)
    channels = models.model_info(name)["in_channels"]
    base = models.model_info(name)["input_size"]
    variables = _variables(model, jnp.zeros((1, base, base, channels)))
    out = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((1, size, size, channels))), variables)
    assert out.shape == expected
    pooled = models.create(name, num_classes=7)  # torchvision's adaptive pooling: any size works.
    out = jax.eval_shape(lambda v: pooled.apply(v, jnp.zeros((1, size, size, channels))), variables)
    assert out.shape == (1, 7)


@pytest.mark.parametrize(
    "name, kwargs, params",
    [
        # bearpaw/pytorch-classification models/cifar/alexnet.py (README: 2.47M).
        ("alexnet", dict(cifar_stem=True, fc_width=0), 2_472_266),
        ("alexnet", dict(cifar_stem=True), None),
        # kuangliu/pytorch-cifar VGG16: vgg16 convolutions 14,714,688 + BatchNorm 8,448 + head
        # 512 * 10 + 10 = 5,130.
        ("vgg16_bn", dict(cifar=True, drop_rate=0.0), 14_728_266),
        ("vgg11", dict(cifar=True, fc_width=512), None),
        ("lenet5", dict(in_channels=3), 61_150),  # C1 sees 3 channels: +2 * 6 * 25.
    ],
)
def test_cifar_options_run_at_32(name, kwargs, params):
    model = models.create(name, num_classes=10, **kwargs)
    x = jnp.zeros((2, 32, 32, model.in_channels))
    variables = _variables(model, x)
    assert jax.eval_shape(lambda v: model.apply(v, x), variables).shape == (2, 10)
    if params is not None:
        assert _size(variables["params"]) == params


@pytest.mark.parametrize(
    "name, size, stages, embedding",
    [
        ("lenet5", 32, [(14, 6), (5, 16), (1, 84)], 84),
        ("alexnet", 224, [(27, 64), (13, 192), (6, 256), (1, 4096)], 4096),
        (
            "vgg16",
            224,
            [(112, 64), (56, 128), (28, 256), (14, 512), (7, 512), (1, 4096)],
            4096,
        ),
    ],
)
def test_feature_maps_and_pooled_embedding(name, size, stages, embedding):
    model = models.create(name)
    x = jnp.zeros((2, size, size, model.in_channels))
    variables = _variables(model, x)
    maps = jax.eval_shape(lambda v: models.feature_maps(model, v, x), variables)
    assert list(maps) == [f"stage{i + 1}" for i in range(len(stages))]
    assert [m.shape for m in maps.values()] == [(2, s, s, c) for s, c in stages]
    pooled = jax.eval_shape(lambda v: models.forward_features(model, v, x), variables)
    assert pooled.shape == (2, embedding)


@pytest.mark.parametrize(
    "name, kwargs, size",
    [
        ("lenet5", dict(), 32),
        ("lenet5", dict(subsampling="avg", c3_table=False), 32),
        ("alexnet", dict(cifar_stem=True, widths=(4, 8, 8, 8, 8), fc_width=16), 32),
        (
            "vgg11",
            dict(
                stage_sizes=(1, 2),
                widths=(4, 8),
                use_bn=True,
                lrn=True,
                pool_size=2,
                fc_width=16,
                last_conv_1x1=True,
            ),  # fmt: skip
            16,
        ),
    ],
    ids=["lenet5", "lenet5_avg_full", "alexnet_cifar", "vgg_tiny_bn_lrn"],
)
def test_tiny_forward_backward(name, kwargs, size):
    model = models.create(name, num_classes=5, drop_rate=0.1, **kwargs)
    x = jax.random.normal(jax.random.PRNGKey(1), (4, size, size, model.in_channels))
    check_train_step(model, x, require_batch_stats=False)
