"""Converters of the classic families: ResNet / ResNeXt / Wide ResNet, SENet, VGG, AlexNet,
DenseNet, GoogLeNet and Inception-v3, from torchvision's and timm's state dicts.
experiments/check_weights_torchvision.py compares the logits with the real models.

Each cvjax model follows its reference's layout (torchvision's symmetric padding, BatchNorm
epsilon 1e-5, or 1e-3 for the TensorFlow ports GoogLeNet and Inception-v3, ceil-mode pooling
where the reference has it), so no converter needs model kwargs beyond `num_classes`.

Not convertible: timm's `legacy_seresnet18` / `legacy_seresnet34`, whose basic blocks apply a
ReLU after the second BatchNorm (before the SE gate) that cvjax's SE basic block does not have
(same parameters, different function). timm's `resnetv2_*` (pre-activation, other names) and the
CIFAR models (no torch reference) have no converter either.

Preprocessing: torchvision's pretrained GoogLeNet and Inception-v3 are built with
`transform_input=True`, which maps an ImageNet mean/std-normalized image to (x - 0.5) / 0.5 before
the first layer. The cvjax models have no such step: feed them images scaled as (x - 0.5) / 0.5
(x in [0, 1]) to get the torchvision logits. Models built with `weights=None` (and timm's
Inception-v3) do not transform their input.

Auxiliary heads convert when the state dict has them (torchvision builds GoogLeNet and
Inception-v3 with them by default; `aux_logits` is set from the keys); they only act in training.
GoogLeNet's aux head pools 14x14 maps with the paper's 5x5/3 window where torchvision pools
adaptively to 4x4, so its aux logits differ from torchvision's; the main logits do not.
"""

from collections.abc import Mapping

from flax import linen as nn

from cvjax.weights import register
from cvjax.weights.core import TorchState, linear_as_conv

_RESNETS = [
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnext50_32x4d",
    "resnext101_32x8d",
    "resnext101_64x4d",
    "wide_resnet50_2",
    "wide_resnet101_2",
]


def _residual_stages(model: nn.Module, state: TorchState, se_key: str) -> None:
    """`layer{s}.{i}` blocks -> `ResidualBlock_{n}`; conv{j}/bn{j} -> ConvBN_{j-1}, the projection
    shortcut after them, the squeeze-excitation gate (`se_key`) -> SqueezeExcite_0."""
    if model.preact or model.shortcut != "conv":
        raise ValueError("only post-activation ResNets with projection shortcuts convert")
    index = 0
    for stage, size in enumerate(model.stage_sizes):
        for i in range(size):
            block, key = f"ResidualBlock_{index}", f"layer{stage + 1}.{i}"
            convs = 3 if model.bottleneck else 2
            for j in range(convs):
                state.conv_bn(f"{block}/ConvBN_{j}", f"{key}.conv{j + 1}", f"{key}.bn{j + 1}")
            if f"{key}.downsample.0.weight" in state:
                state.conv_bn(
                    f"{block}/ConvBN_{convs}", f"{key}.downsample.0", f"{key}.downsample.1"
                )
            if model.se_ratio:
                state.conv(f"{block}/SqueezeExcite_0/Conv_0", f"{key}.{se_key}.fc1")
                state.conv(f"{block}/SqueezeExcite_0/Conv_1", f"{key}.{se_key}.fc2")
            index += 1


@register("torchvision", _RESNETS, classifier="fc.weight")
@register("timm", _RESNETS + ["seresnet50", "seresnext50_32x4d"], classifier="fc.weight")
def convert_resnet(model: nn.Module, state: TorchState) -> None:
    """torchvision's ResNet (v1.5) and timm's plain `resnet*` / `seresnet*`: same names."""
    state.conv_bn("ConvBN_0", "conv1", "bn1")
    _residual_stages(model, state, se_key="se")
    state.dense("head/fc", "fc")


_LEGACY_SENETS = [
    "legacy_seresnet50",
    "legacy_seresnet101",
    "legacy_seresnet152",
    "legacy_seresnext26_32x4d",
    "legacy_seresnext50_32x4d",
    "legacy_seresnext101_32x4d",
]


