"""ResNeXt (Xie et al. 2017, "Aggregated Residual Transformations") on CIFAR-10, and ImageNet.

Default: ResNeXt-29 8x64d (`resnext29_8x64d`: cardinality 8, 64 channels per group in the first
stage, 34,426,698 parameters) on CIFAR-10 with the recipe of Sec. 5.3: batch 128, weight decay
5e-4, momentum 0.9, lr 0.1 divided by 10 at epochs 150 and 225 of 300, crop (4-pixel zero pad)
+ flip. The momentum is Nesterov's, as in the authors' Torch code (facebookresearch/ResNeXt,
train.lua, from fb.resnet.torch).

    python -m cvjax.main --config=configs/resnext.py --workdir=/tmp/cvjax/resnext

Published (CIFAR-10 test error, Table 7): 3.65% (8x64d), 3.58% (16x64d); the authors' README
notes these used pre-activation blocks and batch 256, and that the original (post-activation)
blocks registered here with batch 128 do better. Variants (`:key=value,...`):

    configs/resnext.py:model=resnext29_16x64d (68.2M parameters; the paper's best)
    configs/resnext.py:model=resnext29_2x64d (9.1M, ~1.4 GMACs a 32x32 image: the smallest
        point of the paper's Fig. 7, for CPU experiments; also resnext29_4x64d)
    configs/resnext.py:model=resnext50_32x4d,dataset=imagenet2012 (Sec. 4 "Implementation
        details": batch 256, weight decay 1e-4, momentum 0.9, lr 0.1 divided by 10 three times,
        here at epochs 30, 60 and 90 of 100 as the Torch code, scale + aspect-ratio crop + flip.
        Published: 22.2% top-1 error, 224 center crop (Table 3; facebookresearch/ResNeXt README))
    configs/resnext.py:epochs=5 (any variant, shorter; the schedule is scaled to fit)

Measured here (2-core CPU, 2026-11-23; experiments/results/families.md, the same 150 s training
budget for every family): resnext29_2x64d, 9,130,314 params, 1.364 GMACs at 32x32, 5 train images/s
at batch 128: 0.014 epochs of the CIFAR-10 JPEG copy, test accuracy 0.1120 on 1,000 test images (100
per class). A short budget on a CPU: the full recipe above is for GPUs.

    python -m cvjax.main --workdir=/tmp/cvjax/resnext \
        --config=configs/resnext.py:model=resnext29_2x64d,dataset=folder:/tmp/cifar10_jpeg-eval100,epochs=0.014
"""

from cvjax.configs import base_config, imagenet_data, is_imagenet, parse_arg, shorten


def get_config(arg: str | None = None):
    arg = parse_arg(arg, model="", dataset="cifar10", epochs=0.0)
    imagenet = is_imagenet(arg.dataset)
    config = base_config()
    config.model = arg.model or ("resnext50_32x4d" if imagenet else "resnext29_8x64d")
    config.dataset = arg.dataset
    config.optimizer.name = "nesterov"
    config.optimizer.momentum = 0.9
    config.learning_rate = 0.1
    config.schedule.name = "piecewise"
    config.schedule.decay_factor = 0.1
    if imagenet:
        imagenet_data(config, 224, 256)
        config.num_epochs = 100
        config.weight_decay = 1e-4
        config.schedule.boundaries_epochs = (30, 60, 90)
        config.eval_every = "1ep"
    else:
        config.batch_size = 128
        config.num_epochs = 300
        config.weight_decay = 5e-4
        config.schedule.boundaries_epochs = (150, 225)
        config.eval_every = "5ep"
    config.checkpoint_every = config.eval_every
    return shorten(config, arg.epochs)
