"""ShuffleNet v1 (Zhang et al. 2018) and ShuffleNet v2 (Ma et al. 2018).

v1 ("ShuffleNet: An Extremely Efficient Convolutional Neural Network for Mobile Devices", Sec. 3):
bottleneck units whose 1x1 convolutions are grouped (g groups), a channel shuffle after the first
of them so that the next group convolution sees every group (Sec. 3.1), a 3x3 depthwise
convolution between them, and stride-2 units that concatenate a 3x3/2 average-pooled shortcut
(Fig. 2). Stages 2-4 repeat 4, 8 and 4 units; the bottleneck is a quarter of the output width;
the first pointwise convolution of stage 2 is not grouped (its input has only 24 channels).
Widths follow Table 1 scaled by s, as megvii-model/ShuffleNet-Series (the authors' release) has
them: see `shufflenet_v1_widths`. `release_shuffle=True` shuffles where and as that release does
(see `ShuffleV1Unit`), for its weights. The classifier has a bias, which the release's has not.

v2 ("ShuffleNet V2: Practical Guidelines for Efficient CNN Architecture Design", Sec. 4, Fig. 3,
Table 5), as torchvision has it: a stride-1 unit splits the channels in half, passes one half
through 1x1-dw3x3-1x1 and concatenates it with the other; a stride-2 unit runs both halves'
branches on the whole input; each unit ends with a channel shuffle of two groups. A 1x1 `conv5`
of 1024 (2048 at 2x) channels precedes pooling.

Stages (the contract's "stage<i>"): stage1..3 are the paper's Stage2..4 (28, 14, 7 at 224 px);
v2's stage3 includes conv5, the map the classifier pools.

32x32 inputs: `cifar_stem=True` makes the stem a 3x3/1 convolution without the max pool, so the
stem keeps 32x32 and the stages give 16/8/4 maps (v2 as chenyaofo/pytorch-cifar-models and
kuangliu/pytorch-cifar have it).
"""

import functools
import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from cvjax.models.layers import Classifier, Dtype, batch_norm, conv, model_input
from cvjax.models.registry import register


def channel_shuffle(x: jax.Array, groups: int) -> jax.Array:
    """Zhang et al. 2018, Sec. 3.1: reshape channels to (groups, c / groups), transpose, flatten.

    Channel j * (c / groups) + i moves to i * groups + j, so every group of a following
    `groups`-group convolution receives channels from every group of the previous one.
    `channel_shuffle(channel_shuffle(x, g), c // g)` is `x`.
    """
    *lead, channels = x.shape
    if channels % groups:
        raise ValueError(f"channel shuffle of {channels} channels into {groups} groups")
    x = x.reshape(*lead, groups, channels // groups)
    return jnp.swapaxes(x, -1, -2).reshape(*lead, channels)


def _stem(x: jax.Array, features: int, cifar: bool, train: bool, dtype: Dtype, name: str):
    """3x3/2 conv-BN-ReLU and a 3x3/2 max pool; a 3x3/1 conv-BN-ReLU alone with `cifar`."""
    x = conv(features, 3, 1 if cifar else 2, dtype=dtype, name=f"{name}_0")(x)
    x = nn.relu(batch_norm(train, dtype, name=f"{name}_1")(x))
    if cifar:
        return x
    return nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))


