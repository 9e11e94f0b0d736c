"""Blocks shared by the model families: conv-BN-act, squeeze-excitation, drop path, pooling."""

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any

# torchvision's kaiming_normal_(mode="fan_out", nonlinearity="relu") for convolutions.
he_normal = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def batch_norm(train: bool, dtype: Dtype, zero_init: bool = False, name: str | None = None):
    """BatchNorm as in PyTorch (momentum 0.1 there is 0.9 here, eps 1e-5), stats in float32."""
    return nn.BatchNorm(
        use_running_average=not train,
        momentum=0.9,
        epsilon=1e-5,
        dtype=dtype,
        param_dtype=jnp.float32,
        scale_init=nn.initializers.zeros if zero_init else nn.initializers.ones,
        name=name,
    )


def conv(
    features: int,
    kernel: int,
    strides: int = 1,
    groups: int = 1,
    dtype: Dtype = jnp.float32,
    use_bias: bool = False,
    name: str | None = None,
) -> nn.Conv:
    """A k x k convolution with PyTorch's symmetric padding k // 2 (not 'SAME')."""
    pad = kernel // 2
    return nn.Conv(
        features,
        (kernel, kernel),
        (strides, strides),
        padding=((pad, pad), (pad, pad)),
        feature_group_count=groups,
        use_bias=use_bias,
        kernel_init=he_normal,
        dtype=dtype,
        param_dtype=jnp.float32,
        name=name,
    )


class ConvBN(nn.Module):
    """Convolution -> BatchNorm -> activation (None for no activation)."""

    features: int
    kernel: int = 3
    strides: int = 1
    groups: int = 1
    act: Callable | None = nn.relu
    zero_init_bn: bool = False
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = conv(self.features, self.kernel, self.strides, self.groups, self.dtype)(x)
        x = batch_norm(train, self.dtype, self.zero_init_bn)(x)
        return x if self.act is None else self.act(x)


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
    """Dropout then the final linear layer; with `global_pool=False` a 1x1 conv (fully conv)."""

    num_classes: int
    drop_rate: float = 0.0
    global_pool: bool = True
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        if self.global_pool:
            x = global_avg_pool(x)
        x = nn.Dropout(self.drop_rate, deterministic=not train)(x)
        # Dense on the last axis is a 1x1 convolution on a spatial map: one parameter set.
        return nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=jnp.float32, name="fc")(x)
