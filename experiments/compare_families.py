"""Trains every CNN family for the same short compute budget on CIFAR-10 and tabulates the result.

    python experiments/compare_families.py --data=folder:/tmp/cifar10_jpeg --budget_s=120

Each family runs its own config (configs/<family>.py, the CIFAR-10 recipe) with a model small
enough for a CPU. The budget is wall-clock training time: the real train step is timed first
(`cvjax.benchmark`, synthetic data, the config's batch size), the number of epochs that fit into
`--budget_s` follows, and the recipe's schedule is shortened to that many epochs (`shorten`). Then
the ordinary training command runs (the exact command is in the table) and the test split is
evaluated. Equal time, not equal epochs: a model that is cheap per image sees more of the data,
which is the trade-off a CPU user faces.

For `folder:` data, `--eval_per_class=N` evaluates on the first N test images of each class (a
folder of links next to the data, `<path>-eval<N>`, whose train/ is the full training set): the
inception models evaluate at about 15 images/s on a 2-core CPU, so the full 10,000 would take
longer than their training.

`--group=families` (the default) runs the classic families, `--group=efficient` the efficient
ones (MobileNet, ShuffleNet, MnasNet, EfficientNet, NASNet-A). Results go to <out>/<group>.json
(one entry per family, kept across runs: a rerun skips families already measured unless --force)
and <out>/<group>.md (the table).
"""

import argparse
import importlib.util
import json
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

# family -> (config file, config arg choosing a CPU-sized model of the family, if not its default).
CLASSIC = {
    "lenet": ("configs/lenet.py", "model=lenet5"),
    "alexnet": ("configs/alexnet.py", ""),
    "vgg": ("configs/vgg.py", ""),
    "resnet": ("configs/resnet.py", "model=resnet20"),
    "resnext": ("configs/resnext.py", "model=resnext29_2x64d"),
    "senet": ("configs/senet.py", ""),
    "googlenet": ("configs/googlenet.py", ""),
    "inception_v3": ("configs/inception_v3.py", ""),
    "inception_v4": ("configs/inception_v4.py", ""),
    "inception_resnet_v2": ("configs/inception_v4.py", "model=inception_resnet_v2"),
    "xception": ("configs/xception.py", ""),
    "densenet": ("configs/densenet.py", "model=densenet_bc_100_k12"),
    "fractalnet": ("configs/fractalnet.py", ""),
}
EFFICIENT = {
    "mobilenet": ("configs/mobilenet.py", "model=mobilenet_v2"),
    "shufflenet": ("configs/shufflenet.py", "model=shufflenet_v2_x1_0"),
    "mnasnet": ("configs/mnasnet.py", "model=mnasnet1_0"),
    "efficientnet": ("configs/efficientnet.py", "model=efficientnet_b0"),
    "nasnet": ("configs/nasnet.py", ""),
}
GROUPS = {"families": CLASSIC, "efficient": EFFICIENT}
FAMILIES = {**CLASSIC, **EFFICIENT}


