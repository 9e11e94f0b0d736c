"""cvjax/weights/mobile.py: every efficient / TF-ported model converts completely and to the right
leaves (torch-free, synthetic state dicts named as torchvision / timm name them), and small torch
modules written here with torchvision's names give cvjax's logits after conversion."""

import functools
import re

import jax
import numpy as np
import pytest

from cvjax import models, weights
from cvjax.errors import UserError
from cvjax.weights import core, mobile

# Flax leaf -> torch tensor name and layout (the inverse of the converters' direction).
_LEAF = {"scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}


def _torch_tensor(leaf: str, shape: tuple) -> tuple[str, tuple]:
    if leaf == "kernel":
        # HWIO -> OIHW; a Dense (in, out) -> (out, in).
        return "weight", (shape[3], shape[2], *shape[:2]) if len(shape) == 4 else shape[::-1]
    return _LEAF[leaf], shape


def _blocks(shapes: dict) -> list[list[str]]:
    """Per cvjax block `blocks_i`: its parts (expand, dw, se, project, pw) in call order."""
    parts: dict[int, dict[str, None]] = {}
    for path in shapes["params"]:
        if path[0].startswith("blocks_"):
            parts.setdefault(int(path[0][7:]), {})[path[1]] = None
    order = ["expand", "dw", "se", "project", "pw"]
    return [sorted(parts[i], key=order.index) for i in range(len(parts))]


def _stages(shapes: dict) -> list[tuple[int, int]]:
    """(stage, index) per block: a stage starts where a block changes the width (true of every
    stage of these families), read off the shapes rather than the model's fields."""
    out, stage, j, width = [], -1, 0, None
    for i, parts in enumerate(_blocks(shapes)):
        last = shapes["params"][(f"blocks_{i}", parts[-1], "Conv_0", "kernel")][-1]
        stage, j = (stage + 1, 0) if last != width else (stage, j + 1)
        out.append((stage, j))
        width = last
    return out


def _ends(model_name: str, shapes: dict) -> dict[str, str]:
    """torchvision's names of the stem, last conv and classifier of the MobileNets, MnasNet and
    EfficientNet."""
    stages = _stages(shapes)
    if model_name.startswith("mnasnet"):
        last = 8 + stages[-1][0]  # Stage 0 is the separable block at layers.3-7.
        stem, head = ("layers.0", "layers.1"), (f"layers.{last}", f"layers.{last + 1}")
        return {**_convbn(stem, head), "head/fc": "classifier.1"}
    last = len(stages) + 1 if model_name.startswith("mobilenet") else stages[-1][0] + 2
    ends = _convbn(("features.0.0", "features.0.1"), (f"features.{last}.0", f"features.{last}.1"))
    if model_name.startswith("mobilenet_v3"):
        return {**ends, "hidden_fc": "classifier.0", "head/fc": "classifier.3"}
    return {**ends, "head/fc": "classifier.1"}


def _convbn(stem: tuple[str, str], head: tuple[str, str]) -> dict[str, str]:
    layers = ("Conv_0", "BatchNorm_0")
    out = {f"conv_stem/{layer}": key for layer, key in zip(layers, stem, strict=True)}
    return out | {f"conv_head/{layer}": key for layer, key in zip(layers, head, strict=True)}


def torchvision_name(model_name: str, path: tuple, shapes: dict) -> str:
    if model_name.startswith("shufflenet"):
        return "fc" if path == ("head", "fc") else ".".join(_undotted(p) for p in path)
    ends = _ends(model_name, shapes)
    if "/".join(path) in ends:
        return ends["/".join(path)]
    i, (part, layer) = int(path[0][7:]), path[1:]
    k, bn = _blocks(shapes)[i].index(part), int(layer == "BatchNorm_0")
    s, j = _stages(shapes)[i]
    if model_name == "mobilenet_v2":  # The projection is a bare conv and BN in `conv`.
        return f"features.{i + 1}.conv." + (f"{k + bn}" if part == "project" else f"{k}.{bn}")
    if model_name.startswith("mnasnet"):
        index = {"expand": 0, "dw": 3, "pw": 6, "project": 6}[part] + bn
        return f"layers.{index}" if i == 0 else f"layers.{7 + s}.{j}.layers.{index}"
    key = f"features.{i + 1}" if model_name.startswith("mobilenet_v3") else f"features.{s + 1}.{j}"
    sub = {"Conv_0": "fc1", "Conv_1": "fc2"}[layer] if part == "se" else bn
    return f"{key}.block.{k}.{sub}"


def _undotted(part: str) -> str:
    """ "stage2_0" -> "stage2.0": a trailing list index."""
    return re.sub(r"_(\d+)$", r".\1", part)


_TIMM_HEADS = {"inception_v4": "last_linear", "inception_resnet_v2": "classif"}
_TIMM_HEADS |= {"xception": "fc", "nasnet_a_large": "last_linear"}


def timm_name(model_name: str, path: tuple, shapes: dict) -> str:
    if path == ("head", "fc"):
        return _TIMM_HEADS.get(model_name, "classifier")
    name = "/".join(path)
    if model_name.startswith("inception"):
        name = re.sub(r"^(features_[35])/branch0/", r"\1/conv/", name)
        name = name.replace("Conv_0", "conv").replace("BatchNorm_0", "bn")
        parts = [_undotted(p) for p in name.split("/")]
        return ".".join("branch3.1" if p == "branch3" else p for p in parts)
    if model_name == "xception":
        return ".".join(_undotted(p) for p in path).replace("depthwise", "conv1")
    if model_name == "nasnet_a_large":
        name = name.replace("Conv_0", "conv").replace("BatchNorm_0", "bn")
        name = re.sub(r"conv_prev_1x1/(path_[12])$", r"\1/conv", name)
        name = name.replace("conv_prev_1x1/final_path_bn", "final_path_bn")
        return name.replace("wise", "wise_conv2d").replace("/", ".")
    # The EfficientNet builder's models: conv_stem/bn1, blocks.{s}.{j}, conv_head/bn2.
    if path[0] in ("conv_stem", "conv_head"):
        return path[0] if path[1] == "Conv_0" else {"conv_stem": "bn1", "conv_head": "bn2"}[path[0]]
    i = int(path[0][7:])
    parts, (s, j) = _blocks(shapes)[i], _stages(shapes)[i]
    if path[1] == "se":
        return f"blocks.{s}.{j}.se.conv_{'reduce' if path[2] == 'Conv_0' else 'expand'}"
    names = ["conv_pw", "conv_dw", "conv_pwl"] if "expand" in parts else ["conv_dw", "conv_pw"]
    k = [p for p in parts if p != "se"].index(path[1])
    return f"blocks.{s}.{j}." + (names[k] if path[2] == "Conv_0" else f"bn{k + 1}")


# Every converter over the registered names that differ in more than widths (which the converters
# never read: shufflenet_v2_x1_0..x2_0 and the MobileNet-v1 widths share their names with
# x0_5 / mobilenet_v1) and in few enough blocks to trace fast: EfficientNet B0 (the base), B1
# (depth 1.1: a second expansion-1 block, with a residual), B3 (width 1.2, depth 1.4) and B7
# (depth 3.1); B2/B4-B6 differ from these only in repeat counts (all eight are checked against
# the real models by experiments/check_weights_mobile.py). The TF ports' depths are cut: their
# converters rename module by module, so fewer repeats test the same names.
_SHORTER = {
    "inception_v4": {"depths": (1, 1, 1)},
    "inception_resnet_v2": {"depths": (1, 1, 2)},
    "xception": {"middle_blocks": 1},
    "nasnet_a_large": {"num_cells": 2},
}
_SAME_NAMES = {f"shufflenet_v2_x{s}" for s in ("1_0", "1_5", "2_0")}
_SAME_NAMES |= {f"efficientnet_b{i}" for i in (2, 4, 5, 6)}
_SAME_NAMES |= set(models.list_models("mobilenet_v1_*")) - {"mobilenet_v1_025_128"}
_NAMES = {n for n in mobile.REFERENCES if n not in _SAME_NAMES} | {"mobilenet_v1_025_128"}
CASES = [
    (source, name)
    for source in weights.SOURCES
    for name in weights.list_convertible(source)
    if name in _NAMES
]


@functools.cache
def _shapes(name: str) -> dict:
    model = models.create(name, **_SHORTER.get(name, {}))
    size = models.model_info(name)["input_size"]
    return core.variable_shapes(model, (1, size, size, 3))


def synthetic_state_dict(source: str, name: str) -> tuple[dict, dict]:
    """Torch-named tensors for every Flax leaf, each filled with its own number; and the number
    each leaf must receive."""
    shapes = _shapes(name)
    namer = torchvision_name if source == "torchvision" else timm_name
    tensors, expected = {}, {}
    for collection, leaves in shapes.items():
        for path, shape in leaves.items():
            module = namer(name, path[:-1], shapes)
            suffix, torch_shape = _torch_tensor(path[-1], shape)
            key = f"{module}.{suffix}"
            assert key not in tensors, key
            value = float(len(tensors) + 1)
            tensors[key] = np.full(torch_shape, value, np.float32)
            expected[(collection, path)] = value
            if suffix == "running_mean":
                tensors[f"{module}.num_batches_tracked"] = np.array(7)
    return tensors, expected


@pytest.mark.parametrize(("source", "name"), CASES)
def test_every_tensor_lands_on_its_leaf(source, name, monkeypatch):
    tensors, expected = synthetic_state_dict(source, name)
    # The shapes are already known: skip build's second trace of the model.
    monkeypatch.setattr(core, "variable_shapes", lambda model, shape: _shapes(name))
    variables = weights.from_torch(name, tensors, source=source, **_SHORTER.get(name, {}))
    for (collection, path), value in expected.items():
        leaf = variables[collection]
        for part in path:
            leaf = leaf[part]
        assert np.all(np.asarray(leaf) == value), (collection, path)


def test_references_cover_the_converters():
    for source in weights.SOURCES:
        for name in weights.list_convertible(source):
            if name in mobile.REFERENCES:
                assert source in {s for s, _ in mobile.REFERENCES[name]}, (source, name)
    for name, refs in mobile.REFERENCES.items():
        for source, _ in refs:
            assert name in weights.list_convertible(source), (source, name)
    assert "mobilenet_v1_025_128" in weights.list_convertible("timm")


def test_timm_references_get_pytorch_batchnorm():
    kwargs = weights.resolve_kwargs("efficientnet_b7", {}, "timm")
    assert (kwargs["bn_eps"], kwargs["bn_momentum"]) == (1e-5, 0.9)
    assert weights.resolve_kwargs("xception", {}, "timm")["bn_eps"] == 1e-5
    # torchvision's B7 keeps the registered TF BatchNorm (eps 1e-3) of its ported weights.
    assert "bn_eps" not in weights.resolve_kwargs("efficientnet_b7", {}, "torchvision")


@pytest.mark.parametrize(
    ("source", "weights_of", "name"),
    [("torchvision", "mnasnet0_5", "mobilenet_v2"), ("timm", "xception", "inception_v4")],
)
def test_weights_of_another_model_are_a_user_error(source, weights_of, name):
    tensors, _ = synthetic_state_dict(source, weights_of)
    with pytest.raises(UserError, match="no tensor"):
        weights.from_torch(name, tensors, source=source)


# Torch references written here with torchvision's module names (torch is optional).


def _torch_modules():
    torch = pytest.importorskip("torch")
    tnn = torch.nn

    def cbn(cin, cout, k, stride=1, groups=1, act=tnn.ReLU, eps=1e-5):
        layers = [tnn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False)]
        layers.append(tnn.BatchNorm2d(cout, eps=eps))
        return tnn.Sequential(*layers, *([act()] if act else []))

    return torch, tnn, cbn


