"""Training recipes that several configs share: the MobileNet / MnasNet / EfficientNet line.

`apply_recipe(config, recipe, dataset, schedule)` sets data, optimizer and schedule for CIFAR-10
(kuangliu/pytorch-cifar: SGD momentum 0.9, lr 0.1, weight decay 5e-4, batch 128, 200 epochs) or
ImageNet (the papers' RMSProp recipes, or Nesterov SGD with cosine / step decay).
"""

from cvjax.configs import imagenet_data, is_imagenet
from cvjax.errors import UserError
from cvjax.models import model_info

# The papers' ImageNet RMSProp recipes: lr at `batch` images, lr x `decay_rate` every
# `decay_epochs` epochs after `warmup` epochs, weight decay, RMSProp eps, EMA decay, smoothing.
# The papers do not give the epochs: 300 as torchvision's mobilenet_v2 recipe, 350 as the TPU
# recipes of MnasNet and EfficientNet.
RMSPROP = {
    "mobilenet_v2": dict(
        lr=0.045,
        batch=96,
        decay_rate=0.98,
        decay_epochs=1.0,
        warmup=0.0,
        weight_decay=4e-5,
        eps=1.0,
        ema=0.0,
        smoothing=0.0,
        epochs=300,
    ),
    "mobilenet_v3": dict(
        lr=0.1,
        batch=4096,
        decay_rate=0.99,
        decay_epochs=3.0,
        warmup=0.0,
        weight_decay=1e-5,
        eps=1e-3,
        ema=0.9998,
        smoothing=0.0,
        epochs=350,
    ),
    # Tan et al. 2019 (MnasNet), Sec. 4, and Tan & Le 2019 (EfficientNet), Sec. 5.2.
    "mnasnet": dict(
        lr=0.256,
        batch=4096,
        decay_rate=0.97,
        decay_epochs=2.4,
        warmup=5.0,
        weight_decay=1e-5,
        eps=1e-3,
        ema=0.9999,
        smoothing=0.1,
        epochs=350,
    ),
}
RMSPROP["mobilenet_v1"] = RMSPROP["mobilenet_v2"]  # Sandler et al. 2018 follow MobileNet-v1.
RMSPROP["efficientnet"] = RMSPROP["mnasnet"]
SCHEDULES = ("cosine", "step", "rmsprop")


def apply_recipe(config, recipe: str, dataset: str, schedule: str):
    """Sets data, optimizer and schedule: CIFAR-10 (kuangliu/pytorch-cifar) or ImageNet.

    `recipe` names an RMSPROP entry; `schedule` is "" (cosine on CIFAR-10, rmsprop on
    ImageNet), "cosine", "step" or "rmsprop".
    """
    imagenet = is_imagenet(dataset)
    schedule = schedule or ("rmsprop" if imagenet else "cosine")
    if schedule not in SCHEDULES:
        raise UserError(f"schedule={schedule!r} is not one of {', '.join(SCHEDULES)}")
    config.dataset = dataset
    config.batch_size = 128
    config.num_epochs = 200
    config.eval_every = "5ep"
    config.checkpoint_every = "5ep"
    if imagenet:
        imagenet_data(config, model_info(config.model)["input_size"], 256)
        config.num_epochs = 120
        config.eval_every = "1ep"
        config.checkpoint_every = "1ep"
    if schedule == "rmsprop":
        r = RMSPROP[recipe]
        if imagenet:
            config.batch_size = min(r["batch"], 256)
            config.num_epochs = r["epochs"]
            config.label_smoothing = r["smoothing"]
            config.ema_decay = r["ema"]
        config.optimizer.name = "rmsprop"
        config.optimizer.decay = 0.9
        config.optimizer.momentum = 0.9
        config.optimizer.eps = r["eps"]
        config.learning_rate = r["lr"] * config.batch_size / r["batch"]
        config.schedule.name = "exponential"
        config.schedule.decay_rate = r["decay_rate"] ** (1 / r["decay_epochs"])
        config.schedule.warmup_epochs = r["warmup"]
        config.weight_decay = r["weight_decay"]
        config.optimizer.decay_norm_and_bias = False  # TF decays conv and dense weights only.
        return config
    config.optimizer.name = "nesterov" if imagenet else "momentum"
    config.optimizer.momentum = 0.9
    config.learning_rate = 0.1 * config.batch_size / (256 if imagenet else 128)
    config.weight_decay = RMSPROP[recipe]["weight_decay"] if imagenet else 5e-4
    config.label_smoothing = 0.1 if imagenet else 0.0
    if schedule == "cosine":
        config.schedule.name = "warmup_cosine" if imagenet else "cosine"
        config.schedule.warmup_epochs = 5.0 if imagenet else 0.0
    else:
        config.schedule.name = "piecewise"
        config.schedule.decay_factor = 0.1
        config.schedule.boundaries_epochs = (30, 60, 90) if imagenet else (100, 150)
    return config
