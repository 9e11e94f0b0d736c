"""The residual network family as one implementation: a variant is data (a partial), not a class.

Block kinds: basic and bottleneck (He et al. 2016, "Deep Residual Learning", with the v1.5 stride
on the 3x3 of torchvision), pre-activation (He et al. 2016, "Identity Mappings", timm's ResNetV2),
grouped (ResNeXt, Xie et al. 2017), squeeze-excitation (SENet, Hu et al. 2018, as timm's
seresnet*), and wide (Zagoruyko & Komodakis 2016). CIFAR ResNets follow He et al. 2016, Sec. 4.2:
a 3x3 stem, 16/32/64 channels, and parameter-free (option A) shortcuts. The CIFAR ResNeXt-29
follows Xie et al. 2017, Sec. 5.3. The SENet variants of the Caffe release (SENet-154, the legacy
SE-ResNet/SE-ResNeXt) are data too: fields `deep_stem`, `ceil_pool`, `stride_on_1x1`,
`reduce_first` and `down_kernel`; cvjax/models/senet.py registers them.

32x32 inputs: `cifar_stem=True` drops the stem's stride and max pool (a 3x3/1 convolution, or
three of them with `deep_stem`), so an ImageNet model keeps 32/16/8/4 maps in its four stages.
"""

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from cvjax.errors import UserError
from cvjax.models import scan
from cvjax.models.layers import (
    Classifier,
    ConvBN,
    DropPath,
    Dtype,
    SqueezeExcite,
    batch_norm,
    conv,
    max_pool_ceil,
    model_input,
)
from cvjax.models.registry import register


