"""Inception-v4 and Inception-ResNet-v2 (Szegedy et al. 2017) on CIFAR-10; ImageNet too.

Default: `inception_v4` with `cifar_stem=True` (the stem's strided and unpadded layers become
stride-1 padded ones except its last reduction, so the Inception-A blocks see 16x16, -B 7x7 and
-C 3x3; the ImageNet model's layers, 41.2M parameters with the 10-class head, 1.9 GMACs an image
at 32x32 (XLA's cost analysis) against 11.8 at 299 (`python -m cvjax.models 'inception*'`).
The recipe is the one weiaicunzai/pytorch-cifar100 (README, train.py) uses for its Inception-v4
and Inception-ResNet-v2, after DeVries & Taylor 2017: SGD momentum 0.9, lr 0.1 with one linear
warm-up epoch, lr x 0.2 at epochs 60, 120 and 160 of 200, weight decay 5e-4, batch 128, random
crop (4-pixel zero pad) + flip.

    python -m cvjax.main --config=configs/inception_v4.py --workdir=/tmp/cvjax/inception_v4

Published: no CIFAR-10 result for these models that we know of; on CIFAR-100 that recipe gives
75.86% top-1 (Inception-v4) and 72.49% (Inception-ResNet-v2) for weiaicunzai's own CIFAR
adaptations (41.3M and 65.4M parameters; README table). Variants (`:key=value,...`):

    configs/inception_v4.py:model=inception_resnet_v2 (same recipe; 54.3M parameters, 2.1
        GMACs at 32x32)
    configs/inception_v4.py:dataset=folder:/tmp/cifar10_jpeg (an image-folder tree, e.g. the JPEG
        copy: mkdir -p /tmp/cifar10_jpeg && tar -xzf \
        ../shared/datasets/cifar10_jpeg_q75/CIFAR-10-images-jpeg.tar.gz -C /tmp/cifar10_jpeg)
    configs/inception_v4.py:dataset=imagenet2012 (Sec. 4: 299x299 inputs, RMSProp with decay 0.9
        and eps 1.0, lr 0.045 decayed by 0.94 every 2 epochs, evaluation of a running average
        of the parameters; dropout 0.2 before the classifier (Figs. 9 and 15, "keep 0.8"). Not
        in the paper, from TF-slim's inception_v4 and train_image_classifier.py: weight decay
        4e-5, RMSProp momentum 0.9, EMA decay 0.9999. The paper trains asynchronously on 20
        replicas and states no batch size or epoch count: batch 256 with the lr not rescaled,
        100 epochs as for Inception-v3. TensorFlow starts RMSProp's mean square at 1, optax at
        0. Published: 20.0% / 19.9% top-1 and 5.0% / 4.9% top-5 error, one crop (Table 2))
    configs/inception_v4.py:epochs=5 (any variant, shorter; the schedule is scaled to fit)

Measured here (2-core CPU, 2026-11-23; experiments/results/families.md, the same 150 s training
budget for every family): inception_v4 (cifar_stem=True), 41,158,186 params, 1.881 GMACs at 32x32, 4
train images/s at batch 128: 0.011 epochs of the CIFAR-10 JPEG copy, test accuracy 0.1000 on 1,000
test images (100 per class). A short budget on a CPU: the full recipe above is for GPUs.

    python -m cvjax.main --workdir=/tmp/cvjax/inception_v4 \
        --config=configs/inception_v4.py:dataset=folder:/tmp/cifar10_jpeg-eval100,epochs=0.011

Measured here (2-core CPU, 2026-11-23; experiments/results/families.md, the same 150 s training
budget for every family): inception_resnet_v2 (cifar_stem=True), 54,321,834 params, 2.111 GMACs at
32x32, 2 train images/s at batch 128: 0.006 epochs of the CIFAR-10 JPEG copy, test accuracy 0.0850
on 1,000 test images (100 per class). A short budget on a CPU: the full recipe above is for GPUs.

    python -m cvjax.main --workdir=/tmp/cvjax/inception_resnet_v2 \
        --config=configs/inception_v4.py:model=inception_resnet_v2,dataset=folder:/tmp/cifar10_jpeg-eval100,epochs=0.006
"""

from cvjax.configs import base_config, imagenet_data, is_imagenet, parse_arg, shorten


def get_config(arg: str | None = None):
    arg = parse_arg(arg, model="inception_v4", dataset="cifar10", epochs=0.0)
    config = base_config()
    config.model = arg.model
    config.dataset = arg.dataset
    if is_imagenet(arg.dataset):
        imagenet_data(config, 299, 256)
        config.num_epochs = 100
        config.optimizer.name = "rmsprop"
        config.optimizer.decay = 0.9
        config.optimizer.eps = 1.0
        config.optimizer.momentum = 0.9
        config.learning_rate = 0.045
        config.schedule.name = "piecewise"  # A staircase: x 0.94 every second epoch.
        config.schedule.boundaries_epochs = tuple(range(2, 100, 2))
        config.schedule.decay_factor = 0.94
        config.weight_decay = 4e-5
        config.ema_decay = 0.9999
        config.model_kwargs.drop_rate = 0.2
        config.eval_every = "1ep"
    else:
        config.model_kwargs.cifar_stem = True
        config.optimizer.name = "momentum"
        config.optimizer.momentum = 0.9
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
