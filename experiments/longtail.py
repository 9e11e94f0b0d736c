"""Plain CE vs class-balanced CE vs LDAM-DRW vs cRT (and tau-norm) on a long-tailed split.

    python experiments/longtail.py --dataset=mnist --ratio=100 --epochs=10

Each method is the real training command `python -m cvjax.main
--config=configs/longtail.py:method=M,...` run in <workdir>/<method> (rerunning resumes or reuses
finished runs). cRT starts from the CE run; tau-normalization (Kang et al. 2020) rescales the CE
run's classifier with tau chosen on a held-out part of the *training* split, never the test split.
Writes <out>/longtail.md (the table, the commands, wall times) and longtail.json.

Per-group accuracy follows Liu et al. 2019 / Kang et al. 2020: many-shot classes have more than
`many` training images, few-shot fewer than `few` (defaults scaled to the split: the top and
bottom thirds of the class-size profile).
"""

import argparse
import json
import os
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

METHODS = ("ce", "cb", "ldam_drw", "crt")
LABELS = {
    "ce": "cross-entropy",
    "cb": "class-balanced CE (beta 0.9999)",
    "ldam_drw": "LDAM-DRW",
    "crt": "cRT (from CE)",
    "tau_norm": "tau-norm (from CE)",
}


def config_arg(args, method: str, stage1: str = "") -> str:
    arg = (
        f"method={method},dataset={args.dataset},data_dir={args.data_dir},ratio={args.ratio},"
        f"model={args.model},epochs={args.epochs},crt_epochs={args.crt_epochs}"
    )
    return arg + (f",stage1={stage1}" if stage1 else "")


def run_method(args, method: str, workdir: str, stage1: str = "") -> dict:
    from configs import longtail
    from cvjax.train.loop import train_and_evaluate

    arg = config_arg(args, method, stage1)
    config = longtail.get_config(arg)
    config.seed = args.seed
    start = time.perf_counter()
    result = train_and_evaluate(config, workdir)
    with open(os.path.join(workdir, "eval_report.json")) as f:
        report = json.load(f)
    return {
        "method": method,
        "command": f"python -m cvjax.main --config=configs/longtail.py:{arg} --workdir={workdir}",
        "wall_s": round(time.perf_counter() - start, 1),
        "accuracy": result["eval/accuracy"],
        **group_accuracies(report),
    }


def group_accuracies(report: dict) -> dict:
    confusion = np.asarray(report["confusion"], np.float64)
    counts = np.asarray(report["train_counts"])
    per_class = np.diag(confusion) / np.maximum(confusion.sum(1), 1)
    order = np.argsort(-counts)
    thirds = np.array_split(order, 3)
    return {
        "many": float(per_class[thirds[0]].mean()),
        "medium": float(per_class[thirds[1]].mean()),
        "few": float(per_class[thirds[2]].mean()),
        "train_counts": counts.tolist(),
        "per_class_accuracy": per_class.tolist(),
    }


def tau_norm_row(args, ce_workdir: str) -> dict:
    """tau-normalized CE classifier; tau from a held-out slice of the long-tailed train split."""
    from configs import longtail
    from cvjax.train import transfer

    config = longtail.get_config(config_arg(args, "ce"))
    config.seed = args.seed
    start = time.perf_counter()
    result = transfer.tau_norm_evaluate(config, ce_workdir, taus=np.linspace(0.0, 2.0, 9))
    return {
        "method": "tau_norm",
        "command": "transfer.tau_norm_evaluate (experiments/longtail.py)",
        "wall_s": round(time.perf_counter() - start, 1),
        **result,
    }


def write(rows: list[dict], args, out: str) -> None:
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "longtail.json"), "w") as f:
        json.dump({"args": vars(args), "rows": rows}, f, indent=1)
    counts = rows[0]["train_counts"]
    lines = [
        f"# Long-tailed {args.dataset} (imbalance ratio {args.ratio:g})",
        "",
        f"`python experiments/longtail.py --dataset={args.dataset} --ratio={args.ratio:g} "
        f"--epochs={args.epochs:g} --model={args.model}` on a 2-core CPU, "
        f"{time.strftime('%Y-%m-%d')}.",
        "",
        f"Training images per class: {counts} ({sum(counts)} in all); the test split is "
        "balanced. Many / medium / few: the thirds of the classes by training-set size.",
        "",
        "| method | top-1 % | many % | medium % | few % | wall s |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {LABELS[r['method']]} | {100 * r['accuracy']:.2f} | {100 * r['many']:.2f} | "
            f"{100 * r['medium']:.2f} | {100 * r['few']:.2f} | {r['wall_s']} |"
        )
    lines += ["", "Commands:", ""] + [f"- `{r['command']}`" for r in rows]
    with open(os.path.join(out, "longtail.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--data_dir", default=os.path.join(REPO, "..", "shared", "datasets"))
    parser.add_argument("--ratio", type=float, default=100.0)
    parser.add_argument("--model", default="resnet8")
    parser.add_argument("--epochs", type=float, default=10.0)
    parser.add_argument("--crt_epochs", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--workdir", default="/tmp/cvjax/longtail")
    parser.add_argument("--out", default=os.path.join(REPO, "experiments", "results"))
    args = parser.parse_args()
    args.data_dir = os.path.abspath(args.data_dir)
    base = os.path.join(args.workdir, f"{args.dataset}_r{args.ratio:g}_{args.model}")
    rows = []
    ce_dir = os.path.join(base, "ce")
    for method in args.methods.split(","):
        stage1 = ce_dir if method == "crt" else ""
        rows.append(run_method(args, method, os.path.join(base, method), stage1))
        print(json.dumps({k: v for k, v in rows[-1].items() if "per_class" not in k}))
        if method == "ce":
            rows.append(tau_norm_row(args, ce_dir))
            print(json.dumps({k: v for k, v in rows[-1].items() if "per_class" not in k}))
        write(rows, args, args.out)


if __name__ == "__main__":
    main()