@register("timm", _LEGACY_SENETS + ["senet154"], classifier="last_linear.weight")
def convert_legacy_senet(model: nn.Module, state: TorchState) -> None:
    """timm's `legacy_se*` / `legacy_senet154` (Cadene's port of the Caffe SENets); the
    bottleneck ones only (see the module docstring for SE-ResNet-18/34)."""
    stem = 3 if model.deep_stem else 1
    for j in range(stem):
        state.conv_bn(f"ConvBN_{j}", f"layer0.conv{j + 1}", f"layer0.bn{j + 1}")
    _residual_stages(model, state, se_key="se_module")
    state.dense("head/fc", "last_linear")


_VGGS = [f"vgg{d}{bn}" for d in (11, 13, 16, 19) for bn in ("", "_bn")]


@register("torchvision", _VGGS, classifier="classifier.6.weight")
def convert_vgg(model: nn.Module, state: TorchState) -> None:
    """torchvision's VGG: `features.{i}` keep their indices; fc6 becomes a 7x7 convolution."""
    _vgg_features(model, state)
    hidden = [("classifier_0", "classifier.0"), ("classifier_3", "classifier.3")]
    _fc_layers(state, model.pool_size or 7, hidden)
    state.dense("head/fc", "classifier.6")


def _vgg_features(model: nn.Module, state: TorchState) -> None:
    index = 0
    for size in model.stage_sizes:
        for _ in range(size):
            state.conv(f"features_{index}", f"features.{index}")
            if model.use_bn:
                state.bn(f"features_{index + 1}", f"features.{index + 1}")
            index += 3 if model.use_bn else 2
        index += 1


@register("timm", _VGGS, classifier="head.fc.weight")
def convert_timm_vgg(model: nn.Module, state: TorchState) -> None:
    """timm's VGG: torchvision's `features`, fc6 / fc7 already convolutions (`pre_logits`).

    timm pools pool5 to 7x7 only when it is smaller and otherwise slides fc6 over it and averages
    after fc7; for inputs above 224 px use `global_pool=False` and average the logit map (the
    classifier is linear, so that equals timm's logits). At 224 px and below both agree.
    """
    _vgg_features(model, state)
    state.conv("classifier_0", "pre_logits.fc1")
    state.conv("classifier_3", "pre_logits.fc2")
    state.dense("head/fc", "head.fc")


def _fc_layers(state: TorchState, size: int, names: list[tuple[str, str]]) -> None:
    """The hidden Linear layers of VGG / AlexNet; the first sees the flattened size x size map."""
    for n, (path, key) in enumerate(names):
        weight = state.take(f"{key}.weight")
        kernel = size if n == 0 else 1
        state.put(f"{path}/kernel", linear_as_conv(weight, kernel, kernel), key=f"{key}.weight")
        state.put(f"{path}/bias", state.take(f"{key}.bias"), key=f"{key}.bias")


@register("torchvision", ["alexnet"], classifier="classifier.6.weight")
def convert_alexnet(model: nn.Module, state: TorchState) -> None:
    """torchvision's AlexNet: `features.{0,3,6,8,10}`, `classifier.{1,4,6}`."""
    for index in (0, 3, 6, 8, 10):
        state.conv(f"features_{index}", f"features.{index}")
    hidden = [("classifier_1", "classifier.1"), ("classifier_4", "classifier.4")]
    _fc_layers(state, model.pool_size or 6, hidden)
    state.dense("head/fc", "classifier.6")


_DENSENETS = ["densenet121", "densenet161", "densenet169", "densenet201"]


@register("torchvision", _DENSENETS, classifier="classifier.weight")
@register("timm", _DENSENETS, classifier="classifier.weight")
def convert_densenet(model: nn.Module, state: TorchState) -> None:
    """torchvision's (and timm's) DenseNet: the names under `features.` are the cvjax names."""
    state.conv("conv0", "features.conv0")
    state.bn("norm0", "features.norm0")
    last = len(model.block_sizes)
    for b, size in enumerate(model.block_sizes, start=1):
        for i in range(1, size + 1):
            layer = f"denseblock{b}/denselayer{i}"
            key = f"features.denseblock{b}.denselayer{i}"
            for part in ("norm1", "norm2"):
                state.bn(f"{layer}/{part}", f"{key}.{part}")
            for part in ("conv1", "conv2"):
                state.conv(f"{layer}/{part}", f"{key}.{part}")
        if b < last:
            state.bn(f"transition{b}/norm", f"features.transition{b}.norm")
            state.conv(f"transition{b}/conv", f"features.transition{b}.conv")
    state.bn("norm5", "features.norm5")
    state.dense("head/fc", "classifier")


