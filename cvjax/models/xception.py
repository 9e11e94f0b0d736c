"""Xception (Chollet 2017, "Xception: Deep Learning with Depthwise Separable Convolutions").

Fig. 5: an entry flow (two 3x3 convolutions, then three residual blocks of two separable
convolutions ending in a 3x3/2 max pool, with a 1x1/2 projection on the shortcut), a middle flow of
eight residual blocks of three 728-channel separable convolutions, and an exit flow (one more
reducing block, 728 -> 1024, then separable convolutions to 1536 and 2048 channels). Every
separable convolution is depthwise 3x3 then pointwise 1x1 with nothing in between (Sec. 4.7), and
is followed by BatchNorm. As in timm's `legacy_xception` (Cadene's port of the Keras model), the
stem's convolutions are unpadded, the first block has no leading ReLU, every other block starts
with one, and the shortcut reads the block's input before that ReLU. 299x299 gives a 10x10 map.

`bn_eps` is 1e-3, Keras's default, with which the original weights were trained; timm's port uses
PyTorch's 1e-5 (pass `bn_eps=1e-5` to reproduce its outputs exactly). Submodule names follow timm
(`block4.rep_1` is `block4.rep.1`, the separable conv after the ReLU at `rep.0`).

CIFAR (`cifar_stem=True`, same parameters): the stem's first convolution has stride 1, both stem
convolutions are padded and the first block does not reduce, so a 32x32 input gives 32, 32, 16, 8
(the middle flow) and 4 pixels at the five stages.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from cvjax.models.layers import (
    Classifier,
    Dtype,
    SeparableConv,
    batch_norm,
    conv,
    model_input,
)
from cvjax.models.registry import register


class XceptionBlock(nn.Module):
    """`reps` x (ReLU, separable 3x3, BN), a 3x3 max pool if strided, plus the shortcut.

    `grow_first` puts the change of width on the first separable convolution (entry and middle
    flows), else on the last (the exit flow's 728 -> 728 -> 1024).
    """

    features: int
    reps: int
    strides: int = 1
    start_with_relu: bool = True
    grow_first: bool = True
    bn_eps: float = 1e-3
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        in_features = x.shape[-1]
        y = x
        for i in range(self.reps):
            if self.grow_first:
                width = self.features
            else:
                width = self.features if i == self.reps - 1 else in_features
            if i > 0 or self.start_with_relu:
                y = nn.relu(y)
            # timm's index in its `rep` Sequential of [ReLU, SeparableConv, BN] triples.
            index = 3 * i + (1 if self.start_with_relu else 0)
            y = SeparableConv(width, dtype=self.dtype, name=f"rep_{index}")(y)
            y = batch_norm(train, self.dtype, name=f"rep_{index + 1}", eps=self.bn_eps)(y)
        if self.strides != 1:
            s = self.strides
            y = nn.max_pool(y, (3, 3), (s, s), padding=((1, 1), (1, 1)))
        shortcut = x
        if self.strides != 1 or in_features != self.features:
            shortcut = conv(self.features, 1, self.strides, dtype=self.dtype, name="skip")(x)
            shortcut = batch_norm(train, self.dtype, name="skipbn", eps=self.bn_eps)(shortcut)
        return y + shortcut


class Xception(nn.Module):
    """Xception (Chollet 2017, Fig. 5); the classifier follows global average pooling.

    Stages (sown, after the ReLU that starts the next block, as timm's feature_info): stem 64 ch
    (1/2), block1 128 (1/4), block2 256 (1/8), middle flow 728 (1/16), exit flow 2048 (1/32).
    """

    cifar_stem: bool = False
    middle_blocks: int = 8
    width: float = 1.0  # Multiplies every layer's channels (small test models).
    bn_eps: float = 1e-3
    num_classes: int = 1000
    drop_rate: float = 0.0
    global_pool: bool = True
    in_channels: int = 3
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = model_input(x, self.in_channels, self.dtype)
        dt, eps = self.dtype, self.bn_eps
        pad, s2 = (1, 1) if self.cifar_stem else (0, 2)

        def w(channels: int) -> int:
            return max(1, int(channels * self.width))

        x = conv(w(32), 3, s2, dtype=dt, name="conv1", padding=pad)(x)
        x = nn.relu(batch_norm(train, dt, name="bn1", eps=eps)(x))
        x = conv(w(64), 3, dtype=dt, name="conv2", padding=pad)(x)
        x = nn.relu(batch_norm(train, dt, name="bn2", eps=eps)(x))
        self.sow("intermediates", "stage1", x)

        block = functools.partial(XceptionBlock, bn_eps=eps, dtype=dt)
        x = block(w(128), 2, s2, start_with_relu=False, name="block1")(x, train)
        self.sow("intermediates", "stage2", nn.relu(x))
        x = block(w(256), 2, 2, name="block2")(x, train)
        self.sow("intermediates", "stage3", nn.relu(x))
        x = block(w(728), 2, 2, name="block3")(x, train)
        for i in range(self.middle_blocks):
            x = block(w(728), 3, name=f"block{4 + i}")(x, train)
        self.sow("intermediates", "stage4", nn.relu(x))
        x = block(w(1024), 2, 2, grow_first=False, name=f"block{4 + self.middle_blocks}")(x, train)

        x = SeparableConv(w(1536), dtype=dt, name="conv3")(x)
        x = nn.relu(batch_norm(train, dt, name="bn3", eps=eps)(x))
        x = SeparableConv(w(2048), dtype=dt, name="conv4")(x)
        x = nn.relu(batch_norm(train, dt, name="bn4", eps=eps)(x))
        self.sow("intermediates", "stage5", x)
        logits = Classifier(self.num_classes, self.drop_rate, self.global_pool, dt, name="head")(
            x, train
        )
        return logits.astype(jnp.float32)


register("xception", functools.partial(Xception), input_size=299, family="xception")
