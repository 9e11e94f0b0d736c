"""Inception-v3 (Szegedy et al. 2016, "Rethinking the Inception Architecture for Computer Vision").

The layout and parameter names follow torchvision's / timm's `inception_v3` (the TensorFlow-slim
model): a stem of plain convolutions, three 35x35 modules (Mixed_5b-d, Fig. 5 with the 5x5 kept in
one branch), a grid reduction (Mixed_6a, Fig. 10), four 17x17 modules with factorized 1x7/7x1
convolutions (Mixed_6b-e, Fig. 6), a second reduction (Mixed_7a) and two 8x8 modules with expanded
filter banks (Mixed_7b-c, Fig. 7). Every convolution is conv (no bias) + BatchNorm (eps 1e-3) +
ReLU. Default input 299x299; 23,834,568 parameters.

Auxiliary classifier (Sec. 4, "as a regularizer"), off by default and not in the reference count:
`aux_logits=True` adds torchvision's AuxLogits on Mixed_6e (5x5/3 average pool, 1x1 conv 128,
5x5 conv 768, global pool, FC; 3,326,696 parameters, 27,161,264 in all). It is built only when
training or initializing, sows its logits into "aux" in training and is never returned; TF-slim's
training weights its loss by 0.4 (`config.aux_loss_weight`).

CIFAR (32x32): `cifar_stem=True` makes the stem's convolutions stride 1 with padding 1 and drops
its two max pools (the parameters are unchanged), so the 35x35 modules see 32x32, the 17x17
modules 15x15 and the 8x8 modules 7x7. On maps below 17x17 the auxiliary head pools adaptively to
the 5x5 grid its 5x5 convolution needs (3x3/3 windows at 15x15).
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from cvjax.models.layers import Classifier, ConvBN, Dtype, adaptive_avg_pool, model_input
from cvjax.models.registry import register

BN_EPS = 1e-3  # TensorFlow's BatchNorm epsilon, as in torchvision and timm.


def _width(channels: int, multiplier: float) -> int:
    return max(1, round(channels * multiplier))


class _Block(nn.Module):
    """Shared fields of the Inception-v3 modules; `width_multiplier` scales their channels."""

    width_multiplier: float = 1.0
    dtype: Dtype = jnp.float32

    def cbr(self, features: int, kernel, name: str, strides: int = 1, padding=None) -> ConvBN:
        return ConvBN(
            _width(features, self.width_multiplier),
            kernel,
            strides,
            padding=padding,
            eps=BN_EPS,
            dtype=self.dtype,
            name=name,
        )


def _avg_pool_3x3(x: jax.Array) -> jax.Array:
    # torchvision's avg_pool2d(3, 1, padding=1) counts the zero padding in the mean (as Flax).
    return nn.avg_pool(x, (3, 3), padding=((1, 1), (1, 1)))


class InceptionA(_Block):
    """35x35 module (Mixed_5b-d): 1x1, 1x1->5x5, 1x1->3x3->3x3, avg pool->1x1."""

    pool_features: int = 32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        b1 = self.cbr(64, 1, "branch1x1")(x, train)
        b5 = self.cbr(48, 1, "branch5x5_1")(x, train)
        b5 = self.cbr(64, 5, "branch5x5_2")(b5, train)
        b3 = self.cbr(64, 1, "branch3x3dbl_1")(x, train)
        b3 = self.cbr(96, 3, "branch3x3dbl_2")(b3, train)
        b3 = self.cbr(96, 3, "branch3x3dbl_3")(b3, train)
        bp = self.cbr(self.pool_features, 1, "branch_pool")(_avg_pool_3x3(x), train)
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(_Block):
    """Grid reduction 35 -> 17 (Mixed_6a, Fig. 10): stride-2 convolutions beside a max pool."""

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        b3 = self.cbr(384, 3, "branch3x3", strides=2, padding=0)(x, train)
        bd = self.cbr(64, 1, "branch3x3dbl_1")(x, train)
        bd = self.cbr(96, 3, "branch3x3dbl_2")(bd, train)
        bd = self.cbr(96, 3, "branch3x3dbl_3", strides=2, padding=0)(bd, train)
        bp = nn.max_pool(x, (3, 3), (2, 2))
        return jnp.concatenate([b3, bd, bp], axis=-1)


class InceptionC(_Block):
    """17x17 module (Mixed_6b-e, Fig. 6): 7x7 convolutions factorized into 1x7 and 7x1."""

    channels_7x7: int = 128

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        c7 = self.channels_7x7
        b1 = self.cbr(192, 1, "branch1x1")(x, train)
        b7 = self.cbr(c7, 1, "branch7x7_1")(x, train)
        b7 = self.cbr(c7, (1, 7), "branch7x7_2")(b7, train)
        b7 = self.cbr(192, (7, 1), "branch7x7_3")(b7, train)
        bd = self.cbr(c7, 1, "branch7x7dbl_1")(x, train)
        bd = self.cbr(c7, (7, 1), "branch7x7dbl_2")(bd, train)
        bd = self.cbr(c7, (1, 7), "branch7x7dbl_3")(bd, train)
        bd = self.cbr(c7, (7, 1), "branch7x7dbl_4")(bd, train)
        bd = self.cbr(192, (1, 7), "branch7x7dbl_5")(bd, train)
        bp = self.cbr(192, 1, "branch_pool")(_avg_pool_3x3(x), train)
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(_Block):
    """Grid reduction 17 -> 8 (Mixed_7a)."""

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        b3 = self.cbr(192, 1, "branch3x3_1")(x, train)
        b3 = self.cbr(320, 3, "branch3x3_2", strides=2, padding=0)(b3, train)
        b7 = self.cbr(192, 1, "branch7x7x3_1")(x, train)
        b7 = self.cbr(192, (1, 7), "branch7x7x3_2")(b7, train)
        b7 = self.cbr(192, (7, 1), "branch7x7x3_3")(b7, train)
        b7 = self.cbr(192, 3, "branch7x7x3_4", strides=2, padding=0)(b7, train)
        bp = nn.max_pool(x, (3, 3), (2, 2))
        return jnp.concatenate([b3, b7, bp], axis=-1)


class InceptionE(_Block):
    """8x8 module (Mixed_7b-c, Fig. 7): 3x3 outputs split into parallel 1x3 and 3x1."""

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        b1 = self.cbr(320, 1, "branch1x1")(x, train)
        b3 = self.cbr(384, 1, "branch3x3_1")(x, train)
        b3 = jnp.concatenate(
            [
                self.cbr(384, (1, 3), "branch3x3_2a")(b3, train),
                self.cbr(384, (3, 1), "branch3x3_2b")(b3, train),
            ],
            axis=-1,
        )
        bd = self.cbr(448, 1, "branch3x3dbl_1")(x, train)
        bd = self.cbr(384, 3, "branch3x3dbl_2")(bd, train)
        bd = jnp.concatenate(
            [
                self.cbr(384, (1, 3), "branch3x3dbl_3a")(bd, train),
                self.cbr(384, (3, 1), "branch3x3dbl_3b")(bd, train),
            ],
            axis=-1,
        )
        bp = self.cbr(192, 1, "branch_pool")(_avg_pool_3x3(x), train)
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class InceptionAux(_Block):
    """Auxiliary classifier on the 17x17 grid: 5x5/3 average pool to 5x5, 1x1 conv 128, 5x5
    conv 768, global average pool, FC. Maps below 17x17 are pooled adaptively to 5x5 instead."""

    num_classes: int = 1000

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        if min(x.shape[1:3]) >= 17:
            x = nn.avg_pool(x, (5, 5), (3, 3))
        else:
            x = adaptive_avg_pool(x, 5)
        x = self.cbr(128, 1, "conv0")(x, train)
        x = self.cbr(768, 5, "conv1", padding=0)(x, train)
        x = jnp.mean(x, axis=(1, 2))
        fc = nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=jnp.float32, name="fc")
        return fc(x).astype(jnp.float32)


class InceptionV3(nn.Module):
    """Inception-v3 (Szegedy et al. 2016, Table 1) in torchvision's layout; see the module docs.

    Stages (sown as "stage1".."stage5", timm's feature maps): Conv2d_2b_3x3 (stride 2),
    Conv2d_4a_3x3 (4), Mixed_5d (8), Mixed_6e (16), Mixed_7c (32). `width_multiplier` scales
    every channel count (1.0 is the reference; small values give tiny models for tests).
    """

    num_classes: int = 1000
    drop_rate: float = 0.5  # torchvision's dropout before the classifier.
    aux_logits: bool = False
    cifar_stem: bool = False
    width_multiplier: float = 1.0
    global_pool: bool = True
    in_channels: int = 3
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = model_input(x, self.in_channels, self.dtype)
        m, dt = self.width_multiplier, self.dtype

        def cbr(features: int, name: str, strides: int = 1, padding=None) -> ConvBN:
            kernel = 1 if name.endswith("1x1") else 3
            return ConvBN(
                _width(features, m),
                kernel,
                strides,
                padding=padding,
                eps=BN_EPS,
                dtype=dt,
                name=name,
            )

        # The ImageNet stem: 299 -> 149 -> 147 -> 147 -> 73 -> 73 -> 71 -> 35; the CIFAR stem
        # pads its 3x3 convolutions and keeps the resolution.
        cifar = self.cifar_stem
        valid = None if cifar else 0
        x = cbr(32, "Conv2d_1a_3x3", strides=1 if cifar else 2, padding=valid)(x, train)
        x = cbr(32, "Conv2d_2a_3x3", padding=valid)(x, train)
        x = cbr(64, "Conv2d_2b_3x3")(x, train)
        self.sow("intermediates", "stage1", x)
        if not cifar:
            x = nn.max_pool(x, (3, 3), (2, 2))
        x = cbr(80, "Conv2d_3b_1x1")(x, train)
        x = cbr(192, "Conv2d_4a_3x3", padding=valid)(x, train)
        self.sow("intermediates", "stage2", x)
        if not cifar:
            x = nn.max_pool(x, (3, 3), (2, 2))

        block = functools.partial(dict, width_multiplier=m, dtype=dt)
        for name, pool_features in (("Mixed_5b", 32), ("Mixed_5c", 64), ("Mixed_5d", 64)):
            x = InceptionA(pool_features=pool_features, **block(name=name))(x, train)
        self.sow("intermediates", "stage3", x)
        x = InceptionB(**block(name="Mixed_6a"))(x, train)
        for name, c7 in (
            ("Mixed_6b", 128),
            ("Mixed_6c", 160),
            ("Mixed_6d", 160),
            ("Mixed_6e", 192),
        ):
            x = InceptionC(channels_7x7=c7, **block(name=name))(x, train)
        self.sow("intermediates", "stage4", x)
        if self.aux_logits and (train or self.is_initializing()):
            aux = InceptionAux(num_classes=self.num_classes, **block(name="aux"))(x, train)
            if train:
                self.sow("aux", "logits", aux)
        x = InceptionD(**block(name="Mixed_7a"))(x, train)
        x = InceptionE(**block(name="Mixed_7b"))(x, train)
        x = InceptionE(**block(name="Mixed_7c"))(x, train)
        self.sow("intermediates", "stage5", x)
        logits = Classifier(
            self.num_classes, self.drop_rate, self.global_pool, self.dtype, name="head"
        )(x, train)
        return logits.astype(jnp.float32)


register("inception_v3", functools.partial(InceptionV3), input_size=299, family="inception_v3")
