"""Inception-v4 and Inception-ResNet-v2 (Szegedy et al. 2017, "Inception-v4, Inception-ResNet and
the Impact of Residual Connections on Learning").

The layers follow timm's `inception_v4` and `inception_resnet_v2` (ports of the TF-slim models):
convolutions without bias, BatchNorm eps 1e-3, "valid" (unpadded) convolutions where the paper's
figures mark a "V", 299x299 inputs and an 8x8 final map. Submodule names follow timm's for a
later weight importer: `features_6.branch2_1` is `features.6.branch2.1` (`repeat_1_4` is
`repeat_1.4`), ConvBN's `Conv_0` / `BatchNorm_0` are `conv` / `bn`; except that a pool branch's
conv is `branch3.1` there (after the pool in a Sequential), Mixed3a's and Mixed5a's conv is
`conv`, and Inception-C's `branch1_0`, `branch2_3a`, ... keep their names.

Inception-ResNet-v2 scales each residual branch before the sum (Sec. 3.3: 0.17, 0.10 and 0.20 for
the 35x35, 17x17 and 8x8 blocks); the last 8x8 block has scale 1 and no ReLU, as in TF-slim.
`drop_path_rate` adds stochastic depth to those branches (linearly increasing over the blocks).

CIFAR (`cifar_stem=True`, same parameters): the stem's strided and unpadded layers become stride-1
padded ones, except its last reduction (`Mixed_5a` / `maxpool_5a`, then padded), so a 32x32 input
gives 16x16 at the Inception-A (block35) grid, 7x7 at -B (block17) and 3x3 at -C (block8).
"""

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from cvjax.models.layers import (
    Classifier,
    ConvBN,
    DropPath,
    Dtype,
    avg_pool_exclude_pad,
    conv,
    model_input,
)
from cvjax.models.registry import register

BN_EPS = 1e-3  # TF-slim's BatchNorm epsilon, kept by timm's ports.

# A layer spec: (features, kernel) for a stride-1 "same" convolution, or (features, kernel,
# strides, padding) with padding 0 for the paper's "valid" ones.
Spec = tuple


def _conv_bn(
    x: jax.Array, spec: Spec, train: bool, dtype: Dtype, name: str, width: float = 1.0
) -> jax.Array:
    features, kernel, strides, padding = (*spec, 1, None)[:4]
    features = max(1, int(features * width))
    return ConvBN(features, kernel, strides, padding=padding, eps=BN_EPS, dtype=dtype, name=name)(
        x, train
    )


def _chain(x, specs: Sequence[Spec], train: bool, dtype: Dtype, name: str, width: float = 1.0):
    """Conv-BN-ReLU layers in sequence, named `name` (one layer) or `name_0`, `name_1`, ..."""
    for i, spec in enumerate(specs):
        x = _conv_bn(x, spec, train, dtype, name if len(specs) == 1 else f"{name}_{i}", width)
    return x


def _max_pool(x: jax.Array, strides: int = 2, padding: int = 0) -> jax.Array:
    pad = ((padding, padding), (padding, padding))
    return nn.max_pool(x, (3, 3), (strides, strides), padding=pad)


