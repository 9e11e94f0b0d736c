"""The NAS-Bench-201 network (Dong & Yang 2020, Sec. 2.1 and Fig. 1) for any cell of its space,
and the same network as a weight-sharing supernet.

Macro skeleton (the benchmark's `TinyNetwork`): a 3x3 convolution with BN to `width` channels;
three stages of `cells` cells at width, 2x width and 4x width, separated by a residual reduction
block (ReLU-conv3x3/2-BN, ReLU-conv3x3-BN, plus a 2x2 average pool and 1x1 convolution on the
shortcut; no activation after the sum); BN, ReLU, global average pooling and the classifier.
C=16, N=5 on 32x32 CIFAR data gives the benchmark's networks (1,531,546 parameters with 3x3
convolutions on every edge, "1.53 MB" in the paper).

Cell operations (cvjax/nas/nb201.py `OPS`): `none` (zeros), `skip_connect` (identity),
`nor_conv_1x1` / `nor_conv_3x3` (ReLU, convolution, BN), `avg_pool_3x3` (stride 1, padding 1,
padding not counted in the average). BN follows PyTorch (eps 1e-5, momentum 0.1).

Supernet: `arch=""` builds every operation on every edge and sums them weighted by the
(6, 5) `arch_weights` passed to `__call__` (rows in `EDGES` order, columns in `OPS` order); a
one-hot row selects one operation (one-shot / SPOS), a softmax row is DARTS' mixed operation.
The weights are an input, not a parameter or a field, so one compiled step serves every
architecture; without them every operation gets weight 1/5.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from cvjax.errors import UserError
from cvjax.models.layers import (
    Classifier,
    Dtype,
    avg_pool_exclude_pad,
    batch_norm,
    conv,
    model_input,
)
from cvjax.models.registry import register
from cvjax.nas.nb201 import EDGES, OPS, edge_ops

# The benchmark's best CIFAR-10 cell family (94.37% in the shared table), the default arch.
BEST_CIFAR10 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+" + (
    "|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
)


class ReLUConvBN(nn.Module):
    features: int
    kernel: int
    strides: int = 1
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = conv(self.features, self.kernel, self.strides, dtype=self.dtype, name="conv")(
            nn.relu(x)
        )
        return batch_norm(train, self.dtype, name="bn")(x)


def apply_op(op: str, x: jax.Array, train: bool, dtype: Dtype, name: str) -> jax.Array:
    """One cell operation on `x` (called inside a compact module; `name` names its params)."""
    if op == "none":
        return jnp.zeros_like(x)
    if op == "skip_connect":
        return x
    if op == "avg_pool_3x3":
        return avg_pool_exclude_pad(x, (3, 3), (1, 1), ((1, 1), (1, 1)))
    kernel = {"nor_conv_1x1": 1, "nor_conv_3x3": 3}[op]
    return ReLUConvBN(x.shape[-1], kernel, dtype=dtype, name=name)(x, train)


class NB201Cell(nn.Module):
    """Node j = sum over i < j of op(i -> j)(node i); the output is node 3.

    A node with only `none` inputs is zero. Pooling or passing it on adds nothing, so those
    edges are left out (None below) rather than computed on an array of zeros: XLA would fold
    such a constant at compile time, seconds per layer at training batch sizes. A convolution
    of it is kept (its BN adds a learned bias to zeros); the values are the same either way.
    """

    arch: str  # "" = supernet cell.
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool, arch_weights: jax.Array | None) -> jax.Array:
        ops = edge_ops(self.arch) if self.arch else None
        nodes: list[jax.Array | None] = [x, None, None, None]
        for e, (target, source) in enumerate(EDGES):
            if ops is not None:
                op, inputs = ops[e], nodes[source]
                if op == "none" or (inputs is None and "conv" not in op):
                    continue  # Contributes exactly zero.
                if inputs is None:
                    inputs = jnp.zeros_like(x)
                out = apply_op(op, inputs, train, self.dtype, f"edge{target}{source}")
            else:
                out = sum(
                    arch_weights[e, k].astype(x.dtype)
                    * apply_op(op, nodes[source], train, self.dtype, f"edge{target}{source}_{op}")
                    for k, op in enumerate(OPS)
                    if op != "none"  # Weight times zeros: nothing to add.
                )
            nodes[target] = out if nodes[target] is None else nodes[target] + out
        return jnp.zeros_like(x) if nodes[-1] is None else nodes[-1]


class ResidualReduction(nn.Module):
    """NB201's `ResNetBasicblock` with stride 2 between stages."""

    features: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        y = ReLUConvBN(self.features, 3, 2, self.dtype, name="conv_a")(x, train)
        y = ReLUConvBN(self.features, 3, 1, self.dtype, name="conv_b")(y, train)
        shortcut = nn.avg_pool(x, (2, 2), (2, 2))
        shortcut = conv(self.features, 1, dtype=self.dtype, name="downsample")(shortcut)
        return shortcut + y


class NB201Network(nn.Module):
    """NAS-Bench-201's network for cell `arch` (or the supernet, `arch=""`)."""

    arch: str = BEST_CIFAR10
    width: int = 16
    cells: int = 5
    num_classes: int = 10
    drop_rate: float = 0.0
    global_pool: bool = True
    in_channels: int = 3
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(
        self, x: jax.Array, train: bool = False, arch_weights: jax.Array | None = None
    ) -> jax.Array:
        x = model_input(x, self.in_channels, self.dtype)
        if self.arch:
            edge_ops(self.arch)  # A bad string fails here, with the format, before tracing.
            if arch_weights is not None:
                raise UserError("arch_weights is for the supernet; build it with arch=''")
        elif arch_weights is None:
            arch_weights = jnp.full((len(EDGES), len(OPS)), 1.0 / len(OPS))
        elif arch_weights.shape != (len(EDGES), len(OPS)):
            raise UserError(f"arch_weights must be {(len(EDGES), len(OPS))} (edges x ops)")
        x = conv(self.width, 3, dtype=self.dtype, name="stem_conv")(x)
        x = batch_norm(train, self.dtype, name="stem_bn")(x)
        for stage in range(3):
            if stage:
                x = ResidualReduction(x.shape[-1] * 2, self.dtype, name=f"reduce{stage}")(x, train)
            for i in range(self.cells):
                x = NB201Cell(self.arch, self.dtype, name=f"stage{stage + 1}_cell{i}")(
                    x, train, arch_weights
                )
            self.sow("intermediates", f"stage{stage + 1}", x)
        x = nn.relu(batch_norm(train, self.dtype, name="last_bn")(x))
        return Classifier(
            self.num_classes, self.drop_rate, self.global_pool, self.dtype, name="head"
        )(x, train).astype(jnp.float32)


register(
    "nb201",
    functools.partial(NB201Network),
    input_size=32,
    num_classes=10,
    family="nas",
)
