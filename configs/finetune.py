"""Transfer learning: an ImageNet ResNet-50 converted from torchvision, fine-tuned on a small set.

    # 1. Once, where torchvision can download (saves the weights without pickle):
    python -c "import torchvision, safetensors.torch as st; st.save_file(torchvision.models.\\
    resnet50(weights='IMAGENET1K_V2').state_dict(), 'r50.safetensors')"
    # 2. Convert (never unpickles; writes an Orbax checkpoint plus meta.json):
    python -m cvjax.convert --model resnet50 --source torchvision --input r50.safetensors \\
        --output /tmp/cvjax/resnet50_tv
    # 3. Fine-tune; the head is re-initialized for the new number of classes:
    python -m cvjax.main --config=configs/finetune.py:init_from=/tmp/cvjax/resnet50_tv,\\
    dataset=folder:/data/flowers --workdir=/tmp/cvjax/ft_flowers

`mode` picks the recipe (all share SGD momentum 0.9, cosine decay, label smoothing 0.1, weight
decay 1e-4 on weights only, random-resized crop (scale 0.35-1) + flip at `image_size`, and the
ImageNet normalization the weights were trained with):

- `full`: every layer trains at `lr`.
- `lr_groups`: the backbone at lr/10, the head at lr (discriminative learning rates).
- `gradual`: the head alone first, then the last stage from 1/3 of the epochs, then everything
  from 2/3 (gradual unfreezing, Howard & Ruder 2018).
- `linear_probe`: only the head trains; BatchNorm statistics stay as loaded.
- `scratch`: the same recipe from a random initialization (the baseline).

Measured with local data (no ImageNet weights can be downloaded here), 2026-11-23, 2-core CPU:
`python experiments/finetune.py` pretrains a torchvision ResNet-18 in PyTorch on five CIFAR-10
classes (68.7% test accuracy after 4 epochs), saves it as safetensors, converts it with `python
-m cvjax.convert`, and fine-tunes it with this config (`model=resnet18,image_size=32,epochs=30,
lr=0.01,batch_size=50,train_examples=500`) on 100 images of each of the five other classes. Test
accuracy on their 5,000 test images: scratch 59.2%, linear_probe 56.9%, full 63.1%, lr_groups
58.1%, gradual 56.9% (experiments/results/finetune.md). Only full fine-tuning beats scratch
with this weak source network.
"""

from cvjax import models
from cvjax.configs import base_config, parse_arg
from cvjax.errors import UserError

MODES = ("full", "lr_groups", "gradual", "linear_probe", "scratch")
BACKBONE = r"^(?!head/)"


def last_stage(model: str) -> str:
    """A regex for the parameters of a ResNet-family model's last stage of residual blocks."""
    module = models.create(model)
    sizes = getattr(module, "stage_sizes", None)
    if not sizes:
        raise UserError(f"mode=gradual knows the stages of ResNet-family models, not {model!r}")
    first = sum(sizes[:-1])
    blocks = "|".join(str(i) for i in range(first, sum(sizes)))
    return rf"^ResidualBlock_({blocks})/"


def get_config(arg: str | None = None):
    a = parse_arg(
        arg,
        init_from="",
        model="resnet50",
        dataset="folder:/data/flowers",
        image_size=224,
        mode="full",
        epochs=20.0,
        lr=0.01,
        batch_size=64,
        train_examples=0,
    )
    if a.mode not in MODES:
        raise UserError(f"unknown mode {a.mode!r}; use one of {', '.join(MODES)}")
    if a.mode != "scratch" and not a.init_from:
        raise UserError("set init_from=<dir written by python -m cvjax.convert> (or mode=scratch)")
    c = base_config()
    c.model = a.model
    c.dataset = a.dataset
    c.image_size = a.image_size
    c.train_examples = a.train_examples
    c.normalization = "imagenet2012"
    c.num_epochs = a.epochs
    c.batch_size = a.batch_size
    c.learning_rate = a.lr
    c.schedule.name = "cosine"
    c.weight_decay = 1e-4
    c.optimizer.decay_norm_and_bias = False
    c.label_smoothing = 0.1
    c.augment.crop_padding = 0
    c.augment.random_resized_crop = True
    c.augment.rrc_scale = (0.35, 1.0)
    c.eval_every = "5ep"
    c.checkpoint_every = "5ep"
    if a.mode != "scratch":
        c.init_from = a.init_from
    if a.mode == "lr_groups":
        c.lr_groups = ((r"^head/", 1.0), (r".*", 0.1))
    elif a.mode == "gradual":
        c.freeze = BACKBONE
        c.unfreeze = ((a.epochs / 3, last_stage(a.model)), (2 * a.epochs / 3, r".*"))
    elif a.mode == "linear_probe":
        c.linear_probe = True
    return c
