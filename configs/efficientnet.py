"""EfficientNet (Tan & Le 2019) on CIFAR-10, the ImageNet recipe, and compound scaling for any phi.

Default: efficientnet_b0 with `cifar_stem=True` (stride-1 stem and first stride-2 stage: a 4x4
last map) on CIFAR-10 at 32x32 with the recipe of kuangliu/pytorch-cifar (SGD momentum 0.9,
lr 0.1, weight decay 5e-4, batch 128, crop+flip, cosine over 200 epochs), stochastic depth 0.2:

    python -m cvjax.main --config=configs/efficientnet.py --workdir=/tmp/cvjax/efficientnet

Published ImageNet top-1 (Tan & Le 2019, Table 2): B0 77.1%, B1 79.1%, B2 80.1%, B3 81.6%,
B4 82.9%, B5 83.6%, B6 84.0%, B7 84.3%; torchvision's weights: B0 77.692%, B7 84.122%.

Variants (`:key=value,...`):

    :model=efficientnet_b3 (a published model: width, depth, resolution and dropout of its
        table row; on CIFAR-10 images are resized to 32 x resolution / 224, to a multiple of 8)
    :phi=2.5 (compound scaling, any phi: fractional, negative or beyond 7; the model is the
        registered "efficientnet" with width_mult = 1.1^phi, depth_mult = 1.2^phi and the
        table's dropout pattern, set in config.model_kwargs, and images resized to
        base x 1.15^phi rounded to a multiple of 8, base 224 on ImageNet and 32 on CIFAR-10;
        `cvjax.models.efficientnet.compound_scaling`. Not the same as the published B1-B7,
        whose coefficients the authors rounded: phi=1 gives width 1.1, depth 1.2, 256 px)
    :phi=2,coefficients=/tmp/cvjax/nas_compound/best.json (alpha, beta, gamma found by a
        configs/nas_compound.py search instead of the paper's 1.2, 1.1, 1.15)
    :drop_path=0.3 (the stochastic-depth rate of the last block; default 0.2)
    :schedule=cosine|step|rmsprop (CIFAR-10 default cosine; step: lr / 10 at 50% and 75%;
        rmsprop: the paper's recipe below, its lr scaled to batch 128)
    :dataset=imagenet2012 (default schedule rmsprop: Tan & Le 2019, Sec. 5.2, and the MnasNet
        recipe it follows: RMSProp decay and momentum 0.9, eps 1e-3, lr 0.256 per 4096 images
        (0.016 at batch 256) after 5 warmup epochs, x0.97 every 2.4 epochs, weight decay 1e-5,
        EMA 0.9999, label smoothing 0.1, 350 epochs; no AutoAugment here; cosine/step: see
        configs/mobilenet.py)
    :epochs=5 (any variant, shorter; the schedule is scaled to fit)

Measured here (2-core CPU, 2026-11-23; experiments/results/efficient.md, the same 60 s training
budget for every family): efficientnet_b0 (cifar_stem=True, drop_path_rate=0.2), 4,020,358 params,
0.120 GMACs at 32x32, 20 train images/s at batch 128: 0.024 epochs of the CIFAR-10 JPEG copy, test
accuracy 0.1000 on 1,000 test images (100 per class). A short budget on a CPU: the full recipe above
is for GPUs.

    python -m cvjax.main --workdir=/tmp/cvjax/efficientnet \
        --config=configs/efficientnet.py:model=efficientnet_b0,dataset=folder:/tmp/cifar10_jpeg-eval100,epochs=0.024
"""

from cvjax.configs import base_config, is_imagenet, parse_arg, shorten
from cvjax.errors import UserError
from cvjax.models.efficientnet import PUBLISHED, compound_scaling
from cvjax.recipes import apply_recipe


def get_config(arg: str | None = None):
    arg = parse_arg(
        arg,
        model="efficientnet_b0",
        phi="",
        coefficients="",
        dataset="cifar10",
        schedule="",
        drop_path=0.2,
        epochs=0.0,
    )
    imagenet = is_imagenet(arg.dataset)
    base = 224 if imagenet else 32
    config = base_config()
    if arg.phi:
        if arg.model != "efficientnet_b0":
            raise UserError("give either model=efficientnet_bN or phi=<float>, not both")
        coefficients = {}
        if arg.coefficients:  # A configs/nas_compound.py search's best.json.
            from cvjax.nas.mbconv import coefficients as read_coefficients
            from cvjax.nas.search import load_best

            result = load_best(arg.coefficients)
            if result["space"] != "compound":
                raise UserError(f"{arg.coefficients} is a {result['space']} search, not compound")
            alpha, beta, gamma = read_coefficients(result["arch"])
            coefficients = {"alpha": alpha, "beta": beta, "gamma": gamma}
        scaling = compound_scaling(float(arg.phi), base, **coefficients)
        config.model = "efficientnet"
        config.model_kwargs.width_mult = scaling.width_mult
        config.model_kwargs.depth_mult = scaling.depth_mult
        config.model_kwargs.drop_rate = scaling.drop_rate
        resolution = scaling.resolution
    elif arg.model in PUBLISHED:
        config.model = arg.model
        size = PUBLISHED[arg.model].resolution
        resolution = size if imagenet else max(8, round(base * size / 224 / 8) * 8)
    else:
        raise UserError(
            f"model={arg.model!r} is not a published EfficientNet ({', '.join(PUBLISHED)}); "
            "for other scales use phi=<float>"
        )
    config.model_kwargs.drop_path_rate = arg.drop_path
    if not imagenet:
        config.model_kwargs.cifar_stem = True
    config = apply_recipe(config, "efficientnet", arg.dataset, arg.schedule)
    # CIFAR-10 is 32 px already; ImageNet images are resized to the model's resolution.
    config.image_size = 0 if resolution == 32 and not imagenet else resolution
    return shorten(config, arg.epochs)
