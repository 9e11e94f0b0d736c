"""NASNet-A (Zoph et al. 2018) on CIFAR-10: the paper's "NASNet-A (6 @ 768)", and ImageNet.

Default: nasnet_a_mobile's genotype and layout with the CIFAR model's macro parameters (3x3 stem
of 96, 6 cells per stage, 32 filters: penultimate 24 x 32 = 768; 3,346,538 parameters) and the
recipe of TF-slim's nasnet.py notes for it (the authors' release): batch 32, SGD momentum 0.9,
lr 0.025 with one cosine period, 600 epochs, weight decay 5e-4, BN epsilon 1e-5, auxiliary head
weighted 0.4, gradients clipped to global norm 5, no dropout before the classifier, and
ScheduledDropPath with keep probability 0.6 (drop_path_rate 0.4, scaled by cell depth; TF-slim's
extra ramp over training steps is not modelled):

    python -m cvjax.main --config=configs/nasnet.py --workdir=/tmp/cvjax/nasnet

Published: 3.41% test error on CIFAR-10 for NASNet-A (6 @ 768), 3.3M parameters (2.65% with
cutout, which this project's augmentation lacks); ImageNet top-1 74.0% for NASNet-A (4 @ 1056) at
224 and 82.7% for NASNet-A (6 @ 4032) at 331 (Zoph et al. 2018, Tables 1 and 2).

Variants (`:key=value,...`):

    :cells=2,filters=16 (a smaller network of the same shape: cells per stage, first-stage filters)
    :model=nasnet_a_large (the same CIFAR network: only the genotype and the stem differ)
    :dataset=imagenet2012 (nasnet_a_mobile at 224, TF-slim's mobile recipe: RMSProp with decay
        and momentum 0.9 and eps 1.0 (train_image_classifier.py defaults), lr 2.0 per 1600
        images (0.04 x 50 replicas of 32) scaled linearly to batch 256, x0.97 every 2.4 epochs,
        250k steps of 1600 images = 312 epochs, label smoothing 0.1, aux weight 0.4, clipping at
        norm 10, weight decay 4e-5, dropout 0.5, no drop path)
    :model=nasnet_a_large,dataset=imagenet2012 (331 px; lr 1.5 per 1600 images (0.015 x 100
        replicas of 16), weight decay 5e-5, drop path 0.3)
    :epochs=5 (any variant, shorter; the schedule is scaled to fit)

Any genotype of cvjax/nas/genotypes.py (or its string) runs in this network with
`--config.model_kwargs.genotype=DARTS_V2`.

Measured here (2-core CPU, 2026-11-23; experiments/results/efficient.md, the same 60 s training
budget for every family): nasnet_a_mobile (aux_logits=True, bn_eps=1e-05, cifar_stem=True,
drop_path_rate=0.4, drop_rate=0.0, filters=32, genotype=NASNET_A, num_cells=6,
skip_reduction_input=False, stem_size=96), 4,978,036 params, 0.555 GMACs at 32x32, 5 train images/s
at batch 32: 0.006 epochs of the CIFAR-10 JPEG copy, test accuracy 0.0920 on 1,000 test images (100
per class). A short budget on a CPU: the full recipe above is for GPUs.

    python -m cvjax.main --workdir=/tmp/cvjax/nasnet \
        --config=configs/nasnet.py:dataset=folder:/tmp/cifar10_jpeg-eval100,epochs=0.006
"""

from cvjax.configs import base_config, imagenet_data, is_imagenet, parse_arg, shorten

# TF-slim's ImageNet notes: lr per 1600 images, weight decay, drop path, input size.
IMAGENET = {
    "nasnet_a_mobile": dict(lr=2.0, weight_decay=4e-5, drop_path_rate=0.0, image_size=224),
    "nasnet_a_large": dict(lr=1.5, weight_decay=5e-5, drop_path_rate=0.3, image_size=331),
}


def get_config(arg: str | None = None):
    arg = parse_arg(
        arg, model="nasnet_a_mobile", dataset="cifar10", epochs=0.0, cells=6, filters=32
    )
    config = base_config()
    config.model = arg.model
    config.dataset = arg.dataset
    config.model_kwargs.genotype = "NASNET_A"
    config.model_kwargs.aux_logits = True
    config.aux_loss_weight = 0.4
    config.optimizer.name = "momentum"
    config.optimizer.momentum = 0.9
    if is_imagenet(arg.dataset):
        recipe = IMAGENET[arg.model]
        imagenet_data(config, recipe["image_size"], 256)
        config.num_epochs = 312
        config.learning_rate = recipe["lr"] * config.batch_size / 1600
        config.optimizer.name = "rmsprop"
        config.optimizer.decay = 0.9
        config.optimizer.eps = 1.0
        config.schedule.name = "exponential"
        config.schedule.decay_rate = 0.97 ** (1 / 2.4)
        config.weight_decay = recipe["weight_decay"]
        config.label_smoothing = 0.1
        config.optimizer.grad_clip_norm = 10.0
        config.model_kwargs.drop_path_rate = recipe["drop_path_rate"]
        config.eval_every = "1ep"
        config.checkpoint_every = "1ep"
    else:
        config.model_kwargs.cifar_stem = True
        config.model_kwargs.num_cells = arg.cells
        config.model_kwargs.filters = arg.filters
        config.model_kwargs.stem_size = 3 * arg.filters
        config.model_kwargs.skip_reduction_input = False
        config.model_kwargs.drop_rate = 0.0
        config.model_kwargs.drop_path_rate = 0.4
        config.model_kwargs.bn_eps = 1e-5
        config.batch_size = 32
        config.num_epochs = 600
        config.learning_rate = 0.025
        config.schedule.name = "cosine"
        config.weight_decay = 5e-4
        config.optimizer.grad_clip_norm = 5.0
        config.eval_every = "10ep"
        config.checkpoint_every = "10ep"
    return shorten(config, arg.epochs)