def concat_branches(
    x: jax.Array,
    train: bool,
    dtype: Dtype,
    branches: Sequence[Sequence[Spec]],
    pool: str = "",
    pool_specs: Sequence[Spec] = (),
    pool_first: bool = False,
    pool_strides: int = 2,
    pool_padding: int = 0,
    split_last: Sequence[int] = (),
    width: float = 1.0,
) -> jax.Array:
    """Parallel branches concatenated on channels; call it inside a compact module.

    Each branch is a chain of conv-BN-ReLU specs, named `branch<b>` (one layer) or
    `branch<b>_<i>`. `pool` adds a last (first with `pool_first`, as timm's Mixed3a) branch: "avg"
    (3x3/1 average pool without the padding in the count, then `pool_specs`) or "max" (3x3 max
    pool, no parameters). Branches in `split_last` end in two layers that both read the layer
    before and are concatenated (Inception-C's 1x3 / 3x1 split), named `branch<b>_<k>a` / `b`.
    `width` multiplies every layer's channels (small test models).
    """
    outs = []
    for b, specs in enumerate(branches):
        if b not in split_last:
            outs.append(_chain(x, specs, train, dtype, f"branch{b}", width))
            continue
        y = x
        for i, spec in enumerate(specs[:-2]):
            y = _conv_bn(y, spec, train, dtype, f"branch{b}_{i}", width)
        k = len(specs) - 2
        ends = [
            _conv_bn(y, specs[-2 + j], train, dtype, f"branch{b}_{k}{c}", width)
            for j, c in [(0, "a"), (1, "b")]
        ]
        outs.append(jnp.concatenate(ends, axis=-1))
    if pool == "avg":
        # PyTorch's AvgPool2d(3, 1, 1, count_include_pad=False), TF's "SAME" average pool.
        pooled = avg_pool_exclude_pad(x, (3, 3), padding=((1, 1), (1, 1)))
        outs.append(_chain(pooled, pool_specs, train, dtype, f"branch{len(outs)}", width))
    elif pool == "max":
        pooled = _max_pool(x, pool_strides, pool_padding)
        outs = [pooled, *outs] if pool_first else [*outs, pooled]
    return jnp.concatenate(outs, axis=-1)


class InceptionBlock(nn.Module):
    """A mixed block: `concat_branches` with these fields (Szegedy et al. 2017, Figs. 3-8)."""

    branches: Sequence[Sequence[Spec]]
    pool: str = ""
    pool_specs: Sequence[Spec] = ()
    pool_first: bool = False
    pool_strides: int = 2
    pool_padding: int = 0
    split_last: Sequence[int] = ()
    width: float = 1.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        return concat_branches(
            x,
            train,
            self.dtype,
            self.branches,
            self.pool,
            self.pool_specs,
            self.pool_first,
            self.pool_strides,
            self.pool_padding,
            self.split_last,
            self.width,
        )


# Inception-v4's blocks (Figs. 3-8), in timm's branch order.
def _mixed_4a(valid: int | None) -> dict:
    last = (96, 3, 1, valid)
    return dict(branches=[[(64, 1), last], [(64, 1), (64, (1, 7)), (64, (7, 1)), last]])


INCEPTION_A = dict(
    branches=[[(96, 1)], [(64, 1), (96, 3)], [(64, 1), (96, 3), (96, 3)]],
    pool="avg",
    pool_specs=[(96, 1)],
)
REDUCTION_A = dict(branches=[[(384, 3, 2, 0)], [(192, 1), (224, 3), (256, 3, 2, 0)]], pool="max")
INCEPTION_B = dict(
    branches=[
        [(384, 1)],
        [(192, 1), (224, (1, 7)), (256, (7, 1))],
        [(192, 1), (192, (7, 1)), (224, (1, 7)), (224, (7, 1)), (256, (1, 7))],
    ],
    pool="avg",
    pool_specs=[(128, 1)],
)
REDUCTION_B = dict(
    branches=[
        [(192, 1), (192, 3, 2, 0)],
        [(256, 1), (256, (1, 7)), (320, (7, 1)), (320, 3, 2, 0)],
    ],
    pool="max",
)
INCEPTION_C = dict(
    branches=[
        [(256, 1)],
        [(384, 1), (256, (1, 3)), (256, (3, 1))],
        [(384, 1), (448, (3, 1)), (512, (1, 3)), (256, (1, 3)), (256, (3, 1))],
    ],
    split_last=(1, 2),
    pool="avg",
    pool_specs=[(256, 1)],
)


