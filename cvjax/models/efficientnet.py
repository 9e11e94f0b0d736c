"""EfficientNet B0-B7 and compound scaling (Tan & Le 2019, "Rethinking Model Scaling for CNNs").

B0 (Table 1) is a stack of MBConv blocks (`layers.InvertedResidual`, shared with MobileNet-v2/v3
and MnasNet) with SiLU, squeeze-excitation squeezed from the block's *input* width / 4 and
stochastic depth (drop connect) rising linearly with the block index to `drop_path_rate`
(default 0.2), as torchvision. A model is B0 scaled by two fields: `width_mult` (every width,
rounded with `make_divisible` to a multiple of 8: the reference `round_filters`) and
`depth_mult` (each stage's repeats, ceil(depth_mult * n): `round_repeats`). The head is a 1x1
convolution to 4x the last block's width (torchvision; 1280 for B0).

Compound scaling (Sec. 3.3, Eq. 3): depth d = alpha^phi, width w = beta^phi, resolution
r = gamma^phi with alpha = 1.2, beta = 1.1, gamma = 1.15 (alpha * beta^2 * gamma^2 = 1.92, about
2: FLOPs grow about 2^phi). `compound_scaling(phi)` computes them; the resolution is 224 r
rounded to a multiple of 8 and the dropout follows the published table's pattern (0.2 + 0.1 per
two steps of phi, at most 0.5). The published B1-B7 (`PUBLISHED`, from the reference code's
`efficientnet_params` and torchvision) are NOT alpha^phi etc. for phi = 1..7: the authors
rounded and hand-tuned them (B1 keeps width 1.0 and uses 240 px where phi = 1 gives 1.1 and
258 px; B7 has depth 3.1 where 1.2^7 = 3.58). `efficientnet_b<N>` uses the table;
`configs/efficientnet.py:phi=<float>` builds "efficientnet" (registered: B0's architecture with
the paper's BatchNorm) with the computed width/depth/dropout and resolution, for any phi.

BatchNorm: torchvision's efficientnet_b0-b4 use PyTorch's defaults (eps 1e-5, momentum 0.1 =
0.9 here), b5-b7 eps 1e-3 and momentum 0.01 (0.99 here; ported TF weights); the class default,
and "efficientnet", use the paper's 1e-3 / 0.99. Fields `bn_eps` and `bn_momentum` set them.

32x32 inputs: `cifar_stem=True` gives the stem and the first stride-2 stage stride 1
(`layers.cifar_strides`): a 4x4 last map. Stages end before each nominally stride-2 block.

Searched variants (cvjax/nas/mbconv.py): `stages` replaces B0's table (kernel, expansion and
repeats per stage) and `stage_se` turns squeeze-excitation off in chosen stages.
"""

import functools
import math
from collections.abc import Sequence
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from cvjax.errors import UserError
from cvjax.models.layers import (
    Classifier,
    ConvBN,
    Dtype,
    InvertedResidual,
    cifar_strides,
    make_divisible,
    model_input,
)
from cvjax.models.registry import register

# Tan & Le 2019, Table 1 (EfficientNet-B0): expansion, kernel, stride, input, output, repeats.
B0_STAGES = (
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
)

ALPHA, BETA, GAMMA = 1.2, 1.1, 1.15  # Depth, width and resolution bases (Sec. 3.3).


class Scaling(NamedTuple):
    width_mult: float
    depth_mult: float
    resolution: int
    drop_rate: float


# The published models: the reference code's efficientnet_params, torchvision's builders.
PUBLISHED = {
    "efficientnet_b0": Scaling(1.0, 1.0, 224, 0.2),
    "efficientnet_b1": Scaling(1.0, 1.1, 240, 0.2),
    "efficientnet_b2": Scaling(1.1, 1.2, 260, 0.3),
    "efficientnet_b3": Scaling(1.2, 1.4, 300, 0.3),
    "efficientnet_b4": Scaling(1.4, 1.8, 380, 0.4),
    "efficientnet_b5": Scaling(1.6, 2.2, 456, 0.4),
    "efficientnet_b6": Scaling(1.8, 2.6, 528, 0.5),
    "efficientnet_b7": Scaling(2.0, 3.1, 600, 0.5),
}


