"""ShuffleNet v1 and v2: exact parameter counts, widths, cost, shapes, shuffle, training."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cvjax import models
from cvjax.models import __main__ as table
from cvjax.models.shufflenet import (
    ShuffleNetV1,
    ShuffleNetV2,
    ShuffleV1Unit,
    ShuffleV2Unit,
    channel_shuffle,
    shufflenet_v1_widths,
)
from tests.model_checks import check_count_and_output_shape, check_train_step

REFERENCE_PARAMS = {
    # ShuffleNet v1 (no torchvision or timm model): `v1_arithmetic` below, the architecture of the
    # authors' release (megvii-model/ShuffleNet-Series, ShuffleNetV1/network.py and blocks.py)
    # with its widths (`shufflenet_v1_widths`), plus the contract classifier's 1000 biases (the
    # release's Linear has none). A unit with input c_in, output c, bottleneck m = c / 4 and
    # grouped branch output o (c - c_in at stride 2, else c) has c_in * m / g1 + m * o / g
    # weights, 9m depthwise weights and 2m + 2m + 2o BatchNorm scale/bias; g1 = 1 in stage 2's
    # first unit. For g = 3 at 1x (stem 24, widths 240/480/960):
    #   stem      27 * 24 + 2 * 24                      =     696
    #   stage 2   6_972 (stride 2) + 3 * 10_860         =  39_552
    #   stage 3   21_240 + 7 * 40_920                   = 307_680
    #   stage 4   80_880 + 3 * 158_640                  = 556_800
    #   head      960 * 1000 + 1000                     = 961_000
    # total 1,865,728. The release's README rounds the g = 3 and g = 8 counts (without the
    # biases) to 0.7M/1.9M/3.4M/5.4M and 1.0M/2.4M/4.3M/6.5M; the test checks those too.
    "shufflenet_v1_g1_x0_5": 534_484,
    "shufflenet_v1_g1_x1_0": 1_531_936,
    "shufflenet_v1_g1_x1_5": 2_993_032,
    "shufflenet_v1_g1_x2_0": 4_918_744,
    "shufflenet_v1_g2_x0_5": 644_320,
    "shufflenet_v1_g2_x1_0": 1_733_848,
    "shufflenet_v1_g2_x1_5": 3_273_400,
    "shufflenet_v1_g2_x2_0": 5_257_896,
    "shufflenet_v1_g3_x0_5": 718_324,
    "shufflenet_v1_g3_x1_0": 1_865_728,
    "shufflenet_v1_g3_x1_5": 3_442_168,
    "shufflenet_v1_g3_x2_0": 5_450_776,
    "shufflenet_v1_g4_x0_5": 778_592,
    "shufflenet_v1_g4_x1_0": 1_968_344,
    "shufflenet_v1_g4_x1_5": 3_575_536,
    "shufflenet_v1_g4_x2_0": 5_593_528,
    "shufflenet_v1_g8_x0_5": 1_011_448,
    "shufflenet_v1_g8_x1_0": 2_434_768,
    "shufflenet_v1_g8_x1_5": 4_269_952,
    "shufflenet_v1_g8_x2_0": 6_522_232,
    # torchvision.models.shufflenet_v2_* (num_params of the IMAGENET1K_V1 weights).
    "shufflenet_v2_x0_5": 1_366_792,
    "shufflenet_v2_x1_0": 2_278_604,
    "shufflenet_v2_x1_5": 3_503_624,
    "shufflenet_v2_x2_0": 7_393_996,
}

_SCALES = {"0_5": 0.5, "1_0": 1.0, "1_5": 1.5, "2_0": 2.0}


def v1_arithmetic(groups: int, scale: float, size: int = 224) -> tuple[int, int]:
    """(parameters, multiply-adds of the convolutions and the classifier) counted by hand."""
    stem, widths = shufflenet_v1_widths(groups, scale)
    params = 27 * stem + 2 * stem + widths[-1] * 1000 + 1000
    grid = (size // 4) ** 2  # After the 3x3/2 convolution and the 3x3/2 max pool.
    macs = 27 * stem * (size // 2) ** 2 + widths[-1] * 1000
    c_in = stem
    for stage, (repeats, c) in enumerate(zip((4, 8, 4), widths, strict=True)):
        for i in range(repeats):
            mid, g1 = c // 4, 1 if stage == 0 and i == 0 else groups
            out = c - c_in if i == 0 else c
            params += c_in * mid // g1 + 4 * mid + 9 * mid + mid * out // groups + 2 * out
            macs += c_in * mid // g1 * grid
            grid //= 4 if i == 0 else 1
            macs += (9 * mid + mid * out // groups) * grid
            c_in = c
    return params, macs


def test_every_family_model_has_a_reference_count():
    assert set(models.list_models("shufflenet*")) == set(REFERENCE_PARAMS)


@pytest.mark.parametrize("name", sorted(REFERENCE_PARAMS))
def test_parameter_count_and_output_shape(name):
    check_count_and_output_shape(name, REFERENCE_PARAMS[name])


def test_v1_widths_are_the_releases_and_the_counts_its_arithmetic():
    release = {  # megvii ShuffleNetV1/network.py: stage_out_channels[1:] per group and size.
        (3, 0.5): (12, (120, 240, 480)),
        (3, 1.0): (24, (240, 480, 960)),
        (3, 1.5): (24, (360, 720, 1440)),
        (3, 2.0): (48, (480, 960, 1920)),
        (8, 0.5): (16, (192, 384, 768)),
        (8, 1.0): (24, (384, 768, 1536)),
        (8, 1.5): (24, (576, 1152, 2304)),
        (8, 2.0): (48, (768, 1536, 3072)),
    }
    for (groups, scale), widths in release.items():
        assert shufflenet_v1_widths(groups, scale) == widths
    # Derived: Table 1's 200 and 272 at 0.5x / 1.5x do not split into 4 * g (tensorpack's
    # rounding, each stage on its own).
    assert shufflenet_v1_widths(2, 0.5) == (12, (104, 200, 400))
    assert shufflenet_v1_widths(4, 1.5) == (24, (416, 816, 1632))
    for groups in (1, 2, 3, 4, 8):
        for suffix, scale in _SCALES.items():
            name = f"shufflenet_v1_g{groups}_x{suffix}"
            assert v1_arithmetic(groups, scale)[0] == REFERENCE_PARAMS[name]
    readme = {3: (0.7, 1.9, 3.4, 5.4), 8: (1.0, 2.4, 4.3, 6.5)}  # Millions, without the biases.
    for groups, rounded in readme.items():
        for suffix, millions in zip(_SCALES, rounded, strict=True):
            count = REFERENCE_PARAMS[f"shufflenet_v1_g{groups}_x{suffix}"] - 1000
            assert round(count / 1e6, 1) == millions


def test_v1_multiply_adds_match_the_papers_tables():
    # Table 1 (1x, 224 px): 143, 140, 137, 133, 137 MFLOPs for g = 1, 2, 3, 4, 8; they leave out
    # the classifier (c4 * 1000), which is what brings g = 4 and g = 8 to the table's values.
    table1 = {1: 143, 2: 140, 3: 137, 4: 133, 8: 137}
    for groups, mflops in table1.items():
        _, macs = v1_arithmetic(groups, 1.0)
        widths = shufflenet_v1_widths(groups, 1.0)[1]
        assert abs((macs - widths[-1] * 1000) / 1e6 - mflops) <= 0.6
    # The release's README (with the classifier): 38M/138M/292M/524M (g = 3),
    # 40M/138M/290M/522M (g = 8); Table 2's 0.5x: 38 MFLOPs.
    readme = {3: (38, 138, 292, 524), 8: (40, 138, 290, 522)}
    for groups, mflops in readme.items():
        for scale, expected in zip(_SCALES.values(), mflops, strict=True):
            assert abs(v1_arithmetic(groups, scale)[1] / 1e6 - expected) <= 0.6
    # XLA's count adds BatchNorm, ReLU, pooling and additions: a few percent more.
    xla = table.gmacs("shufflenet_v1_g3_x1_0") * 1e9
    macs = v1_arithmetic(3, 1.0)[1]
    assert macs < xla < 1.06 * macs


def test_channel_shuffle_is_the_papers_permutation():
    c = jnp.arange(12)
    # Sec. 3.1: reshape to (g, n), transpose, flatten.
    np.testing.assert_array_equal(channel_shuffle(c, 3), c.reshape(3, 4).T.reshape(-1))
    np.testing.assert_array_equal(channel_shuffle(jnp.arange(6), 2), [0, 3, 1, 4, 2, 5])
    # Each group of a following 3-group convolution gets channels of every previous group.
    groups_before = channel_shuffle(c, 3) // 4
    for after in groups_before.reshape(3, 4):
        assert set(np.asarray(after).tolist()) == {0, 1, 2}
    # Shuffling with g then with n = c / g groups is the identity (NHWC maps too).
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 3, 12))
    for g in (2, 3, 4, 6):
        np.testing.assert_array_equal(channel_shuffle(channel_shuffle(x, g), 12 // g), x)
    assert not np.array_equal(channel_shuffle(channel_shuffle(x, 3), 3), x)
    with pytest.raises(ValueError, match="12 channels into 5 groups"):
        channel_shuffle(x, 5)


def test_v2_unit_passes_half_the_channels_through_and_v1_pools_its_shortcut():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 16))
    unit = ShuffleV2Unit(16)
    out = unit.apply(unit.init(jax.random.PRNGKey(1), x, False), x, False)
    # The shuffle of two groups interleaves: the untouched first half lands on even channels.
    np.testing.assert_array_equal(out[..., 0::2], x[..., :8])
    x = nn.relu(x)
    unit = ShuffleV1Unit(64, groups=4, strides=2)
    out = unit.apply(unit.init(jax.random.PRNGKey(1), x, False), x, False)
    chex.assert_shape(out, (2, 4, 4, 64))
    pooled = nn.avg_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
    np.testing.assert_allclose(out[..., :16], pooled, rtol=1e-6)


def test_release_shuffle_is_the_paper_shuffle_with_permuted_depthwise_filters():
    # Bottleneck m = 4 = g^2: the release's inverse shuffle (m / g groups) is the same
    # permutation, so only its place differs, and moving it past the depthwise convolution
    # and its BatchNorm permutes their per-channel parameters.
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 6, 6, 16))
    paper, release = ShuffleV1Unit(16, groups=2), ShuffleV1Unit(16, groups=2, release_shuffle=True)
    variables = paper.init(jax.random.PRNGKey(1), x, False)
    variables = jax.tree.map(
        lambda v: v + jax.random.uniform(jax.random.PRNGKey(2), v.shape, minval=0.5), variables
    )
    order = np.argsort(np.asarray(channel_shuffle(jnp.arange(4), 2)))
    moved = {
        kind: {
            name: jax.tree.map(lambda v: v[..., order], value)
            if name in ("branch_main_1_3", "branch_main_1_4")
            else value
            for name, value in tree.items()
        }
        for kind, tree in variables.items()
    }
    np.testing.assert_allclose(
        release.apply(moved, x, False), paper.apply(variables, x, False), rtol=1e-5, atol=1e-5
    )


def _abstract(model, size):
    x = jnp.zeros((2, size, size, model.in_channels))
    return x, jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x))


@pytest.mark.parametrize(
    "name, kwargs, size, stages",
    [
        ("shufflenet_v2_x1_0", {}, 224, [(28, 116), (14, 232), (7, 1024)]),
        ("shufflenet_v2_x0_5", {"cifar_stem": True}, 32, [(16, 48), (8, 96), (4, 1024)]),
        ("shufflenet_v1_g3_x1_0", {}, 224, [(28, 240), (14, 480), (7, 960)]),
        ("shufflenet_v1_g8_x0_5", {"cifar_stem": True}, 32, [(16, 192), (8, 384), (4, 768)]),
    ],
)
def test_feature_maps_pooled_embedding_and_cifar_stem(name, kwargs, size, stages):
    model = models.create(name, num_classes=10, **kwargs)
    x, variables = _abstract(model, size)
    maps = jax.eval_shape(lambda v: models.feature_maps(model, v, x), variables)
    assert list(maps) == ["stage1", "stage2", "stage3"]
    assert [m.shape for m in maps.values()] == [(2, s, s, c) for s, c in stages]
    embedding = jax.eval_shape(lambda v: models.forward_features(model, v, x), variables)
    assert embedding.shape == (2, stages[-1][1])
    assert jax.eval_shape(lambda v: model.apply(v, x), variables).shape == (2, 10)


@pytest.mark.parametrize("name", ["shufflenet_v2_x1_0", "shufflenet_v1_g3_x1_0"])
def test_without_global_pool_a_larger_input_gives_a_map_of_logits(name):
    model = models.create(name, num_classes=7, global_pool=False)
    _, variables = _abstract(model, 224)
    out = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((1, 448, 448, 3))), variables)
    assert out.shape == (1, 14, 14, 7)


TINY = {
    "v1": lambda **kw: ShuffleNetV1(
        groups=2, stage_widths=(16, 32), stage_repeats=(1, 2), stem_width=8, **kw
    ),
    "v1_release_shuffle": lambda **kw: ShuffleNetV1(
        groups=2,
        stage_widths=(16, 32),
        stage_repeats=(1, 2),
        stem_width=8,
        release_shuffle=True,
        **kw,
    ),
    "v2": lambda **kw: ShuffleNetV2(
        stage_widths=(16, 32), stage_repeats=(1, 2), stem_width=8, last_width=32, **kw
    ),
}


@pytest.mark.parametrize("kind", sorted(TINY))
def test_tiny_forward_backward(kind):
    model = TINY[kind](num_classes=5, drop_rate=0.1, cifar_stem=True)
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 16, 16, 3))
    check_train_step(model, x)


def test_parameter_names_follow_the_references():
    _, variables = _abstract(models.create("shufflenet_v2_x1_0"), 224)
    params = variables["params"]
    assert {"conv1_0", "conv1_1", "stage2_0", "stage3_7", "stage4_3", "conv5_0", "head"} <= set(
        params
    )
    assert set(params["stage2_0"]) == {
        "branch1_0", "branch1_1", "branch1_2", "branch1_3",
        "branch2_0", "branch2_1", "branch2_3", "branch2_4", "branch2_5", "branch2_6",
    }  # fmt: skip
    assert params["stage2_0"]["branch1_0"]["kernel"].shape == (3, 3, 1, 24)  # Depthwise.
    _, variables = _abstract(models.create("shufflenet_v1_g3_x1_0"), 224)
    params = variables["params"]
    assert {f"features_{i}" for i in range(16)} | {"first_conv_0", "first_conv_1", "head"} == set(
        params
    )
    # Stage 2's first 1x1 is dense (24 inputs), the others have 3 groups.
    assert params["features_0"]["branch_main_1_0"]["kernel"].shape == (1, 1, 24, 60)
    assert params["features_1"]["branch_main_1_0"]["kernel"].shape == (1, 1, 80, 60)
    assert params["features_0"]["branch_main_2_0"]["kernel"].shape == (1, 1, 20, 216)
