"""DenseNet (Huang et al. 2017) on CIFAR-10, and the ImageNet recipe as a variant.

Default: DenseNet-BC (L=100, k=12) on CIFAR-10 with crop (4-pixel zero pad) + flip ("C10+"),
the recipe of Sec. 4.2: SGD with Nesterov momentum 0.9 (no dampening), batch 64, 300 epochs,
lr 0.1 divided by 10 at 50% and 75% of training (epochs 150 and 225), weight decay 1e-4, no
dropout with augmentation:

    python -m cvjax.main --config=configs/densenet.py --workdir=/tmp/cvjax/densenet

Published (Table 2, C10+ test error): DenseNet-BC (L=100, k=12) 4.51%, DenseNet-BC (L=250,
k=24) 3.62%. Variants (`:key=value,...`):

    configs/densenet.py:model=densenet_bc_250_k24 (15.3M parameters; the paper's 3.62%)
    configs/densenet.py:augment=false ("C10": no crop or flip, and dropout 0.2 after every
        convolution but the first, as Sec. 4.2 does without augmentation; published C10 error
        5.92% for DenseNet-BC (L=100, k=12), 5.19% for (L=250, k=24))
    configs/densenet.py:model=densenet121 (an ImageNet DenseNet at 32x32: `cifar_stem=True`, a
        3x3 stem without stride or max pool)
    configs/densenet.py:dataset=imagenet2012 (densenet121 unless model= says otherwise; Sec. 4.2:
        90 epochs, batch 256, lr 0.1 / 10 at epochs 30 and 60, Nesterov momentum 0.9, weight
        decay 1e-4, random-size crop + flip. Published single-crop top-1 / top-5 error (Table 3):
        DenseNet-121 25.02% / 7.71%, -169 23.80% / 6.85%, -201 22.58% / 6.34%, -264 22.15% /
        6.12%; torchvision's densenet121 weights: 74.43% top-1)
    configs/densenet.py:epochs=5 (any variant, shorter; the schedule is scaled to fit)

Measured here (2-core CPU, 2026-11-23; experiments/results/families.md, the same 150 s training
budget for every family): densenet_bc_100_k12, 769,162 params, 0.290 GMACs at 32x32, 13 train
images/s at batch 64: 0.04 epochs of the CIFAR-10 JPEG copy, test accuracy 0.2330 on 1,000 test
images (100 per class). A short budget on a CPU: the full recipe above is for GPUs.

    python -m cvjax.main --workdir=/tmp/cvjax/densenet \
        --config=configs/densenet.py:model=densenet_bc_100_k12,dataset=folder:/tmp/cifar10_jpeg-eval100,epochs=0.04
"""

from cvjax.configs import base_config, imagenet_data, is_imagenet, parse_arg, shorten
from cvjax.models import model_info


def get_config(arg: str | None = None):
    arg = parse_arg(arg, model="", dataset="cifar10", epochs=0.0, augment=True)
    imagenet = is_imagenet(arg.dataset)
    config = base_config()
    config.model = arg.model or ("densenet121" if imagenet else "densenet_bc_100_k12")
    config.dataset = arg.dataset
    config.optimizer.name = "nesterov"
    config.optimizer.momentum = 0.9
    config.learning_rate = 0.1
    config.weight_decay = 1e-4
    config.schedule.name = "piecewise"
    config.schedule.decay_factor = 0.1
    if imagenet:
        imagenet_data(config, 224, 256)
        config.num_epochs = 90
        config.schedule.boundaries_epochs = (30, 60)
        config.eval_every = "1ep"
    else:
        if model_info(config.model)["input_size"] != 32:
            config.model_kwargs.cifar_stem = True  # An ImageNet model: no stem downsampling.
        config.batch_size = 64
        config.num_epochs = 300
        config.schedule.boundaries_epochs = (150, 225)
        if not arg.augment:
            config.augment.flip = False
            config.model_kwargs.block_dropout = 0.2
        config.eval_every = "5ep"
    config.checkpoint_every = config.eval_every
    return shorten(config, arg.epochs)
