"""PyTorch weight import: file reading, the converter checks, the CLI, and (with torch) logits.

The torch-free tests build state dicts by hand with torchvision's names and shapes; the torch
tests define small torchvision-style modules here (same attribute names as torchvision's
ResNet / DenseNet / VGG) and compare their eval-mode logits with the converted cvjax model's.
"""

import json
import struct

import jax
import numpy as np
import pytest

from cvjax import convert, models, weights
from cvjax.errors import UserError
from cvjax.weights import core

# A tiny torchvision ResNet-18 layout: 1 basic block per stage.
TINY_RESNET = dict(stage_sizes=(1, 1, 1, 1), widths=(4, 8, 8, 8), stem_width=8, num_classes=5)


def write_safetensors(path: str, tensors: dict[str, tuple[str, np.ndarray]]) -> None:
    """The format by hand: u64 header length, JSON header, little-endian data."""
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name, (dtype, array) in tensors.items():
        if dtype == "BF16":
            raw = (np.asarray(array, "<f4").view("<u4") >> 16).astype("<u2").tobytes()
        else:
            raw = np.ascontiguousarray(array).tobytes()
        header[name] = {
            "dtype": dtype,
            "shape": list(array.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def test_safetensors_reader_dtypes(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {
        "conv.weight": ("F32", rng.normal(size=(4, 3, 3, 3)).astype("<f4")),
        "half": ("F16", rng.normal(size=(5,)).astype("<f2")),
        "brain": ("BF16", np.array([[1.5, -2.0], [0.15625, 262144.0]], np.float32)),
        "bn.num_batches_tracked": ("I64", np.array(7, "<i8")),
        "index": ("I32", np.arange(6, dtype="<i4").reshape(2, 3)),
        "mask": ("BOOL", np.array([True, False])),
        "empty": ("F32", np.zeros((0, 3), "<f4")),
    }
    path = str(tmp_path / "w.safetensors")
    write_safetensors(path, tensors)
    loaded = weights.load_state_dict(path)
    assert set(loaded) == set(tensors)
    for name, (_, array) in tensors.items():
        np.testing.assert_array_equal(loaded[name], array)
        assert loaded[name].shape == array.shape
    assert loaded["brain"].dtype == np.float32  # BF16 values above are exact in bfloat16.
    assert loaded["half"].dtype == np.float16 and loaded["index"].dtype == np.int32


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda b: b[:4], "8-byte"),
        (lambda b: struct.pack("<Q", 10**6) + b[8:], "exceeds"),
        (lambda b: b[:-4], "byte range"),
        (lambda b: b[:8] + b"!" + b[9:], "not JSON"),
    ],
)
def test_safetensors_reader_rejects_damaged_files(tmp_path, mutate, message):
    path = str(tmp_path / "w.safetensors")
    write_safetensors(path, {"w": ("F32", np.ones((2, 2), np.float32))})
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(mutate(data))
    with pytest.raises(UserError, match=message):
        weights.load_state_dict(path)


def test_npz_and_refused_inputs(tmp_path):
    arrays = {"fc.weight": np.arange(6, dtype=np.float32).reshape(2, 3)}
    np.savez(tmp_path / "w.npz", **arrays)
    np.testing.assert_array_equal(
        weights.load_state_dict(str(tmp_path / "w.npz"))["fc.weight"], arrays["fc.weight"]
    )
    np.savez(tmp_path / "obj.npz", x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(UserError, match="objects"):
        weights.load_state_dict(str(tmp_path / "obj.npz"))
    (tmp_path / "model.pth").write_bytes(b"\x80\x04 not really a pickle")
    with pytest.raises(UserError, match=r"pickled.*st\.save_file\(torch\.load"):
        weights.load_state_dict(str(tmp_path / "model.pth"))
    with pytest.raises(UserError, match="does not exist"):
        weights.load_state_dict(str(tmp_path / "nothing.safetensors"))


def test_layouts():
    w = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)  # O, I/groups, kh, kw
    k = core.conv_kernel(w)
    assert k.shape == (4, 5, 3, 2) and k[1, 2, 0, 1] == w[1, 0, 1, 2]
    lin = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(core.dense_kernel(lin), lin.T)
    # Linear over a flattened (C=2, 2, 2) NCHW map == VALID 2x2 conv on the NHWC map.
    fc = np.random.default_rng(0).normal(size=(3, 8)).astype(np.float32)
    x = np.random.default_rng(1).normal(size=(2, 2, 2)).astype(np.float32)  # C, H, W
    as_conv = core.linear_as_conv(fc, 2, 2)
    np.testing.assert_allclose(
        np.einsum("hwco,hwc->o", as_conv, x.transpose(1, 2, 0)), fc @ x.reshape(-1), rtol=1e-5
    )


