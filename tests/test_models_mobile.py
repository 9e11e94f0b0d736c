"""MobileNet v1/v2/v3, MnasNet, EfficientNet: counts, shapes, compound scaling, the cost model."""

import importlib.util
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cvjax import models
from cvjax.models import __main__ as table
from cvjax.models import efficientnet, fastconv, layers, mnasnet, mobilenet
from tests.model_checks import check_train_step


def _v1_params(alpha: float, classes: int = 1000) -> int:
    """MobileNet-v1's count in closed form (Howard et al. 2017, Table 1; BatchNorm everywhere)."""
    w = [layers.make_divisible(c * alpha) for c in (32, 64, 128, 128, 256, 256, *[512] * 6)]
    w += [layers.make_divisible(1024 * alpha)] * 2
    total = 27 * w[0] + 2 * w[0]  # 3x3x3 stem, BatchNorm scale and bias.
    for m, n in zip(w[:-1], w[1:], strict=True):
        total += 9 * m + 2 * m + m * n + 2 * n  # Depthwise 3x3 + BN, pointwise 1x1 + BN.
    return total + w[-1] * classes + classes


# torchvision (mobilenet_v2, mobilenet_v3_*, mnasnet*, efficientnet_b*: the weights' num_params);
# timm mobilenetv1_100 = 4,231,976 for mobilenet_v1 (the paper's 4.2M; Howard et al. 2017,
# Table 6: 2.6M, 1.3M, 0.5M for alpha 0.75, 0.5, 0.25), whose alpha < 1 counts are `_v1_params`
# (checked against 4,231,976 below); "efficientnet" is B0's architecture.
REFERENCE_PARAMS = {
    "mobilenet_v1": 4_231_976,
    **{
        f"mobilenet_v1_{a:03d}_{size}": count
        for a, count in ((100, 4_231_976), (75, 2_585_560), (50, 1_331_592), (25, 470_072))
        for size in (224, 192, 160, 128)
    },
    "mobilenet_v2": 3_504_872,
    "mobilenet_v3_large": 5_483_032,
    "mobilenet_v3_small": 2_542_856,
    "mnasnet0_5": 2_218_512,
    "mnasnet1_0": 4_383_312,
    "efficientnet": 5_288_548,
    "efficientnet_b0": 5_288_548,
    "efficientnet_b1": 7_794_184,
    "efficientnet_b2": 9_109_994,
    "efficientnet_b3": 12_233_232,
    "efficientnet_b4": 19_341_616,
    "efficientnet_b5": 30_389_784,
    "efficientnet_b6": 43_040_704,
    "efficientnet_b7": 66_347_960,
}
FAMILIES = ("mobilenet", "mnasnet", "efficientnet")


def _abstract(model, size: int, batch: int = 2):
    x = jnp.zeros((batch, size, size, model.in_channels))
    return x, jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x))


def test_every_family_model_has_a_reference_count():
    names = {n for n in models.list_models() if models.model_info(n)["family"] in FAMILIES}
    assert names == set(REFERENCE_PARAMS)


def test_mobilenet_v1_counts_in_closed_form():
    assert _v1_params(1.0) == 4_231_976  # timm's mobilenetv1_100.
    for alpha in (0.75, 0.5, 0.25):
        assert REFERENCE_PARAMS[f"mobilenet_v1_{round(alpha * 100):03d}_224"] == _v1_params(alpha)


@pytest.mark.parametrize("name", sorted(REFERENCE_PARAMS))
def test_parameter_count_and_output_shape(name):
    model = models.create(name)
    size = models.model_info(name)["input_size"]
    x = jnp.zeros((2, size, size, 3))
    out, variables = jax.eval_shape(lambda: model.init_with_output(jax.random.PRNGKey(0), x))
    assert out.shape == (2, 1000)
    count = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(variables["params"]))
    assert count == REFERENCE_PARAMS[name]


def test_make_divisible_rounds_as_the_reference():
    values = (83, 84, 3, 12, 27, 352, 35.2)  # 27 -> 24 would lose more than 10%: 32.
    assert [layers.make_divisible(v) for v in values] == [80, 88, 8, 16, 32, 352, 32]


