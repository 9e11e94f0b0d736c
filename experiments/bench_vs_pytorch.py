"""cvjax vs PyTorch eager on this machine, side by side: the CPU targets of the performance issue.

    pip install torch   # optional benchmark dependency (a CPU build)
    python experiments/bench_vs_pytorch.py

Cases (each one the same network on both sides, parameter counts checked equal):
- resnet20_train: ResNet-20 CIFAR training step, batch 128, 32x32, SGD momentum;
- resnet50_infer: ResNet-50 inference, batch 8, 224x224.

Both sides run in this one process, one after the other, each timed as the median of `--steps`
steps after warm-up (`cvjax.benchmark.run` and `cvjax.bench_torch.run`). Writes
<out>/bench_vs_pytorch.json and .md (ratio = cvjax step time / PyTorch's; below 1 is faster).
"""

import argparse
import json
import os
import platform
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

CASES = {
    "resnet20_train": dict(
        model="resnet20", batch_size=128, image_size=32, num_classes=10, mode="train"
    ),
    "resnet50_infer": dict(
        model="resnet50", batch_size=8, image_size=224, num_classes=1000, mode="infer"
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", default=",".join(CASES), help="Comma-separated case names.")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--out", default=os.path.join(REPO, "experiments", "results"))
    args = parser.parse_args()

    import jax

    from cvjax import benchmark

    rows = []
    for name in args.cases.split(","):
        if name not in CASES:
            parser.error(f"unknown case {name!r}; choose from {', '.join(CASES)}")
        case = CASES[name]
        result = benchmark.run(
            case["model"],
            case["batch_size"],
            case["image_size"],
            case["num_classes"],
            case["mode"],
            steps=args.steps,
            warmup=args.warmup,
        )
        result = benchmark.compare(result, args.steps, args.warmup)
        rows.append({"case": name, **result})
        print(json.dumps(rows[-1]), flush=True)

    os.makedirs(args.out, exist_ok=True)
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    with open(os.path.join(args.out, "bench_vs_pytorch.json"), "w") as f:
        json.dump(
            {
                "date": time.strftime("%Y-%m-%d"),
                "machine": machine,
                "jax": jax.__version__,
                "rows": rows,
            },
            f,
            indent=2,
        )
    lines = [
        "# cvjax vs PyTorch eager, same machine, same network",
        "",
        f"`python experiments/bench_vs_pytorch.py` ({time.strftime('%Y-%m-%d')}, {machine}, "
        f"JAX {jax.__version__}, {rows[0]['pytorch'] if rows else ''}); median of "
        f"{args.steps} steps after {args.warmup} warm-up steps.",
        "",
        "| case | params | cvjax step (ms) | PyTorch step (ms) | ratio | cvjax compile (s) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['case']} (batch {r['batch_size']}, {r['image_size']} px) | {r['params']:,} | "
            f"{r['step_ms']:.0f} | {r['pytorch_step_ms']:.0f} | {r['ratio_vs_pytorch']:.2f} | "
            f"{r['compile_s']:.1f} |"
        )
    with open(os.path.join(args.out, "bench_vs_pytorch.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