def torchvision_resnet_state(cfg: dict, seed: int = 0) -> dict[str, np.ndarray]:
    """Random tensors with torchvision's ResNet (basic block) names and shapes."""
    rng = np.random.default_rng(seed)
    state = {}

    def conv(key, cout, cin, k):
        state[f"{key}.weight"] = rng.normal(0, (2 / (cin * k * k)) ** 0.5, (cout, cin, k, k))

    def bn(key, c):
        state[f"{key}.weight"] = rng.uniform(0.5, 1.5, c)
        state[f"{key}.bias"] = rng.normal(0, 0.1, c)
        state[f"{key}.running_mean"] = rng.normal(0, 0.1, c)
        state[f"{key}.running_var"] = rng.uniform(0.5, 1.5, c)
        state[f"{key}.num_batches_tracked"] = np.array(3)

    conv("conv1", cfg["stem_width"], 3, 7)
    bn("bn1", cfg["stem_width"])
    cin = cfg["stem_width"]
    for s, (n, width) in enumerate(zip(cfg["stage_sizes"], cfg["widths"], strict=True)):
        for i in range(n):
            key = f"layer{s + 1}.{i}"
            conv(f"{key}.conv1", width, cin, 3)
            bn(f"{key}.bn1", width)
            conv(f"{key}.conv2", width, width, 3)
            bn(f"{key}.bn2", width)
            if (s > 0 and i == 0) or cin != width:
                conv(f"{key}.downsample.0", width, cin, 1)
                bn(f"{key}.downsample.1", width)
            cin = width
    state["fc.weight"] = rng.normal(0, 0.1, (cfg["num_classes"], cin))
    state["fc.bias"] = rng.normal(0, 0.1, cfg["num_classes"])
    return {
        k: np.asarray(v, np.float32 if v.dtype.kind == "f" else v.dtype) for k, v in state.items()
    }


def test_cli_writes_a_checkpoint_that_loads_back(tmp_path, capsys):
    state = torchvision_resnet_state(TINY_RESNET)
    path = str(tmp_path / "tiny.safetensors")
    write_safetensors(
        path, {k: ("F32" if v.dtype == np.float32 else "I64", v) for k, v in state.items()}
    )
    out = str(tmp_path / "converted")
    kwargs = [f"--kwarg={k}={v}" for k, v in TINY_RESNET.items() if k != "num_classes"]
    convert.main(["--model=resnet18", f"--input={path}", f"--output={out}", *kwargs])
    assert "init_from" in capsys.readouterr().out

    meta, variables = weights.load_converted(out)
    assert meta["model"] == "resnet18" and meta["source"] == "torchvision"
    assert meta["num_classes"] == 5 and meta["format_version"] == 1
    params, stats = variables["params"], variables["batch_stats"]
    np.testing.assert_array_equal(params["head"]["fc"]["kernel"], state["fc.weight"].T)
    np.testing.assert_array_equal(
        params["ConvBN_0"]["Conv_0"]["kernel"], state["conv1.weight"].transpose(2, 3, 1, 0)
    )
    block = "ResidualBlock_1"  # layer2.0, with its projection shortcut third.
    np.testing.assert_array_equal(
        stats[block]["ConvBN_2"]["BatchNorm_0"]["var"], state["layer2.0.downsample.1.running_var"]
    )
    np.testing.assert_array_equal(
        params[block]["ConvBN_1"]["BatchNorm_0"]["scale"], state["layer2.0.bn2.weight"]
    )
    # meta's kwargs recreate the model the variables fit (traced, not compiled: the torch tests
    # below run real forwards).
    model = models.create(meta["model"], **meta["model_kwargs"])
    logits = jax.eval_shape(model.apply, variables, np.zeros((1, 32, 32, 3), np.float32))
    assert logits.shape == (1, 5)

    with pytest.raises(SystemExit) as exit_info:  # The directory exists now.
        convert.main(["--model=resnet18", f"--input={path}", f"--output={out}", *kwargs])
    assert exit_info.value.code == 2 and "new --output" in capsys.readouterr().err
    with pytest.raises(UserError, match="meta.json"):
        weights.load_converted(str(tmp_path))


def test_conversion_errors_name_the_problem():
    kwargs = {k: v for k, v in TINY_RESNET.items() if k != "num_classes"}
    state = torchvision_resnet_state(TINY_RESNET)
    with pytest.raises(UserError, match="unknown model with torchvision weights 'resnet19'"):
        weights.from_torch("resnet19", state, **kwargs)
    with pytest.raises(UserError, match="unknown weight source 'keras'"):
        weights.from_torch("resnet18", state, source="keras", **kwargs)
    with pytest.raises(UserError, match=r"'fc.weight' has shape \(8, 5\).*needs \(8, 7\)"):
        weights.from_torch("resnet18", state, num_classes=7, **kwargs)
    missing = {k: v for k, v in state.items() if not k.startswith("layer4.0.bn2")}
    with pytest.raises(UserError, match="no tensor 'layer4.0.bn2.weight'"):
        weights.from_torch("resnet18", missing, **kwargs)
    extra = {**state, "layer5.0.conv1.weight": np.zeros((1, 1, 1, 1), np.float32)}
    with pytest.raises(UserError, match="1 torch tensors have no place.*layer5.0.conv1.weight"):
        weights.from_torch("resnet18", extra, **kwargs)
    # layer1.0 projects 8 -> 4 channels; without its weights those variables stay unassigned.
    no_projection = {k: v for k, v in state.items() if not k.startswith("layer1.0.downsample")}
    with pytest.raises(UserError, match="5 model variables got no.*ResidualBlock_0/ConvBN_2"):
        weights.from_torch("resnet18", no_projection, **kwargs)


