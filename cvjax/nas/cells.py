"""Cells of the NASNet/DARTS search space and the network that stacks them, for any genotype.

Operations (`make_op`) follow TF-slim's NASNet code (Zoph et al. 2018) and DARTS (Liu et al.
2019), which agree wherever both define one: a separable convolution is ReLU-sepconv-BN-ReLU-
sepconv-BN with the stride on the first; `dil_conv_k` is ReLU, a dilation-2 depthwise k x k
convolution, a pointwise one and BN; pools are 3x3 and leave padding out of averages; a strided
`skip_connect` is DARTS' factorized reduction. Padding is TensorFlow's "SAME" throughout, as in the
NASNet reference (stride-2 windows start at pixel 0 on even inputs), which gives ceil(H / stride).

`Cell` preprocesses its two inputs (s0, the output of the cell before the previous, and s1, the
previous) to the cell's width: s1 by ReLU-conv1x1-BN; s0 by the same, or by a factorized
reduction (TF-slim `factorized_reduction`) when its resolution is twice s1's; when s0 is None
(the first cell after a stem convolution in TF-slim) the raw s1 stands in for it, and operations
that read it adapt its width themselves (a separable convolution maps it to the cell's width, a
pool or identity adds a 1x1 convolution, as TF-slim does). NASNet's two ImageNet stem cells are
the reduction cell with such a raw input (`cell_stem_0`) and with a factorized-reduced one
(`cell_stem_1`): no special module is needed.

`CellNetwork` is the macro network of both papers: a stem, stages of `num_cells` normal cells
with a reduction cell (twice the width) between stages, an optional auxiliary head and the
classifier. It follows the model contract of `cvjax/models/layers.py`; cvjax/models/nasnet.py
registers NASNet-A with it, and a DARTS genotype gives the DARTS CIFAR network with
`preprocess_stem=True, final_act=False, aux_after_reduction=True, scale_drop_path=False`.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from cvjax.models.layers import (
    Classifier,
    ConvBN,
    DropPath,
    Dtype,
    SeparableConv,
    avg_pool_exclude_pad,
    batch_norm,
    conv,
    model_input,
)
from cvjax.nas.genotypes import Genotype, get_genotype


class SepConv(nn.Module):
    """NASNet's stacked separable convolution (TF-slim `_stacked_separable_conv`, DARTS SepConv)."""

    features: int
    kernel: int
    strides: int = 1
    eps: float = 1e-3
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        for i, strides in ((1, self.strides), (2, 1)):
            x = nn.relu(x)
            x = SeparableConv(
                self.features,
                self.kernel,
                strides,
                padding="SAME",
                dtype=self.dtype,
                name=f"separable_{i}",
            )(x)
            x = batch_norm(train, self.dtype, eps=self.eps, name=f"bn_sep_{i}")(x)
        return x


class DilConv(nn.Module):
    """DARTS' dilated separable convolution: ReLU, dilation-2 depthwise, pointwise, BN."""

    features: int
    kernel: int
    strides: int = 1
    eps: float = 1e-3
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = SeparableConv(
            self.features,
            self.kernel,
            self.strides,
            dilation=2,
            padding="SAME",
            dtype=self.dtype,
            name="separable",
        )(nn.relu(x))
        return batch_norm(train, self.dtype, eps=self.eps, name="bn")(x)


class ReLUConvBN(nn.Module):
    """ReLU, 1x1 convolution, BN: how a cell brings an input to its width (timm's ActConvBn)."""

    features: int
    strides: int = 1
    eps: float = 1e-3
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = conv(self.features, 1, self.strides, dtype=self.dtype, name="conv")(nn.relu(x))
        return batch_norm(train, self.dtype, eps=self.eps, name="bn")(x)


class FactorizedReduce(nn.Module):
    """Halves the resolution without dropping pixels (TF-slim `factorized_reduction`).

    Two 1x1 convolutions of half the width each read every other pixel, the second shifted by
    one (zero-padded at the bottom/right, as TF-slim does, so odd sizes work), concatenated, BN.
    """

    features: int
    relu: bool = True
    eps: float = 1e-3
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        if self.relu:
            x = nn.relu(x)
        half = self.features // 2
        path1 = conv(half, 1, dtype=self.dtype, name="path_1")(x[:, ::2, ::2])
        shifted = jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))[:, 1::2, 1::2]
        path2 = conv(self.features - half, 1, dtype=self.dtype, name="path_2")(shifted)
        x = jnp.concatenate([path1, path2], axis=-1)
        return batch_norm(train, self.dtype, eps=self.eps, name="final_path_bn")(x)


class Pool(nn.Module):
    """3x3 max or average pool ("SAME", averages over the valid pixels only); a 1x1 conv-BN
    follows when the input is not at the cell's width (TF-slim's raw first-cell input)."""

    kind: str  # "max" or "avg"
    features: int
    strides: int = 1
    eps: float = 1e-3
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        window, strides = (3, 3), (self.strides, self.strides)
        if self.kind == "max":
            x = nn.max_pool(x, window, strides, padding="SAME")
        else:
            x = avg_pool_exclude_pad(x, window, strides, padding="SAME")
        if x.shape[-1] != self.features:
            x = ConvBN(self.features, 1, act=None, eps=self.eps, dtype=self.dtype, name="conv")(
                x, train
            )
        return x