def test_compound_scaling_arithmetic_and_the_published_table():
    assert efficientnet.ALPHA * efficientnet.BETA**2 * efficientnet.GAMMA**2 == pytest.approx(
        1.92, abs=0.005
    )  # About 2: FLOPs double per unit of phi (Sec. 3.3).
    assert efficientnet.compound_scaling(0) == (1.0, 1.0, 224, 0.2)
    # phi -> (width 1.1^phi, depth 1.2^phi, 224 x 1.15^phi to a multiple of 8, dropout).
    computed = {p: efficientnet.compound_scaling(p) for p in range(8)}
    expected = {
        1: (1.1, 1.2, 256, 0.2),  # 224 x 1.15 = 257.6
        2: (1.21, 1.44, 296, 0.3),
        3: (1.331, 1.728, 344, 0.3),
        4: (1.4641, 2.0736, 392, 0.4),
        5: (1.61051, 2.48832, 448, 0.4),
        6: (1.771561, 2.985984, 520, 0.5),
        7: (1.9487171, 3.5831808, 592, 0.5),  # 224 x 2.66 = 595.8; B7 uses 600
    }
    for phi, (w, d, size, dropout) in expected.items():
        assert computed[phi].width_mult == pytest.approx(w)
        assert computed[phi].depth_mult == pytest.approx(d)
        assert computed[phi].resolution == size
        assert computed[phi].drop_rate == dropout
    # The published models: the table's dropout is the pattern, but width, depth and resolution
    # were rounded by hand and are not beta^phi etc. (B1 keeps width 1.0 at 240 px).
    published = [efficientnet.PUBLISHED[f"efficientnet_b{p}"] for p in range(8)]
    assert [p.drop_rate for p in published] == [computed[p].drop_rate for p in range(8)]
    assert [(p.width_mult, p.depth_mult, p.resolution) for p in published] == [
        (1.0, 1.0, 224),
        (1.0, 1.1, 240),
        (1.1, 1.2, 260),
        (1.2, 1.4, 300),
        (1.4, 1.8, 380),
        (1.6, 2.2, 456),
        (1.8, 2.6, 528),
        (2.0, 3.1, 600),
    ]
    assert published[1].width_mult != pytest.approx(computed[1].width_mult)
    assert published[7].depth_mult != pytest.approx(computed[7].depth_mult)


def test_width_and_depth_follow_round_filters_and_ceil_repeats():
    """B7 (w 2.0, d 3.1): stem 64, ceil(3.1 n) = 4+7+7+10+10+13+4 = 55 blocks, head 4 x 640."""
    _, variables = _abstract(models.create("efficientnet_b7"), 64, batch=1)
    params = variables["params"]
    assert sum(k.startswith("blocks_") for k in params) == 55
    assert params["conv_stem"]["Conv_0"]["kernel"].shape == (3, 3, 3, 64)
    assert params["conv_head"]["Conv_0"]["kernel"].shape == (1, 1, 640, 2560)
    assert efficientnet.round_repeats(4, 3.1) == 13 and efficientnet.round_filters(40, 1.1) == 48


def test_squeeze_excitation_widths():
    """EfficientNet squeezes the block input / 4; MobileNet-v3 the expanded width / 4, to 8."""
    _, effnet = _abstract(models.create("efficientnet_b0"), 64, batch=1)
    se = effnet["params"]["blocks_1"]["se"]  # 16 -> expanded 96, squeezed to 16 / 4.
    assert se["Conv_0"]["kernel"].shape == (1, 1, 96, 4)
    _, v3 = _abstract(models.create("mobilenet_v3_large"), 64, batch=1)
    se = v3["params"]["blocks_3"]["se"]  # 24 -> expanded 72, squeezed to 72 / 4 = 18 -> 24.
    assert se["Conv_0"]["kernel"].shape == (1, 1, 72, 24)