class InceptionV4(nn.Module):
    """Inception-v4 (Szegedy et al. 2017, Fig. 9): stem, 4 x A, reduction, 7 x B, reduction, 3 x C.

    Stages (sown): stem 64 ch (1/2), Mixed4a 192 (1/4), A 384 (1/8), B 1024 (1/16), C 1536 (1/32).
    `depths` counts the A, B and C blocks (fewer make a small test model).
    """

    cifar_stem: bool = False
    depths: Sequence[int] = (4, 7, 3)
    width: float = 1.0  # Multiplies every layer's channels (small test models).
    num_classes: int = 1000
    drop_rate: float = 0.0
    global_pool: bool = True
    in_channels: int = 3
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = model_input(x, self.in_channels, self.dtype)
        dt = self.dtype
        cbn = functools.partial(_conv_bn, train=train, dtype=dt, width=self.width)
        block = functools.partial(InceptionBlock, width=self.width, dtype=dt)
        # CIFAR: the stem's "valid" layers are padded and only Mixed5a keeps its stride.
        valid, s2, pad = (None, 1, 1) if self.cifar_stem else (0, 2, 0)
        x = cbn(x, (32, 3, s2, valid), name="features_0")
        x = cbn(x, (32, 3, 1, valid), name="features_1")
        x = cbn(x, (64, 3), name="features_2")
        self.sow("intermediates", "stage1", x)
        # Mixed3a: a 3x3/2 max pool (first) and a 3x3/2 conv; Mixed5a: a conv and a max pool.
        x = block(
            [[(96, 3, s2, valid)]],
            "max",
            pool_first=True,
            pool_strides=s2,
            pool_padding=pad,
            name="features_3",
        )(x, train)
        x = block(**_mixed_4a(valid), name="features_4")(x, train)
        self.sow("intermediates", "stage2", x)
        x = block([[(192, 3, 2, valid)]], "max", pool_padding=pad, name="features_5")(x, train)
        index = 6
        blocks = [(INCEPTION_A, REDUCTION_A), (INCEPTION_B, REDUCTION_B), (INCEPTION_C, None)]
        for stage, (count, (spec, reduction)) in enumerate(zip(self.depths, blocks, strict=True)):
            for _ in range(count):
                x = block(**spec, name=f"features_{index}")(x, train)
                index += 1
            self.sow("intermediates", f"stage{stage + 3}", x)
            if reduction is not None:
                x = block(**reduction, name=f"features_{index}")(x, train)
                index += 1
        logits = Classifier(self.num_classes, self.drop_rate, self.global_pool, dt, name="head")(
            x, train
        )
        return logits.astype(jnp.float32)


# Inception-ResNet-v2 residual branches (Figs. 16-19): the conv chains, then a 1x1 conv with bias
# back to the input width ("conv2d").
RESIDUAL_BRANCHES = {
    "block35": [[(32, 1)], [(32, 1), (32, 3)], [(32, 1), (48, 3), (64, 3)]],
    "block17": [[(192, 1)], [(128, 1), (160, (1, 7)), (192, (7, 1))]],
    "block8": [[(192, 1)], [(192, 1), (224, (1, 3)), (256, (3, 1))]],
}

MIXED_6A = dict(branches=[[(384, 3, 2, 0)], [(256, 1), (256, 3), (384, 3, 2, 0)]], pool="max")
MIXED_7A = dict(
    branches=[
        [(256, 1), (384, 3, 2, 0)],
        [(256, 1), (288, 3, 2, 0)],
        [(256, 1), (288, 3), (320, 3, 2, 0)],
    ],
    pool="max",
)


class InceptionResidual(nn.Module):
    """x + scale * conv1x1(concat(branches)), then ReLU (Szegedy et al. 2017, Sec. 3.3)."""

    kind: str
    scale: float = 1.0
    activate: bool = True
    drop_path_rate: float = 0.0
    width: float = 1.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        y = concat_branches(x, train, self.dtype, RESIDUAL_BRANCHES[self.kind], width=self.width)
        # The up-projection has a bias and no BatchNorm, as in TF-slim and timm.
        y = conv(x.shape[-1], 1, dtype=self.dtype, use_bias=True, name="conv2d")(y)
        y = DropPath(self.drop_path_rate)(y * self.scale, train)
        x = x + y
        return nn.relu(x) if self.activate else x


