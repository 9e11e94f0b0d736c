"""Blocks shared by the model families: conv-BN-act, squeeze-excitation, drop path, pooling.

Every registered model follows one contract (see `cvjax/models/features.py`):
- fields `num_classes`, `drop_rate`, `in_channels`, `global_pool` and `dtype`, and `__call__(x,
  train=False)` returning float32 logits; the input goes through `model_input` first;
- each stage's output map is sown as `self.sow("intermediates", "stage<i>", x)`, i = 1, 2, ...;
- the final linear layer is `Classifier(..., name="head")`, which sows its input (the pooled
  embedding) as "pre_logits"; hidden fully connected layers (AlexNet, VGG) live outside it;
- auxiliary classifiers (`aux_logits=True`) are built when training or initializing and sow their
  logits as `self.sow("aux", "logits", logits)`; the train step adds `aux_loss_weight` times their
  cross-entropy.
"""

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cvjax.errors import UserError

Dtype = Any

# torchvision's kaiming_normal_(mode="fan_out", nonlinearity="relu") for convolutions.
he_normal = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def batch_norm(
    train: bool,
    dtype: Dtype,
    zero_init: bool = False,
    name: str | None = None,
    eps: float = 1e-5,
):
    """BatchNorm as in PyTorch (momentum 0.1 there is 0.9 here), statistics in float32.

    `eps` is 1e-5 in torchvision; ports of TensorFlow models (Inception-v3/v4, Xception) use 1e-3.
    """
    return nn.BatchNorm(
        use_running_average=not train,
        momentum=0.9,
        epsilon=eps,
        dtype=dtype,
        param_dtype=jnp.float32,
        scale_init=nn.initializers.zeros if zero_init else nn.initializers.ones,
        name=name,
    )


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


def conv(
    features: int,
    kernel: int | tuple[int, int],
    strides: int = 1,
    groups: int = 1,
    dtype: Dtype = jnp.float32,
    use_bias: bool = False,
    name: str | None = None,
    padding: int | tuple[int, int] | str | None = None,
    dilation: int = 1,
) -> nn.Conv:
    """A convolution with PyTorch's symmetric padding (not 'SAME').

    `padding=None` pads each side by dilation * (k - 1) // 2 (k // 2 for odd k); an int or an
    (h, w) pair pads that much on both sides of each axis; a string ("VALID", "SAME") goes to Flax.
    """
    kh, kw = _pair(kernel)
    if padding is None:
        padding = (dilation * (kh - 1) // 2, dilation * (kw - 1) // 2)
    if not isinstance(padding, str):
        ph, pw = _pair(padding)
        padding = ((ph, ph), (pw, pw))
    return nn.Conv(
        features,
        (kh, kw),
        (strides, strides),
        padding=padding,
        kernel_dilation=(dilation, dilation),
        feature_group_count=groups,
        use_bias=use_bias,
        kernel_init=he_normal,
        dtype=dtype,
        param_dtype=jnp.float32,
        name=name,
    )


class ConvBN(nn.Module):
    """Convolution -> BatchNorm -> activation (None for no activation); see `conv` for padding."""

    features: int
    kernel: int | tuple[int, int] = 3
    strides: int = 1
    groups: int = 1
    act: Callable | None = nn.relu
    zero_init_bn: bool = False
    padding: int | tuple[int, int] | str | None = None
    eps: float = 1e-5
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = conv(
            self.features, self.kernel, self.strides, self.groups, self.dtype, padding=self.padding
        )(x)
        x = batch_norm(train, self.dtype, self.zero_init_bn, eps=self.eps)(x)
        return x if self.act is None else self.act(x)


class SeparableConv(nn.Module):
    """Depthwise k x k convolution then pointwise 1x1 (Chollet 2017; Howard et al. 2017).

    Costs D_K^2 * M * D_F^2 + M * N * D_F^2 multiply-adds instead of D_K^2 * M * N * D_F^2.
    No normalization between the two, as in Xception; add BatchNorm around it where a family has it.
    """

    features: int
    kernel: int = 3
    strides: int = 1
    dilation: int = 1
    use_bias: bool = False
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        channels = x.shape[-1]
        x = conv(
            channels,
            self.kernel,
            self.strides,
            groups=channels,
            dtype=self.dtype,
            use_bias=self.use_bias,
            dilation=self.dilation,
            name="depthwise",
        )(x)
        return conv(self.features, 1, dtype=self.dtype, use_bias=self.use_bias, name="pointwise")(x)


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation gate (Hu et al. 2018): pool, FC-ReLU-FC-sigmoid, rescale channels."""

    squeeze_channels: int
    gate: Callable = nn.sigmoid
    act: Callable = nn.relu
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        s = jnp.mean(x, axis=(1, 2), keepdims=True)
        s = nn.Conv(self.squeeze_channels, (1, 1), dtype=self.dtype, param_dtype=jnp.float32)(s)
        s = self.act(s)
        s = nn.Conv(x.shape[-1], (1, 1), dtype=self.dtype, param_dtype=jnp.float32)(s)
        return x * self.gate(s)


class DropPath(nn.Module):
    """Stochastic depth (Huang et al. 2016): drops a sample's residual branch with prob `rate`."""

    rate: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        if not train or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask = jax.random.bernoulli(
            self.make_rng("dropout"), keep, (x.shape[0],) + (1,) * (x.ndim - 1)
        )
        return jnp.where(mask, x / keep, 0).astype(x.dtype)


def global_avg_pool(x: jax.Array) -> jax.Array:
    return jnp.mean(x, axis=(1, 2))


def model_input(x: jax.Array, in_channels: int, dtype: Dtype) -> jax.Array:
    """Checks the channel count of an NHWC batch and casts it to the compute dtype."""
    if x.ndim != 4 or x.shape[-1] != in_channels:
        raise UserError(
            f"the model takes NHWC images with {in_channels} channels, got shape {x.shape}; "
            f"create it with in_channels={x.shape[-1] if x.ndim == 4 else 'C'} or convert them"
        )
    return x.astype(dtype)


class GeM(nn.Module):
    """Generalized-mean pooling (Radenovic et al. 2018) with a learnable exponent p."""

    p_init: float = 3.0
    eps: float = 1e-6

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        p = self.param("p", nn.initializers.constant(self.p_init), (1,), jnp.float32)
        x = jnp.maximum(x.astype(jnp.float32), self.eps) ** p
        return jnp.mean(x, axis=(1, 2)) ** (1.0 / p)


class Classifier(nn.Module):
    """Pooling, dropout, then the final linear layer; with `global_pool=False` a 1x1 conv.

    Create it with `name="head"`: `features.reset_classifier` replaces the params under that name.
    """

    num_classes: int
    drop_rate: float = 0.0
    global_pool: bool = True
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        if self.global_pool:
            x = global_avg_pool(x)
        self.sow("intermediates", "pre_logits", x)
        x = nn.Dropout(self.drop_rate, deterministic=not train)(x)
        # Dense on the last axis is a 1x1 convolution on a spatial map: one parameter set.
        return nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=jnp.float32, name="fc")(x)
