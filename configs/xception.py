"""Xception (Chollet 2017) on CIFAR-10; ImageNet too.

Default: `xception` with `cifar_stem=True` (a stride-1 first convolution, padded stem
convolutions and no reduction in the first block, so the five stages see 32, 32, 16, 8 (the
middle flow) and 4 pixels; the ImageNet model's layers, 20.8M parameters with the 10-class head,
1.4 GMACs an image at 32x32 (XLA's cost analysis) against 8.4 at 299 (`python -m cvjax.models
xception`).
The recipe is the one weiaicunzai/pytorch-cifar100 (README, train.py) uses for its Xception,
after DeVries & Taylor 2017: SGD momentum 0.9, lr 0.1 with one linear warm-up epoch, lr x 0.2 at
epochs 60, 120 and 160 of 200, weight decay 5e-4, batch 128, random crop (4-pixel zero pad) +
flip.

    python -m cvjax.main --config=configs/xception.py --workdir=/tmp/cvjax/xception

Published: no CIFAR-10 result for Xception that we know of; on CIFAR-100 that recipe gives
74.93% top-1 for weiaicunzai's own CIFAR adaptation (21.0M parameters; README table).
Variants (`:key=value,...`):

    configs/xception.py:dataset=folder:/tmp/cifar10_jpeg (an image-folder tree, e.g. the JPEG
        copy: mkdir -p /tmp/cifar10_jpeg && tar -xzf \
        ../shared/datasets/cifar10_jpeg_q75/CIFAR-10-images-jpeg.tar.gz -C /tmp/cifar10_jpeg)
    configs/xception.py:dataset=imagenet2012 (Sec. 4.2-4.3: 299x299 inputs, SGD momentum 0.9,
        lr 0.045 decayed by 0.94 every 2 epochs, weight decay 1e-5, dropout 0.5 before the
        classifier, no auxiliary head. The paper states no batch size or epoch count (60 GPUs,
        synchronous SGD, about 3 days): batch 256 with the lr not rescaled, 100 epochs.
        Published: 79.0% top-1 / 94.5% top-5, one crop (Table 1))
    configs/xception.py:epochs=5 (any variant, shorter; the schedule is scaled to fit)

Measured here (2-core CPU, 2026-11-23; experiments/results/families.md, the same 150 s training
budget for every family): xception (cifar_stem=True), 20,827,442 params, 1.363 GMACs at 32x32, 6
train images/s at batch 128: 0.018 epochs of the CIFAR-10 JPEG copy, test accuracy 0.1000 on 1,000
test images (100 per class). A short budget on a CPU: the full recipe above is for GPUs.

    python -m cvjax.main --workdir=/tmp/cvjax/xception \
        --config=configs/xception.py:dataset=folder:/tmp/cifar10_jpeg-eval100,epochs=0.018
"""

from cvjax.configs import base_config, imagenet_data, is_imagenet, parse_arg, shorten


def get_config(arg: str | None = None):
    arg = parse_arg(arg, model="xception", dataset="cifar10", epochs=0.0)
    config = base_config()
    config.model = arg.model
    config.dataset = arg.dataset
    config.optimizer.name = "momentum"
    config.optimizer.momentum = 0.9
    if is_imagenet(arg.dataset):
        imagenet_data(config, 299, 256)
        config.num_epochs = 100
        config.learning_rate = 0.045
        config.schedule.name = "piecewise"  # A staircase: x 0.94 every second epoch.
        config.schedule.boundaries_epochs = tuple(range(2, 100, 2))
        config.schedule.decay_factor = 0.94
        config.weight_decay = 1e-5
        config.model_kwargs.drop_rate = 0.5
        config.eval_every = "1ep"
    else:
        config.model_kwargs.cifar_stem = True
        config.batch_size = 128
        config.num_epochs = 200
        config.learning_rate = 0.1
        config.schedule.name = "piecewise"
        config.schedule.warmup_epochs = 1
        config.schedule.boundaries_epochs = (60, 120, 160)
        config.schedule.decay_factor = 0.2
        config.weight_decay = 5e-4
        config.eval_every = "5ep"
    config.checkpoint_every = config.eval_every
    return shorten(config, arg.epochs)