def test_registry():
    assert {"resnet50", "vgg16_bn", "densenet121", "googlenet", "inception_v3"} <= set(
        weights.list_convertible("torchvision")
    )
    assert {"legacy_seresnet50", "senet154", "seresnext50_32x4d"} <= set(
        weights.list_convertible("timm")
    )
    for source in weights.SOURCES:
        for name in weights.list_convertible(source):
            assert name in models.list_models(), name
    with pytest.raises(ValueError, match="twice"):
        weights.register("torchvision", ["resnet50"])(lambda model, state: None)


# With torch: tiny torchvision-style modules, randomized, against the converted cvjax models.


def _torch_reference_modules():
    torch = pytest.importorskip("torch")
    nn = torch.nn

    class BasicBlock(nn.Module):
        expansion = 1

        def __init__(self, cin, planes, stride, groups=1, base_width=64):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.downsample = _projection(cin, planes, stride)

        def forward(self, x):
            y = torch.relu(self.bn1(self.conv1(x)))
            y = self.bn2(self.conv2(y))
            return torch.relu(y + (x if self.downsample is None else self.downsample(x)))

    class Bottleneck(nn.Module):  # torchvision's v1.5: the stride on the 3x3.
        expansion = 4

        def __init__(self, cin, planes, stride, groups=1, base_width=64):
            super().__init__()
            width = int(planes * base_width / 64) * groups
            self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.conv2 = nn.Conv2d(width, width, 3, stride, 1, groups=groups, bias=False)
            self.bn2 = nn.BatchNorm2d(width)
            self.conv3 = nn.Conv2d(width, planes * 4, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(planes * 4)
            self.downsample = _projection(cin, planes * 4, stride)

        def forward(self, x):
            y = torch.relu(self.bn1(self.conv1(x)))
            y = torch.relu(self.bn2(self.conv2(y)))
            y = self.bn3(self.conv3(y))
            return torch.relu(y + (x if self.downsample is None else self.downsample(x)))

    def _projection(cin, cout, stride):
        if stride == 1 and cin == cout:
            return None
        return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    class ResNet(nn.Module):
        def __init__(self, block, sizes, widths, stem, classes, groups=1, base_width=64):
            super().__init__()
            self.conv1 = nn.Conv2d(3, stem, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(stem)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            cin = stem
            for s, (n, planes) in enumerate(zip(sizes, widths, strict=True)):
                blocks = []
                for i in range(n):
                    stride = 2 if s > 0 and i == 0 else 1
                    blocks.append(block(cin, planes, stride, groups, base_width))
                    cin = planes * block.expansion
                setattr(self, f"layer{s + 1}", nn.Sequential(*blocks))
            self.fc = nn.Linear(cin, classes)
            self.depth = len(sizes)

        def forward(self, x):
            x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
            for s in range(self.depth):
                x = getattr(self, f"layer{s + 1}")(x)
            return self.fc(x.mean((2, 3)))

    return torch, ResNet, BasicBlock, Bottleneck


def _randomize(torch, module, seed=0):
    torch.manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.2)
    return module.eval()


def _compare(torch, module, name, source="torchvision", size=32, **kwargs):
    state = {k: v.numpy() for k, v in module.state_dict().items()}
    variables = weights.from_torch(name, state, source=source, **kwargs)
    model = models.create(name, **weights.resolve_kwargs(name, state, source, **kwargs))
    x = np.random.default_rng(0).normal(size=(2, size, size, 3)).astype(np.float32)
    with torch.no_grad():
        want = module(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    got = np.asarray(jax.jit(lambda v, x: model.apply(v, x))(variables, x))
    assert np.max(np.abs(got - want)) / np.max(np.abs(want)) < 1e-3


def test_basic_resnet_logits_match_torch():
    torch, ResNet, BasicBlock, _ = _torch_reference_modules()
    module = _randomize(torch, ResNet(BasicBlock, (1, 2, 1, 1), (4, 8, 8, 16), 8, 5))
    _compare(
        torch, module, "resnet18", stage_sizes=(1, 2, 1, 1), widths=(4, 8, 8, 16), stem_width=8
    )


def test_grouped_bottleneck_resnet_logits_match_torch():
    torch, ResNet, _, Bottleneck = _torch_reference_modules()
    cfg = dict(stage_sizes=(1, 1, 1, 1), widths=(2, 4, 4, 4), stem_width=8)
    module = _randomize(torch, ResNet(Bottleneck, (1, 1, 1, 1), (2, 4, 4, 4), 8, 3, 4, 32))
    _compare(torch, module, "resnext50_32x4d", groups=4, width_per_group=32, **cfg)
