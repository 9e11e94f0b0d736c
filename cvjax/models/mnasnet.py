"""MnasNet (Tan et al. 2019, "MnasNet: Platform-Aware Neural Architecture Search for Mobile").

torchvision's MNASNet (version 2, the B1 variant without squeeze-excitation): a 3x3/2 stem,
a depthwise-separable block without activation after its pointwise convolution
(`layers.DepthwiseSeparable(pw_act=False)`), six stacks of inverted residuals
(`layers.InvertedResidual`, expansion width = input x ratio, unrounded) and a 1x1 convolution to
1280 channels. The depth multiplier `alpha` scales every width but the last (rounded with
`make_divisible`, torchvision's `_round_to_multiple_of`). BatchNorm as in the paper and
torchvision: momentum 0.9997 (PyTorch 0.0003), eps 1e-5.

32x32 inputs: `cifar_stem=True` gives the stem and the first stride-2 stack stride 1
(`layers.cifar_strides`): a 4x4 last map. Stages end before each nominally stride-2 stack.
"""

import functools
from collections.abc import Sequence

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

# torchvision mnasnet.py (Tan et al. 2019, Fig. 7): stem and separable widths, then stacks of
# (output channels, kernel, stride, expansion, repeats).
STEM, SEPARABLE = 32, 16
STACKS = (
    (24, 3, 2, 3, 3),
    (40, 5, 2, 3, 3),
    (80, 5, 2, 6, 3),
    (96, 3, 1, 6, 2),
    (192, 5, 2, 6, 4),
    (320, 3, 1, 6, 1),
)


class MNASNet(nn.Module):
    """MnasNet-B1 with depth multiplier `alpha` (torchvision mnasnet0_5 / mnasnet1_0)."""

    alpha: float = 1.0
    cifar_stem: bool = False
    stacks: Sequence[tuple[int, int, int, int, int]] = STACKS
    drop_path_rate: float = 0.0  # Not in the paper; linear in the block index as EfficientNet.
    bn_momentum: float = 0.9997
    bn_eps: float = 1e-5
    num_classes: int = 1000
    drop_rate: float = 0.2
    global_pool: bool = True
    in_channels: int = 3
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = model_input(x, self.in_channels, self.dtype)
        bn = dict(eps=self.bn_eps, momentum=self.bn_momentum, dtype=self.dtype)

        def width(channels: int) -> int:
            return make_divisible(channels * self.alpha)

        stem_stride = 1 if self.cifar_stem else 2
        x = ConvBN(width(STEM), 3, stem_stride, **bn, name="conv_stem")(x, train)
        x = DepthwiseSeparable(width(SEPARABLE), 3, 1, nn.relu, False, **bn, name="blocks_0")(
            x, train
        )
        rows = [(c, k, s if j == 0 else 1, t) for c, k, s, t, n in self.stacks for j in range(n)]
        strides = cifar_strides([row[2] for row in rows], self.cifar_stem)
        stage = 1
        for i, ((c, k, nominal, t), stride) in enumerate(zip(rows, strides, strict=True)):
            if nominal == 2:
                self.sow("intermediates", f"stage{stage}", x)
                stage += 1
            x = InvertedResidual(
                width(c),
                x.shape[-1] * t,
                k,
                stride,
                nn.relu,
                drop_path_rate=self.drop_path_rate * i / len(rows),
                **bn,
                name=f"blocks_{i + 1}",
            )(x, train)
        x = ConvBN(1280, 1, **bn, name="conv_head")(x, train)
        self.sow("intermediates", f"stage{stage}", x)
        return Classifier(
            self.num_classes, self.drop_rate, self.global_pool, self.dtype, name="head"
        )(x, train).astype(jnp.float32)


for _name, _alpha in (("mnasnet0_5", 0.5), ("mnasnet1_0", 1.0)):
    register(_name, functools.partial(MNASNet, alpha=_alpha), input_size=224, family="mnasnet")
