"""MobileNet v1, v2 and v3 (Howard et al. 2017; Sandler et al. 2018; Howard et al. 2019).

v1 is a stack of depthwise-separable blocks (`layers.DepthwiseSeparable`); v2 and v3 are stacks of
inverted residuals (`layers.InvertedResidual`, shared with MnasNet and EfficientNet), v3 with
hard-swish and hard-sigmoid squeeze-excitation. Architectures and parameter counts follow
torchvision (mobilenet_v2, mobilenet_v3_large/small) and timm (mobilenetv1_100 = 4,231,976 with
its 1000-class head; the paper rounds it to 4.2M).

MobileNet-v1's two multipliers (Sec. 3.3-3.4): the width multiplier alpha is the field
`width_mult` (every layer's width times alpha, rounded with `make_divisible` to a multiple of 8
as timm does; the TF-slim original truncates instead, which gives the same widths for alpha in
{1, 0.75, 0.5, 0.25}); the resolution multiplier rho is data: the registered input size
224 * rho. `mobilenet_v1_<100 alpha>_<size>` registers alpha in {1.0, 0.75, 0.5, 0.25} x size in
{224, 192, 160, 128} (e.g. mobilenet_v1_050_160); `mobilenet_v1` is mobilenet_v1_100_224. The
activation is ReLU6 as in TF-slim and timm (the paper's figure says ReLU).

32x32 inputs: `cifar_stem=True` gives the stem stride 1 and the first stride-2 block stride 1
(`layers.cifar_strides`), so the last map is 4x4 instead of 1x1, as the CIFAR MobileNet-v2 of
kuangliu/pytorch-cifar. A stage ends before each block whose stride is nominally 2 (five stages,
reductions 2 to 32 at 224 px); the last stage includes the final 1x1 convolution.
"""

import functools
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from cvjax.models.layers import (
    Classifier,
    ConvBN,
    DepthwiseSeparable,
    Dtype,
    InvertedResidual,
    cifar_strides,
    make_divisible,
    model_input,
)
from cvjax.models.registry import register

# Howard et al. 2017, Table 1: (output channels, stride) of the 13 depthwise-separable blocks.
V1_BLOCKS = (
    ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2))
    + ((512, 1),) * 5
    + ((1024, 2), (1024, 1))
)

# Sandler et al. 2018, Table 2: expansion t, output channels c, repeats n, first stride s.
V2_SETTING = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)

# Howard et al. 2019, Tables 1-2: (kernel, expanded, out, SE, activation, stride); the stem has 16.
RE, HS = nn.relu, nn.hard_swish
V3_LARGE = (
    (3, 16, 16, False, RE, 1),
    (3, 64, 24, False, RE, 2),
    (3, 72, 24, False, RE, 1),
    (5, 72, 40, True, RE, 2),
    (5, 120, 40, True, RE, 1),
    (5, 120, 40, True, RE, 1),
    (3, 240, 80, False, HS, 2),
    (3, 200, 80, False, HS, 1),
    (3, 184, 80, False, HS, 1),
    (3, 184, 80, False, HS, 1),
    (3, 480, 112, True, HS, 1),
    (3, 672, 112, True, HS, 1),
    (5, 672, 160, True, HS, 2),
    (5, 960, 160, True, HS, 1),
    (5, 960, 160, True, HS, 1),
)
V3_SMALL = (
    (3, 16, 16, True, RE, 2),
    (3, 72, 24, False, RE, 2),
    (3, 88, 24, False, RE, 1),
    (5, 96, 40, True, HS, 2),
    (5, 240, 40, True, HS, 1),
    (5, 240, 40, True, HS, 1),
    (5, 120, 48, True, HS, 1),
    (5, 144, 48, True, HS, 1),
    (5, 288, 96, True, HS, 2),
    (5, 576, 96, True, HS, 1),
    (5, 576, 96, True, HS, 1),
)


def _classify(module: nn.Module, x: jax.Array, train: bool) -> jax.Array:
    return Classifier(
        module.num_classes, module.drop_rate, module.global_pool, module.dtype, name="head"
    )(x, train).astype(jnp.float32)


class MobileNetV1(nn.Module):
    """MobileNet (Howard et al. 2017): a 3x3/2 stem and 13 depthwise-separable blocks."""

    width_mult: float = 1.0
    cifar_stem: bool = False
    blocks: Sequence[tuple[int, int]] = V1_BLOCKS
    num_classes: int = 1000
    drop_rate: float = 0.0
    global_pool: bool = True
    in_channels: int = 3
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = model_input(x, self.in_channels, self.dtype)
        x = ConvBN(
            make_divisible(32 * self.width_mult),
            3,
            1 if self.cifar_stem else 2,
            act=nn.relu6,
            dtype=self.dtype,
            name="conv_stem",
        )(x, train)
        strides = cifar_strides([s for _, s in self.blocks], self.cifar_stem)
        stage = 1
        for i, ((features, nominal), stride) in enumerate(zip(self.blocks, strides, strict=True)):
            if nominal == 2:
                self.sow("intermediates", f"stage{stage}", x)
                stage += 1
            x = DepthwiseSeparable(
                make_divisible(features * self.width_mult),
                3,
                stride,
                nn.relu6,
                dtype=self.dtype,
                name=f"blocks_{i}",
            )(x, train)
        self.sow("intermediates", f"stage{stage}", x)
        return _classify(self, x, train)