def _randomize(torch, module) -> None:
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(0.2 * torch.randn(n, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(n, generator=gen))
                m.weight.copy_(0.5 + torch.rand(n, generator=gen))
                m.bias.copy_(0.2 * torch.randn(n, generator=gen))


def _compare(torch, reference, name: str, size: int, **kwargs) -> None:
    torch.manual_seed(0)
    _randomize(torch, reference)
    reference.eval()
    state = {k: v.numpy() for k, v in reference.state_dict().items()}
    variables = weights.from_torch(name, state, source="torchvision", **kwargs)
    model = models.create(name, **weights.resolve_kwargs(name, state, "torchvision", **kwargs))
    x = np.random.default_rng(0).normal(size=(2, size, size, 3)).astype(np.float32)
    with torch.no_grad():
        want = reference(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    got = np.asarray(jax.jit(model.apply)(variables, x))
    assert np.max(np.abs(got - want)) / np.max(np.abs(want)) < 1e-3


def test_torch_mobilenet_v2_logits():
    torch, tnn, cbn = _torch_modules()

    class InvertedResidual(tnn.Module):
        def __init__(self, cin, cout, stride, t):
            super().__init__()
            hidden = cin * t
            layers = [cbn(cin, hidden, 1, act=tnn.ReLU6)] if t != 1 else []
            layers.append(cbn(hidden, hidden, 3, stride, hidden, tnn.ReLU6))
            layers += [tnn.Conv2d(hidden, cout, 1, bias=False), tnn.BatchNorm2d(cout)]
            self.conv = tnn.Sequential(*layers)
            self.residual = stride == 1 and cin == cout

        def forward(self, x):
            return x + self.conv(x) if self.residual else self.conv(x)

    class Net(tnn.Module):
        def __init__(self):
            super().__init__()
            blocks = [InvertedResidual(32, 8, 1, 1), InvertedResidual(8, 16, 2, 6)]
            blocks.append(InvertedResidual(16, 16, 1, 6))
            stem, last = cbn(3, 32, 3, 2, act=tnn.ReLU6), cbn(16, 1280, 1, act=tnn.ReLU6)
            self.features = tnn.Sequential(stem, *blocks, last)
            self.classifier = tnn.Sequential(tnn.Dropout(0.2), tnn.Linear(1280, 5))

        def forward(self, x):
            return self.classifier(self.features(x).mean((2, 3)))

    setting = ((1, 8, 1, 1), (6, 16, 2, 2))
    _compare(torch, Net(), "mobilenet_v2", 16, setting=setting)


def test_torch_shufflenet_v2_logits():
    torch, tnn, cbn = _torch_modules()

    class Unit(tnn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            half, self.stride = cout // 2, stride
            if stride > 1:
                self.branch1 = tnn.Sequential(
                    *cbn(cin, cin, 3, stride, cin, act=None), *cbn(cin, half, 1)
                )
            first = cin if stride > 1 else half
            self.branch2 = tnn.Sequential(
                *cbn(first, half, 1),
                *cbn(half, half, 3, stride, half, act=None),
                *cbn(half, half, 1),
            )

        def forward(self, x):
            if self.stride == 1:
                left, right = x.chunk(2, dim=1)
                out = torch.cat([left, self.branch2(right)], 1)
            else:
                out = torch.cat([self.branch1(x), self.branch2(x)], 1)
            n, c, h, w = out.shape
            return out.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)

    class Net(tnn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = cbn(3, 8, 3, 2)
            self.maxpool = tnn.MaxPool2d(3, 2, 1)
            self.stage2 = tnn.Sequential(Unit(8, 16, 2), Unit(16, 16, 1))
            self.stage3 = tnn.Sequential(Unit(16, 32, 2))
            self.stage4 = tnn.Sequential(Unit(32, 64, 2))
            self.conv5 = cbn(64, 32, 1)
            self.fc = tnn.Linear(32, 5)

        def forward(self, x):
            x = self.maxpool(self.conv1(x))
            x = self.conv5(self.stage4(self.stage3(self.stage2(x))))
            return self.fc(x.mean((2, 3)))

    kwargs = dict(stage_widths=(16, 32, 64), stage_repeats=(2, 1, 1), stem_width=8, last_width=32)
    _compare(torch, Net(), "shufflenet_v2_x1_0", 32, **kwargs)


def test_torch_efficientnet_mbconv_se_logits():
    torch, tnn, cbn = _torch_modules()

    class SqueezeExcitation(tnn.Module):
        def __init__(self, channels, squeeze):
            super().__init__()
            self.fc1, self.fc2 = tnn.Conv2d(channels, squeeze, 1), tnn.Conv2d(squeeze, channels, 1)

        def forward(self, x):
            s = self.fc2(torch.nn.functional.silu(self.fc1(x.mean((2, 3), keepdim=True))))
            return x * torch.sigmoid(s)

    class MBConv(tnn.Module):
        def __init__(self, cin, cout, k, stride, t):
            super().__init__()
            hidden = cin * t
            layers = [cbn(cin, hidden, 1, act=tnn.SiLU)] if t != 1 else []
            layers.append(cbn(hidden, hidden, k, stride, hidden, tnn.SiLU))
            layers += [SqueezeExcitation(hidden, max(1, cin // 4)), cbn(hidden, cout, 1, act=None)]
            self.block = tnn.Sequential(*layers)
            self.residual = stride == 1 and cin == cout

        def forward(self, x):
            return x + self.block(x) if self.residual else self.block(x)

    class Net(tnn.Module):
        def __init__(self):
            super().__init__()
            stages = [tnn.Sequential(MBConv(16, 8, 3, 1, 1))]
            stages.append(tnn.Sequential(MBConv(8, 16, 5, 2, 6), MBConv(16, 16, 5, 1, 6)))
            stem, head = cbn(3, 16, 3, 2, act=tnn.SiLU), cbn(16, 64, 1, act=tnn.SiLU)
            self.features = tnn.Sequential(stem, *stages, head)
            self.classifier = tnn.Sequential(tnn.Dropout(0.2), tnn.Linear(64, 5))

        def forward(self, x):
            return self.classifier(self.features(x).mean((2, 3)))

    stages = ((1, 3, 1, 16, 8, 1), (6, 5, 2, 8, 16, 2))
    _compare(torch, Net(), "efficientnet_b0", 16, stages=stages, width_mult=1.0, depth_mult=1.0)
