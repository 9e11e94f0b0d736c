"""cvjax vs PyTorch eager on this machine, side by side: the CPU targets of the performance issue.

    pip install torch==2.13.0   # optional benchmark dependency (a CPU build)
    python experiments/bench_vs_pytorch.py

Cases (each one the same network on both sides, parameter counts checked equal):
- resnet20_train: ResNet-20 CIFAR training step, batch 128, 32x32, SGD momentum;
- resnet50_infer: ResNet-50 inference, batch 8, 224x224;
- resnet50_train: ResNet-50 training step, batch 32, 224x224 (not in the default list: slow).

Both sides run in this one process, one after the other, each timed as the median of `--steps`
steps after warm-up (`cvjax.benchmark.run` and `cvjax.bench_torch.run`). A shared CPU drifts by
tens of percent within minutes, so this is repeated for `--rounds` rounds, alternating the
frameworks. The table gives the median over the rounds of each side's step time, and the median
and range of the per-round ratios.

`--ab` also times cvjax in a second process with CVJAX_XLA_FLAGS=0, that is with XLA's own
defaults and not cvjax's options (cvjax/xla_flags.py), so the table shows what those options buy.
Writes <out>/bench_vs_pytorch.json and .md (ratio = cvjax step time / PyTorch's; below 1 is faster).
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import cvjax  # noqa: E402, F401  (sets cvjax's XLA options before JAX's backend starts)

CASES = {
    "resnet20_train": dict(
        model="resnet20", batch_size=128, image_size=32, num_classes=10, mode="train"
    ),
    "resnet50_infer": dict(
        model="resnet50", batch_size=8, image_size=224, num_classes=1000, mode="infer"
    ),
    "resnet50_train": dict(
        model="resnet50", batch_size=32, image_size=224, num_classes=1000, mode="train"
    ),
}
DEFAULT_CASES = "resnet20_train,resnet50_infer"


def time_case(name: str, steps: int, warmup: int, rounds: int, torch: bool) -> dict:
    """Median step times over `rounds` alternating rounds (PyTorch too when `torch`)."""
    from cvjax import benchmark

    case = dict(CASES[name])
    model = case.pop("model")
    results = []
    for _ in range(rounds):
        result = benchmark.run(model, **case, steps=steps, warmup=warmup)
        if torch:
            result = benchmark.compare(result, steps, warmup)
        results.append(result)
    row = {**results[-1], "case": name, "rounds": rounds}
    row["step_ms"] = statistics.median(r["step_ms"] for r in results)
    row["step_ms_rounds"] = [r["step_ms"] for r in results]
    row["compile_s"] = min(r["compile_s"] for r in results)
    if torch:
        ratios = [r["ratio_vs_pytorch"] for r in results]
        row["pytorch_step_ms"] = statistics.median(r["pytorch_step_ms"] for r in results)
        row["pytorch_step_ms_rounds"] = [r["pytorch_step_ms"] for r in results]
        row["ratio_vs_pytorch"] = statistics.median(ratios)
        row["ratio_range"] = [min(ratios), max(ratios)]
    row.pop("images_per_sec", None)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--cases", default=DEFAULT_CASES, help=f"Comma-separated: {', '.join(CASES)}."
    )
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ab", action="store_true", help="Also time cvjax with XLA's defaults.")
    parser.add_argument("--no_torch", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=os.path.join(REPO, "experiments", "results"))
    args = parser.parse_args()
    names = args.cases.split(",")
    for name in names:
        if name not in CASES:
            parser.error(f"unknown case {name!r}; choose from {', '.join(CASES)}")

    import jax

    rows = []
    for name in names:
        rows.append(time_case(name, args.steps, args.warmup, args.rounds, not args.no_torch))
        print(json.dumps(rows[-1]), flush=True)
    if args.no_torch:  # The --ab child: rows to the parent, nothing written.
        return

    if args.ab:
        command = [sys.executable, os.path.abspath(__file__), "--no_torch", f"--cases={args.cases}"]
        command += [f"--steps={args.steps}", f"--warmup={args.warmup}", f"--rounds={args.rounds}"]
        env = {**os.environ, "CVJAX_XLA_FLAGS": "0"}
        env.pop("XLA_FLAGS", None)
        out = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout
        xla_default = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        for row, other in zip(rows, xla_default, strict=True):
            row["xla_defaults_step_ms"] = other["step_ms"]

    os.makedirs(args.out, exist_ok=True)
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    date = time.strftime("%Y-%m-%d")
    commit = subprocess.run(
        ["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    header = {"date": date, "machine": machine, "jax": jax.__version__, "commit": commit}
    header["xla_flags"] = os.environ.get("XLA_FLAGS", "")
    with open(os.path.join(args.out, "bench_vs_pytorch.json"), "w") as f:
        json.dump({**header, "rows": rows}, f, indent=2)
    ab_head, ab_rule = (" cvjax, XLA's defaults (ms) |", "---|") if args.ab else ("", "")
    lines = [
        "# cvjax vs PyTorch eager, same machine, same network",
        "",
        f"`python experiments/bench_vs_pytorch.py{' --ab' if args.ab else ''}` ({date}, {machine}, "
        f"commit {commit}, JAX {jax.__version__}, {rows[0]['pytorch'] if rows else ''}, "
        f"XLA_FLAGS `{header['xla_flags']}`): median of {args.steps} steps after {args.warmup} "
        f"warm-up steps, in each of {args.rounds} rounds alternating the frameworks; the step "
        "times are the medians over the rounds, the ratio is the median of the rounds' ratios.",
        "",
        f"| case | params | cvjax step (ms) |{ab_head} PyTorch step (ms) | ratio | ratio range "
        "| cvjax compile (s) |",
        f"|---|---|---|{ab_rule}---|---|---|---|",
    ]
    for r in rows:
        ab = f" {r['xla_defaults_step_ms']:.0f} |" if args.ab else ""
        low, high = r["ratio_range"]
        lines.append(
            f"| {r['case']} (batch {r['batch_size']}, {r['image_size']} px) | {r['params']:,} | "
            f"{r['step_ms']:.0f} |{ab} {r['pytorch_step_ms']:.0f} | {r['ratio_vs_pytorch']:.2f} | "
            f"{low:.2f}-{high:.2f} | {r['compile_s']:.1f} |"
        )
    with open(os.path.join(args.out, "bench_vs_pytorch.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
