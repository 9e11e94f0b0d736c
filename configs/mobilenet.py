"""MobileNet v1/v2/v3 (Howard et al. 2017; Sandler et al. 2018; Howard et al. 2019) on CIFAR-10.

Default: mobilenet_v2 with `cifar_stem=True` (stride-1 stem and first stride-2 stage: a 4x4 last
map) on CIFAR-10 at 32x32 with the recipe of kuangliu/pytorch-cifar (SGD momentum 0.9, lr 0.1,
weight decay 5e-4, batch 128, crop+flip, cosine over 200 epochs):

    python -m cvjax.main --config=configs/mobilenet.py --workdir=/tmp/cvjax/mobilenet

Published: 94.43% on CIFAR-10 (mobilenet_v2, kuangliu/pytorch-cifar README). ImageNet top-1:
70.6% (mobilenet_v1 1.0-224, Howard et al. 2017, Table 8), 71.878% / 74.042% / 67.668%
(torchvision's mobilenet_v2 / mobilenet_v3_large / mobilenet_v3_small weights).

Variants (`:key=value,...`):

    :model=mobilenet_v3_large (any mobilenet_*; mobilenet_v1_050_160 etc. for v1's multipliers)
    :schedule=cosine|step|rmsprop (CIFAR-10 default cosine; step: lr / 10 at 50% and 75%;
        rmsprop: the paper's RMSProp recipe below, its lr scaled to batch 128)
    :dataset=imagenet2012 (default schedule rmsprop, at the model's input size; v1/v2: Sandler
        et al. 2018, Sec. 6.1: RMSProp decay and momentum 0.9, lr 0.045 at batch 96, x0.98 per
        epoch, weight decay 4e-5, eps 1.0 as TF-slim; v3: Howard et al. 2019, Sec. 6.1: lr 0.1
        per 4096 images, weight decay 1e-5, EMA 0.9998 and "decay 0.01 every 3 epochs", read
        as x0.99 every 3 epochs; cosine/step there: Nesterov SGD, lr 0.1 per 256 images, 120
        epochs, warmup + cosine or lr / 10 at epochs 30, 60, 90: He et al. 2019, "Bag of Tricks")
    :epochs=5 (any variant, shorter; the schedule is scaled to fit)

The recipes are `cvjax.recipes.apply_recipe`, shared with configs/mnasnet.py and
configs/efficientnet.py (the same lineage of TF recipes).

Measured here (2-core CPU, 2026-11-23; experiments/results/efficient.md, the same 60 s training
budget for every family): mobilenet_v2 (cifar_stem=True), 2,236,682 params, 0.091 GMACs at 32x32, 34
train images/s at batch 128: 0.04 epochs of the CIFAR-10 JPEG copy, test accuracy 0.1000 on 1,000
test images (100 per class). A short budget on a CPU: the full recipe above is for GPUs.

    python -m cvjax.main --workdir=/tmp/cvjax/mobilenet \
        --config=configs/mobilenet.py:model=mobilenet_v2,dataset=folder:/tmp/cifar10_jpeg-eval100,epochs=0.04
"""

from cvjax.configs import base_config, parse_arg, shorten
from cvjax.errors import UserError
from cvjax.models import model_info
from cvjax.recipes import apply_recipe


def get_config(arg: str | None = None):
    arg = parse_arg(arg, model="mobilenet_v2", dataset="cifar10", schedule="", epochs=0.0)
    config = base_config()
    config.model = arg.model
    recipe = arg.model[: len("mobilenet_v1")]
    if recipe not in ("mobilenet_v1", "mobilenet_v2", "mobilenet_v3"):
        raise UserError(f"model={arg.model!r} is not a MobileNet; try model=mobilenet_v2")
    model_info(arg.model)  # An unknown name fails here, with suggestions.
    if arg.dataset not in ("imagenet2012", "tfds:imagenet2012"):
        config.model_kwargs.cifar_stem = True
    config = apply_recipe(config, recipe, arg.dataset, arg.schedule)
    return shorten(config, arg.epochs)