class ResidualBlock(nn.Module):
    """One residual block; `bottleneck`, `preact`, `groups` and `se_ratio` select its kind.

    The SENet release adds three choices (post-activation blocks only): `stride_on_1x1` puts a
    bottleneck's stride on its first 1x1 convolution (Caffe ResNet, the legacy SE-ResNets)
    instead of the 3x3 (v1.5); `reduce_first=2` halves the first 1x1's width (SENet-154:
    planes*2, then planes*4 grouped); `down_kernel=3` makes a strided projection shortcut a 3x3
    convolution (SENet-154).
    """

    planes: int
    strides: int = 1
    bottleneck: bool = True
    preact: bool = False
    groups: int = 1
    width_per_group: int = 64
    se_ratio: float = 0.0
    shortcut: str = "conv"  # "conv" (1x1 projection) or "zero_pad" (option A, no parameters).
    drop_path_rate: float = 0.0
    dropout: float = 0.0  # Between the two convolutions of a wide basic block.
    zero_init_residual: bool = False
    stride_on_1x1: bool = False
    reduce_first: int = 1
    down_kernel: int = 1
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        out_ch = self.planes * (4 if self.bottleneck else 1)
        width = int(self.planes * self.width_per_group / 64) * self.groups
        project = self.strides != 1 or x.shape[-1] != out_ch
        dt = self.dtype
        if self.preact:
            pre = nn.relu(batch_norm(train, dt)(x))
            shortcut = conv(out_ch, 1, self.strides, dtype=dt)(pre) if project else x
            if self.bottleneck:
                y = conv(width, 1, dtype=dt)(pre)
                y = nn.relu(batch_norm(train, dt)(y))
                y = conv(width, 3, self.strides, self.groups, dtype=dt)(y)
                y = nn.relu(batch_norm(train, dt)(y))
                y = conv(out_ch, 1, dtype=dt)(y)
            else:
                y = conv(self.planes, 3, self.strides, dtype=dt)(pre)
                y = nn.relu(batch_norm(train, dt)(y))
                y = nn.Dropout(self.dropout, deterministic=not train)(y)
                y = conv(self.planes, 3, dtype=dt)(y)
        else:
            zero = self.zero_init_residual
            if self.bottleneck:
                s1, s3 = (self.strides, 1) if self.stride_on_1x1 else (1, self.strides)
                y = ConvBN(width // self.reduce_first, 1, s1, dtype=dt)(x, train)
                y = ConvBN(width, 3, s3, self.groups, dtype=dt)(y, train)
                y = ConvBN(out_ch, 1, act=None, zero_init_bn=zero, dtype=dt)(y, train)
            else:
                y = ConvBN(self.planes, 3, self.strides, dtype=dt)(x, train)
                y = ConvBN(self.planes, 3, act=None, zero_init_bn=zero, dtype=dt)(y, train)
            shortcut = x
            if project and self.shortcut == "zero_pad":
                shortcut = x[:, :: self.strides, :: self.strides, :]
                extra = out_ch - x.shape[-1]
                shortcut = jnp.pad(
                    shortcut, ((0, 0), (0, 0), (0, 0), (extra // 2, extra - extra // 2))
                )
            elif project:
                # The first stage's projection (stride 1) stays 1x1, as in the SENet release.
                kernel = self.down_kernel if self.strides != 1 else 1
                shortcut = ConvBN(out_ch, kernel, self.strides, act=None, dtype=dt)(x, train)
        if self.se_ratio:
            y = SqueezeExcite(int(out_ch * self.se_ratio), dtype=dt)(y)
        y = DropPath(self.drop_path_rate)(y, train)
        y = y + shortcut
        return y if self.preact else nn.relu(y)


class ResNet(nn.Module):
    """ResNet: stem, stages of residual blocks, global pooling, classifier.

    `cifar_stem=True` replaces the 7x7/2 convolution and max pool by a 3x3/1 convolution so that
    an ImageNet ResNet runs on 32x32 inputs. `global_pool=False` returns a spatial map of logits
    (the classifier applied as a 1x1 convolution).

    `deep_stem=True` is SENet-154's stem: three 3x3 convolutions of stem_width/2, stem_width/2
    and stem_width channels, the first with stride 2 (stride 1 with `cifar_stem`), each with
    BatchNorm and ReLU (also when `preact`). `ceil_pool` uses the Caffe-style ceil-mode max pool
    of the SENet release (`max_pool_ceil`).

    `scan_blocks=True` runs each stage's blocks after the first as one `nn.scan` loop
    (cvjax/models/scan.py): the same function, compiled once per stage. It cuts the compile time
    of deep ResNets. Variables of either layout load into the other through `init_from`.
    """

    stage_sizes: Sequence[int]
    bottleneck: bool = True
    preact: bool = False
    widths: Sequence[int] = (64, 128, 256, 512)
    groups: int = 1
    width_per_group: int = 64
    se_ratio: float = 0.0
    shortcut: str = "conv"
    cifar_stem: bool = False
    stem_width: int = 64
    deep_stem: bool = False
    ceil_pool: bool = False
    stride_on_1x1: bool = False
    reduce_first: int = 1
    down_kernel: int = 1
    block_dropout: float = 0.0
    num_classes: int = 1000
    drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    zero_init_residual: bool = False
    global_pool: bool = True
    in_channels: int = 3
    scan_blocks: bool = False
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = model_input(x, self.in_channels, self.dtype)
        kernel, stride = (3, 1) if self.cifar_stem else (7, 2)
        if self.deep_stem:
            half = self.stem_width // 2
            for i, features in enumerate((half, half, self.stem_width)):
                x = ConvBN(features, 3, stride if i == 0 else 1, dtype=self.dtype)(x, train)
        elif self.preact:
            x = conv(self.stem_width, kernel, stride, dtype=self.dtype)(x)
        else:
            x = ConvBN(self.stem_width, kernel, stride, dtype=self.dtype)(x, train)
        if not self.cifar_stem:
            if self.ceil_pool:
                x = max_pool_ceil(x)
            else:
                x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
        total = sum(self.stage_sizes)
        if self.scan_blocks and self.drop_path_rate:
            raise UserError(
                "scan_blocks needs identical blocks, but drop_path_rate gives each block its own "
                "rate: set drop_path_rate=0 or scan_blocks=False"
            )
        index = 0
        for stage, (size, planes) in enumerate(zip(self.stage_sizes, self.widths, strict=True)):
            i = 0
            while i < size:
                kwargs = dict(
                    planes=planes,
                    strides=2 if stage > 0 and i == 0 else 1,
                    bottleneck=self.bottleneck,
                    preact=self.preact,
                    groups=self.groups,
                    width_per_group=self.width_per_group,
                    se_ratio=self.se_ratio,
                    shortcut=self.shortcut,
                    drop_path_rate=self.drop_path_rate * index / max(total - 1, 1),
                    dropout=self.block_dropout,
                    zero_init_residual=self.zero_init_residual,
                    stride_on_1x1=self.stride_on_1x1,
                    reduce_first=self.reduce_first,
                    down_kernel=self.down_kernel,
                    dtype=self.dtype,
                )
                if self.scan_blocks and i == 1 and size - i > 1:  # blocks 1.. are identical
                    x = scan.repeat(ResidualBlock, kwargs, size - i, index, train, x)
                    index += size - i
                    break
                # Explicit names keep the blocks' unscanned names (ResidualBlock_{index}).
                name = f"ResidualBlock_{index}" if self.scan_blocks else None
                x = ResidualBlock(**kwargs, name=name)(x, train)
                index += 1
                i += 1
            if self.preact and stage == len(self.stage_sizes) - 1:
                x = nn.relu(batch_norm(train, self.dtype)(x))
            self.sow("intermediates", f"stage{stage + 1}", x)
        logits = Classifier(
            self.num_classes, self.drop_rate, self.global_pool, self.dtype, name="head"
        )(x, train)
        return logits.astype(jnp.float32)


def _register(name: str, input_size: int = 224, num_classes: int = 1000, **kwargs) -> None:
    register(
        name,
        functools.partial(ResNet, **kwargs),
        input_size=input_size,
        num_classes=num_classes,
        family="resnet",
    )


# ImageNet ResNet v1.5 (torchvision).
for _name, _sizes, _bottleneck in [
    ("resnet18", (2, 2, 2, 2), False),
    ("resnet34", (3, 4, 6, 3), False),
    ("resnet50", (3, 4, 6, 3), True),
    ("resnet101", (3, 4, 23, 3), True),
    ("resnet152", (3, 8, 36, 3), True),
    ("resnet200", (3, 24, 36, 3), True),
]:
    _register(_name, stage_sizes=_sizes, bottleneck=_bottleneck)

# Pre-activation ResNet v2 (timm resnetv2_*).
_register("resnetv2_50", stage_sizes=(3, 4, 6, 3), preact=True)
_register("resnetv2_101", stage_sizes=(3, 4, 23, 3), preact=True)

# Wide, grouped and squeeze-excitation variants (torchvision / timm).
_register("wide_resnet50_2", stage_sizes=(3, 4, 6, 3), width_per_group=128)
_register("wide_resnet101_2", stage_sizes=(3, 4, 23, 3), width_per_group=128)
_register("resnext50_32x4d", stage_sizes=(3, 4, 6, 3), groups=32, width_per_group=4)
_register("resnext101_32x8d", stage_sizes=(3, 4, 23, 3), groups=32, width_per_group=8)
_register("resnext101_64x4d", stage_sizes=(3, 4, 23, 3), groups=64, width_per_group=4)
_register("seresnet50", stage_sizes=(3, 4, 6, 3), se_ratio=1 / 16)
_register(
    "seresnext50_32x4d", stage_sizes=(3, 4, 6, 3), groups=32, width_per_group=4, se_ratio=1 / 16
)

# CIFAR ResNets of He et al. 2016, Sec. 4.2: 6n + 2 layers, option-A shortcuts.
for _n in (1, 3, 5, 7, 9, 18):
    _register(
        f"resnet{6 * _n + 2}",
        input_size=32,
        num_classes=10,
        stage_sizes=(_n, _n, _n),
        bottleneck=False,
        widths=(16, 32, 64),
        stem_width=16,
        cifar_stem=True,
        shortcut="zero_pad",
    )

# CIFAR ResNeXt-29 (Xie et al. 2017, Sec. 5.3, Table 7 and Fig. 7): a 3x3 stem of 64, three
# stages of 3 bottlenecks with output widths 256/512/1024, cardinality C and 64 channels per group
# at the first stage (doubled each stage), 1x1 projection shortcuts (the authors' option B).
for _cardinality in (2, 4, 8, 16):
    _register(
        f"resnext29_{_cardinality}x64d",
        input_size=32,
        num_classes=10,
        stage_sizes=(3, 3, 3),
        widths=(64, 128, 256),
        groups=_cardinality,
        width_per_group=64,
        stem_width=64,
        cifar_stem=True,
    )

# Wide ResNet 28-10 for CIFAR (Zagoruyko & Komodakis 2016): pre-activation, widths 16k/32k/64k.
_register(
    "wrn28_10",
    input_size=32,
    num_classes=10,
    stage_sizes=(4, 4, 4),
    bottleneck=False,
    preact=True,
    widths=(160, 320, 640),
    stem_width=16,
    cifar_stem=True,
)
