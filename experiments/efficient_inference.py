"""Params, GMACs and CPU inference speed of every efficient model, beside ResNet-50.

    python experiments/efficient_inference.py [--batch_size=8] [--pattern='mobilenet*']

Accuracy per FLOP is why the efficient families exist (Howard et al. 2017; Zhang et al. 2018;
Tan & Le 2019): this puts their cost on one table. Each model runs at its default resolution
with 1,000 classes; images/s is `cvjax.benchmark --mode=infer` (the jitted eval step on
synthetic data, fp32, median of the timed steps after compilation). Results go to
<out>/efficient_inference.json (kept across runs: a rerun skips measured models unless --force)
and <out>/efficient_inference.md.
"""

import argparse
import fnmatch
import json
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

FAMILIES = ("mobilenet", "shufflenet", "mnasnet", "efficientnet", "nasnet")
BASELINE = "resnet50"


def model_names(pattern: str) -> list[str]:
    from cvjax import models

    names = [
        n
        for n in models.list_models()
        if models.model_info(n)["family"].startswith(FAMILIES) and n != "efficientnet"
    ]
    names = sorted(names, key=lambda n: (models.model_info(n)["family"], n))
    return [n for n in [BASELINE, *names] if fnmatch.fnmatch(n, pattern)]


def measure(name: str, batch_size: int, steps: int) -> dict:
    from cvjax import benchmark, models
    from cvjax.models import __main__ as table

    info = models.model_info(name)
    result = benchmark.run(name, batch_size, mode="infer", steps=steps, warmup=1)
    return {
        "model": name,
        "family": info["family"],
        "input_size": info["input_size"],
        "params": table.count_params(name),
        "gmacs": round(table.gmacs(name), 4),
        "images_per_sec": round(result["images_per_sec"], 1),
        "batch_size": batch_size,
        "compile_s": round(result["compile_s"], 1),
        "date": time.strftime("%Y-%m-%d"),
    }


def write_table(results: dict, out: str, batch_size: int) -> None:
    base = results.get(BASELINE)
    lines = [
        "| model | input | params | GMACs | CPU infer img/s | GMACs vs ResNet-50 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in results.values():
        ratio = f"{r['gmacs'] / base['gmacs']:.3f}" if base else ""
        lines.append(
            f"| {r['model']} | {r['input_size']} | {r['params']:,} | {r['gmacs']:.3f} | "
            f"{r['images_per_sec']:.1f} | {ratio} |"
        )
    header = [
        "# Efficient models beside ResNet-50: cost and CPU inference speed",
        "",
        "Default resolution, 1,000 classes, fp32, batch "
        f"{batch_size}, on the project's 2-core CPU; GMACs from XLA's cost analysis of the",
        "forward pass at batch 1 (`python -m cvjax.models`). Produced by",
        f"`python experiments/efficient_inference.py --batch_size={batch_size}`"
        f" ({next(iter(results.values()))['date'] if results else ''}).",
        "",
    ]
    with open(os.path.join(out, "efficient_inference.md"), "w") as f:
        f.write("\n".join(header + lines) + "\n")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per model")
    parser.add_argument("--pattern", default="*", help="fnmatch pattern over model names")
    parser.add_argument("--out", default=os.path.join(REPO, "experiments", "results"))
    parser.add_argument("--force", action="store_true", help="remeasure measured models")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "efficient_inference.json")
    results = {}
    if os.path.exists(path):
        with open(path) as f:
            results = json.load(f)
    for name in model_names(args.pattern):
        if name in results and not args.force:
            continue
        results[name] = measure(name, args.batch_size, args.steps)
        print(json.dumps(results[name]), flush=True)
        with open(path, "w") as f:
            json.dump(results, f, indent=2)
        write_table(results, args.out, args.batch_size)


if __name__ == "__main__":
    main()
