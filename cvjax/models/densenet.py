"""DenseNet (Huang et al. 2017, "Densely Connected Convolutional Networks"), as torchvision has it.

Every layer of a dense block sees the concatenation of all earlier feature maps of the block and
adds `growth_rate` (k) new ones. Layers are pre-activation bottlenecks, BN-ReLU-1x1(bn_size * k)-
BN-ReLU-3x3(k) (DenseNet-B); transitions are BN-ReLU-1x1-avgpool2 and halve the channels
(compression 0.5, DenseNet-C); a final BN-ReLU precedes global pooling (Sec. 3, Table 1).

ImageNet models (224x224): the stem is 7x7/2 conv-BN-ReLU and a 3x3/2 max pool. `cifar_stem=True`
makes it a 3x3/1 conv-BN-ReLU without the max pool, so that an ImageNet DenseNet runs on 32x32
inputs (4x4 maps after the third transition).

CIFAR models (`densenet_bc_*`, 32x32, 10 classes) follow Sec. 3 "Implementation Details" and the
authors' Torch code: a bare 3x3 convolution of 2k channels (`stem_norm=False`: every dense layer
starts with its own BN-ReLU), three blocks of (L - 4) / 6 bottleneck layers and 8x8 final maps.

`block_dropout` is the paper's dropout after every convolution but the first (0.2 for the runs
without augmentation; 0 with it). `remat=True` recomputes each dense layer in the backward pass
(`nn.remat`, torchvision's `memory_efficient`): the concatenated inputs of a layer are then not
kept for the backward pass, at the cost of a second forward through the layer.
"""

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from cvjax.models.layers import Classifier, Dtype, batch_norm, conv, model_input
from cvjax.models.registry import register


class DenseLayer(nn.Module):
    """BN-ReLU-1x1 conv (bn_size * k) - BN-ReLU-3x3 conv (k); returns only the k new maps."""

    growth_rate: int
    bn_size: int = 4
    dropout: float = 0.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        y = nn.relu(batch_norm(train, self.dtype, name="norm1")(x))
        y = conv(self.bn_size * self.growth_rate, 1, dtype=self.dtype, name="conv1")(y)
        y = nn.Dropout(self.dropout, deterministic=not train)(y)
        y = nn.relu(batch_norm(train, self.dtype, name="norm2")(y))
        y = conv(self.growth_rate, 3, dtype=self.dtype, name="conv2")(y)
        return nn.Dropout(self.dropout, deterministic=not train)(y)


class DenseBlock(nn.Module):
    """`num_layers` dense layers; each input is the concatenation of the block input and all
    earlier layers' outputs, and so is the block's output."""

    num_layers: int
    growth_rate: int
    bn_size: int = 4
    dropout: float = 0.0
    remat: bool = False
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        # `train` (argument 2, counting self) selects Python branches: static under remat.
        layer_cls = nn.remat(DenseLayer, static_argnums=(2,)) if self.remat else DenseLayer
        for i in range(self.num_layers):
            y = layer_cls(
                self.growth_rate, self.bn_size, self.dropout, self.dtype, name=f"denselayer{i + 1}"
            )(x, train)
            x = jnp.concatenate([x, y], axis=-1)
        return x


class Transition(nn.Module):
    """BN-ReLU-1x1 conv-2x2 average pool between dense blocks (the paper's transition layer)."""

    features: int
    dropout: float = 0.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = nn.relu(batch_norm(train, self.dtype, name="norm")(x))
        x = conv(self.features, 1, dtype=self.dtype, name="conv")(x)
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return nn.avg_pool(x, (2, 2), (2, 2))


class DenseNet(nn.Module):
    """DenseNet-BC: stem, dense blocks joined by compressing transitions, BN-ReLU, classifier.

    Stages (sown as stage1, stage2, ...) are the dense blocks; the last one includes the final
    BN-ReLU (torchvision's `norm5` and ReLU), which is the map the classifier pools.
    """

    block_sizes: Sequence[int]
    growth_rate: int = 32
    stem_width: int = 64  # torchvision's num_init_features; 2k for the CIFAR models.
    bn_size: int = 4
    compression: float = 0.5
    cifar_stem: bool = False
    stem_norm: bool = True
    block_dropout: float = 0.0
    remat: bool = False
    num_classes: int = 1000
    drop_rate: float = 0.0
    global_pool: bool = True
    in_channels: int = 3
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = model_input(x, self.in_channels, self.dtype)
        dt = self.dtype
        if self.cifar_stem:
            x = conv(self.stem_width, 3, dtype=dt, name="conv0")(x)
            if self.stem_norm:
                x = nn.relu(batch_norm(train, dt, name="norm0")(x))
        else:
            x = conv(self.stem_width, 7, 2, dtype=dt, name="conv0")(x)
            if self.stem_norm:
                x = nn.relu(batch_norm(train, dt, name="norm0")(x))
            x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
        last = len(self.block_sizes) - 1
        for i, size in enumerate(self.block_sizes):
            x = DenseBlock(
                size,
                self.growth_rate,
                self.bn_size,
                self.block_dropout,
                self.remat,
                dt,
                name=f"denseblock{i + 1}",
            )(x, train)
            if i < last:
                # Sow before the transition: the block's full-resolution output is the feature.
                self.sow("intermediates", f"stage{i + 1}", x)
                features = int(x.shape[-1] * self.compression)
                x = Transition(features, self.block_dropout, dt, name=f"transition{i + 1}")(
                    x, train
                )
        x = nn.relu(batch_norm(train, dt, name="norm5")(x))
        self.sow("intermediates", f"stage{last + 1}", x)
        logits = Classifier(self.num_classes, self.drop_rate, self.global_pool, dt, name="head")(
            x, train
        )
        return logits.astype(jnp.float32)


def _register(name: str, input_size: int = 224, num_classes: int = 1000, **kwargs) -> None:
    register(
        name,
        functools.partial(DenseNet, **kwargs),
        input_size=input_size,
        num_classes=num_classes,
        family="densenet",
    )


# ImageNet DenseNet-BC (Table 1; torchvision). DenseNet-161 uses k = 48 and a 96-channel stem.
_register("densenet121", block_sizes=(6, 12, 24, 16))
_register("densenet161", block_sizes=(6, 12, 36, 24), growth_rate=48, stem_width=96)
_register("densenet169", block_sizes=(6, 12, 32, 32))
_register("densenet201", block_sizes=(6, 12, 48, 32))
# DenseNet-264 of Table 1 (k = 32, 7x7 stem); timm only has densenet264d (k = 48, deep stem).
_register("densenet264", block_sizes=(6, 12, 64, 48))

# CIFAR DenseNet-BC (Sec. 3 and 4.1): depth L = 6n + 4, n bottleneck layers per block.
for _depth, _k in [(100, 12), (250, 24)]:
    _n = (_depth - 4) // 6
    _register(
        f"densenet_bc_{_depth}_k{_k}",
        input_size=32,
        num_classes=10,
        block_sizes=(_n, _n, _n),
        growth_rate=_k,
        stem_width=2 * _k,
        cifar_stem=True,
        stem_norm=False,
    )