class Skip(nn.Module):
    """`skip_connect`: identity; a factorized reduction when strided (DARTS); ReLU-conv-BN when
    the input is not at the cell's width (TF-slim)."""

    features: int
    strides: int = 1
    eps: float = 1e-3
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        if self.strides > 1:
            return FactorizedReduce(self.features, eps=self.eps, dtype=self.dtype)(x, train)
        if x.shape[-1] != self.features:
            return ReLUConvBN(self.features, eps=self.eps, dtype=self.dtype)(x, train)
        return x


class Zero(nn.Module):
    """`none`: the zero operation of DARTS (an edge that is absent)."""

    features: int
    strides: int = 1

    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        s = self.strides
        return jnp.zeros(x[:, ::s, ::s, :1].shape[:-1] + (self.features,), x.dtype)


def make_op(op: str, features: int, strides: int, eps: float, dtype: Dtype, name: str) -> nn.Module:
    """The module for one operation of `genotypes.OPERATIONS`; called as `module(x, train)`."""
    kw = dict(eps=eps, dtype=dtype, name=name)
    if op.startswith("sep_conv_"):
        return SepConv(features, int(op[-1]), strides, **kw)
    if op.startswith("dil_conv_"):
        return DilConv(features, int(op[-1]), strides, **kw)
    if op in ("max_pool_3x3", "avg_pool_3x3"):
        return Pool(op[:3], features, strides, **kw)
    if op == "skip_connect":
        return Skip(features, strides, **kw)
    if op == "none":
        return Zero(features, strides, name=name)
    raise ValueError(f"no module for operation {op!r}")


class Cell(nn.Module):
    """One normal or reduction cell of a genotype; see the module docstring for its inputs.

    Parameter names follow timm's NASNet: `conv_prev_1x1` (s0), `conv_1x1` (s1) and
    `comb_iter_<node>_<left|right>` for the two operations of each node.
    """

    genotype: Genotype
    features: int
    reduction: bool = False
    drop_path_rate: float = 0.0
    eps: float = 1e-3
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, s0: jax.Array | None, s1: jax.Array, train: bool) -> jax.Array:
        c, kw = self.features, dict(eps=self.eps, dtype=self.dtype)
        if s0 is None:
            s0 = s1
        elif s0.shape[1] != s1.shape[1]:
            s0 = FactorizedReduce(c, name="conv_prev_1x1", **kw)(s0, train)
        else:
            s0 = ReLUConvBN(c, name="conv_prev_1x1", **kw)(s0, train)
        states = [s0, ReLUConvBN(c, name="conv_1x1", **kw)(s1, train)]
        edges, concat = self.genotype.cell(self.reduction)
        for node in range(len(edges) // 2):
            total = 0
            for side, (op, index) in zip(
                ("left", "right"), edges[2 * node : 2 * node + 2], strict=True
            ):
                strides = 2 if self.reduction and index < 2 else 1
                name = f"comb_iter_{node}_{side}"
                h = make_op(op, c, strides, name=name, **kw)(states[index], train)
                if op != "skip_connect" or strides > 1:  # Identities are never dropped.
                    h = DropPath(self.drop_path_rate)(h, train)
                total = total + h
            states.append(total)
        out = []
        final = states[-1].shape
        for i in concat:
            h = states[i]
            # A raw input in the concat is brought to the output's size (TF-slim
            # `_combine_unused_states`): a conv-BN without ReLU, strided if needed.
            if h.shape[1] != final[1]:
                h = FactorizedReduce(c, relu=False, name=f"reduction_{i}", **kw)(h, train)
            elif h.shape[-1] != c:
                h = ConvBN(c, 1, act=None, name=f"reduction_{i}", **kw)(h, train)
            out.append(h)
        return jnp.concatenate(out, axis=-1)


class AuxHead(nn.Module):
    """The auxiliary classifier of NASNet and DARTS: ReLU, 5x5/3 average pool, 1x1 conv of 128,
    BN, ReLU, a convolution of 768 over the whole remaining map, BN, ReLU, linear."""

    num_classes: int
    eps: float = 1e-3
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = nn.avg_pool(nn.relu(x), (5, 5), (3, 3), padding="VALID")
        x = ConvBN(128, 1, eps=self.eps, dtype=self.dtype, name="proj")(x, train)
        x = ConvBN(768, x.shape[1:3], padding="VALID", eps=self.eps, dtype=self.dtype)(x, train)
        x = x.reshape(x.shape[0], -1)
        x = nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=jnp.float32, name="fc")(x)
        return x.astype(jnp.float32)


