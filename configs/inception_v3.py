"""Inception-v3 (Szegedy et al. 2016) with its auxiliary classifier on CIFAR-10; ImageNet too.

Default: `inception_v3` with `cifar_stem=True` (stride-1, padded stem convolutions, no max pools:
the 35x35 modules see 32x32, the 17x17 ones 15x15, the 8x8 ones 7x7) and `aux_logits=True`,
its loss weighted 0.4 as in TF-slim's train_image_classifier.py (the reference training of the
weights torchvision ports). The recipe is the well-known CIFAR-10 one of kuangliu/pytorch-cifar
(main.py): SGD momentum 0.9, lr 0.1, weight decay 5e-4, batch 128, random crop (4-pixel zero
pad) + flip, cosine decay to 0 over 200 epochs. At 32x32 the model costs 3.4 GMACs an image
(XLA's cost analysis, as `python -m cvjax.models inception_v3`, which gives 5.5 at 299): a GPU run.

    python -m cvjax.main --config=configs/inception_v3.py --workdir=/tmp/cvjax/inception_v3

Published: 93.74% CIFAR-10 test accuracy for torchvision's Inception-v3 adapted to 32x32 without
auxiliary head (huyvnphan/PyTorch_CIFAR10 README; their stem is one 3x3/1 convolution to 192
channels, and their own recipe). Variants (`:key=value,...`):

    configs/inception_v3.py:aux=false (no auxiliary head)
    configs/inception_v3.py:dataset=folder:/tmp/cifar10_jpeg (an image-folder tree, e.g. the JPEG
        copy: mkdir -p /tmp/cifar10_jpeg && tar -xzf \
        ../shared/datasets/cifar10_jpeg_q75/CIFAR-10-images-jpeg.tar.gz -C /tmp/cifar10_jpeg)
    configs/inception_v3.py:dataset=imagenet2012 (Sec. 7-8: 299x299 inputs, 100 epochs,
        RMSProp with decay 0.9 and eps 1.0, lr 0.045 decayed by 0.94 every 2 epochs, gradient
        clipping at 2.0, label smoothing 0.1; from TensorFlow's reference code: RMSProp momentum
        0.9 and an EMA of the weights (decay 0.9999) in inception_train.py, weight decay 4e-5
        and dropout 0.2 in TF-slim's inception_v3. The paper ran 50 asynchronous replicas of 32
        images each; the lr is not rescaled for the batch of 256 here, and optax's RMSProp adds
        eps outside the square root (TensorFlow inside). Published: 21.2% top-1 / 5.6% top-5
        error, one crop (Table 3); torchvision's weights (ported from TF-slim) 77.294% top-1)
    configs/inception_v3.py:epochs=5 (any variant, shorter; the schedule is scaled to fit)

Measured here (2-core CPU, 2026-11-23; experiments/results/families.md, the same 150 s training
budget for every family): inception_v3 (aux_logits=True, cifar_stem=True), 24,371,444 params, 3.426
GMACs at 32x32, 3 train images/s at batch 128: 0.009 epochs of the CIFAR-10 JPEG copy, test accuracy
0.1000 on 1,000 test images (100 per class). A short budget on a CPU: the full recipe above is for
GPUs.

    python -m cvjax.main --workdir=/tmp/cvjax/inception_v3 \
        --config=configs/inception_v3.py:dataset=folder:/tmp/cifar10_jpeg-eval100,epochs=0.009
"""

from cvjax.configs import base_config, imagenet_data, is_imagenet, parse_arg, shorten


def get_config(arg: str | None = None):
    arg = parse_arg(arg, model="inception_v3", dataset="cifar10", epochs=0.0, aux=True)
    config = base_config()
    config.model = arg.model
    config.dataset = arg.dataset
    if arg.aux:
        config.model_kwargs.aux_logits = True
        config.aux_loss_weight = 0.4  # TF-slim: the AuxLogits loss has weight 0.4.
    if is_imagenet(arg.dataset):
        imagenet_data(config, 299, 256)
        config.num_epochs = 100
        config.optimizer.name = "rmsprop"
        config.optimizer.decay = 0.9
        config.optimizer.eps = 1.0
        config.optimizer.momentum = 0.9
        config.optimizer.grad_clip_norm = 2.0
        config.learning_rate = 0.045
        config.schedule.name = "piecewise"
        config.schedule.boundaries_epochs = tuple(range(2, 100, 2))
        config.schedule.decay_factor = 0.94
        config.weight_decay = 4e-5
        config.label_smoothing = 0.1
        config.ema_decay = 0.9999
        config.model_kwargs.drop_rate = 0.2  # TF-slim's dropout_keep_prob=0.8.
        config.eval_every = "1ep"
    else:
        config.model_kwargs.cifar_stem = True
        config.optimizer.name = "momentum"
        config.optimizer.momentum = 0.9
        config.batch_size = 128
        config.num_epochs = 200
        config.learning_rate = 0.1
        config.schedule.name = "cosine"
        config.weight_decay = 5e-4
        config.eval_every = "5ep"
    config.checkpoint_every = config.eval_every
    return shorten(config, arg.epochs)
