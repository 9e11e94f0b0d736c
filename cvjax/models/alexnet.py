"""AlexNet as torchvision builds it: the single-tower variant of Krizhevsky 2014 ("One weird trick
for parallelizing convolutional neural networks", arXiv:1404.5997), 61,100,840 parameters.

Five convolutions (64, 192, 384, 256, 256 channels; 11x11/4, 5x5, then 3x3) with 3x3/2 max
pooling after the first, second and fifth, then fc6-fc7-fc8 with dropout 0.5 before fc6 and fc7
(`fc_dropout`; `drop_rate`, before fc8, is 0 as in torchvision). The fully connected layers are
convolutions: fc6 is a 6x6 convolution over the 6x6 pool5 map and fc7 a 1x1 one, fc8 is the
shared `Classifier` ("head"). With `global_pool=True` the pool5 map is first average-pooled to
6x6 (torchvision's AdaptiveAvgPool2d, so any input of at least 63x63 gives (N, classes)); with
`global_pool=False` it is not, and a larger input gives a map of logits.

CIFAR (`cifar_stem=True`): the 32x32 AlexNet of bearpaw/pytorch-classification (W. Yang,
models/cifar/alexnet.py): conv1 11x11/4 with padding 5 and 2x2/2 max pools, so pool5 is 1x1 and
fc6 is 1x1. With `fc_width=0` (no fc6/fc7, the head on the 256 pooled features) it is exactly that
network: 2,472,266 parameters for 10 classes (its README: 2.47M, 22.78% CIFAR-10 error).

Parameter names follow torchvision's Sequential indices (`features_0` ... `features_10`,
`classifier_1`, `classifier_4`; fc8 is "head") for a weight importer.
"""

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from cvjax.models.layers import (
    Classifier,
    Dtype,
    adaptive_avg_pool,
    conv,
    fc_conv,
    model_input,
)
from cvjax.models.registry import register


class AlexNet(nn.Module):
    """AlexNet (torchvision / Krizhevsky 2014); see the module docstring for the fields."""

    widths: Sequence[int] = (64, 192, 384, 256, 256)  # conv1 ... conv5.
    cifar_stem: bool = False
    pool_size: int | None = None  # Adaptive pooling target and fc6 kernel; None: 6, or 1 (CIFAR).
    fc_width: int = 4096  # Width of fc6 and fc7; 0: no hidden fully connected layers.
    fc_dropout: float = 0.5  # Before fc6 and fc7.
    num_classes: int = 1000
    drop_rate: float = 0.0  # Before fc8 (none in torchvision).
    in_channels: int = 3
    global_pool: bool = True
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = model_input(x, self.in_channels, self.dtype)
        dt = self.dtype
        if self.cifar_stem:
            window, stem_padding = 2, 5
        else:
            window, stem_padding = 3, 2

        def pool(x):
            return nn.max_pool(x, (window, window), (2, 2))

        def conv_relu(x, features, kernel, strides, padding, index):
            layer = conv(features, kernel, strides, dtype=dt, use_bias=True, padding=padding,
                         name=f"features_{index}")  # fmt: skip
            return nn.relu(layer(x))

        w1, w2, w3, w4, w5 = self.widths
        x = pool(conv_relu(x, w1, 11, 4, stem_padding, 0))
        self.sow("intermediates", "stage1", x)
        x = pool(conv_relu(x, w2, 5, 1, 2, 3))
        self.sow("intermediates", "stage2", x)
        x = conv_relu(x, w3, 3, 1, 1, 6)
        x = conv_relu(x, w4, 3, 1, 1, 8)
        x = pool(conv_relu(x, w5, 3, 1, 1, 10))
        self.sow("intermediates", "stage3", x)
        if self.fc_width:
            size = self.pool_size or (1 if self.cifar_stem else 6)
            if self.global_pool:
                x = adaptive_avg_pool(x, size)
            for name, kernel in (("classifier_1", size), ("classifier_4", 1)):
                x = nn.Dropout(self.fc_dropout, deterministic=not train)(x)
                x = nn.relu(fc_conv(self.fc_width, kernel, dt, name)(x))
            self.sow("intermediates", "stage4", x)
        logits = Classifier(self.num_classes, self.drop_rate, self.global_pool, dt, name="head")(
            x, train
        )
        return logits.astype(jnp.float32)


register("alexnet", AlexNet, input_size=224, family="alexnet")
