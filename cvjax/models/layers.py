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
import numpy as np

from cvjax.errors import UserError
from cvjax.models import fastconv

Dtype = Any

# torchvision's kaiming_normal_(mode="fan_out", nonlinearity="relu") for convolutions.
he_normal = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def batch_norm(
    train: bool,
    dtype: Dtype,
    zero_init: bool = False,
    name: str | None = None,
    eps: float = 1e-5,
    momentum: float = 0.9,
    use_scale: bool = True,
):
    """BatchNorm as in PyTorch (momentum 0.1 there is 0.9 here), statistics in float32.

    `eps` is 1e-5 in torchvision; ports of TensorFlow models (Inception-v3/v4, Xception) use 1e-3.
    `momentum` is Flax's decay of the running statistics: MobileNet-v3 and TF ports use 0.99,
    MnasNet 0.9997. `use_scale=False` drops the scale (airbench freezes it at 1).
    """
    return nn.BatchNorm(
        use_running_average=not train,
        momentum=momentum,
        epsilon=eps,
        use_scale=use_scale,
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
    kernel_init: Callable = he_normal,
) -> nn.Conv:
    """A convolution with PyTorch's symmetric padding (not 'SAME'), He-normal initialized.

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
        # On CPU, formulations XLA runs much faster (the same function; see fastconv).
        conv_general_dilated=fastconv.conv_general_dilated,
        use_bias=use_bias,
        kernel_init=kernel_init,
        dtype=dtype,
        param_dtype=jnp.float32,
        name=name,
    )


class ConvBN(nn.Module):
    """Convolution -> BatchNorm -> activation (None for none); torchvision's Conv2dNormActivation.

    `groups=features` (= the input channels) makes it depthwise; see `conv` for padding and
    `batch_norm` for `eps` and `momentum`.
    """

    features: int
    kernel: int | tuple[int, int] = 3
    strides: int = 1
    groups: int = 1
    act: Callable | None = nn.relu
    zero_init_bn: bool = False
    padding: int | tuple[int, int] | str | None = None
    eps: float = 1e-5
    momentum: float = 0.9
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = conv(
            self.features, self.kernel, self.strides, self.groups, self.dtype, padding=self.padding
        )(x)
        x = batch_norm(train, self.dtype, self.zero_init_bn, eps=self.eps, momentum=self.momentum)(
            x
        )
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
    padding: int | str | None = None  # See `conv`; "SAME" for TF ports (NASNet).
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
            padding=self.padding,
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


def avg_pool_exclude_pad(
    x: jax.Array,
    window: tuple[int, int],
    strides: tuple[int, int] = (1, 1),
    padding: str | tuple[tuple[int, int], tuple[int, int]] = "SAME",
) -> jax.Array:
    """Average pooling that leaves padding out of each average (PyTorch's
    `count_include_pad=False`, TensorFlow's "SAME" average pool).

    The divisor depends on the shape only, so it is computed here with numpy and enters the
    program as a literal. `nn.avg_pool(..., count_include_pad=False)` pools a batch-shaped array
    of ones instead, which XLA constant-folds at compile time: 44 s per pooling layer for a
    batch of 256 28x28x16 maps on a CPU.
    """
    if isinstance(padding, str):
        pads = jax.lax.padtype_to_pads(x.shape[1:3], window, strides, padding)
    else:
        pads = [tuple(p) for p in padding]

    def counts(length: int, size: int, stride: int, pad: tuple[int, int]) -> np.ndarray:
        starts = np.arange(0, length + sum(pad) - size + 1, stride) - pad[0]
        return np.minimum(starts + size, length) - np.maximum(starts, 0)

    rows, cols = (
        counts(n, k, s, p) for n, k, s, p in zip(x.shape[1:3], window, strides, pads, strict=True)
    )
    divisor = np.outer(rows, cols).astype(np.float32)[None, :, :, None]
    summed = nn.pool(x, 0.0, jax.lax.add, window, strides, pads)
    return summed / jnp.asarray(divisor, x.dtype)


def global_avg_pool(x: jax.Array) -> jax.Array:
    return jnp.mean(x, axis=(1, 2))


def adaptive_avg_pool(x: jax.Array, size: int) -> jax.Array:
    """torch.nn.AdaptiveAvgPool2d((size, size)) on NHWC: output cell i averages input rows
    floor(i * H / size) to ceil((i + 1) * H / size) (bins may overlap; a smaller map is repeated).
    """
    h, w = x.shape[1:3]
    if (h, w) == (size, size):
        return x

    def bins(length: int) -> np.ndarray:
        weights = np.zeros((size, length), np.float32)
        for i in range(size):
            start, end = i * length // size, -(-(i + 1) * length // size)
            weights[i, start:end] = 1.0 / (end - start)
        return weights

    return jnp.einsum(
        "ih,nhwc,jw->nijc", bins(h).astype(x.dtype), x, bins(w).astype(x.dtype)
    ).astype(x.dtype)


def max_pool_ceil(x: jax.Array, window: int = 3, stride: int = 2, padding: int = 0) -> jax.Array:
    """PyTorch's `MaxPool2d(window, stride, padding, ceil_mode=True)` (Caffe's pooling) on NHWC.

    The output size rounds up, (n + 2p - k) / s, so extra -inf padding goes on the bottom/right;
    as in PyTorch, a window that would start inside that right padding is dropped.
    """
    pads = []
    for n in x.shape[1:3]:
        out = -(-(n + 2 * padding - window) // stride) + 1
        if (out - 1) * stride >= n + padding:
            out -= 1
        extra = max((out - 1) * stride + window - n - 2 * padding, 0)
        pads.append((padding, padding + extra))
    return nn.max_pool(x, (window, window), (stride, stride), padding=pads)


def fc_conv(features: int, kernel: int, dtype: Dtype, name: str) -> nn.Conv:
    """A fully connected layer as a VALID convolution (Simonyan & Zisserman 2015, Sec. 3.2).

    Weights start N(0, 0.01) and biases at zero (Krizhevsky et al. 2012, Sec. 5; torchvision's VGG).
    """
    return nn.Conv(
        features,
        (kernel, kernel),
        padding="VALID",
        kernel_init=nn.initializers.normal(0.01),
        dtype=dtype,
        param_dtype=jnp.float32,
        name=name,
    )


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

    `pool` is "avg" (global average) or "max" (global max, airbench); `use_bias=False` and a
    `kernel_init` serve heads that differ from the usual linear layer. Create it with
    `name="head"`: `features.reset_classifier` replaces the params under that name.
    """

    num_classes: int
    drop_rate: float = 0.0
    global_pool: bool = True
    dtype: Dtype = jnp.float32
    pool: str = "avg"
    use_bias: bool = True
    kernel_init: Callable = nn.linear.default_kernel_init

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        if self.global_pool:
            x = global_avg_pool(x) if self.pool == "avg" else jnp.max(x, axis=(1, 2))
        self.sow("intermediates", "pre_logits", x)
        x = nn.Dropout(self.drop_rate, deterministic=not train)(x)
        # Dense on the last axis is a 1x1 convolution on a spatial map: one parameter set.
        return nn.Dense(
            self.num_classes,
            use_bias=self.use_bias,
            kernel_init=self.kernel_init,
            dtype=self.dtype,
            param_dtype=jnp.float32,
            name="fc",
        )(x)


# Blocks of the efficient families: MobileNet v1/v2/v3, MnasNet, EfficientNet.


def make_divisible(
    value: float, divisor: int = 8, min_value: int | None = None, round_limit: float = 0.9
) -> int:
    """Rounds a channel count to the nearest multiple of `divisor`, never more than 10% down.

    The rounding of the MobileNet reference code, which all of torchvision's `_make_divisible`,
    MnasNet's `_round_to_multiple_of` and EfficientNet's `round_filters` repeat: 83 -> 80 (within
    10%), 84 -> 88; never below `min_value` (default `divisor`).
    """
    min_value = min_value or divisor
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < round_limit * value else rounded


class DepthwiseSeparable(nn.Module):
    """Depthwise k x k conv-BN-act, then pointwise 1x1 conv-BN(-act) (Howard et al. 2017, Fig. 3).

    Costs D_K^2 * M * D_F^2 + M * N * D_F^2 multiply-adds instead of the D_K^2 * M * N * D_F^2 of
    a standard convolution (Sec. 3.1). MobileNet-v1 has an activation after the pointwise
    convolution (`pw_act=True`); MnasNet's first block is linear there (`pw_act=False`).
    """

    features: int
    kernel: int = 3
    strides: int = 1
    act: Callable = nn.relu
    pw_act: bool = True
    eps: float = 1e-5
    momentum: float = 0.9
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        bn = dict(eps=self.eps, momentum=self.momentum, dtype=self.dtype)
        channels = x.shape[-1]
        x = ConvBN(channels, self.kernel, self.strides, channels, self.act, **bn, name="dw")(
            x, train
        )
        pw_act = self.act if self.pw_act else None
        return ConvBN(self.features, 1, act=pw_act, **bn, name="pw")(x, train)


class InvertedResidual(nn.Module):
    """The inverted residual with linear bottleneck, MBConv (Sandler et al. 2018, Fig. 3d).

    1x1 expansion conv-BN-act (left out when `expanded` equals the input width), depthwise k x k
    conv-BN-act, optional squeeze-excitation (Howard et al. 2019, Fig. 4; Tan & Le 2019), linear
    1x1 projection conv-BN; the input is added back, through drop path, when the stride is 1 and
    the width is unchanged. MobileNet-v2/v3, MnasNet and EfficientNet differ only in data: the
    widths (each family rounds `expanded` and `se_channels` its own way and passes the result),
    kernel, activation and the SE gate (sigmoid, or hard-sigmoid in MobileNet-v3).
    """

    features: int
    expanded: int
    kernel: int = 3
    strides: int = 1
    act: Callable = nn.relu6
    se_channels: int = 0  # Width of the squeeze-excitation bottleneck; 0: no SE.
    se_gate: Callable = nn.sigmoid
    se_act: Callable = nn.relu
    drop_path_rate: float = 0.0
    eps: float = 1e-5
    momentum: float = 0.9
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        bn = dict(eps=self.eps, momentum=self.momentum, dtype=self.dtype)
        y = x
        if self.expanded != x.shape[-1]:
            y = ConvBN(self.expanded, 1, act=self.act, **bn, name="expand")(y, train)
        y = ConvBN(
            self.expanded, self.kernel, self.strides, self.expanded, self.act, **bn, name="dw"
        )(y, train)
        if self.se_channels:
            y = SqueezeExcite(
                self.se_channels, self.se_gate, self.se_act, dtype=self.dtype, name="se"
            )(y)
        y = ConvBN(self.features, 1, act=None, **bn, name="project")(y, train)
        if self.strides == 1 and x.shape[-1] == self.features:
            y = DropPath(self.drop_path_rate)(y, train) + x
        return y


def cifar_strides(strides: list[int], cifar_stem: bool) -> list[int]:
    """The block strides for 32x32 inputs: with `cifar_stem` the first stride-2 block gets stride 1.

    Together with a stride-1 stem this keeps a 4x4 map at the end of a network that reduces
    224 px by 32 (7x7), as the CIFAR MobileNet-v2 of kuangliu/pytorch-cifar does.
    """
    strides = list(strides)
    if cifar_stem and 2 in strides:
        strides[strides.index(2)] = 1
    return strides