class InceptionResNetV2(nn.Module):
    """Inception-ResNet-v2 (Szegedy et al. 2017, Figs. 15-19, stem of Inception-v3 as in TF-slim).

    Stages (sown): conv2d_2b 64 ch (1/2), conv2d_4a 192 (1/4), 10 x block35 320 (1/8), 20 x
    block17 1088 (1/16), 10 x block8 + conv2d_7b 1536 (1/32). `depths` counts the block35,
    block17 and block8 blocks (the last block8 included).
    """

    cifar_stem: bool = False
    depths: Sequence[int] = (10, 20, 10)
    width: float = 1.0  # Multiplies every layer's channels (small test models).
    drop_path_rate: float = 0.0
    num_classes: int = 1000
    drop_rate: float = 0.0
    global_pool: bool = True
    in_channels: int = 3
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = model_input(x, self.in_channels, self.dtype)
        dt = self.dtype
        cbn = functools.partial(_conv_bn, train=train, dtype=dt, width=self.width)
        cifar = self.cifar_stem
        valid, s2 = (None, 1) if cifar else (0, 2)
        x = cbn(x, (32, 3, s2, valid), name="conv2d_1a")
        x = cbn(x, (32, 3, 1, valid), name="conv2d_2a")
        x = cbn(x, (64, 3), name="conv2d_2b")
        self.sow("intermediates", "stage1", x)
        if not cifar:
            x = _max_pool(x)  # maxpool_3a
        x = cbn(x, (80, 1), name="conv2d_3b")
        x = cbn(x, (192, 3, 1, valid), name="conv2d_4a")
        self.sow("intermediates", "stage2", x)
        x = _max_pool(x, padding=1 if cifar else 0)  # maxpool_5a
        block = functools.partial(InceptionBlock, width=self.width, dtype=dt)
        x = block(
            [[(96, 1)], [(48, 1), (64, 5)], [(64, 1), (96, 3), (96, 3)]],
            pool="avg",
            pool_specs=[(64, 1)],
            name="mixed_5b",
        )(x, train)
        stages = [
            ("block35", 0.17, "repeat", MIXED_6A, "mixed_6a"),
            ("block17", 0.10, "repeat_1", MIXED_7A, "mixed_7a"),
            ("block8", 0.20, "repeat_2", None, ""),
        ]
        total, index = sum(self.depths), 0
        for stage, (count, (kind, scale, prefix, reduction, reduction_name)) in enumerate(
            zip(self.depths, stages, strict=True)
        ):
            for i in range(count):
                # TF-slim's last block8 is separate: scale 1, no ReLU (conv2d_7b follows).
                last = reduction is None and i == count - 1
                x = InceptionResidual(
                    kind,
                    1.0 if last else scale,
                    activate=not last,
                    drop_path_rate=self.drop_path_rate * index / max(total - 1, 1),
                    width=self.width,
                    dtype=dt,
                    name="block8" if last else f"{prefix}_{i}",
                )(x, train)
                index += 1
            if reduction is not None:
                self.sow("intermediates", f"stage{stage + 3}", x)
                x = block(**reduction, name=reduction_name)(x, train)
        x = cbn(x, (1536, 1), name="conv2d_7b")
        self.sow("intermediates", "stage5", x)
        logits = Classifier(self.num_classes, self.drop_rate, self.global_pool, dt, name="head")(
            x, train
        )
        return logits.astype(jnp.float32)


for _name, _cls in [("inception_v4", InceptionV4), ("inception_resnet_v2", InceptionResNetV2)]:
    register(_name, functools.partial(_cls), input_size=299, family="inception_v4")
