"""Single convolutions, forward + backward, under cvjax's XLA options, XLA's defaults, PyTorch.

    python experiments/conv_layers.py [--batch_size=32] [--steps=5]

Times the gradient (input and weights) of sum(conv(x, w)^2) for the layer shapes of the
performance issue (ResNet-50's 1x1 256->64 and 3x3 64->64 at 56x56) and of ResNet-20's three
stages. cvjax's options (cvjax/xla_flags.py) and XLA's defaults (CVJAX_XLA_FLAGS=0) each run
in a process of their own, because XLA reads its flags once. PyTorch (optional) runs eagerly,
channels-last, in this process. Prints one markdown table; the median of `--steps` calls.
"""

import argparse
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

# (name, spatial size, input channels, output channels, kernel size, batch multiplier)
LAYERS = (
    ("ResNet-50 1x1 256->64, 56x56", 56, 256, 64, 1, 1),
    ("ResNet-50 3x3 64->64, 56x56", 56, 64, 64, 3, 1),
    ("ResNet-20 3x3 16->16, 32x32 (batch x4)", 32, 16, 16, 3, 4),
    ("ResNet-20 3x3 32->32, 16x16 (batch x4)", 16, 32, 32, 3, 4),
    ("ResNet-20 3x3 64->64, 8x8 (batch x4)", 8, 64, 64, 3, 4),
)


def median_ms(fn, steps: int) -> float:
    fn()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2] * 1e3


def time_jax(batch: int, steps: int) -> list[float]:
    import jax
    from jax import lax

    import cvjax  # noqa: F401  (sets or, with CVJAX_XLA_FLAGS=0, leaves XLA's options)

    out = []
    for _, size, cin, cout, k, mult in LAYERS:
        x = jax.random.normal(jax.random.PRNGKey(0), (batch * mult, size, size, cin))
        w = jax.random.normal(jax.random.PRNGKey(1), (k, k, cin, cout)) * 0.05
        pad = ((k // 2, k // 2),) * 2
        dn = ("NHWC", "HWIO", "NHWC")
        conv = lambda x, w: lax.conv_general_dilated(x, w, (1, 1), pad, dimension_numbers=dn)  # noqa: E731, B023
        grad = jax.jit(jax.grad(lambda x, w: (conv(x, w) ** 2).sum(), (0, 1)))  # noqa: B023
        out.append(median_ms(lambda: jax.block_until_ready(grad(x, w)), steps))  # noqa: B023
    return out


def time_torch(batch: int, steps: int) -> list[float] | None:
    try:
        import torch
    except ImportError:
        return None
    out = []
    for _, size, cin, cout, k, mult in LAYERS:
        cl = torch.channels_last
        x = torch.randn(batch * mult, cin, size, size).to(memory_format=cl).requires_grad_()
        conv = torch.nn.Conv2d(cin, cout, k, padding=k // 2, bias=False).to(memory_format=cl)

        def step(x=x, conv=conv):
            x.grad, conv.weight.grad = None, None
            (conv(x) ** 2).sum().backward()

        out.append(median_ms(step, steps))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--jax_only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.jax_only:
        print(json.dumps(time_jax(args.batch_size, args.steps)))
        return
    columns = {}
    for label, value in (("cvjax options", "1"), ("XLA defaults", "0")):
        env = {**os.environ, "CVJAX_XLA_FLAGS": value}
        env.pop("XLA_FLAGS", None)
        command = [sys.executable, os.path.abspath(__file__), "--jax_only"]
        command += [f"--batch_size={args.batch_size}", f"--steps={args.steps}"]
        result = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
        columns[label] = json.loads(result.stdout.strip().splitlines()[-1])
    torch_ms = time_torch(args.batch_size, args.steps)
    if torch_ms is not None:
        columns["PyTorch eager, channels-last"] = torch_ms
    print(f"forward + backward (input and weight gradients), batch {args.batch_size}, fp32, ms")
    print("| layer | " + " | ".join(columns) + " |")
    print("|---|" + "---:|" * len(columns))
    for i, layer in enumerate(LAYERS):
        print(f"| {layer[0]} | " + " | ".join(f"{v[i]:.0f}" for v in columns.values()) + " |")


if __name__ == "__main__":
    main()
