"""PyTorch twins of cvjax models, for timing the same step side by side (`python -m
cvjax.benchmark --compare`, experiments/bench_vs_pytorch.py).

PyTorch is an optional benchmark dependency (`pip install torch`); nothing else in cvjax
imports this module. Each twin has exactly the cvjax model's parameter count (the comparison
checks it), so the two sides compute the same network:
- resnet20 (and any CIFAR ResNet-(6n+2)): He et al. 2016, Sec. 4.2, with option-A shortcuts
  (stride-2 subsampling and zero-padded channels), as cvjax/models/resnet.py;
- resnet50: torchvision's ResNet-50 v1.5 (stride on the 3x3), written out here so that
  torchvision is not needed.

The step timed is PyTorch eager's usual one: forward, cross-entropy, backward, SGD with momentum
0.9 and weight decay 1e-4 (as cvjax's default optimizer); or a forward under `torch.no_grad()`
in eval mode for inference. Both sides use all the cores torch and XLA see by default.
"""

import statistics
import time

from cvjax.errors import UserError


def _torch():
    try:
        import torch
    except ImportError:
        raise UserError(
            "--compare needs PyTorch, an optional benchmark dependency: pip install torch"
        ) from None
    return torch


def _cifar_resnet(depth: int, num_classes: int):
    torch = _torch()
    nn = torch.nn
    n = (depth - 2) // 6

    class Block(nn.Module):
        def __init__(self, c_in: int, c_out: int, stride: int):
            super().__init__()
            self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(c_out)
            self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(c_out)
            self.stride, self.extra = stride, c_out - c_in

        def forward(self, x):
            y = torch.relu(self.bn1(self.conv1(x)))
            y = self.bn2(self.conv2(y))
            shortcut = x[:, :, :: self.stride, :: self.stride]
            if self.extra:  # Option A: zero channels, half on each side.
                half = self.extra // 2
                shortcut = nn.functional.pad(shortcut, (0, 0, 0, 0, half, self.extra - half))
            return torch.relu(y + shortcut)

    layers = [nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()]
    c_in = 16
    for stage, width in enumerate((16, 32, 64)):
        for i in range(n):
            layers.append(Block(c_in, width, 2 if stage and i == 0 else 1))
            c_in = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes)]
    return nn.Sequential(*layers)


def _resnet50(num_classes: int):
    torch = _torch()
    nn = torch.nn

    class Bottleneck(nn.Module):
        def __init__(self, c_in: int, planes: int, stride: int):
            super().__init__()
            out = planes * 4
            self.body = nn.Sequential(
                nn.Conv2d(c_in, planes, 1, bias=False),
                nn.BatchNorm2d(planes),
                nn.ReLU(),
                nn.Conv2d(planes, planes, 3, stride, 1, bias=False),
                nn.BatchNorm2d(planes),
                nn.ReLU(),
                nn.Conv2d(planes, out, 1, bias=False),
                nn.BatchNorm2d(out),
            )
            self.down = None
            if stride != 1 or c_in != out:
                self.down = nn.Sequential(
                    nn.Conv2d(c_in, out, 1, stride, bias=False), nn.BatchNorm2d(out)
                )

        def forward(self, x):
            shortcut = x if self.down is None else self.down(x)
            return torch.relu(self.body(x) + shortcut)

    layers = [
        nn.Conv2d(3, 64, 7, 2, 3, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        nn.MaxPool2d(3, 2, 1),
    ]
    c_in = 64
    for stage, (planes, blocks) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3), strict=True)):
        for i in range(blocks):
            layers.append(Bottleneck(c_in, planes, 2 if stage and i == 0 else 1))
            c_in = planes * 4
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2048, num_classes)]
    return nn.Sequential(*layers)


TWINS = {
    "resnet20": lambda classes: _cifar_resnet(20, classes),
    "resnet56": lambda classes: _cifar_resnet(56, classes),
    "resnet50": _resnet50,
}


def create(name: str, num_classes: int):
    """The PyTorch twin of cvjax model `name`."""
    if name not in TWINS:
        raise UserError(
            f"no PyTorch twin of {name!r} to compare with; --compare supports {', '.join(TWINS)}"
        )
    return TWINS[name](num_classes)


def num_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def run(
    model_name: str,
    batch_size: int,
    image_size: int,
    num_classes: int,
    mode: str = "train",
    steps: int = 10,
    warmup: int = 2,
) -> dict:
    """Times the PyTorch twin's eager train step (or inference); the median of `steps`."""
    torch = _torch()
    torch.manual_seed(0)
    model = create(model_name, num_classes)
    x = torch.randn(batch_size, 3, image_size, image_size)
    y = torch.randint(0, num_classes, (batch_size,))
    if mode == "train":
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
        loss_fn = torch.nn.CrossEntropyLoss()

        def step():
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
    else:
        model.eval()

        def step():
            with torch.no_grad():
                model(x)

    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    step_s = statistics.median(times)
    return {
        "model": model_name,
        "framework": f"pytorch {torch.__version__} eager",
        "threads": torch.get_num_threads(),
        "params": num_params(model),
        "step_ms": step_s * 1e3,
        "images_per_sec": batch_size / step_s,
    }