def compound_scaling(
    phi: float,
    base_resolution: int = 224,
    multiple: int = 8,
    alpha: float = ALPHA,
    beta: float = BETA,
    gamma: float = GAMMA,
) -> Scaling:
    """Width beta^phi, depth alpha^phi, resolution gamma^phi (Tan & Le 2019, Eq. 3).

    The resolution is `base_resolution` * gamma^phi rounded to a multiple of `multiple`; the
    dropout is the published table's: 0.2 for phi in [0, 2), +0.1 per 2, at most 0.5. Other
    coefficients (e.g. a configs/nas_compound.py search's) replace the paper's alpha, beta, gamma.
    """
    size = base_resolution * gamma**phi
    resolution = max(multiple, int(round(size / multiple)) * multiple)
    drop_rate = min(0.5, max(0.0, 0.2 + 0.1 * math.floor(phi / 2)))
    return Scaling(beta**phi, alpha**phi, resolution, round(drop_rate, 2))


def round_filters(channels: int, width_mult: float) -> int:
    """A width scaled by `width_mult`, to a multiple of 8 (the reference `round_filters`)."""
    return make_divisible(channels * width_mult, 8)


def round_repeats(repeats: int, depth_mult: float) -> int:
    """A stage's repeats scaled by `depth_mult`, rounded up (the reference `round_repeats`)."""
    return int(math.ceil(repeats * depth_mult))


class EfficientNet(nn.Module):
    """EfficientNet-B0 scaled by `width_mult` and `depth_mult` (torchvision's EfficientNet)."""

    width_mult: float = 1.0
    depth_mult: float = 1.0
    cifar_stem: bool = False
    stages: Sequence[tuple[int, int, int, int, int, int]] = B0_STAGES
    # Squeeze-excitation on or off per stage (the MBConv search space); empty: on everywhere (B0).
    stage_se: Sequence[bool] = ()
    drop_path_rate: float = 0.2
    bn_eps: float = 1e-3
    bn_momentum: float = 0.99
    num_classes: int = 1000
    drop_rate: float = 0.2
    global_pool: bool = True
    in_channels: int = 3
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = model_input(x, self.in_channels, self.dtype)
        bn = dict(eps=self.bn_eps, momentum=self.bn_momentum, dtype=self.dtype)
        stem = round_filters(self.stages[0][3], self.width_mult)
        stem_stride = 1 if self.cifar_stem else 2
        x = ConvBN(stem, 3, stem_stride, act=nn.silu, **bn, name="conv_stem")(x, train)
        stage_se = tuple(self.stage_se) or (True,) * len(self.stages)
        if len(stage_se) != len(self.stages):
            raise UserError(
                f"stage_se has {len(stage_se)} entries for {len(self.stages)} stages; give one "
                "per stage or none"
            )
        rows = [
            (t, k, s if j == 0 else 1, round_filters(c, self.width_mult), se)
            for (t, k, s, _, c, n), se in zip(self.stages, stage_se, strict=True)
            for j in range(round_repeats(n, self.depth_mult))
        ]
        strides = cifar_strides([row[2] for row in rows], self.cifar_stem)
        stage = 1
        for i, ((t, k, nominal, out, se), stride) in enumerate(zip(rows, strides, strict=True)):
            if nominal == 2:
                self.sow("intermediates", f"stage{stage}", x)
                stage += 1
            x = InvertedResidual(
                out,
                make_divisible(x.shape[-1] * t),
                k,
                stride,
                nn.silu,
                se_channels=max(1, x.shape[-1] // 4) if se else 0,
                se_act=nn.silu,
                drop_path_rate=self.drop_path_rate * i / len(rows),
                **bn,
                name=f"blocks_{i}",
            )(x, train)
        x = ConvBN(4 * x.shape[-1], 1, act=nn.silu, **bn, name="conv_head")(x, train)
        self.sow("intermediates", f"stage{stage}", x)
        return Classifier(
            self.num_classes, self.drop_rate, self.global_pool, self.dtype, name="head"
        )(x, train).astype(jnp.float32)


def _register(name: str, input_size: int, **kwargs) -> None:
    register(
        name,
        functools.partial(EfficientNet, **kwargs),
        input_size=input_size,
        family="efficientnet",
    )


# Any phi: configs/efficientnet.py:phi=<float> passes width_mult, depth_mult and drop_rate.
_register("efficientnet", 224)
for _name, (_w, _d, _size, _dropout) in PUBLISHED.items():
    _tf_weights = _name in ("efficientnet_b5", "efficientnet_b6", "efficientnet_b7")
    _register(
        _name,
        _size,
        width_mult=_w,
        depth_mult=_d,
        drop_rate=_dropout,
        bn_eps=1e-3 if _tf_weights else 1e-5,
        bn_momentum=0.99 if _tf_weights else 0.9,
    )
