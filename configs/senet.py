"""SENet (Hu et al. 2018, "Squeeze-and-Excitation Networks") on CIFAR-10, and the ImageNet recipe.

Default: SE-ResNet-110 on CIFAR-10, i.e. the CIFAR ResNet-110 of He et al. 2016 (`resnet110`,
option-A shortcuts) with an SE gate of reduction 16 on every residual branch (`se_ratio=1/16`),
as in Hu et al. 2018 (TPAMI version), Sec. 5.1 "Additional datasets": crop (4-pixel zero pad)
+ flip, and "the training strategy and other hyperparameters match those suggested by the
authors of each model", i.e. He et al. 2016, Sec. 4.2: SGD momentum 0.9, lr 0.1, weight decay
1e-4, batch 128, lr / 10 at epochs 82 and 123 of 164 (32k and 48k of 64k iterations). He et al.
warm ResNet-110 up at lr 0.01 for about 400 iterations; here a linear warmup over epoch 1.

    python -m cvjax.main --config=configs/senet.py --workdir=/tmp/cvjax/senet

Published (CIFAR-10 test error, Hu et al. 2018, Table 4): SE-ResNet-110 5.21% (ResNet-110
6.37%), SE-ResNet-164 4.39%. Variants (`:key=value,...`):

    configs/senet.py:se_ratio=0 (the ResNet-110 baseline, same recipe)
    configs/senet.py:model=resnet56 (any CIFAR ResNet; resnet20 for a quick CPU run)
    configs/senet.py:model=legacy_seresnet18 (an ImageNet SE model at 32x32: `cifar_stem=True`,
        the stem without stride or max pool; also senet154, legacy_seresnext50_32x4d, ...)
    configs/senet.py:dataset=imagenet2012 (senet154 unless model= says otherwise; Sec. 5.1:
        SGD momentum 0.9, batch 1024, lr 0.6 / 10 every 30 epochs, 100 epochs from scratch,
        random-size crop + flip; SENet-154 adds dropout 0.2 before the classifier and label
        smoothing (appendix (d), (e); the appendix trains it at batch 2048, lr 1.0, and freezes
        BatchNorm for the last epochs, not done here). Weight decay is not stated: 1e-4 as in
        ResNet. Published: SENet-154 18.68% top-1 / 4.47% top-5 error, 224 center crop
        (Table 8); the released Caffe SE-ResNet-50 22.37% top-1 (hujie-frank/SENet README))
    configs/senet.py:epochs=5 (any variant, shorter; the schedule is scaled to fit)

Measured here (2-core CPU, 2026-11-23; experiments/results/families.md, the same 150 s training
budget for every family): resnet110 (se_ratio=0.0625), 1,742,200 params, 0.232 GMACs at 32x32, 19
train images/s at batch 128: 0.056 epochs of the CIFAR-10 JPEG copy, test accuracy 0.1390 on 1,000
test images (100 per class). A short budget on a CPU: the full recipe above is for GPUs.

    python -m cvjax.main --workdir=/tmp/cvjax/senet \
        --config=configs/senet.py:dataset=folder:/tmp/cifar10_jpeg-eval100,epochs=0.056
"""

from cvjax.configs import base_config, imagenet_data, is_imagenet, parse_arg, shorten
from cvjax.models import model_info


def get_config(arg: str | None = None):
    arg = parse_arg(arg, model="", dataset="cifar10", epochs=0.0, se_ratio=1 / 16)
    imagenet = is_imagenet(arg.dataset)
    config = base_config()
    config.model = arg.model or ("senet154" if imagenet else "resnet110")
    config.dataset = arg.dataset
    # The SE reduction of the ResNet family: 1/16 throughout the paper, 0 for the baseline.
    config.model_kwargs.se_ratio = arg.se_ratio
    config.optimizer.name = "momentum"
    config.weight_decay = 1e-4
    config.schedule.name = "piecewise"
    config.schedule.decay_factor = 0.1
    if imagenet:
        imagenet_data(config, 224, 1024)
        config.num_epochs = 100
        config.learning_rate = 0.6 * config.batch_size / 1024
        config.schedule.boundaries_epochs = (30, 60, 90)
        if config.model == "senet154":
            config.label_smoothing = 0.1  # Appendix (e); dropout 0.2 is the model's default.
        config.eval_every = "1ep"
    else:
        if model_info(config.model)["input_size"] != 32:
            config.model_kwargs.cifar_stem = True  # An ImageNet model: no stem downsampling.
        config.batch_size = 128
        config.num_epochs = 164
        config.learning_rate = 0.1
        config.schedule.warmup_epochs = 1.0
        config.schedule.boundaries_epochs = (82, 123)
        config.eval_every = "5ep"
    config.checkpoint_every = config.eval_every
    return shorten(config, arg.epochs)
