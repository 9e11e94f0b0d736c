"""VGG on CIFAR-10 (the CIFAR VGG-16 of kuangliu/pytorch-cifar), and the ImageNet recipe of
Simonyan & Zisserman 2015 as a variant.

Default: `vgg16_bn` with `cifar=True, drop_rate=0` (the 13 convolutions of configuration D with
BatchNorm, pool5 1x1 at 32x32, a 512 -> 10 head: 14,728,266 parameters), trained with
kuangliu/pytorch-cifar's main.py: SGD momentum 0.9, lr 0.1, weight decay 5e-4, batch 128,
200 epochs of cosine decay, crop+flip.

    python -m cvjax.main --config=configs/vgg.py --workdir=/tmp/cvjax/vgg

Published: 92.64% CIFAR-10 accuracy for VGG16 (kuangliu/pytorch-cifar README). Variants
(`:key=value,...`):

    configs/vgg.py:model=vgg19_bn (bearpaw/pytorch-classification reports 6.66% error for its
        identical CIFAR vgg19_bn, with 164 epochs and steps; this recipe keeps kuangliu's)
    configs/vgg.py:model=vgg16 (no BatchNorm: lr 0.01, as torchvision's references advise for
        VGG without BatchNorm)
    configs/vgg.py:fc_width=512 (the 512-512-10 classifier of chengyangfu/pytorch-vgg-cifar10,
        with dropout 0.5 before the last two layers as torchvision, not before the first two)
    configs/vgg.py:model=vgg16,dataset=imagenet2012 (Sec. 3.1 of the paper: SGD momentum 0.9,
        batch 256, weight decay 5e-4, dropout 0.5 before fc7 and fc8, lr 0.01 divided by 10
        three times; the paper lowers it when validation accuracy stops improving, about 74
        epochs in all, here at epochs 30, 50 and 65 of 74. Published: 25.6% top-1 error for D,
        single scale, S in [256, 512], Table 3; torchvision's vgg16: 71.59% top-1)
    configs/vgg.py:epochs=5 (any variant, shorter; the schedule is scaled to fit)

Measured here (2-core CPU, 2026-11-23; experiments/results/families.md, the same 150 s training
budget for every family): vgg16_bn (cifar=True, drop_rate=0.0, fc_width=0), 14,728,266 params, 0.248
GMACs at 32x32, 16 train images/s at batch 128: 0.047 epochs of the CIFAR-10 JPEG copy, test
accuracy 0.0660 on 1,000 test images (100 per class). A short budget on a CPU: the full recipe above
is for GPUs.

    python -m cvjax.main --workdir=/tmp/cvjax/vgg \
        --config=configs/vgg.py:dataset=folder:/tmp/cifar10_jpeg-eval100,epochs=0.047
"""

from cvjax.configs import base_config, imagenet_data, is_imagenet, parse_arg, shorten


def get_config(arg: str | None = None):
    arg = parse_arg(arg, model="vgg16_bn", dataset="cifar10", epochs=0.0, fc_width=0)
    config = base_config()
    config.model = arg.model
    config.dataset = arg.dataset
    config.optimizer.name = "momentum"
    config.weight_decay = 5e-4
    if is_imagenet(arg.dataset):
        imagenet_data(config, 224, 256)
        config.num_epochs = 74  # 370K iterations of 256 images (Sec. 3.1).
        config.learning_rate = 0.01
        config.schedule.name = "piecewise"
        config.schedule.boundaries_epochs = (30, 50, 65)
        config.schedule.decay_factor = 0.1
        config.eval_every = "1ep"
    else:
        config.model_kwargs.cifar = True
        config.model_kwargs.fc_width = arg.fc_width
        if not arg.fc_width:
            config.model_kwargs.drop_rate = 0.0  # kuangliu's network has no dropout.
        config.batch_size = 128
        config.num_epochs = 200
        config.learning_rate = 0.1 if arg.model.endswith("_bn") else 0.01
        config.schedule.name = "cosine"
        config.eval_every = "5ep"
    config.checkpoint_every = config.eval_every
    return shorten(config, arg.epochs)
