"""GoogLeNet, i.e. Inception v1 (Szegedy et al. 2015, "Going Deeper with Convolutions").

The layout, widths (Table 1) and parameter names follow torchvision's `googlenet`: every
convolution is conv (no bias) + BatchNorm (eps 1e-3) + ReLU, as in the TensorFlow port whose
weights torchvision ships, and the max pools round up (PyTorch's `ceil_mode=True`).

torchvision keeps a known quirk of that port: the "5x5" branch of each Inception module uses a
3x3 kernel (pytorch/vision#906). It is kept here so that parameter counts (6,624,904) and imported
weights match; `branch3_kernel=5` gives the paper's 5x5 convolution instead (7,005,832).

Auxiliary classifiers (Sec. 5), off by default and not in the reference count: `aux_logits=True`
adds two heads, on Inception 4a and 4d: average pooling to a 4x4 grid, 1x1 conv with 128 filters,
FC 1024 + ReLU, dropout 0.7, FC to the classes. They are built only when training or
initializing, sow their logits into "aux" in training and are never returned; the paper weights
each of their losses by 0.3 (`config.aux_loss_weight`).

CIFAR (32x32): `cifar_stem=True` replaces the 7x7/2 convolution by a 3x3/1 one and drops the two
stem max pools, so Inception 3 sees 32x32 (28x28 at 224 on ImageNet), 4 sees 16x16 and 5 sees
8x8. The auxiliary heads use Sec. 5's 5x5/3 average pool where it gives exactly the 4x4 grid
their FC layer needs (the 14x14 maps of a 224 input) and pool adaptively to 4x4 elsewhere, e.g.
on CIFAR's 16x16 maps (torchvision pools adaptively everywhere; it ships no aux-head weights).
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from cvjax.models.layers import (
    Classifier,
    ConvBN,
    Dtype,
    adaptive_avg_pool,
    max_pool_ceil,
    model_input,
)
from cvjax.models.registry import register

BN_EPS = 1e-3  # The TensorFlow port's BatchNorm epsilon, kept by torchvision.

# Table 1: #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj.
INCEPTION_WIDTHS = {
    "3a": (64, 96, 128, 16, 32, 32),
    "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64),
    "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}


def aux_pool(x: jax.Array, size: int) -> jax.Array:
    """The auxiliary heads' 5x5/3 average pool where it gives a `size` x `size` grid, else an
    adaptive pool to that grid (other resolutions, e.g. CIFAR's 16x16 maps)."""
    if all((n - 5) // 3 + 1 == size for n in x.shape[1:3]):
        return nn.avg_pool(x, (5, 5), (3, 3))
    return adaptive_avg_pool(x, size)


class Inception(nn.Module):
    """The Inception module with dimension reductions (Fig. 2b): four branches concatenated."""

    widths: tuple[int, int, int, int, int, int]
    branch3_kernel: int = 3  # torchvision's 3x3 in the "5x5" branch; 5 for the paper's.
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        c1, c3r, c3, c5r, c5, cp = self.widths
        cbr = functools.partial(ConvBN, eps=BN_EPS, dtype=self.dtype)
        b1 = cbr(c1, 1, name="branch1")(x, train)
        b2 = cbr(c3r, 1, name="branch2_0")(x, train)
        b2 = cbr(c3, 3, name="branch2_1")(b2, train)
        b3 = cbr(c5r, 1, name="branch3_0")(x, train)
        b3 = cbr(c5, self.branch3_kernel, name="branch3_1")(b3, train)
        b4 = cbr(cp, 1, name="branch4_1")(max_pool_ceil(x, 3, 1, 1), train)
        return jnp.concatenate([b1, b2, b3, b4], axis=-1)


class GoogLeNetAux(nn.Module):
    """Auxiliary classifier of Sec. 5 (torchvision's InceptionAux): pool to 4x4, 1x1 conv 128,
    FC 1024 + ReLU, dropout 0.7, FC. The FC sees the 4x4x128 map flattened in (H, W, C) order."""

    num_classes: int
    conv_width: int = 128
    fc_width: int = 1024
    drop_rate: float = 0.7
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = aux_pool(x, 4)
        x = ConvBN(self.conv_width, 1, eps=BN_EPS, dtype=self.dtype, name="conv")(x, train)
        x = x.reshape(x.shape[0], -1)
        dense = functools.partial(nn.Dense, dtype=self.dtype, param_dtype=jnp.float32)
        x = nn.relu(dense(self.fc_width, name="fc1")(x))
        x = nn.Dropout(self.drop_rate, deterministic=not train)(x)
        return dense(self.num_classes, name="fc2")(x).astype(jnp.float32)


class GoogLeNet(nn.Module):
    """GoogLeNet (Szegedy et al. 2015, Table 1) in torchvision's layout; see the module docstring.

    Stages (sown as "stage1".."stage5"): conv1 (stride 2), conv3 (4), Inception 3b (8),
    Inception 4e (16), Inception 5b (32). `width_multiplier` scales every channel count (1.0 is
    the reference; small values give tiny models for tests).
    """

    num_classes: int = 1000
    drop_rate: float = 0.2  # torchvision's; the paper uses 0.4.
    aux_logits: bool = False
    aux_drop_rate: float = 0.7
    cifar_stem: bool = False
    branch3_kernel: int = 3
    width_multiplier: float = 1.0
    global_pool: bool = True
    in_channels: int = 3
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = model_input(x, self.in_channels, self.dtype)

        def width(c: int) -> int:
            return max(1, round(c * self.width_multiplier))

        cbr = functools.partial(ConvBN, eps=BN_EPS, dtype=self.dtype)
        with_aux = self.aux_logits and (train or self.is_initializing())

        def inception(x: jax.Array, key: str) -> jax.Array:
            widths = tuple(width(c) for c in INCEPTION_WIDTHS[key])
            return Inception(widths, self.branch3_kernel, self.dtype, name=f"inception{key}")(
                x, train
            )

        def aux(x: jax.Array, name: str) -> None:
            logits = GoogLeNetAux(
                self.num_classes, width(128), width(1024), self.aux_drop_rate, self.dtype, name=name
            )(x, train)
            if train:
                self.sow("aux", "logits", logits)

        if self.cifar_stem:
            x = cbr(width(64), 3, name="conv1")(x, train)
        else:
            x = cbr(width(64), 7, 2, name="conv1")(x, train)
        self.sow("intermediates", "stage1", x)
        if not self.cifar_stem:
            x = max_pool_ceil(x, 3, 2)
        x = cbr(width(64), 1, name="conv2")(x, train)
        x = cbr(width(192), 3, name="conv3")(x, train)
        self.sow("intermediates", "stage2", x)
        if not self.cifar_stem:
            x = max_pool_ceil(x, 3, 2)
        x = inception(inception(x, "3a"), "3b")
        self.sow("intermediates", "stage3", x)
        x = max_pool_ceil(x, 3, 2)
        x = inception(x, "4a")
        if with_aux:
            aux(x, "aux1")
        for key in ("4b", "4c", "4d"):
            x = inception(x, key)
        if with_aux:
            aux(x, "aux2")
        x = inception(x, "4e")
        self.sow("intermediates", "stage4", x)
        x = max_pool_ceil(x, 2, 2)
        x = inception(inception(x, "5a"), "5b")
        self.sow("intermediates", "stage5", x)
        logits = Classifier(
            self.num_classes, self.drop_rate, self.global_pool, self.dtype, name="head"
        )(x, train)
        return logits.astype(jnp.float32)


register("googlenet", functools.partial(GoogLeNet), input_size=224, family="googlenet")
