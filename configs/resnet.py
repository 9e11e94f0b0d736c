"""ResNet family (He et al. 2016) on CIFAR-10, and the ImageNet recipe as a variant.

Default: ResNet-20 on CIFAR-10 with the recipe of He et al. 2016, Sec. 4.2 (SGD momentum 0.9,
lr 0.1, weight decay 1e-4, batch 128, crop+flip, lr / 10 at 32k and 48k of 64k iterations, i.e.
epochs 82 and 123 of 164):

    python -m cvjax.main --config=configs/resnet.py --workdir=/tmp/cvjax/resnet20

Published: 91.25% (ResNet-20), 93.03% (ResNet-56). Variants (`:key=value,...`):

    configs/resnet.py:model=resnet56
    configs/resnet.py:dataset=folder:/tmp/cifar10_jpeg (an image-folder tree, e.g. the JPEG copy:
        mkdir -p /tmp/cifar10_jpeg && tar -xzf \
        ../shared/datasets/cifar10_jpeg_q75/CIFAR-10-images-jpeg.tar.gz -C /tmp/cifar10_jpeg)
    configs/resnet.py:model=resnet50,dataset=imagenet2012 (Goyal et al. 2017 recipe: lr 0.1 per
        256 images, 5 warmup epochs then cosine, 90 epochs, label smoothing 0.1)
    configs/resnet.py:epochs=5 (any variant, shorter; the schedule is scaled to fit)

Measured here (2-core AMD EPYC CPU, 2026-11-22; see BENCHMARKS.md):
    configs/resnet.py:dataset=folder:/tmp/cifar10_jpeg,epochs=3 (the JPEG q75 copy): eval/accuracy
    0.6390 after 3 epochs (0.4407 after 1, 0.6199 after 2), 14 min 9 s. The full 164-epoch
    recipe was not run on this CPU (about 12 hours at 0.65 s a step).

Measured here (2-core CPU, 2026-11-23; experiments/results/families.md, the same 150 s training
budget for every family): resnet20, 269,722 params, 0.037 GMACs at 32x32, 181 train images/s at
batch 128: 0.543 epochs of the CIFAR-10 JPEG copy, test accuracy 0.4060 on 1,000 test images (100
per class). A short budget on a CPU: the full recipe above is for GPUs.

    python -m cvjax.main --workdir=/tmp/cvjax/resnet \
        --config=configs/resnet.py:model=resnet20,dataset=folder:/tmp/cifar10_jpeg-eval100,epochs=0.543
"""

from cvjax.configs import base_config, imagenet_data, is_imagenet, parse_arg, shorten


def get_config(arg: str | None = None):
    arg = parse_arg(arg, model="resnet20", dataset="cifar10", epochs=0.0)
    config = base_config()
    config.model = arg.model
    config.dataset = arg.dataset
    if is_imagenet(arg.dataset):
        imagenet_data(config, 224, 256)
        config.num_epochs = 90
        config.learning_rate = 0.1 * config.batch_size / 256
        config.schedule.name = "warmup_cosine"
        config.schedule.warmup_epochs = 5
        config.weight_decay = 1e-4
        config.label_smoothing = 0.1
        config.eval_every = "1ep"
        config.checkpoint_every = "1ep"
    else:
        config.batch_size = 128
        config.num_epochs = 164
        config.learning_rate = 0.1
        config.schedule.name = "piecewise"
        config.schedule.boundaries_epochs = (82, 123)
        config.schedule.decay_factor = 0.1
        config.weight_decay = 1e-4
        config.eval_every = "5ep"
        config.checkpoint_every = "5ep"
    return shorten(config, arg.epochs)
