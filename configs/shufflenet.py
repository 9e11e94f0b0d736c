"""ShuffleNet v1 / v2 (Zhang et al. 2018; Ma et al. 2018) on CIFAR-10, and their ImageNet recipe.

Default: shufflenet_v2_x1_0 with `cifar_stem=True` (a 3x3/1 stem without the max pool: 32/16/8/4
maps) on CIFAR-10 with the recipe of chenyaofo/pytorch-cifar-models, whose cifar10_shufflenetv2_*
are this architecture (Nesterov SGD momentum 0.9, lr 0.1, weight decay 5e-4, batch 256,
crop+flip, cosine over 200 epochs):

    python -m cvjax.main --config=configs/shufflenet.py --workdir=/tmp/cvjax/shufflenet

Published on CIFAR-10 (chenyaofo/pytorch-cifar-models README, best epoch): 90.13% / 92.98% /
93.55% / 93.81% for shufflenet_v2_x0_5 / x1_0 / x1_5 / x2_0. ImageNet top-1: 69.362% for
torchvision's shufflenet_v2_x1_0 weights; the authors' release (megvii-model/ShuffleNet-Series
READMEs) reports 69.4% for v2 1x and 67.8% / 68.0% for v1 1x with g = 3 / g = 8.

Variants (`:key=value,...`):

    :model=shufflenet_v1_g3_x1_0 (any shufflenet_*; CIFAR-10 runs get cifar_stem=True)
    :dataset=imagenet2012 (the recipe of both papers, Zhang et al. 2018, Sec. 4, and the
        authors' release, megvii-model/ShuffleNet-Series train.py: SGD momentum 0.9, lr 0.5 at
        batch 1024 decayed to 0, weight decay 4e-5 on convolution and linear weights only,
        300k iterations (240 epochs), label smoothing 0.1 (the release), the lr decayed
        linearly to 0 as the release does. With a smaller --config.batch_size, scale
        --config.learning_rate linearly.)
    :epochs=5 (any variant, shorter; the schedule is scaled to fit)

Measured here (2-core CPU, 2026-11-23; experiments/results/efficient.md, the same 60 s training
budget for every family): shufflenet_v2_x1_0 (cifar_stem=True), 1,263,854 params, 0.046 GMACs at
32x32, 82 train images/s at batch 256: 0.098 epochs of the CIFAR-10 JPEG copy, test accuracy 0.1000
on 1,000 test images (100 per class). A short budget on a CPU: the full recipe above is for GPUs.

    python -m cvjax.main --workdir=/tmp/cvjax/shufflenet \
        --config=configs/shufflenet.py:model=shufflenet_v2_x1_0,dataset=folder:/tmp/cifar10_jpeg-eval100,epochs=0.098
"""

from cvjax.configs import base_config, imagenet_data, is_imagenet, parse_arg, shorten
from cvjax.errors import UserError
from cvjax.models import model_info


def get_config(arg: str | None = None):
    arg = parse_arg(arg, model="shufflenet_v2_x1_0", dataset="cifar10", epochs=0.0)
    if not arg.model.startswith("shufflenet_"):
        raise UserError(f"model={arg.model!r} is not a ShuffleNet; try model=shufflenet_v2_x1_0")
    model_info(arg.model)  # An unknown name fails here, with suggestions.
    config = base_config()
    config.model = arg.model
    config.dataset = arg.dataset
    config.optimizer.name = "momentum"
    config.optimizer.momentum = 0.9
    if is_imagenet(arg.dataset):
        imagenet_data(config, 224, 1024)
        config.num_epochs = 240  # 300,000 iterations x 1,024 images / 1,281,167.
        config.learning_rate = 0.5
        config.schedule.name = "linear"  # The release: linearly to 0.
        config.weight_decay = 4e-5
        config.optimizer.decay_norm_and_bias = False  # The release's get_parameters().
        config.label_smoothing = 0.1
        config.eval_every = "1ep"
        config.checkpoint_every = "1ep"
    else:
        config.model_kwargs.cifar_stem = True
        config.batch_size = 256
        config.num_epochs = 200
        config.learning_rate = 0.1
        config.optimizer.name = "nesterov"
        config.schedule.name = "cosine"
        config.weight_decay = 5e-4
        config.eval_every = "5ep"
        config.checkpoint_every = "5ep"
    return shorten(config, arg.epochs)