class CellNetwork(nn.Module):
    """A network of genotype cells (Zoph et al. 2018, Fig. 2; Liu et al. 2019, Sec. 3.2).

    Stages of `num_cells` normal cells; before each stage after the first, a reduction cell that
    doubles `filters` (the first stage's cell width, TF-slim's `num_conv_filters`). Stems:
    ImageNet (default): a 3x3/2 convolution without padding, BN, then `stem_cells` reduction cells
    of filters/4 and filters/2 (TF-slim `_imagenet_stem`); `cifar_stem=True`: a 3x3/1 convolution
    and BN only, as NASNet's and DARTS' CIFAR networks, so a 32x32 input gives 32/16/8 maps.

    `skip_reduction_input` (NASNet-A Large): the first normal cell after a reduction takes the
    reduction cell's own s0 as its s0 rather than the last cell before the reduction (TF-slim
    `skip_reduction_layer_input`).
    `preprocess_stem`: the first cell reads the stem output through ReLU-conv-BN (DARTS) rather
    than raw (TF-slim). `drop_path_rate` is applied to every non-identity operation, scaled by
    (cell index + 1) / number of cells when `scale_drop_path` (TF-slim; its additional ramp over
    training steps is not modelled). The auxiliary head reads the last normal cell before the
    last reduction (NASNet) or, with `aux_after_reduction`, that reduction cell (DARTS).

    Stages sown: the ImageNet stem's convolution and every stem cell but the last, then each
    stage of normal cells; the last one after the final ReLU (`final_act`, NASNet).
    """

    genotype: Genotype | str = "NASNET_A"
    num_cells: int = 6
    filters: int = 32
    stem_size: int = 96
    num_reductions: int = 2
    stem_cells: int = 2
    cifar_stem: bool = False
    skip_reduction_input: bool = False
    preprocess_stem: bool = False
    final_act: bool = True
    aux_logits: bool = False
    aux_after_reduction: bool = False
    bn_eps: float = 1e-3
    num_classes: int = 1000
    drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    scale_drop_path: bool = True
    global_pool: bool = True
    in_channels: int = 3
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = model_input(x, self.in_channels, self.dtype)
        genotype = get_genotype(self.genotype)
        kw = dict(eps=self.bn_eps, dtype=self.dtype)
        stage = 0
        num_stem_cells = 0 if self.cifar_stem else self.stem_cells
        total_cells = (
            num_stem_cells + self.num_reductions + (self.num_reductions + 1) * self.num_cells
        )
        index = 0

        def cell(name: str, features: int, reduction: bool, s0, s1) -> jax.Array:
            nonlocal index
            rate = self.drop_path_rate
            if self.scale_drop_path:
                rate *= (index + 1) / total_cells
            index += 1
            return Cell(genotype, features, reduction, rate, name=name, **kw)(s0, s1, train)

        def sow(y: jax.Array) -> None:
            nonlocal stage
            stage += 1
            self.sow("intermediates", f"stage{stage}", y)

        if self.cifar_stem:
            x = ConvBN(self.stem_size, 3, act=None, name="stem", **kw)(x, train)
            outputs = [x if self.preprocess_stem else None, x]
        else:
            x = ConvBN(self.stem_size, 3, 2, act=None, padding="VALID", name="conv0", **kw)(
                x, train
            )
            sow(x)
            outputs = [None, x]
            for i in range(num_stem_cells):
                features = self.filters // 2 ** (num_stem_cells - i)
                outputs.append(cell(f"cell_stem_{i}", features, True, *outputs[-2:]))
                if i < num_stem_cells - 1:
                    sow(outputs[-1])
        features, number = self.filters, 0
        for s in range(self.num_reductions + 1):
            skipped = outputs[-2]  # The reduction cell's s0, before it is appended.
            if s > 0:
                features *= 2
                outputs.append(cell(f"reduction_cell_{s - 1}", features, True, *outputs[-2:]))
                if self._aux_here(s, after_reduction=True, train=train):
                    self._aux(outputs[-1], train)
            for j in range(self.num_cells):
                s0 = skipped if s > 0 and j == 0 and self.skip_reduction_input else outputs[-2]
                outputs.append(cell(f"cell_{number}", features, False, s0, outputs[-1]))
                number += 1
            x = outputs[-1]
            if s == self.num_reductions:
                x = nn.relu(x) if self.final_act else x
            elif self._aux_here(s + 1, after_reduction=False, train=train):
                self._aux(x, train)
            sow(x)
        logits = Classifier(
            self.num_classes, self.drop_rate, self.global_pool, self.dtype, name="head"
        )(x, train)
        return logits.astype(jnp.float32)

    def _aux_here(self, stage: int, after_reduction: bool, train: bool) -> bool:
        """Whether the aux head goes at the reduction into `stage` (before or after it)."""
        wanted = self.aux_logits and (train or self.is_initializing())
        return (
            wanted and stage == self.num_reductions and after_reduction == self.aux_after_reduction
        )

    def _aux(self, x: jax.Array, train: bool) -> None:
        logits = AuxHead(self.num_classes, self.bn_eps, self.dtype, name="aux")(x, train)
        if train:
            self.sow("aux", "logits", logits)
