"""Where a model's forward + backward spends its time: XLA's operations, slowest first.

    python experiments/profile_grad.py [--model=resnet20] [--batch_size=128] [--image_size=32]

Traces `--steps` calls of the jitted gradient of the training loss (train-mode BatchNorm) with
`jax.profiler`, then sums each compiled operation's time over the trace and prints the slowest
`--top`. Names are those of the compiled HLO (`transpose_copy_fusion.23`, ...); the
HLO text is written beside the trace (<out>/grad_hlo.txt) so that a name can be looked up.
Convolutions that XLA:CPU runs asynchronously show only their dispatch time.
"""

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import cvjax  # noqa: E402, F401  (sets cvjax's XLA options before JAX's backend starts)


def main(argv: list[str] | None = None) -> None:
    import jax
    import optax

    from cvjax import models

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--image_size", type=int, default=32)
    parser.add_argument("--num_classes", type=int, default=10)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--out", default="/tmp/cvjax_profile")
    args = parser.parse_args(argv)

    model = models.create(args.model, num_classes=args.num_classes)
    shape = (args.batch_size, args.image_size, args.image_size, model.in_channels)
    x = jax.random.normal(jax.random.PRNGKey(0), shape)
    y = jax.random.randint(jax.random.PRNGKey(1), (args.batch_size,), 0, args.num_classes)
    variables = model.init(jax.random.PRNGKey(2), x[:1], train=False)

    def loss(params):
        logits, _ = model.apply(
            {**variables, "params": params}, x, train=True, mutable=["batch_stats"]
        )
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    params = variables["params"]
    grad = jax.jit(jax.grad(loss)).lower(params).compile()  # Compiled once, for all below.
    jax.block_until_ready(grad(params))
    start = time.perf_counter()
    jax.block_until_ready(grad(params))
    untraced_ms = (time.perf_counter() - start) * 1e3
    os.makedirs(args.out, exist_ok=True)
    hlo = grad.as_text()
    with open(os.path.join(args.out, "grad_hlo.txt"), "w") as f:
        f.write(hlo)
    operations = set(re.findall(r"%([\w.\-]+) = ", hlo))
    trace_dir = os.path.join(args.out, "trace")
    jax.profiler.start_trace(trace_dir)
    for _ in range(args.steps):
        jax.block_until_ready(grad(params))
    jax.profiler.stop_trace()

    newest = max(
        glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True),
        key=os.path.getmtime,
    )
    with gzip.open(newest) as f:
        events = json.load(f)["traceEvents"]
    total = collections.Counter()
    for e in events:
        name = e.get("name", "")
        if e.get("ph") == "X" and "dur" in e and name in operations:
            total[name] += e["dur"] / 1e3 / args.steps
    print(
        f"{args.model}, batch {args.batch_size}, {args.image_size} px: forward + backward "
        f"{untraced_ms:.0f} ms untraced; per call, slowest operations first (ms):"
    )
    for name, ms in total.most_common(args.top):
        print(f"{ms:8.1f}  {name}")
    print(f"HLO: {os.path.join(args.out, 'grad_hlo.txt')}")


if __name__ == "__main__":
    main()
