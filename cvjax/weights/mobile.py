"""Converters of the efficient and TF-ported families: MobileNet v1/v2/v3, MnasNet, ShuffleNet v2,
EfficientNet B0-B7 (torchvision, timm), and timm's Inception-v4, Inception-ResNet-v2,
`legacy_xception` and `nasnetalarge`.

torchvision numbers the layers of a block by position (`features.{i}.block.{k}`): which index is
the expansion, the depthwise convolution or the squeeze-excitation follows from the architecture,
read off the cvjax model's fields. The timm ports name their layers as the cvjax models do, up to
separators ("repeat_1.4.branch0.conv" is "repeat_1_4/branch0/Conv_0"), so those converters map
every torch module by a renaming of its name (`_convert_by_name`); `core.build` then checks that
the model has exactly these variables.

Model kwargs the references need (`register(defaults=...)`): timm's EfficientNets, and the Keras
Xception as timm ports it (`legacy_xception`), use PyTorch's BatchNorm (eps 1e-5, momentum 0.1)
where these cvjax models default to TensorFlow's (1e-3, 0.99). The other references match the
registered cvjax models as they are: torchvision's MobileNet-v3 and EfficientNet-B5-B7 use eps
1e-3, its other models 1e-5; timm's Inception-v4 / Inception-ResNet-v2 / NASNet eps 1e-3.
torchvision's mnasnet0_75 / mnasnet1_3 convert into "mnasnet1_0" with `alpha=0.75` / `1.3`
(and under their own names once cvjax registers them).
experiments/check_weights_mobile.py compares the logits with the real models.

Known differences:
- timm's `nasnetalarge` zero-pads its stride-2 TF-"SAME" average pools before pooling, so the
  padding counts in its border averages; cvjax's NASNet leaves it out as TF-slim, which trained
  the weights, does. The converted model's logits differ from timm's by about 1% (relative).
- timm's `tf_efficientnet_*` pad stride-2 convolutions TF-"SAME" (at the bottom/right only for
  even sizes) where cvjax's EfficientNet pads symmetrically as torchvision does: no converter.
- timm's `mobilenetv3_*` have torchvision's layers (their head conv is the hidden Linear) but
  BatchNorm eps 1e-5, and cvjax's MobileNetV3 has no `bn_eps` field (fixed 1e-3): no converter.
"""

import re
from collections.abc import Callable, Iterator

import flax.linen as nn
import numpy as np

from cvjax import models
from cvjax.models.efficientnet import round_repeats
from cvjax.models.layers import make_divisible
from cvjax.weights import register
from cvjax.weights.core import IGNORED_SUFFIXES, TorchState

_MODELS = set(models.list_models())
# PyTorch's BatchNorm defaults (momentum 0.1 there is a decay of 0.9 in Flax).
TORCH_BN = {"bn_eps": 1e-5, "bn_momentum": 0.9}


def _se(state: TorchState, path: str, reduce_key: str, expand_key: str) -> None:
    """A squeeze-excitation gate's two 1x1 convolutions -> `layers.SqueezeExcite` at `path`."""
    state.conv(f"{path}/Conv_0", reduce_key)
    state.conv(f"{path}/Conv_1", expand_key)


def _torchvision_mbconv(state: TorchState, path: str, key: str, expand: bool, se: bool) -> None:
    """torchvision's MobileNet-v3 / EfficientNet block: `{key}.{k}` numbers the parts in order,
    expansion (if any), depthwise, squeeze-excitation (if any, `fc1` / `fc2`), projection."""
    parts = ["expand"] * expand + ["dw"] + ["se"] * se + ["project"]
    for k, part in enumerate(parts):
        if part == "se":
            _se(state, f"{path}/se", f"{key}.{k}.fc1", f"{key}.{k}.fc2")
        else:
            state.conv_bn(f"{path}/{part}", f"{key}.{k}.0", f"{key}.{k}.1")


def _timm_block(state: TorchState, path: str, key: str, expand: bool, se: bool, pw: str) -> None:
    """A block of timm's EfficientNet builder: `InvertedResidual` (`expand`: conv_pw/bn1,
    conv_dw/bn2, se, conv_pwl/bn3) or `DepthwiseSeparableConv` (conv_dw/bn1, se, conv_pw/bn2);
    `pw` names the Flax module of the last 1x1 convolution ("project" or "pw")."""
    if expand:
        state.conv_bn(f"{path}/expand", f"{key}.conv_pw", f"{key}.bn1")
        state.conv_bn(f"{path}/dw", f"{key}.conv_dw", f"{key}.bn2")
        last = ("conv_pwl", "bn3")
    else:
        state.conv_bn(f"{path}/dw", f"{key}.conv_dw", f"{key}.bn1")
        last = ("conv_pw", "bn2")
    if se:
        _se(state, f"{path}/se", f"{key}.se.conv_reduce", f"{key}.se.conv_expand")
    state.conv_bn(f"{path}/{pw}", f"{key}.{last[0]}", f"{key}.{last[1]}")


