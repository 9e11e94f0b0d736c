"""The timing harness (cvjax/benchmark.py) at tiny size, and its PyTorch comparison."""

import json
import subprocess
import sys

import pytest

from cvjax import bench_torch, benchmark
from cvjax.errors import UserError
from cvjax.models.__main__ import count_params
from tests.conftest import REPO


def test_harness_reports_the_required_keys_as_json():
    cmd = [
        sys.executable,
        "-m",
        "cvjax.benchmark",
        "--model=resnet8",
        "--batch_size=4",
        "--image_size=16",
        "--num_classes=10",
        "--steps=2",
        "--warmup=1",
        "--json",
    ]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["step_ms"] > 0 and result["compile_s"] > 0
    assert result["images_per_sec"] == pytest.approx(4 / result["step_ms"] * 1e3)
    assert result["peak_memory_mb"] > 0 and result["peak_memory_kind"]


def test_compare_without_pytorch_names_the_fix(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now fails.
    result = benchmark.run("resnet8", 2, 16, 10, "infer", steps=1, warmup=0)
    with pytest.raises(UserError, match="pip install torch"):
        benchmark.compare(result, steps=1, warmup=0)


def test_compare_refuses_models_without_a_twin():
    with pytest.raises(UserError, match="no PyTorch twin"):
        bench_torch.create("vgg11", 10)


@pytest.mark.parametrize("name, size, classes", [("resnet20", 32, 10), ("resnet50", 224, 1000)])
def test_pytorch_twins_are_the_same_networks(name, size, classes):
    pytest.importorskip("torch")  # An optional benchmark dependency.
    twin = bench_torch.create(name, classes)
    assert bench_torch.num_params(twin) == count_params(name, size, num_classes=classes)


def test_compare_times_both_sides():
    pytest.importorskip("torch")
    result = benchmark.run("resnet20", 4, 32, 10, "train", steps=2, warmup=1)
    both = benchmark.compare(result, steps=2, warmup=1)
    assert both["pytorch_step_ms"] > 0
    assert both["ratio_vs_pytorch"] == pytest.approx(both["step_ms"] / both["pytorch_step_ms"])