def load_config(path: str, arg: str):
    spec = importlib.util.spec_from_file_location("family_config", os.path.join(REPO, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg or None)


def eval_subset(dataset: str, per_class: int) -> str:
    """`folder:<path>-eval<N>`: links to the full train/ and to N test images per class."""
    if not per_class or not dataset.startswith("folder:"):
        return dataset
    source = os.path.abspath(dataset[len("folder:") :])
    target = f"{source}-eval{per_class}"
    if not os.path.isdir(target):
        staging = f"{target}.partial-{os.getpid()}"
        os.makedirs(os.path.join(staging, "test"))
        os.symlink(os.path.join(source, "train"), os.path.join(staging, "train"))
        for name in sorted(os.listdir(os.path.join(source, "test"))):
            os.makedirs(os.path.join(staging, "test", name))
            for file in sorted(os.listdir(os.path.join(source, "test", name)))[:per_class]:
                os.symlink(
                    os.path.join(source, "test", name, file),
                    os.path.join(staging, "test", name, file),
                )
        os.rename(staging, target)
    return f"folder:{target}"


def run_family(family: str, dataset: str, budget_s: float, workdir: str) -> dict:
    from cvjax import benchmark, data
    from cvjax.models import __main__ as table
    from cvjax.train import loop

    path, arg = FAMILIES[family]
    arg = ",".join(a for a in (arg, f"dataset={dataset}") if a)
    config = load_config(path, arg)
    kwargs = dict(config.model_kwargs)
    bench = benchmark.run(
        config.model,
        config.batch_size,
        image_size=config.image_size or 32,
        num_classes=10,
        steps=3,
        warmup=0,
        model_kwargs=kwargs,
    )
    num_train = len(data.load(config.dataset, "train", data_dir=config.data_dir or None).labels)
    epochs = round(budget_s * bench["images_per_sec"] / num_train, 3)
    config = load_config(path, f"{arg},epochs={epochs}")
    start = time.perf_counter()
    # A new run directory each time: a previous run's checkpoints would be resumed, not redone.
    run_dir = os.path.join(workdir, f"{family}-{time.strftime('%Y%m%d-%H%M%S')}")
    result = loop.train_and_evaluate(config, run_dir)
    wall_s = time.perf_counter() - start
    command = (
        f"python -m cvjax.main --config={path}:{arg},epochs={epochs} --workdir=/tmp/cvjax/{family}"
    )
    return {
        "family": family,
        "model": config.model,
        "model_kwargs": kwargs,
        "params": table.count_params(config.model, 32, num_classes=10, **kwargs),
        "gmacs_32": round(table.gmacs(config.model, 32, num_classes=10, **kwargs), 4),
        "train_images_per_sec": round(bench["images_per_sec"], 1),
        "batch_size": config.batch_size,
        "compile_s": round(bench["compile_s"], 1),
        "epochs": epochs,
        "accuracy": round(float(result["eval/accuracy"]), 4),
        "wall_s": round(wall_s, 1),
        "command": command,
        "date": time.strftime("%Y-%m-%d"),
    }


def write_table(
    results: dict, out: str, budget_s: float, dataset: str, eval_per_class: int, group: str
) -> None:
    lines = [
        f"# {'Efficient' if group == 'efficient' else 'Classic'} CNN families on {dataset}, "
        "equal training time",
        "",
        f"Budget: {budget_s:.0f} s of training per family on the project's 2-core CPU; epochs is",
        "what fit into it. Accuracy: the test split of the data in the commands (with",
        f"--eval_per_class={eval_per_class}: that many test images per class; 0: all). Images/s:",
        "the train step (`cvjax.benchmark`, fp32) at the config's batch size. Params and GMACs at",
        "32x32 with 10 classes. Produced by `python experiments/compare_families.py "
        f"--group={group} --data={dataset} --budget_s={budget_s:.0f} "
        f"--eval_per_class={eval_per_class}`.",
        "",
        "| family | model | params | GMACs | train img/s | epochs | test acc. | run s |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    ordered = [results[f] for f in FAMILIES if f in results]
    for r in ordered:
        extra = ", ".join(f"{k}={v}" for k, v in r["model_kwargs"].items())
        model = f"{r['model']} ({extra})" if extra else r["model"]
        lines.append(
            f"| {r['family']} | {model} | {r['params']:,} | {r['gmacs_32']:.3f} | "
            f"{r['train_images_per_sec']:.0f} | {r['epochs']:.2f} | {r['accuracy']:.4f} | "
            f"{r['wall_s']:.0f} |"
        )
    lines += ["", "Commands (each one reproduces its row's training run):", ""]
    lines += [f"- {r['family']} ({r['date']}): `{r['command']}`" for r in ordered]
    with open(os.path.join(out, f"{group}.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="folder:/tmp/cifar10_jpeg", help="a CIFAR-10 dataset")
    parser.add_argument("--budget_s", type=float, default=150.0, help="training seconds each")
    parser.add_argument(
        "--eval_per_class", type=int, default=0, help="folder: data: test images per class"
    )
    parser.add_argument("--out", default=os.path.join(REPO, "experiments", "results"))
    parser.add_argument("--workdir", default="/tmp/cvjax/compare")
    parser.add_argument("--group", default="families", choices=sorted(GROUPS))
    parser.add_argument("--only", default="", help="comma-separated families (default: all)")
    parser.add_argument("--force", action="store_true", help="rerun families already measured")
    args = parser.parse_args(argv)
    group = GROUPS[args.group]
    families = [f for f in args.only.split(",") if f] or list(group)
    unknown = sorted(set(families) - set(group))
    if unknown:
        sys.exit(
            f"error: unknown families {unknown} in group {args.group}; choose from {sorted(group)}"
        )
    os.makedirs(args.out, exist_ok=True)
    results_path = os.path.join(args.out, f"{args.group}.json")
    results = {}
    if os.path.exists(results_path):
        with open(results_path) as f:
            results = json.load(f)
    for family in families:
        if family in results and not args.force:
            continue
        print(f"== {family}", flush=True)
        dataset = eval_subset(args.data, args.eval_per_class)
        results[family] = run_family(family, dataset, args.budget_s, args.workdir)
        print(json.dumps(results[family]), flush=True)
        with open(results_path, "w") as f:
            json.dump(results, f, indent=2)
        write_table(results, args.out, args.budget_s, args.data, args.eval_per_class, args.group)


if __name__ == "__main__":
    main()