def _timm_stem_head(state: TorchState, head: bool = True) -> None:
    """timm's EfficientNet-builder stem (conv_stem, bn1), head (conv_head, bn2) and classifier."""
    state.conv_bn("conv_stem", "conv_stem", "bn1")
    if head:
        state.conv_bn("conv_head", "conv_head", "bn2")
    state.dense("head/fc", "classifier")


# MobileNet v2 (Sandler et al. 2018).


@register("torchvision", ["mobilenet_v2"], classifier="classifier.1.weight")
def convert_mobilenet_v2(model: nn.Module, state: TorchState) -> None:
    """torchvision's MobileNetV2: `features.{i + 1}.conv` is block i; a block of expansion 1 has
    no expansion layer and its projection is `conv.{1,2}` (conv, BN), else `conv.{2,3}`."""
    state.conv_bn("conv_stem", "features.0.0", "features.0.1")
    ratios = [t for t, _, n, _ in model.setting for _ in range(n)]
    for i, t in enumerate(ratios):
        path, key = f"blocks_{i}", f"features.{i + 1}.conv"
        k = int(t != 1)
        if k:
            state.conv_bn(f"{path}/expand", f"{key}.0.0", f"{key}.0.1")
        state.conv_bn(f"{path}/dw", f"{key}.{k}.0", f"{key}.{k}.1")
        state.conv_bn(f"{path}/project", f"{key}.{k + 1}", f"{key}.{k + 2}")
    last = len(ratios) + 1
    state.conv_bn("conv_head", f"features.{last}.0", f"features.{last}.1")
    state.dense("head/fc", "classifier.1")


@register("timm", ["mobilenet_v2"], classifier="classifier.weight")
def convert_timm_mobilenet_v2(model: nn.Module, state: TorchState) -> None:
    """timm's `mobilenetv2_100`: one stage `blocks.{s}` per row of Sandler et al.'s Table 2."""
    _timm_stem_head(state)
    i = 0
    for s, (t, _, n, _) in enumerate(model.setting):
        for j in range(n):
            _timm_block(state, f"blocks_{i}", f"blocks.{s}.{j}", t != 1, False, "project")
            i += 1


# MobileNet v1 (Howard et al. 2017) and v3 (Howard et al. 2019).


@register("timm", models.list_models("mobilenet_v1*"), classifier="classifier.weight")
def convert_timm_mobilenet_v1(model: nn.Module, state: TorchState) -> None:
    """timm's `mobilenetv1_100` (its `_gen_mobilenet_v1` at other widths): a new stage
    `blocks.{s}` starts at each stride-2 block; no head convolution."""
    stage, j = 0, 0
    for i, (_, stride) in enumerate(model.blocks):
        if stride == 2:
            stage, j = stage + 1, 0
        _timm_block(state, f"blocks_{i}", f"blocks.{stage}.{j}", False, False, "pw")
        j += 1
    _timm_stem_head(state, head=False)


@register(
    "torchvision", ["mobilenet_v3_large", "mobilenet_v3_small"], classifier="classifier.3.weight"
)
def convert_mobilenet_v3(model: nn.Module, state: TorchState) -> None:
    """torchvision's MobileNetV3: `features.{i + 1}.block` is block i; a block expands unless its
    expanded width is its input width; `classifier.0` is the hidden layer, `classifier.3` the
    output layer."""
    state.conv_bn("conv_stem", "features.0.0", "features.0.1")
    channels = make_divisible(16 * model.width_mult)
    for i, (_, expanded, out, use_se, _, _) in enumerate(model.blocks):
        expand = make_divisible(expanded * model.width_mult) != channels
        _torchvision_mbconv(state, f"blocks_{i}", f"features.{i + 1}.block", expand, use_se)
        channels = make_divisible(out * model.width_mult)
    last = len(model.blocks) + 1
    state.conv_bn("conv_head", f"features.{last}.0", f"features.{last}.1")
    state.dense("hidden_fc", "classifier.0")
    state.dense("head/fc", "classifier.3")


# MnasNet (Tan et al. 2019).


# torchvision's four widths; cvjax registers 0_5 and 1_0 (the others: "mnasnet1_0", alpha=...).
_MNASNETS = [n for n in ("mnasnet0_5", "mnasnet0_75", "mnasnet1_0", "mnasnet1_3") if n in _MODELS]