class MobileNetV2(nn.Module):
    """MobileNetV2 (Sandler et al. 2018), torchvision's: ReLU6, last 1x1 conv of 1280 channels."""

    width_mult: float = 1.0
    cifar_stem: bool = False
    setting: Sequence[tuple[int, int, int, int]] = V2_SETTING
    drop_path_rate: float = 0.0  # Not in the paper; linear in the block index as EfficientNet.
    num_classes: int = 1000
    drop_rate: float = 0.2
    global_pool: bool = True
    in_channels: int = 3
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = model_input(x, self.in_channels, self.dtype)
        dt = self.dtype
        x = ConvBN(
            make_divisible(32 * self.width_mult),
            3,
            1 if self.cifar_stem else 2,
            act=nn.relu6,
            dtype=dt,
            name="conv_stem",
        )(x, train)
        rows = [(t, c, s if j == 0 else 1) for t, c, n, s in self.setting for j in range(n)]
        strides = cifar_strides([s for *_, s in rows], self.cifar_stem)
        stage = 1
        for i, ((t, c, nominal), stride) in enumerate(zip(rows, strides, strict=True)):
            if nominal == 2:
                self.sow("intermediates", f"stage{stage}", x)
                stage += 1
            x = InvertedResidual(
                make_divisible(c * self.width_mult),
                int(round(x.shape[-1] * t)),
                3,
                stride,
                nn.relu6,
                drop_path_rate=self.drop_path_rate * i / len(rows),
                dtype=dt,
                name=f"blocks_{i}",
            )(x, train)
        last = make_divisible(1280 * max(1.0, self.width_mult))
        x = ConvBN(last, 1, act=nn.relu6, dtype=dt, name="conv_head")(x, train)
        self.sow("intermediates", f"stage{stage}", x)
        return _classify(self, x, train)


class MobileNetV3(nn.Module):
    """MobileNetV3 (Howard et al. 2019), torchvision's: BatchNorm eps 1e-3, momentum 0.01.

    After the last 1x1 convolution (6x the last block's width) come pooling, a hidden linear
    layer of `last_channel` units with hard-swish (a 1x1 convolution when `global_pool=False`),
    dropout and the classifier. Squeeze-excitation is on the expanded width, squeezed to
    make_divisible(expanded / 4), with ReLU and a hard-sigmoid gate.
    """

    blocks: Sequence[tuple[int, int, int, bool, Callable, int]] = V3_LARGE
    last_channel: int = 1280
    width_mult: float = 1.0
    cifar_stem: bool = False
    drop_path_rate: float = 0.0  # Not in the paper; linear in the block index as EfficientNet.
    num_classes: int = 1000
    drop_rate: float = 0.2
    global_pool: bool = True
    in_channels: int = 3
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = model_input(x, self.in_channels, self.dtype)
        bn = dict(eps=1e-3, momentum=0.99, dtype=self.dtype)

        def width(channels: int) -> int:
            return make_divisible(channels * self.width_mult)

        x = ConvBN(width(16), 3, 1 if self.cifar_stem else 2, act=HS, **bn, name="conv_stem")(
            x, train
        )
        strides = cifar_strides([b[-1] for b in self.blocks], self.cifar_stem)
        stage = 1
        for i, (block, stride) in enumerate(zip(self.blocks, strides, strict=True)):
            kernel, expanded, out, use_se, act, nominal = block
            if nominal == 2:
                self.sow("intermediates", f"stage{stage}", x)
                stage += 1
            expanded = width(expanded)
            x = InvertedResidual(
                width(out),
                expanded,
                kernel,
                stride,
                act,
                se_channels=make_divisible(expanded // 4) if use_se else 0,
                se_gate=nn.hard_sigmoid,
                drop_path_rate=self.drop_path_rate * i / len(self.blocks),
                **bn,
                name=f"blocks_{i}",
            )(x, train)
        x = ConvBN(6 * x.shape[-1], 1, act=HS, **bn, name="conv_head")(x, train)
        self.sow("intermediates", f"stage{stage}", x)
        if self.global_pool:
            x = jnp.mean(x, axis=(1, 2), keepdims=True)
        # A Dense layer on the channel axis: a 1x1 convolution on a map (global_pool=False).
        x = nn.Dense(
            width(self.last_channel), dtype=self.dtype, param_dtype=jnp.float32, name="hidden_fc"
        )(x)
        return _classify(self, HS(x), train)


def _register(name: str, cls: type, input_size: int = 224, **kwargs) -> None:
    register(name, functools.partial(cls, **kwargs), input_size=input_size, family="mobilenet")


_register("mobilenet_v1", MobileNetV1)
for _alpha in (1.0, 0.75, 0.5, 0.25):
    for _size in (224, 192, 160, 128):  # rho = size / 224 (Howard et al. 2017, Table 7).
        _register(
            f"mobilenet_v1_{round(_alpha * 100):03d}_{_size}",
            MobileNetV1,
            input_size=_size,
            width_mult=_alpha,
        )
_register("mobilenet_v2", MobileNetV2)
_register("mobilenet_v3_large", MobileNetV3, blocks=V3_LARGE, last_channel=1280)
_register("mobilenet_v3_small", MobileNetV3, blocks=V3_SMALL, last_channel=1024)
