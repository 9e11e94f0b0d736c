"""VGG (Simonyan & Zisserman 2015, "Very Deep Convolutional Networks for Large-Scale Image
Recognition"), as torchvision builds it, plus configurations A-LRN and C of the paper's Table 1.

Five stages of 3x3 convolutions (64, 128, 256, 512, 512 channels; with bias, ReLU, and BatchNorm
in the `_bn` models) each ending in 2x2/2 max pooling, then fc6-fc7-fc8 with dropout 0.5 before
fc7 (`fc_dropout`) and before fc8 (`drop_rate`), as in torchvision. The fully connected layers are
convolutions, the paper's dense evaluation (Sec. 3.2): fc6 is a 7x7 convolution over the 7x7
pool5 map, fc7 a 1x1 convolution, and fc8 the shared `Classifier` ("head"). With
`global_pool=True` pool5 is first average-pooled to 7x7 (torchvision's AdaptiveAvgPool2d), so
any input of at least 32x32 gives (N, classes); with `global_pool=False` a larger input gives a
map of logits.

- `lrn=True` (configuration A-LRN, Sec. 2.3): local response normalization after the first
  convolution, with AlexNet's parameters k=2, n=5, alpha=1e-4, beta=0.75 (Krizhevsky et al. 2012,
  Sec. 3.3).
- `last_conv_1x1=True` (configuration C): the last convolution of stages 3, 4 and 5 is 1x1.
- `cifar=True`: the CIFAR VGG of kuangliu/pytorch-cifar (models/vgg.py; also bearpaw/
  pytorch-classification): the same convolution stack, whose pool5 is 1x1 at 32x32, then global
  pooling and the 512 -> classes head, with no hidden fully connected layers (`fc_width` defaults
  to 0; `fc_width=512` gives the 512-512-classes classifier of chengyangfu/pytorch-vgg-cifar10,
  with torchvision's dropout placement rather than its dropout before the first two layers).
  kuangliu's network has no dropout: create it with `drop_rate=0.0` (configs/vgg.py does).

Parameter names follow torchvision's Sequential indices (`features_0`, `features_1` for its
BatchNorm, ..., `classifier_0` for fc6, `classifier_3` for fc7; fc8 is "head").
"""

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from cvjax.models.layers import (
    Classifier,
    Dtype,
    adaptive_avg_pool,
    batch_norm,
    conv,
    fc_conv,
    model_input,
)
from cvjax.models.registry import register


def local_response_norm(
    x: jax.Array, size: int = 5, k: float = 2.0, alpha: float = 1e-4, beta: float = 0.75
) -> jax.Array:
    """Krizhevsky et al. 2012, Sec. 3.3: a / (k + alpha * sum of a^2 over `size` maps)^beta.

    The sum runs over the `size` channels centered on each one (clipped at the ends). This is
    the paper's formula: PyTorch's LocalResponseNorm and Caffe's LRN divide alpha by `size`, so
    the same layer there is LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2).
    """
    squares = jnp.square(x.astype(jnp.float32))
    half = size // 2
    padded = jnp.pad(squares, ((0, 0), (0, 0), (0, 0), (half, size - 1 - half)))
    channels = x.shape[-1]
    window = sum(padded[..., i : i + channels] for i in range(size))
    return (x.astype(jnp.float32) / (k + alpha * window) ** beta).astype(x.dtype)


class VGG(nn.Module):
    """VGG (Simonyan & Zisserman 2015, Table 1); see the module docstring for the fields."""

    stage_sizes: Sequence[int]  # Convolutions per stage: (1, 1, 2, 2, 2) is configuration A.
    widths: Sequence[int] = (64, 128, 256, 512, 512)
    use_bn: bool = False  # BatchNorm after each convolution (torchvision's vgg*_bn).
    lrn: bool = False  # Configuration A-LRN.
    last_conv_1x1: bool = False  # Configuration C: stages 3-5 end in a 1x1 convolution.
    cifar: bool = False  # 32x32 inputs: pool5 is 1x1; see the module docstring.
    pool_size: int | None = None  # Adaptive pooling target and fc6 kernel; None: 7, or 1 (CIFAR).
    fc_width: int | None = None  # fc6 / fc7 width; None: 4096, or 0 (CIFAR); 0: no fc6 / fc7.
    fc_dropout: float = 0.5  # Before fc7.
    num_classes: int = 1000
    drop_rate: float = 0.5  # Before fc8.
    in_channels: int = 3
    global_pool: bool = True
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = model_input(x, self.in_channels, self.dtype)
        dt = self.dtype
        index = 0  # Position in torchvision's `features` Sequential (conv, [bn], relu, ..., pool).
        for stage, (size, width) in enumerate(zip(self.stage_sizes, self.widths, strict=True)):
            for i in range(size):
                one_by_one = self.last_conv_1x1 and stage >= 2 and i == size - 1
                x = conv(width, 1 if one_by_one else 3, dtype=dt, use_bias=True,
                         name=f"features_{index}")(x)  # fmt: skip
                if self.use_bn:
                    x = batch_norm(train, dt, name=f"features_{index + 1}")(x)
                x = nn.relu(x)
                if self.lrn and index == 0:
                    x = local_response_norm(x)
                index += 3 if self.use_bn else 2
            x = nn.max_pool(x, (2, 2), (2, 2))
            index += 1
            self.sow("intermediates", f"stage{stage + 1}", x)
        fc_width = 0 if self.cifar else 4096
        fc_width = fc_width if self.fc_width is None else self.fc_width
        if fc_width:
            size = self.pool_size or (1 if self.cifar else 7)
            if self.global_pool:
                x = adaptive_avg_pool(x, size)
            x = nn.relu(fc_conv(fc_width, size, dt, "classifier_0")(x))
            x = nn.Dropout(self.fc_dropout, deterministic=not train)(x)
            x = nn.relu(fc_conv(fc_width, 1, dt, "classifier_3")(x))
            self.sow("intermediates", f"stage{len(self.stage_sizes) + 1}", x)
        logits = Classifier(self.num_classes, self.drop_rate, self.global_pool, dt, name="head")(
            x, train
        )
        return logits.astype(jnp.float32)


# Table 1 of the paper: convolutions per stage of configurations A (11 layers), B (13), D (16)
# and E (19); C is D with 1x1 convolutions ending stages 3-5.
_STAGES = {11: (1, 1, 2, 2, 2), 13: (2, 2, 2, 2, 2), 16: (2, 2, 3, 3, 3), 19: (2, 2, 4, 4, 4)}


def _register(name: str, depth: int, **kwargs) -> None:
    register(
        name,
        functools.partial(VGG, stage_sizes=_STAGES[depth], **kwargs),
        input_size=224,
        family="vgg",
    )


for _depth in _STAGES:
    _register(f"vgg{_depth}", _depth)
    _register(f"vgg{_depth}_bn", _depth, use_bn=True)
_register("vgg11_lrn", 11, lrn=True)
_register("vgg16_c", 16, last_conv_1x1=True)