@register("torchvision", _MNASNETS, classifier="classifier.1.weight")
def convert_mnasnet(model: nn.Module, state: TorchState) -> None:
    """torchvision's MNASNet (version 2): a flat `layers` Sequential, stem conv/BN at 0/1, the
    separable block's convs/BNs at 3/4 and 6/7, stack s at `layers.{8 + s}`, each block's convs
    and BNs at `.layers.{0,1}`, `{3,4}`, `{6,7}`, the last conv/BN after the stacks."""
    state.conv_bn("conv_stem", "layers.0", "layers.1")
    state.conv_bn("blocks_0/dw", "layers.3", "layers.4")
    state.conv_bn("blocks_0/pw", "layers.6", "layers.7")
    i = 1
    for s, (*_, repeats) in enumerate(model.stacks):
        for j in range(repeats):
            key = f"layers.{8 + s}.{j}.layers"
            for part, k in (("expand", 0), ("dw", 3), ("project", 6)):
                state.conv_bn(f"blocks_{i}/{part}", f"{key}.{k}", f"{key}.{k + 1}")
            i += 1
    last = 8 + len(model.stacks)
    state.conv_bn("conv_head", f"layers.{last}", f"layers.{last + 1}")
    state.dense("head/fc", "classifier.1")


@register("timm", ["mnasnet1_0"], classifier="classifier.weight")
def convert_timm_mnasnet(model: nn.Module, state: TorchState) -> None:
    """timm's `mnasnet_100` (MnasNet-B1): `blocks.0.0` the separable block, stack s at
    `blocks.{s + 1}`."""
    _timm_stem_head(state)
    _timm_block(state, "blocks_0", "blocks.0.0", False, False, "pw")
    i = 1
    for s, (*_, repeats) in enumerate(model.stacks):
        for j in range(repeats):
            _timm_block(state, f"blocks_{i}", f"blocks.{s + 1}.{j}", True, False, "project")
            i += 1


# EfficientNet (Tan & Le 2019).

_EFFICIENTNETS = [f"efficientnet_b{i}" for i in range(8)]


def _efficientnet_blocks(model: nn.Module) -> Iterator[tuple[int, int, bool, bool]]:
    """(stage, index in the stage, has an expansion, has squeeze-excitation) for each block."""
    stage_se = tuple(model.stage_se) or (True,) * len(model.stages)
    for s, ((t, *_, repeats), se) in enumerate(zip(model.stages, stage_se, strict=True)):
        for j in range(round_repeats(repeats, model.depth_mult)):
            yield s, j, t != 1, se


@register("torchvision", _EFFICIENTNETS, classifier="classifier.1.weight")
def convert_efficientnet(model: nn.Module, state: TorchState) -> None:
    """torchvision's EfficientNet: stage s at `features.{s + 1}`, its block j at `.{j}.block`."""
    state.conv_bn("conv_stem", "features.0.0", "features.0.1")
    for i, (s, j, expand, se) in enumerate(_efficientnet_blocks(model)):
        _torchvision_mbconv(state, f"blocks_{i}", f"features.{s + 1}.{j}.block", expand, se)
    last = len(model.stages) + 1
    state.conv_bn("conv_head", f"features.{last}.0", f"features.{last}.1")
    state.dense("head/fc", "classifier.1")


@register("timm", _EFFICIENTNETS, defaults=TORCH_BN, classifier="classifier.weight")
def convert_timm_efficientnet(model: nn.Module, state: TorchState) -> None:
    """timm's `efficientnet_b*` (PyTorch padding and BatchNorm, not the `tf_` ports): stage s
    at `blocks.{s}`; the expansion-1 stage is a `DepthwiseSeparableConv`."""
    _timm_stem_head(state)
    for i, (s, j, expand, se) in enumerate(_efficientnet_blocks(model)):
        _timm_block(state, f"blocks_{i}", f"blocks.{s}.{j}", expand, se, "project")


# Families whose torch names are the cvjax names up to separators.


def _convert_by_name(state: TorchState, rename: Callable[[str], str], classifier: str) -> None:
    """The `classifier` Linear -> head/fc, then each other torch module (the name before a key's
    last dot) -> the Flax module `rename(name)`: a BatchNorm if it has running statistics, else a
    convolution (4-d weight) or a Dense layer. The classifier goes first: weights of another
    family lack it, which `take` reports as a user error."""
    state.dense("head/fc", classifier)
    modules = dict.fromkeys(
        k.rsplit(".", 1)[0] for k in state.keys() if not k.endswith(IGNORED_SUFFIXES)
    )
    for name in modules:
        if name == classifier:
            continue
        path = rename(name)
        if f"{name}.running_mean" in state:
            state.bn(path, name)
        elif np.ndim(state.tensors.get(f"{name}.weight")) == 4:
            state.conv(path, name)
        else:
            state.dense(path, name)


def _dotted(name: str) -> str:
    """ "stage2.0.branch1.3" -> "stage2_0/branch1_3": list indices join their parent's name."""
    return re.sub(r"\.(\d+)", r"_\1", name).replace(".", "/")


