"""The whole transfer chain on local data: PyTorch pretraining -> safetensors -> cvjax.convert ->
fine-tuning with configs/finetune.py, against training from scratch.

    /path/to/venv-with-torchvision/bin/python experiments/finetune.py

No ImageNet weights can be downloaded here, so the "pretrained" network is made locally: a
torchvision ResNet-18 (torchvision's own module and parameter names) trained in PyTorch on the
CIFAR-10 JPEG copy's first five classes (airplane automobile bird cat deer, 25,000 images). Its
state dict is saved as safetensors, converted by `python -m cvjax.convert`, and fine-tuned by
`python -m cvjax.main --config=configs/finetune.py:...` on 100 training images of each of the
five other classes (dog frog horse ship truck), evaluated on their 5,000 test images, in each of
the config's modes. Writes <out>/finetune.md and finetune.json.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

FIRST, SECOND = (
    ("airplane", "automobile", "bird", "cat", "deer"),
    ("dog", "frog", "horse", "ship", "truck"),
)
MODES = ("scratch", "linear_probe", "full", "lr_groups", "gradual")


def class_subset(root: str, classes: tuple[str, ...], out: str) -> str:
    """A folder dataset of some classes of `root` (train/ and test/), as symlinks."""
    for split in ("train", "test"):
        os.makedirs(os.path.join(out, split), exist_ok=True)
        for name in classes:
            link = os.path.join(out, split, name)
            if not os.path.exists(link):
                os.symlink(os.path.join(root, split, name), link)
    return out


def pretrain_torch(folder: str, epochs: int, path: str, seed: int) -> dict:
    """torchvision ResNet-18 trained with SGD + crop/flip on `folder`; saved as safetensors."""
    import torch
    import torchvision
    from safetensors.torch import save_file

    from cvjax import data

    torch.manual_seed(seed)
    train = data.load(f"folder:{folder}", "train")
    test = data.load(f"folder:{folder}", "test")
    mean, std = data.STANDARD_STATS["imagenet2012"]

    def tensor(images):
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
        return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)

    model = torchvision.models.resnet18(weights=None, num_classes=len(train.class_names))
    steps = epochs * (len(train) // 128)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 0.1, total_steps=steps)
    x_all, y_all = tensor(train.images), torch.from_numpy(train.labels).long()
    start = time.perf_counter()
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(train))
        for i in range(len(train) // 128):
            idx = order[i * 128 : (i + 1) * 128]
            x = torch.nn.functional.pad(x_all[idx], (4, 4, 4, 4))
            dy, dx = np.random.randint(0, 9, 2)
            x = x[:, :, dy : dy + 32, dx : dx + 32]
            if np.random.rand() < 0.5:
                x = x.flip(3)
            loss = torch.nn.functional.cross_entropy(model(x), y_all[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    with torch.no_grad():
        x_test = tensor(test.images)
        pred = torch.cat([model(x_test[i : i + 500]).argmax(1) for i in range(0, len(test), 500)])
    accuracy = float((pred.numpy() == test.labels).mean())
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    return {"torch_test_accuracy": accuracy, "torch_train_s": round(time.perf_counter() - start)}


def finetune(mode: str, folder: str, converted: str, workdir: str, args) -> dict:
    from configs import finetune as finetune_config
    from cvjax.train.loop import train_and_evaluate

    arg = (
        f"init_from={converted},model=resnet18,dataset=folder:{folder},image_size=32,mode={mode},"
        f"epochs={args.epochs},lr={args.lr},batch_size=50,train_examples={args.examples}"
    )
    config = finetune_config.get_config(arg)
    config.seed = args.seed
    start = time.perf_counter()
    result = train_and_evaluate(config, workdir)
    return {
        "mode": mode,
        "accuracy": result["eval/accuracy"],
        "wall_s": round(time.perf_counter() - start, 1),
        "command": f"python -m cvjax.main --config=configs/finetune.py:{arg} --workdir={workdir}",
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cifar", default="/tmp/cifar10_jpeg", help="extracted JPEG copy")
    parser.add_argument("--pretrain_epochs", type=int, default=4)
    parser.add_argument("--examples", type=int, default=500)
    parser.add_argument("--epochs", type=float, default=30.0)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default="/tmp/cvjax/finetune_demo")
    parser.add_argument("--out", default=os.path.join(REPO, "experiments", "results"))
    args = parser.parse_args()
    first = class_subset(args.cifar, FIRST, os.path.join(args.workdir, "cifar_first5"))
    second = class_subset(args.cifar, SECOND, os.path.join(args.workdir, "cifar_second5"))
    weights = os.path.join(args.workdir, "resnet18_first5.safetensors")
    pre = {}
    if not os.path.exists(weights):
        pre = pretrain_torch(first, args.pretrain_epochs, weights, args.seed)
        print(json.dumps(pre))
    converted = os.path.join(args.workdir, "resnet18_converted")
    convert = [sys.executable, "-m", "cvjax.convert", "--model", "resnet18", "--source",
               "torchvision", "--input", weights, "--output", converted]  # fmt: skip
    if not os.path.exists(converted):
        subprocess.run(convert, check=True, cwd=REPO)
    rows = []
    for mode in MODES:
        rows.append(finetune(mode, second, converted, os.path.join(args.workdir, mode), args))
        print(json.dumps(rows[-1]))
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "finetune.json"), "w") as f:
        json.dump({"args": vars(args), "pretrain": pre, "rows": rows}, f, indent=1)
    lines = [
        "# Transfer: PyTorch-pretrained ResNet-18 -> cvjax.convert -> fine-tuning",
        "",
        f"`python experiments/finetune.py` (torch + torchvision in the venv), 2-core CPU, "
        f"{time.strftime('%Y-%m-%d')}.",
        "",
        f"Pretraining (PyTorch, torchvision resnet18, {args.pretrain_epochs} epochs on CIFAR-10 "
        f"{', '.join(FIRST)}): test accuracy {pre.get('torch_test_accuracy', float('nan')):.4f}"
        f" in {pre.get('torch_train_s', '?')} s.",
        f"Conversion: `python {' '.join(convert[1:])}`.",
        "",
        f"Fine-tuning on {args.examples} training images of {', '.join(SECOND)} "
        f"({args.epochs:g} epochs, batch 50, lr {args.lr}); test accuracy on their 5,000 test "
        "images:",
        "",
        "| mode | test accuracy % | wall s |",
        "|---|---|---|",
    ]
    lines += [f"| {r['mode']} | {100 * r['accuracy']:.2f} | {r['wall_s']} |" for r in rows]
    lines += ["", "Commands:", ""] + [f"- `{r['command']}`" for r in rows]
    with open(os.path.join(args.out, "finetune.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
