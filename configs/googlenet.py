"""GoogLeNet (Szegedy et al. 2015) with its two auxiliary classifiers on CIFAR-10; ImageNet too.

Default: `googlenet` with `cifar_stem=True` (a 3x3/1 stem without max pools: Inception 3 sees
32x32, 4 sees 16x16, 5 sees 8x8) and `aux_logits=True`, each auxiliary loss weighted 0.3 as in
Sec. 5 of the paper. The recipe is the well-known CIFAR-10 one of kuangliu/pytorch-cifar
(main.py): SGD momentum 0.9, lr 0.1, weight decay 5e-4, batch 128, random crop (4-pixel zero
pad) + flip, cosine decay to 0 over 200 epochs:

    python -m cvjax.main --config=configs/googlenet.py --workdir=/tmp/cvjax/googlenet

Published: 92.85% CIFAR-10 test accuracy for torchvision's GoogLeNet adapted to 32x32 without
auxiliary heads (huyvnphan/PyTorch_CIFAR10 README; their stem is one 3x3/1 convolution to 192
channels, and their own recipe). Variants (`:key=value,...`):

    configs/googlenet.py:aux=false (no auxiliary heads)
    configs/googlenet.py:dataset=folder:/tmp/cifar10_jpeg (an image-folder tree, e.g. the JPEG copy:
        mkdir -p /tmp/cifar10_jpeg && tar -xzf \
        ../shared/datasets/cifar10_jpeg_q75/CIFAR-10-images-jpeg.tar.gz -C /tmp/cifar10_jpeg)
    configs/googlenet.py:dataset=imagenet2012 (Sec. 6: SGD momentum 0.9, the learning rate
        decreased by 4% every 8 epochs; the rest as the BVLC Caffe replication's solver.prototxt
        and train_val.prototxt: lr 0.01 for batches of 32, here 0.08 for 256 (linear scaling),
        weight decay 2e-4, 250 epochs, dropout 0.4 before the classifier, aux weight 0.3;
        224x224 inputs; an EMA of the weights for Sec. 6's Polyak averaging. Published: 10.07%
        top-5 error for one model and one crop (Table 3); BVLC replication 68.7% top-1
        (60-epoch "quick" solver, center crop); torchvision's weights (ported from TensorFlow)
        69.778% top-1)
    configs/googlenet.py:epochs=5 (any variant, shorter; the schedule is scaled to fit)

Measured here (2-core CPU, 2026-11-23; experiments/results/families.md, the same 150 s training
budget for every family): googlenet (aux_logits=True, cifar_stem=True), 9,952,958 params, 1.395
GMACs at 32x32, 5 train images/s at batch 128: 0.015 epochs of the CIFAR-10 JPEG copy, test accuracy
0.1270 on 1,000 test images (100 per class). A short budget on a CPU: the full recipe above is for
GPUs.

    python -m cvjax.main --workdir=/tmp/cvjax/googlenet \
        --config=configs/googlenet.py:dataset=folder:/tmp/cifar10_jpeg-eval100,epochs=0.015
"""

from cvjax.configs import base_config, imagenet_data, is_imagenet, parse_arg, shorten


def get_config(arg: str | None = None):
    arg = parse_arg(arg, model="googlenet", dataset="cifar10", epochs=0.0, aux=True)
    config = base_config()
    config.model = arg.model
    config.dataset = arg.dataset
    config.optimizer.name = "momentum"
    config.optimizer.momentum = 0.9
    if arg.aux:
        config.model_kwargs.aux_logits = True
        config.aux_loss_weight = 0.3  # Sec. 5: "weighted by 0.3".
    if is_imagenet(arg.dataset):
        imagenet_data(config, 224, 256)
        config.num_epochs = 250
        config.learning_rate = 0.01 * config.batch_size / 32
        config.schedule.name = "piecewise"
        config.schedule.boundaries_epochs = tuple(range(8, 250, 8))
        config.schedule.decay_factor = 0.96
        config.weight_decay = 2e-4
        config.model_kwargs.drop_rate = 0.4  # Table 1: "dropout (40%)" before the linear layer.
        config.ema_decay = 0.9999  # Sec. 6 evaluates a Polyak average of the weights.
        config.eval_every = "1ep"
    else:
        config.model_kwargs.cifar_stem = True
        config.batch_size = 128
        config.num_epochs = 200
        config.learning_rate = 0.1
        config.schedule.name = "cosine"
        config.weight_decay = 5e-4
        config.eval_every = "5ep"
    config.checkpoint_every = config.eval_every
    return shorten(config, arg.epochs)
