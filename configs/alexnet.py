"""AlexNet on CIFAR-10 (the 32x32 AlexNet of bearpaw/pytorch-classification), and the ImageNet
recipe of torchvision's references as a variant.

Default: `alexnet` with `cifar_stem=True, fc_width=0` (conv1 11x11/4 padded by 5, 2x2 max pools,
no fc6/fc7, a 256 -> 10 head: 2,472,266 parameters), trained with W. Yang's recipe
(pytorch-classification TRAINING.md: SGD momentum 0.9, weight decay 5e-4, batch 128, 164 epochs,
lr / 10 at epochs 81 and 122, crop+flip). The lr is 0.01: its models/cifar/alexnet.py notes that
"without BN, the start learning rate should be 0.01".

    python -m cvjax.main --config=configs/alexnet.py --workdir=/tmp/cvjax/alexnet

Published: 22.78% CIFAR-10 error (77.22% accuracy; pytorch-classification README). Variants
(`:key=value,...`):

    configs/alexnet.py:fc_width=4096 (keep fc6/fc7 at 32x32, as 1x1 convolutions on the 1x1
        pool5 map: 20,344,650 parameters)
    configs/alexnet.py:dataset=imagenet2012 (torchvision's 61.1M model and its reference recipe,
        references/classification/README.md: SGD momentum 0.9, lr 0.01, weight decay 1e-4,
        batch 256, 90 epochs, lr / 10 every 30; published 56.52% top-1)
    configs/alexnet.py:epochs=5 (any variant, shorter; the schedule is scaled to fit)

Measured here (2-core CPU, 2026-11-23; experiments/results/families.md, the same 150 s training
budget for every family): alexnet (cifar_stem=True, fc_width=0), 2,472,266 params, 0.007 GMACs at
32x32, 74 train images/s at batch 128: 0.222 epochs of the CIFAR-10 JPEG copy, test accuracy 0.2680
on 1,000 test images (100 per class). A short budget on a CPU: the full recipe above is for GPUs.

    python -m cvjax.main --workdir=/tmp/cvjax/alexnet \
        --config=configs/alexnet.py:dataset=folder:/tmp/cifar10_jpeg-eval100,epochs=0.222
"""

from cvjax.configs import base_config, imagenet_data, is_imagenet, parse_arg, shorten


def get_config(arg: str | None = None):
    arg = parse_arg(arg, model="alexnet", dataset="cifar10", epochs=0.0, fc_width=0)
    config = base_config()
    config.model = arg.model
    config.dataset = arg.dataset
    config.optimizer.name = "momentum"
    config.schedule.name = "piecewise"
    config.schedule.decay_factor = 0.1
    config.learning_rate = 0.01
    if is_imagenet(arg.dataset):
        imagenet_data(config, 224, 256)
        config.num_epochs = 90
        config.schedule.boundaries_epochs = (30, 60)
        config.weight_decay = 1e-4
    else:
        config.model_kwargs.cifar_stem = True
        config.model_kwargs.fc_width = arg.fc_width
        config.batch_size = 128
        config.num_epochs = 164
        config.schedule.boundaries_epochs = (81, 122)
        config.weight_decay = 5e-4
    config.eval_every = "1ep" if config.stream else "5ep"
    config.checkpoint_every = config.eval_every
    return shorten(config, arg.epochs)
