"""FractalNet (Larsson et al. 2017, "FractalNet: Ultra-Deep Neural Networks without Residuals").

A fractal block with C columns is the expansion f_1(z) = conv(z), f_{C+1}(z) = join(f_C(f_C(z)),
conv(z)) (Sec. 2): column c (0 = shallowest) holds 2^c conv-BN-ReLU units, the deepest 2^(C-1),
and a join takes the element-wise mean of the columns meeting there. B blocks are stacked with
2x2 max pooling after each, so the network is B * 2^(C-1) layers deep along its deepest column.

The registered CIFAR model is the one of Sec. 4 and the authors' Caffe generator
(gustavla/fractalnet, generation/fractalnet.py): B = 5, C = 3 (5 * 2^2 = 20 layers), channels
(64, 128, 256, 512, 512), dropout (0, 0.1, 0.2, 0.3, 0.4) per block after each convolution (the
generator's conv-dropout-BN-ReLU order), 32x32 inputs. As in that generator, and as the paper
notes for convenience, each block's last join comes after the pooling of its columns.

Drop-path (Sec. 3), sampled once per mini-batch with the "dropout" RNG in training:
- local, with probability 1 - `global_drop_ratio`: every join drops each input independently with
  probability `local_drop_rate` and keeps a random one if all were dropped;
- global, with probability `global_drop_ratio`: one column is drawn for the whole network and
  every join passes only that column, so the network computes that column alone.
In evaluation every join averages all its inputs. `column=c` forces the global choice of column c
in every mode: `column=-1` (default) is the full network, `column=C - 1` the paper's "deepest
column alone" (Table 1).

The classifier is a linear layer on the 1x1x512 map (global pooling is the identity at 32x32);
with `global_pool=False` a larger input gives a map of logits.
"""

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from cvjax.errors import UserError
from cvjax.models.layers import Classifier, Dtype, batch_norm, conv, model_input
from cvjax.models.registry import register


def local_keep_mask(key: jax.Array, n: int, drop_rate: float) -> jax.Array:
    """Which of a join's `n` inputs survive local drop-path: each is dropped with `drop_rate`,
    and if all are, one drawn uniformly is kept: a join always has an input (Sec. 3)."""
    drop_key, pick_key = jax.random.split(key)
    keep = jax.random.bernoulli(drop_key, 1.0 - drop_rate, (n,))
    rescue = jax.nn.one_hot(jax.random.randint(pick_key, (), 0, n), n, dtype=jnp.bool_)
    return jnp.where(keep.any(), keep, rescue)


def masked_mean(inputs: Sequence[jax.Array], keep: jax.Array) -> jax.Array:
    """Element-wise mean of the inputs where `keep` (a boolean per input, at least one) is True."""
    weights = keep.astype(inputs[0].dtype)
    total = sum(w * x for w, x in zip(weights, inputs, strict=True))
    return total / weights.sum()


class ConvUnit(nn.Module):
    """3x3 convolution - dropout - BatchNorm - ReLU, the unit of the authors' generator."""

    features: int
    dropout: float = 0.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = conv(self.features, 3, dtype=self.dtype, name="conv")(x)
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return nn.relu(batch_norm(train, self.dtype, name="bn")(x))


class FractalBlock(nn.Module):
    """One fractal block of `columns` columns, then 2x2 max pooling.

    `path` is None for the plain mean (evaluation), else (is_global, column, sample_local): a
    boolean and an int array drawn once per mini-batch, and whether joins draw local masks
    (see the module docstring).
    """

    features: int
    columns: int
    dropout: float = 0.0
    local_drop_rate: float = 0.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(
        self, x: jax.Array, train: bool, path: tuple[jax.Array, jax.Array, bool] | None = None
    ) -> jax.Array:
        depth = 2 ** (self.columns - 1)
        inputs = [x] * self.columns  # What each column's next unit reads.
        counts = [0] * self.columns
        for level in range(1, depth + 1):
            # Column c has a unit every 2^(C-1-c) levels: the deepest at every level.
            active = [c for c in range(self.columns) if level % 2 ** (self.columns - 1 - c) == 0]
            outputs = []
            for c in active:
                counts[c] += 1
                unit = ConvUnit(
                    self.features, self.dropout, self.dtype, name=f"col{c}_conv{counts[c]}"
                )
                outputs.append(unit(inputs[c], train))
            if level == depth:
                outputs = [nn.max_pool(y, (2, 2), (2, 2)) for y in outputs]
            joined = self._join(outputs, active, path)
            for c in active:
                inputs[c] = joined
        return inputs[-1]

    def _join(self, outputs: list[jax.Array], active: list[int], path) -> jax.Array:
        if len(outputs) == 1:
            return outputs[0]
        if path is None:
            return sum(outputs) / len(outputs)
        is_global, column, sample_local = path
        if sample_local:
            local = local_keep_mask(self.make_rng("dropout"), len(outputs), self.local_drop_rate)
        else:
            local = jnp.ones(len(outputs), jnp.bool_)
        chosen = jnp.asarray(active) == column
        # A join off the chosen column's path feeds only units whose outputs that column's joins
        # drop; it joins locally so that their BatchNorm statistics still see real inputs.
        chosen = jnp.where(chosen.any(), chosen, local)
        return masked_mean(outputs, jnp.where(is_global, chosen, local))


class FractalNet(nn.Module):
    """B fractal blocks (each followed by 2x2 max pooling) and a linear classifier."""

    widths: Sequence[int] = (64, 128, 256, 512, 512)
    columns: int = 3
    block_dropout: Sequence[float] = (0.0, 0.1, 0.2, 0.3, 0.4)
    local_drop_rate: float = 0.15
    global_drop_ratio: float = 0.5
    column: int = -1
    num_classes: int = 10
    drop_rate: float = 0.0
    global_pool: bool = True
    in_channels: int = 3
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = model_input(x, self.in_channels, self.dtype)
        if not -1 <= self.column < self.columns:
            raise UserError(
                f"column={self.column} is out of range: use -1 (all) or 0..{self.columns - 1}"
            )
        if self.column >= 0:
            path = (jnp.array(True), jnp.array(self.column), False)
        elif train and (self.local_drop_rate > 0 or self.global_drop_ratio > 0):
            global_key, column_key = jax.random.split(self.make_rng("dropout"))
            path = (
                jax.random.bernoulli(global_key, self.global_drop_ratio),
                jax.random.randint(column_key, (), 0, self.columns),
                self.local_drop_rate > 0,
            )
        else:
            path = None
        for i, (width, dropout) in enumerate(zip(self.widths, self.block_dropout, strict=True)):
            x = FractalBlock(
                width, self.columns, dropout, self.local_drop_rate, self.dtype, name=f"block{i + 1}"
            )(x, train, path)
            self.sow("intermediates", f"stage{i + 1}", x)
        logits = Classifier(
            self.num_classes, self.drop_rate, self.global_pool, self.dtype, name="head"
        )(x, train)
        return logits.astype(jnp.float32)


# CIFAR FractalNet of Sec. 4: B = 5, C = 3, 20 layers, 10 classes at 32x32.
register(
    "fractalnet",
    functools.partial(FractalNet),
    input_size=32,
    num_classes=10,
    family="fractalnet",
)
