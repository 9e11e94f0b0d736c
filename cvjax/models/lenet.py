"""LeNet-5 (LeCun, Bottou, Bengio & Haffner 1998, "Gradient-Based Learning Applied to Document
Recognition", Proc. IEEE, Sec. II.B), faithful where it is cheap.

Layers, on the paper's 32x32 grayscale input: C1 6@5x5 -> S2 2x2 subsampling -> C3 16@5x5 over
the partial connection table of Table I -> S4 -> C5 120@5x5 -> F6 84 -> output. Every layer up to
F6 is followed by the squashing function f(a) = 1.7159 tanh(2a / 3) (Appendix A), and weights
start uniform in +-2.4 / fan_in (Appendix A; biases start at zero).

- `subsampling="trainable"` (the paper): S2/S4 add the four inputs of each 2x2 block, multiply
  by a trainable coefficient, add a trainable bias (one of each per map) and squash.
  `"avg"`: plain 2x2 average pooling with no parameters and no squashing (the usual modern
  reading).
- `c3_table=True` (the paper): C3 map j sees only the S2 maps of column j of Table I (60 of the
  96 map pairs, which breaks symmetry and saves parameters); False: every S2 map.
- C5 is a 5x5 convolution (the paper calls it one) and F6 a 1x1 convolution, so the network is
  fully convolutional: with `global_pool=False` a larger page gives a map of logits.
- The output is the shared linear `Classifier` ("head"), not the paper's Euclidean RBF units:
  those use fixed, hand-designed 7x12 bitmap prototypes and the paper's MAP criterion, while the
  train step here uses softmax cross-entropy, as every reproduction does.

Parameters (Sec. II.B): C1 156, S2 12, C3 1,516, S4 32, C5 48,120, F6 10,164 = 60,000 trainable
(the paper's "60,000 trainable free parameters"), plus 84 x 10 + 10 = 850 for the linear head:
60,850. With `c3_table=False` C3 has 2,416; with `subsampling="avg"` S2/S4 have none.

MNIST digits are 28x28 (the paper's 20x20 digits centered in a 28x28 field, Sec. III.A): `pad=2`
adds two pixels of background on each side, giving the paper's 32x32 input. CIFAR (32x32, RGB)
runs natively with `in_channels=3`.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cvjax.errors import UserError
from cvjax.models.layers import Classifier, Dtype, model_input
from cvjax.models.registry import register

# Table I: the S2 maps each C3 map combines. Maps 0-5 take three neighbouring maps, 6-11 four
# neighbouring maps, 12-14 four non-neighbouring maps, and 15 all six.
C3_TABLE: tuple[tuple[int, ...], ...] = (
    (0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 5), (0, 4, 5), (0, 1, 5),
    (0, 1, 2, 3), (1, 2, 3, 4), (2, 3, 4, 5), (0, 3, 4, 5), (0, 1, 4, 5), (0, 1, 2, 5),
    (0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5),
    (0, 1, 2, 3, 4, 5),
)  # fmt: skip


def scaled_tanh(x: jax.Array) -> jax.Array:
    """LeNet's squashing function A tanh(S a), A = 1.7159, S = 2/3 (LeCun et al. 1998, App. A).

    f(1) = 1 and f(-1) = -1, and the second derivative peaks at +-1.
    """
    return 1.7159 * jnp.tanh(x * (2.0 / 3.0))


def fan_in_uniform(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
    """Uniform in +-2.4 / F, F the fan-in (all axes but the last): LeCun et al. 1998, App. A."""
    limit = 2.4 / math.prod(shape[:-1])
    return jax.random.uniform(key, shape, dtype, -limit, limit)


def _symmetric_uniform(limit):
    def init(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -1.0, 1.0) * limit

    return init


def _conv(features: int, kernel: int, dtype: Dtype, name: str) -> nn.Conv:
    return nn.Conv(
        features,
        (kernel, kernel),
        padding="VALID",
        kernel_init=fan_in_uniform,
        dtype=dtype,
        param_dtype=jnp.float32,
        name=name,
    )


class TrainableSubsampling(nn.Module):
    """S2 / S4: the sum of each 2x2 block times a coefficient, plus a bias, one of each per map."""

    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        maps = x.shape[-1]
        # Each unit has 4 inputs, so the paper's initialization gives +-0.6.
        coefficient = self.param("coefficient", _symmetric_uniform(2.4 / 4), (maps,))
        bias = self.param("bias", nn.initializers.zeros, (maps,), jnp.float32)
        summed = nn.avg_pool(x, (2, 2), (2, 2)) * 4
        return summed * coefficient.astype(self.dtype) + bias.astype(self.dtype)


class ConnectionTableConv(nn.Module):
    """A VALID convolution where output map j sees only the input maps `table[j]`.

    Only the connected kernels are parameters (`kernel` is k x k x connections), so the count
    matches the paper; they are scattered into a dense HWIO kernel for one XLA convolution.
    """

    table: tuple[tuple[int, ...], ...] = C3_TABLE
    kernel_size: int = 5
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = self.kernel_size
        rows = np.array([i for inputs in self.table for i in inputs])
        cols = np.array([j for j, inputs in enumerate(self.table) for _ in inputs])
        fan_in = np.array([k * k * len(self.table[j]) for j in cols], np.float32)
        kernel = self.param("kernel", _symmetric_uniform(2.4 / fan_in), (k, k, len(rows)))
        bias = self.param("bias", nn.initializers.zeros, (len(self.table),), jnp.float32)
        dense = jnp.zeros((k, k, x.shape[-1], len(self.table)), jnp.float32)
        dense = dense.at[:, :, rows, cols].set(kernel)
        y = jax.lax.conv_general_dilated(
            x,
            dense.astype(self.dtype),
            (1, 1),
            "VALID",
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
        return y + bias.astype(self.dtype)


def pad_background(x: jax.Array, pad: int) -> jax.Array:
    """Adds `pad` pixels on each side with each image's minimum: after normalization that is the
    background (MNIST's 0), which zero padding would not be."""
    low = jnp.min(x, axis=(1, 2, 3), keepdims=True)
    return jnp.pad(x - low, ((0, 0), (pad, pad), (pad, pad), (0, 0))) + low


class LeNet5(nn.Module):
    """LeNet-5 (LeCun et al. 1998, Sec. II.B); see the module docstring for the fields."""

    subsampling: str = "trainable"  # "trainable" (the paper's S2/S4) or "avg".
    c3_table: bool = True  # Table I's partial connections in C3; False: all 6 S2 maps.
    pad: int = 0  # Background pixels added on each side; 2 takes 28x28 MNIST to 32x32.
    num_classes: int = 10
    drop_rate: float = 0.0
    in_channels: int = 1
    global_pool: bool = True
    dtype: Dtype = jnp.float32

    def _subsample(self, x: jax.Array, name: str) -> jax.Array:
        if self.subsampling == "trainable":
            return scaled_tanh(TrainableSubsampling(self.dtype, name=name)(x))
        if self.subsampling == "avg":
            return nn.avg_pool(x, (2, 2), (2, 2))
        raise UserError(
            f"unknown subsampling {self.subsampling!r} for LeNet-5; use 'trainable' or 'avg'"
        )

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = model_input(x, self.in_channels, self.dtype)
        if self.pad:
            x = pad_background(x, self.pad)
        if x.shape[1] < 32 or x.shape[2] < 32:
            raise UserError(
                f"LeNet-5 takes inputs of at least 32x32, got {x.shape[1]}x{x.shape[2]}; "
                "pad 28x28 MNIST with pad=2 or resize with --config.image_size=32"
            )
        x = scaled_tanh(_conv(6, 5, self.dtype, "C1")(x))
        x = self._subsample(x, "S2")
        self.sow("intermediates", "stage1", x)
        if self.c3_table:
            x = ConnectionTableConv(C3_TABLE, 5, self.dtype, name="C3")(x)
        else:
            x = _conv(16, 5, self.dtype, "C3")(x)
        x = self._subsample(scaled_tanh(x), "S4")
        self.sow("intermediates", "stage2", x)
        x = scaled_tanh(_conv(120, 5, self.dtype, "C5")(x))
        x = scaled_tanh(_conv(84, 1, self.dtype, "F6")(x))
        self.sow("intermediates", "stage3", x)
        logits = Classifier(
            self.num_classes, self.drop_rate, self.global_pool, self.dtype, name="head"
        )(x, train)
        return logits.astype(jnp.float32)


register("lenet5", LeNet5, input_size=32, family="lenet", num_classes=10, in_channels=1)