def test_xla_cost_of_depthwise_separable_and_standard_convolutions():
    """XLA's multiply-adds: D_K^2 M D_F^2 + M N D_F^2 against D_K^2 M N D_F^2 (Howard et al.

    2017, Sec. 3.1). 'VALID' padding on a (D_F + D_K - 1)^2 input: XLA does not count padding.
    """
    k, m, n, d = 3, 16, 32, 10
    shape = (1, d + k - 1, d + k - 1, m)

    def macs(fn, params_fn):
        x = jax.ShapeDtypeStruct(shape, jnp.float32)
        variables = jax.eval_shape(params_fn)
        with fastconv.xla_only():  # As the GMACs column: the convolutions, not their CPU form.
            cost = jax.jit(fn).lower(variables, x).cost_analysis()
        return (cost[0] if isinstance(cost, list) else cost)["flops"] / 2

    depthwise = layers.conv(m, k, groups=m, padding="VALID")
    pointwise = layers.conv(n, 1)
    standard = layers.conv(n, k, padding="VALID")
    x0 = jnp.zeros(shape)
    key = jax.random.PRNGKey(0)
    separable = macs(
        lambda v, x: pointwise.apply(v[1], depthwise.apply(v[0], x)),
        lambda: (depthwise.init(key, x0), pointwise.init(key, jnp.zeros((1, d, d, m)))),
    )
    full = macs(lambda v, x: standard.apply(v, x), lambda: standard.init(key, x0))
    assert separable == k * k * m * d * d + m * n * d * d
    assert full == k * k * m * n * d * d
    assert separable / full == pytest.approx(1 / n + 1 / k**2)  # Sec. 3.1's reduction.


def test_gmacs_column_matches_the_mobilenet_paper():
    """Howard et al. 2017, Table 7: 569M multiply-adds at 224 px, 186M at 128 px (1.0 MobileNet).

    The column adds BatchNorm and activations and drops padded taps: within 3%.
    """
    assert table.gmacs("mobilenet_v1") == pytest.approx(0.569, rel=0.03)
    assert table.gmacs("mobilenet_v1_100_128") == pytest.approx(0.186, rel=0.03)


TINY = {
    "v1": lambda: mobilenet.MobileNetV1(width_mult=0.25, blocks=((64, 1), (128, 2), (128, 1))),
    "v2": lambda: mobilenet.MobileNetV2(
        width_mult=0.25, setting=((1, 16, 1, 1), (6, 24, 2, 2)), drop_path_rate=0.2
    ),
    "v3": lambda: mobilenet.MobileNetV3(
        blocks=mobilenet.V3_SMALL[:3] + mobilenet.V3_SMALL[4:5], last_channel=64, width_mult=0.5
    ),
    "mnasnet": lambda: mnasnet.MNASNet(alpha=0.25, stacks=((24, 3, 2, 3, 2),)),
    "efficientnet": lambda: efficientnet.EfficientNet(
        width_mult=0.25, depth_mult=0.5, stages=efficientnet.B0_STAGES[:3]
    ),
}


@pytest.mark.parametrize("family", sorted(TINY))
def test_tiny_forward_backward(family):
    model = TINY[family]().clone(num_classes=5, drop_rate=0.1, cifar_stem=True)
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 16, 16, 3))
    # Random values in the initializers' shapes: compiling `init` costs more than the step.
    _, shapes = _abstract(model, 16, batch=4)
    rng = np.random.default_rng(0)
    variables = {
        "params": jax.tree.map(lambda s: rng.normal(0, 0.5, s.shape), shapes["params"]),
        "batch_stats": jax.tree.map(lambda s: rng.uniform(0.5, 1, s.shape), shapes["batch_stats"]),
    }
    check_train_step(model, x, jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), variables))