class ShuffleV1Unit(nn.Module):
    """A ShuffleNet unit (Zhang et al. 2018, Fig. 2b/c): 1x1 GConv-BN-ReLU, shuffle, 3x3 DWConv-BN,
    1x1 GConv-BN; stride 1 adds the input (then ReLU), stride 2 concatenates a 3x3/2 average pool.

    `first_grouped=False` leaves the first 1x1 ungrouped (stage 2's first unit). Names follow
    megvii's `ShuffleV1Block` (branch_main_1 / branch_main_2 sequential indices).

    `release_shuffle=True` shuffles as megvii's release does: after the depthwise BN, and with the
    inverse permutation (c / g groups). Moving a shuffle across the depthwise convolution only
    permutes its filters, but the inverse permutation connects the groups differently, so this
    is what computes the released weights' function.
    """

    features: int
    groups: int
    strides: int = 1
    first_grouped: bool = True
    release_shuffle: bool = False
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        dt, g = self.dtype, self.groups
        mid = self.features // 4
        # A stride-2 unit's main branch only adds the channels that the shortcut lacks.
        out = self.features - x.shape[-1] if self.strides == 2 else self.features
        y = conv(mid, 1, groups=g if self.first_grouped else 1, dtype=dt, name="branch_main_1_0")(x)
        y = nn.relu(batch_norm(train, dt, name="branch_main_1_1")(y))
        if g > 1 and not self.release_shuffle:
            y = channel_shuffle(y, g)
        y = conv(mid, 3, self.strides, groups=mid, dtype=dt, name="branch_main_1_3")(y)
        y = batch_norm(train, dt, name="branch_main_1_4")(y)
        if g > 1 and self.release_shuffle:
            y = channel_shuffle(y, mid // g)
        y = conv(out, 1, groups=g, dtype=dt, name="branch_main_2_0")(y)
        y = batch_norm(train, dt, name="branch_main_2_1")(y)
        if self.strides == 1:
            return nn.relu(x + y)
        # PyTorch's AvgPool2d(3, 2, 1) counts the zero padding, as Flax does by default.
        shortcut = nn.avg_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
        # The input is a ReLU output, so ReLU after the concatenation (Fig. 2c) changes nothing.
        return jnp.concatenate([shortcut, nn.relu(y)], axis=-1)


class ShuffleNetV1(nn.Module):
    """ShuffleNet v1 (Zhang et al. 2018, Table 1): stem, three stages of ShuffleNet units, head.

    The release's classifier has no bias; the contract's `Classifier` has one (num_classes more).
    """

    groups: int = 3
    stage_widths: Sequence[int] = (240, 480, 960)
    stage_repeats: Sequence[int] = (4, 8, 4)
    stem_width: int = 24
    cifar_stem: bool = False
    release_shuffle: bool = False
    num_classes: int = 1000
    drop_rate: float = 0.0
    global_pool: bool = True
    in_channels: int = 3
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = model_input(x, self.in_channels, self.dtype)
        x = _stem(x, self.stem_width, self.cifar_stem, train, self.dtype, "first_conv")
        index = 0
        for stage, (repeats, width) in enumerate(
            zip(self.stage_repeats, self.stage_widths, strict=True)
        ):
            for i in range(repeats):
                x = ShuffleV1Unit(
                    width,
                    self.groups,
                    strides=2 if i == 0 else 1,
                    first_grouped=not (stage == 0 and i == 0),
                    release_shuffle=self.release_shuffle,
                    dtype=self.dtype,
                    name=f"features_{index}",
                )(x, train)
                index += 1
            self.sow("intermediates", f"stage{stage + 1}", x)
        logits = Classifier(
            self.num_classes, self.drop_rate, self.global_pool, self.dtype, name="head"
        )(x, train)
        return logits.astype(jnp.float32)


class ShuffleV2Unit(nn.Module):
    """A ShuffleNet v2 unit (Ma et al. 2018, Fig. 3c/d), torchvision's `InvertedResidual`.

    Stride 1: split the channels in half, 1x1-BN-ReLU, 3x3 DW-BN, 1x1-BN-ReLU on the second half,
    concatenate, shuffle (2 groups). Stride 2: the left branch is 3x3/2 DW-BN, 1x1-BN-ReLU on the
    whole input, the right branch as above with a strided depthwise convolution.
    """

    features: int
    strides: int = 1
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        dt = self.dtype
        half = self.features // 2
        if self.strides == 1:
            if x.shape[-1] != self.features:
                raise ValueError(f"a stride-1 unit keeps its width: {x.shape[-1]} != {half * 2}")
            left, right = jnp.split(x, 2, axis=-1)
        else:
            c = x.shape[-1]
            left = conv(c, 3, self.strides, groups=c, dtype=dt, name="branch1_0")(x)
            left = batch_norm(train, dt, name="branch1_1")(left)
            left = conv(half, 1, dtype=dt, name="branch1_2")(left)
            left = nn.relu(batch_norm(train, dt, name="branch1_3")(left))
            right = x
        y = conv(half, 1, dtype=dt, name="branch2_0")(right)
        y = nn.relu(batch_norm(train, dt, name="branch2_1")(y))
        y = conv(half, 3, self.strides, groups=half, dtype=dt, name="branch2_3")(y)
        y = batch_norm(train, dt, name="branch2_4")(y)
        y = conv(half, 1, dtype=dt, name="branch2_5")(y)
        y = nn.relu(batch_norm(train, dt, name="branch2_6")(y))
        return channel_shuffle(jnp.concatenate([left, y], axis=-1), 2)


class ShuffleNetV2(nn.Module):
    """ShuffleNet v2 (Ma et al. 2018, Table 5): stem, three stages of units, conv5, head."""

    stage_widths: Sequence[int] = (116, 232, 464)
    stage_repeats: Sequence[int] = (4, 8, 4)
    stem_width: int = 24
    last_width: int = 1024
    cifar_stem: bool = False
    num_classes: int = 1000
    drop_rate: float = 0.0
    global_pool: bool = True
    in_channels: int = 3
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        dt = self.dtype
        x = model_input(x, self.in_channels, dt)
        x = _stem(x, self.stem_width, self.cifar_stem, train, dt, "conv1")
        num_stages = len(self.stage_widths)
        for stage, (repeats, width) in enumerate(
            zip(self.stage_repeats, self.stage_widths, strict=True)
        ):
            for i in range(repeats):
                x = ShuffleV2Unit(
                    width, 2 if i == 0 else 1, dtype=dt, name=f"stage{stage + 2}_{i}"
                )(x, train)
            if stage == num_stages - 1:
                x = conv(self.last_width, 1, dtype=dt, name="conv5_0")(x)
                x = nn.relu(batch_norm(train, dt, name="conv5_1")(x))
            self.sow("intermediates", f"stage{stage + 1}", x)
        logits = Classifier(self.num_classes, self.drop_rate, self.global_pool, dt, name="head")(
            x, train
        )
        return logits.astype(jnp.float32)


# Zhang et al. 2018, Table 1: Stage2 output channels per group count at 1x (Stage3/4: 2x, 4x).
V1_STAGE2_WIDTH = {1: 144, 2: 200, 3: 240, 4: 272, 8: 384}
# The release's first-conv widths per scale (megvii ShuffleNetV1/network.py): 24 is kept at 1.5x.
_V1_STEM = {0.5: 12, 1.0: 24, 1.5: 24, 2.0: 48}


def shufflenet_v1_widths(groups: int, scale: float) -> tuple[int, tuple[int, int, int]]:
    """(stem width, stage widths) of ShuffleNet v1 `scale`x with `groups` groups.

    Each stage width is Table 1's times `scale`, rounded up to a multiple of 4 * groups (the
    bottleneck, a quarter of it, must split into the groups), as tensorpack's ShuffleNet does
    (examples/ImageNetModels/shufflenet.py). The stem is the release's (12, 24, 24, 48 for 0.5x,
    1x, 1.5x, 2x; 24 * scale otherwise) rounded up to a multiple of `groups`, so that a stride-2
    unit's grouped branch gets a multiple of `groups` channels (the release's 16 at 0.5x, g = 8).
    These reproduce every width the release has (g = 3 and 8); for g = 1, 2, 4 they are derived.
    """
    if groups not in V1_STAGE2_WIDTH:
        raise ValueError(f"ShuffleNet v1 has groups {sorted(V1_STAGE2_WIDTH)}, not {groups}")
    multiple = 4 * groups
    stages = tuple(
        math.ceil(V1_STAGE2_WIDTH[groups] * k * scale / multiple) * multiple for k in (1, 2, 4)
    )
    stem = math.ceil(_V1_STEM.get(scale, 24 * scale) / groups) * groups
    return stem, stages


def _register(name: str, cls: type, family: str, **kwargs) -> None:
    register(name, functools.partial(cls, **kwargs), input_size=224, family=family)


_SCALES = {"0_5": 0.5, "1_0": 1.0, "1_5": 1.5, "2_0": 2.0}

for _groups in V1_STAGE2_WIDTH:
    for _suffix, _scale in _SCALES.items():
        _stem_width, _widths = shufflenet_v1_widths(_groups, _scale)
        _register(
            f"shufflenet_v1_g{_groups}_x{_suffix}",
            ShuffleNetV1,
            "shufflenet_v1",
            groups=_groups,
            stage_widths=_widths,
            stem_width=_stem_width,
        )

# torchvision's stages_out_channels (Ma et al. 2018, Table 5).
for _suffix, _widths, _last in [
    ("0_5", (48, 96, 192), 1024),
    ("1_0", (116, 232, 464), 1024),
    ("1_5", (176, 352, 704), 1024),
    ("2_0", (244, 488, 976), 2048),
]:
    _register(
        f"shufflenet_v2_x{_suffix}",
        ShuffleNetV2,
        "shufflenet_v2",
        stage_widths=_widths,
        last_width=_last,
    )