def _basic_conv(state: TorchState, path: str, key: str) -> None:
    """torchvision's BasicConv2d (`.conv`, `.bn`) -> a `layers.ConvBN`."""
    state.conv_bn(path, f"{key}.conv", f"{key}.bn")


@register(
    "torchvision",
    ["googlenet"],
    classifier="fc.weight",
    infer=lambda tensors: {"aux_logits": "aux1.fc2.weight" in tensors},
)
def convert_googlenet(model: nn.Module, state: TorchState) -> None:
    """torchvision's GoogLeNet, with its auxiliary heads when the model has `aux_logits`."""
    for name in ("conv1", "conv2", "conv3"):
        _basic_conv(state, name, name)
    branches = [("branch1", "branch1")]
    branches += [(f"branch{b}_{i}", f"branch{b}.{i}") for b, i in ((2, 0), (2, 1), (3, 0), (3, 1))]
    branches += [("branch4_1", "branch4.1")]
    for key in ("3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b"):
        for path, torch_key in branches:
            _basic_conv(state, f"inception{key}/{path}", f"inception{key}.{torch_key}")
    if model.aux_logits:
        for aux in ("aux1", "aux2"):
            _basic_conv(state, f"{aux}/conv", f"{aux}.conv")
            # torch flattens the 4x4x128 map as (C, H, W), cvjax as (H, W, C).
            weight = state.take(f"{aux}.fc1.weight")
            kernel = linear_as_conv(weight, 4, 4).reshape(-1, weight.shape[0])
            state.put(f"{aux}/fc1/kernel", kernel, key=f"{aux}.fc1.weight")
            state.put(f"{aux}/fc1/bias", state.take(f"{aux}.fc1.bias"), key=f"{aux}.fc1.bias")
            state.dense(f"{aux}/fc2", f"{aux}.fc2")
    state.dense("head/fc", "fc")


_INCEPTION_V3 = {
    "InceptionA": ["branch1x1", "branch5x5_1", "branch5x5_2"]
    + ["branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3", "branch_pool"],
    "InceptionB": ["branch3x3", "branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"],
    "InceptionC": ["branch1x1", "branch7x7_1", "branch7x7_2", "branch7x7_3"]
    + [f"branch7x7dbl_{i}" for i in range(1, 6)]
    + ["branch_pool"],
    "InceptionD": ["branch3x3_1", "branch3x3_2"] + [f"branch7x7x3_{i}" for i in range(1, 5)],
    "InceptionE": ["branch1x1", "branch3x3_1", "branch3x3_2a", "branch3x3_2b"]
    + ["branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3a", "branch3x3dbl_3b", "branch_pool"],
}
_INCEPTION_V3_STEM = ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3"]
_INCEPTION_V3_STEM += ["Conv2d_3b_1x1", "Conv2d_4a_3x3"]
_INCEPTION_V3_MODULES = [("Mixed_5b", "A"), ("Mixed_5c", "A"), ("Mixed_5d", "A")]
_INCEPTION_V3_MODULES += [("Mixed_6a", "B")] + [(f"Mixed_6{c}", "C") for c in "bcde"]
_INCEPTION_V3_MODULES += [("Mixed_7a", "D"), ("Mixed_7b", "E"), ("Mixed_7c", "E")]


def _inception_v3_aux(tensors: Mapping) -> dict:
    return {"aux_logits": "AuxLogits.fc.weight" in tensors}


@register("torchvision", ["inception_v3"], classifier="fc.weight", infer=_inception_v3_aux)
@register("timm", ["inception_v3"], classifier="fc.weight", infer=_inception_v3_aux)
def convert_inception_v3(model: nn.Module, state: TorchState) -> None:
    """torchvision's / timm's Inception-v3; the aux head `AuxLogits` -> "aux" (`aux_logits`)."""
    for name in _INCEPTION_V3_STEM:
        _basic_conv(state, name, name)
    for module, kind in _INCEPTION_V3_MODULES:
        for branch in _INCEPTION_V3[f"Inception{kind}"]:
            _basic_conv(state, f"{module}/{branch}", f"{module}.{branch}")
    if model.aux_logits:
        for name in ("conv0", "conv1"):
            _basic_conv(state, f"aux/{name}", f"AuxLogits.{name}")
        state.dense("aux/fc", "AuxLogits.fc")
    state.dense("head/fc", "fc")
