"""MnasNet (Tan et al. 2019) on CIFAR-10, and the paper's ImageNet recipe as a variant.

Default: mnasnet1_0 with `cifar_stem=True` (stride-1 stem and first stride-2 stack: a 4x4 last
map) on CIFAR-10 at 32x32 with the recipe of kuangliu/pytorch-cifar (SGD momentum 0.9, lr 0.1,
weight decay 5e-4, batch 128, crop+flip, cosine over 200 epochs):

    python -m cvjax.main --config=configs/mnasnet.py --workdir=/tmp/cvjax/mnasnet

Published ImageNet top-1: 73.456% (mnasnet1_0) and 67.734% (mnasnet0_5), torchvision's weights
of this B1 architecture; the paper's MnasNet-A1 (with squeeze-excitation) reaches 75.2%.

Variants (`:key=value,...`):

    :model=mnasnet0_5
    :schedule=cosine|step|rmsprop (CIFAR-10 default cosine; step: lr / 10 at 50% and 75%;
        rmsprop: the paper's recipe below, its lr scaled to batch 128)
    :dataset=imagenet2012 (default schedule rmsprop: Tan et al. 2019, Sec. 4: RMSProp decay and
        momentum 0.9, eps 1e-3, lr 0.256 per 4096 images (0.016 at batch 256) after 5 warmup
        epochs, x0.97 every 2.4 epochs, weight decay 1e-5, EMA 0.9999, label smoothing 0.1,
        350 epochs; cosine/step: see configs/mobilenet.py)
    :epochs=5 (any variant, shorter; the schedule is scaled to fit)

Measured here (2-core CPU, 2026-11-23; experiments/results/efficient.md, the same 60 s training
budget for every family): mnasnet1_0 (cifar_stem=True), 3,115,122 params, 0.096 GMACs at 32x32, 35
train images/s at batch 128: 0.042 epochs of the CIFAR-10 JPEG copy, test accuracy 0.1000 on 1,000
test images (100 per class). A short budget on a CPU: the full recipe above is for GPUs.

    python -m cvjax.main --workdir=/tmp/cvjax/mnasnet \
        --config=configs/mnasnet.py:model=mnasnet1_0,dataset=folder:/tmp/cifar10_jpeg-eval100,epochs=0.042
"""

from cvjax.configs import base_config, parse_arg, shorten
from cvjax.errors import UserError
from cvjax.recipes import apply_recipe


def get_config(arg: str | None = None):
    arg = parse_arg(arg, model="mnasnet1_0", dataset="cifar10", schedule="", epochs=0.0)
    if not arg.model.startswith("mnasnet"):
        raise UserError(f"model={arg.model!r} is not a MnasNet; try model=mnasnet1_0")
    config = base_config()
    config.model = arg.model
    if arg.dataset not in ("imagenet2012", "tfds:imagenet2012"):
        config.model_kwargs.cifar_stem = True
    config = apply_recipe(config, "mnasnet", arg.dataset, arg.schedule)
    return shorten(config, arg.epochs)
