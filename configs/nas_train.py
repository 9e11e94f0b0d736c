"""Trains the architecture a search found (its best.json) from scratch, at full size.

    python -m cvjax.main --config=configs/nas_train.py:arch=/tmp/cvjax/nb201_evo/best.json \
        --workdir=/tmp/cvjax/nb201_best

`arch` is a best.json written by any search (python -m cvjax.main --config=configs/nas_*.py), or
an NB201 cell string itself. The model is the search space's network for that architecture at
the space's full size (NB201: C=16, N=5; `proxy=True` keeps the search's proxy size, e.g. its
width), trained with the recipe of the space's paper:
- nb201: NAS-Bench-201's (Dong & Yang 2020, Table 2): 200 epochs, batch 256, Nesterov SGD
  lr 0.1 with cosine decay, weight decay 5e-4, random crop and flip.
- darts: DARTS' CIFAR-10 evaluation (Liu et al. 2019, Sec. 3.3): 600 epochs, batch 96,
  SGD lr 0.025 cosine, weight decay 3e-4, drop path 0.2, auxiliary head weight 0.4 (cutout,
  which DARTS adds, is not in this engine yet).
- mbconv / compound: the EfficientNet-style CIFAR recipe of configs/efficientnet.py.

Config args: arch, dataset (default cifar10), epochs (shortens the schedule), proxy.

Published: the NB201 optimum cell reaches 94.37% on CIFAR-10 with this recipe (the benchmark's
table, mean of 3 seeds). Measured here: see the nas_train row of experiments/results/nas.md.
"""

import ml_collections

from cvjax.configs import base_config, parse_arg, shorten
from cvjax.errors import UserError


def get_config(arg=None):
    arg = parse_arg(arg, arch="", dataset="cifar10", epochs=0.0, proxy=False)
    if not arg.arch:
        raise UserError("configs/nas_train.py needs :arch=<path to best.json or NB201 string>")
    from cvjax.nas import get_space
    from cvjax.nas.search import load_best

    if arg.arch.startswith("|"):  # An NB201 cell string itself.
        result = {"arch": arg.arch, "space": "nb201", "space_kwargs": {}}
    else:
        result = load_best(arg.arch)
    space = get_space(result["space"], **(result.get("space_kwargs", {}) if arg.proxy else {}))
    arch = space.validate(result["arch"])
    name, kwargs = space.model(arch)
    config = base_config()
    config.dataset = arg.dataset
    config.model = name
    config.model_kwargs = ml_collections.ConfigDict(kwargs)
    config.image_size = space.resolution(arch)
    if result["space"] == "nb201":
        config.num_epochs = 200
        config.batch_size = 256
        config.optimizer.name = "nesterov"
        config.learning_rate = 0.1
        config.weight_decay = 5e-4
    elif result["space"] == "darts":
        config.num_epochs = 600
        config.batch_size = 96
        config.learning_rate = 0.025
        config.weight_decay = 3e-4
        config.model_kwargs.drop_path_rate = 0.2
        config.model_kwargs.aux_logits = True
        config.aux_loss_weight = 0.4
    else:
        config.num_epochs = 100
        config.optimizer.name = "rmsprop"
        config.learning_rate = 0.016
        config.schedule.name = "warmup_cosine"
        config.schedule.warmup_epochs = 5
        config.weight_decay = 1e-5
    if arg.dataset in ("mnist", "fashion_mnist", "digits"):  # Shifted crops, never mirrored.
        config.augment.crop_padding, config.augment.flip = 2, False
    return shorten(config, arg.epochs)