@pytest.mark.parametrize(
    "name", ["mobilenet_v1", "mobilenet_v2", "mobilenet_v3_small", "mnasnet0_5", "efficientnet_b0"]
)
def test_cifar_stem_runs_at_32_with_a_4x4_last_map(name):
    model = models.create(name, num_classes=10, cifar_stem=True)
    x, variables = _abstract(model, 32)
    maps = jax.eval_shape(lambda v: models.feature_maps(model, v, x), variables)
    assert list(maps) == [f"stage{i}" for i in range(1, 6)]
    assert [m.shape[1] for m in maps.values()] == [32, 32, 16, 8, 4]
    assert jax.eval_shape(lambda v: model.apply(v, x), variables).shape == (2, 10)


@pytest.mark.parametrize("name", ["mobilenet_v3_small", "efficientnet_b0"])
def test_without_global_pool_a_larger_input_gives_a_map_of_logits(name):
    model = models.create(name, num_classes=7, global_pool=False)
    _, variables = _abstract(model, 224, batch=1)
    out = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((1, 448, 448, 3))), variables)
    assert out.shape == (1, 14, 14, 7)


def test_feature_maps_and_embedding():
    model = models.create("mobilenet_v2")
    x, variables = _abstract(model, 224)
    maps = jax.eval_shape(lambda v: models.feature_maps(model, v, x), variables)
    assert [m.shape for m in maps.values()] == [
        (2, 112, 112, 16),
        (2, 56, 56, 24),
        (2, 28, 28, 32),
        (2, 14, 14, 96),
        (2, 7, 7, 1280),
    ]
    embedding = jax.eval_shape(lambda v: models.forward_features(model, v, x), variables)
    assert embedding.shape == (2, 1280)
    v3 = models.create("mobilenet_v3_large")  # The embedding is the hidden layer's output.
    x, variables = _abstract(v3, 224)
    assert jax.eval_shape(lambda v: models.forward_features(v3, v, x), variables).shape == (
        2,
        1280,
    )


def _config(name: str, arg: str):
    path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs", f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"{name}_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def test_efficientnet_config_builds_any_phi_from_the_config_alone():
    config = _config("efficientnet", "phi=7.5,dataset=imagenet2012")
    assert config.model == "efficientnet" and config.image_size == 640  # 224 x 1.15^7.5 = 639.6
    assert config.model_kwargs.width_mult == pytest.approx(1.1**7.5)
    assert config.model_kwargs.depth_mult == pytest.approx(1.2**7.5)
    assert config.model_kwargs.drop_rate == 0.5
    model = models.create(config.model, **config.model_kwargs)
    _, variables = _abstract(model, 64, batch=1)
    blocks = sum(k.startswith("blocks_") for k in variables["params"])
    assert blocks == sum(math.ceil(n * 1.2**7.5) for *_, n in efficientnet.B0_STAGES)
    cifar = _config("efficientnet", "phi=0.5")
    assert cifar.image_size == 0 and cifar.model_kwargs.cifar_stem  # 32 x 1.15^0.5 = 34.3: 32
    named = _config("efficientnet", "model=efficientnet_b4,dataset=imagenet2012")
    assert (named.model, named.image_size, named.learning_rate) == ("efficientnet_b4", 380, 0.016)
    assert named.schedule.decay_rate == pytest.approx(0.97 ** (1 / 2.4))


@pytest.mark.parametrize(
    "family, arg",
    [
        ("mobilenet", ""),
        ("mobilenet", "model=mobilenet_v1_050_160,dataset=imagenet2012,schedule=step"),
        ("mobilenet", "model=mobilenet_v3_large,schedule=rmsprop"),
        ("mnasnet", "dataset=imagenet2012"),
        ("mnasnet", "model=mnasnet0_5,schedule=cosine"),
        ("efficientnet", "schedule=rmsprop,drop_path=0.3"),
    ],
)
def test_configs_build_valid_models(family, arg):
    config = _config(family, arg)
    model = models.create(config.model, **config.model_kwargs)
    assert config.optimizer.name in ("momentum", "nesterov", "rmsprop")
    size = config.image_size or 32
    assert size == (models.model_info(config.model)["input_size"] if "imagenet" in arg else 32)
    x, variables = _abstract(model, size, batch=1)
    assert jax.eval_shape(lambda v: model.apply(v, x), variables).shape[0] == 1