_SHUFFLENETS = [f"shufflenet_v2_x{s}" for s in ("0_5", "1_0", "1_5", "2_0")]


@register("torchvision", _SHUFFLENETS, classifier="fc.weight")
def convert_shufflenet_v2(model: nn.Module, state: TorchState) -> None:
    """torchvision's ShuffleNetV2: `stage2.0.branch1.3` is `stage2_0/branch1_3`, `fc` the head."""
    _convert_by_name(state, _dotted, "fc")


def _inception_path(name: str) -> str:
    """timm's Inception-v4 / Inception-ResNet-v2 name -> the cvjax path.

    A BasicConv2d's `conv` / `bn` are ConvBN's `Conv_0` / `BatchNorm_0`; the average-pool
    branch's conv is `branch3.1` in timm (after the pool in a Sequential), `branch3` here; the
    single conv of Mixed3a / Mixed5a (`features.3.conv`, `features.5.conv`) is branch 0 here.
    """
    path = _dotted(name).replace("/branch3_1/", "/branch3/")
    path = re.sub(r"^(features_[35])/conv/", r"\1/branch0/", path)
    return re.sub(r"/conv$", "/Conv_0", re.sub(r"/bn$", "/BatchNorm_0", path))


@register("timm", ["inception_v4"], classifier="last_linear.weight")
def convert_timm_inception_v4(model: nn.Module, state: TorchState) -> None:
    """timm's `inception_v4`: `features.{i}` blocks, `last_linear` the classifier."""
    _convert_by_name(state, _inception_path, "last_linear")


@register("timm", ["inception_resnet_v2"], classifier="classif.weight")
def convert_timm_inception_resnet_v2(model: nn.Module, state: TorchState) -> None:
    """timm's `inception_resnet_v2`: `repeat_1.4` is `repeat_1_4`, `classif` the classifier."""
    _convert_by_name(state, _inception_path, "classif")


def _xception_path(name: str) -> str:
    """A separable convolution's `conv1` (depthwise) is `depthwise` here; `rep.{i}` is `rep_i`."""
    path = _dotted(name)
    return re.sub(r"/conv1$", "/depthwise", path)


@register("timm", ["xception"], defaults={"bn_eps": 1e-5}, classifier="fc.weight")
def convert_timm_xception(model: nn.Module, state: TorchState) -> None:
    """timm's `legacy_xception` (Cadene's port of the Keras Xception, PyTorch BatchNorm eps)."""
    _convert_by_name(state, _xception_path, "fc")


def _nasnet_path(name: str) -> str:
    """timm's NASNet name -> the cvjax path: the stem conv's `conv` / `bn` are ConvBN's; a
    factorized reduction (`path_1.conv`, `path_2.conv`, `final_path_bn`) sits at the cell's level
    in timm, under `conv_prev_1x1` here; `depthwise_conv2d` is `depthwise`."""
    path = name.replace(".", "/").replace("wise_conv2d", "wise")
    path = {"conv0/conv": "conv0/Conv_0", "conv0/bn": "conv0/BatchNorm_0"}.get(path, path)
    path = re.sub(r"/(path_[12])/conv$", r"/\1", path)
    return re.sub(r"^([^/]+)/(path_[12]|final_path_bn)$", r"\1/conv_prev_1x1/\2", path)


@register("timm", ["nasnet_a_large"], classifier="last_linear.weight")
def convert_timm_nasnet(model: nn.Module, state: TorchState) -> None:
    """timm's `nasnetalarge` (TF-slim's NASNet-A Large: TF "SAME" padding, BN eps 1e-3)."""
    _convert_by_name(state, _nasnet_path, "last_linear")


# The torch reference of each cvjax name, for checks and users: (source, reference name).
REFERENCES: dict[str, list[tuple[str, str]]] = {
    "mobilenet_v1": [("timm", "mobilenetv1_100")],
    "mobilenet_v2": [("torchvision", "mobilenet_v2"), ("timm", "mobilenetv2_100")],
    "mobilenet_v3_large": [("torchvision", "mobilenet_v3_large")],
    "mobilenet_v3_small": [("torchvision", "mobilenet_v3_small")],
    **{n: [("torchvision", n)] for n in _MNASNETS},
    "mnasnet1_0": [("torchvision", "mnasnet1_0"), ("timm", "mnasnet_100")],
    **{n: [("torchvision", n)] for n in _SHUFFLENETS},
    **{n: [("torchvision", n), ("timm", n)] for n in _EFFICIENTNETS},
    "inception_v4": [("timm", "inception_v4")],
    "inception_resnet_v2": [("timm", "inception_resnet_v2")],
    "xception": [("timm", "legacy_xception")],
    "nasnet_a_large": [("timm", "nasnetalarge")],
}
