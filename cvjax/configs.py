"""The defaults every training config starts from, and the parser for `:key=value` config args.

A config file under configs/ is a plain `get_config(arg)` (big_vision style): it takes
`base_config()`, sets what its experiment needs, and documents the command and the measured result.
"""

import os

import ml_collections

from cvjax.errors import UserError

# XLA's persistent compilation cache, on by default in `cvjax.main` and `cvjax.benchmark`: a
# second run of the same program loads it from disk instead of compiling (BENCHMARKS.md).
COMPILATION_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "cvjax", "xla")


def base_config() -> ml_collections.ConfigDict:
    """Every key a training config has, with defaults for a small CIFAR-style run."""
    c = ml_collections.ConfigDict()
    c.model = "resnet20"
    c.model_kwargs = ml_collections.ConfigDict()  # Extra create() kwargs, e.g. drop_path_rate.
    c.dataset = "cifar10"
    c.data_dir = ""  # Empty: TFDS's default; a folder with original files is read offline.
    c.stream = False  # True: read folder:<path> batches from disk (for data larger than memory).
    c.image_size = 0  # 0: the dataset's own size; else resize (needed for folders of mixed sizes).
    # Per-channel mean/std: "dataset" (the training split's own), or a name of
    # data.STANDARD_STATS such as "imagenet2012" (what ImageNet-pretrained weights expect).
    c.normalization = "dataset"
    c.num_epochs = 1.0
    c.batch_size = 128
    c.train_examples = 0  # > 0: train on this many training examples only (a proxy subset).
    c.holdout = 0  # > 0: hold out this many training examples and evaluate on them, not on test.
    c.seed = 0

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.name = "momentum"  # sgd momentum nesterov adagrad rmsprop adam adamw lars lamb
    c.optimizer.momentum = 0.9
    c.optimizer.b1 = 0.9
    c.optimizer.b2 = 0.999
    c.optimizer.eps = 1e-8
    c.optimizer.decay = 0.9  # RMSProp's squared-gradient decay.
    c.optimizer.decoupled_weight_decay = False  # Always True in effect for adamw, lars, lamb.
    c.optimizer.decay_norm_and_bias = True  # False: no weight decay on BatchNorm and biases.
    c.optimizer.grad_clip_norm = 0.0  # 0: no clipping.
    # False: lr_groups multipliers leave each step's weight decay as it is (airbench's biases).
    c.optimizer.lr_groups_scale_decay = True
    c.learning_rate = 0.1
    c.schedule = ml_collections.ConfigDict()
    c.schedule.name = (
        "cosine"  # constant piecewise exponential linear cosine warmup_cosine onecycle
    )
    c.schedule.warmup_epochs = 0.0
    c.schedule.warmup_start_factor = 0.0  # The warmup starts at this fraction of the peak lr.
    c.schedule.boundaries_epochs = (0.5, 0.75)  # piecewise: epochs where lr *= decay_factor.
    c.schedule.decay_factor = 0.1
    c.schedule.decay_rate = 0.97  # exponential: factor per epoch.
    c.schedule.end_lr_factor = 0.0  # cosine, linear: final lr as a fraction of the peak.
    c.schedule.pct_start = 0.3  # onecycle.
    c.weight_decay = 1e-4
    c.label_smoothing = 0.0
    c.aux_loss_weight = 0.0  # > 0: add this times the auxiliary heads' loss (GoogLeNet, Inc-v3).
    c.ema_decay = 0.0  # > 0: keep an EMA of the params and evaluate it beside the raw ones.
    # Lookahead with a scheduled pull (cvjax/train/lookahead.py; airbench, Jordan 2024).
    c.lookahead = ml_collections.ConfigDict()
    c.lookahead.every = 0  # > 0: pull the slow weights every this many steps.
    c.lookahead.start_epochs = 0.0
    c.lookahead.decay = 0.0  # rho = decay * (step / total_steps) ** decay_power.
    c.lookahead.decay_power = 0.0
    c.lookahead.sync_each_epoch = True  # The fast weights restart from the slow ones each epoch.
    # Data-dependent init of a whitening layer (airbench94) from the first N training images.
    c.init_whitening = False
    c.whitening_images = 5000  # 0: all.
    c.whitening_eps = 5e-4
    c.half_precision = False  # bfloat16 compute, float32 params and BatchNorm statistics.

    # What is learned (cvjax/tasks.py): classification multilabel regression multitask embedding.
    c.task = "classification"
    c.loss = ml_collections.ConfigDict()
    c.loss.name = "softmax_ce"  # Classification: softmax_ce focal ldam.
    c.loss.focal_gamma = 2.0
    c.loss.class_weights = "none"  # none class_balanced (Cui et al. 2019, effective numbers).
    c.loss.cb_beta = 0.9999
    c.loss.drw_epoch = 0  # > 0: class-balanced weights from this epoch on (DRW, Cao et al.).
    c.loss.ldam_max_margin = 0.5
    c.loss.ldam_scale = 30.0
    c.loss.normed_head = False  # Cosine logits (always on for LDAM).
    c.loss.targets = ()  # Multilabel / multitask / regression: one row per class label.
    c.loss.head_names = ()  # Multitask: a name per head (column of targets).
    c.loss.huber_delta = 0.0  # Regression: 0 is the L2 loss.
    c.loss.embedding_loss = "triplet"  # Embedding: triplet (batch-hard) or contrastive.
    c.loss.embedding_dim = 128
    c.loss.margin = 0.2

    c.augment = ml_collections.ConfigDict()
    c.augment.crop_padding = 4  # Random crop after zero padding by this many pixels; 0: none.
    c.augment.flip = True  # Random horizontal flip.
    c.augment.crop_pad_mode = "constant"  # Or "reflect" (mirrored border).
    c.augment.alternating_flip = False  # Each half of the data flipped every other epoch.
    c.augment.random_resized_crop = False  # Inception crop (replaces crop_padding).
    c.augment.rrc_scale = (0.08, 1.0)
    c.augment.rrc_ratio = (3 / 4, 4 / 3)
    c.augment.auto_augment = ""  # "imagenet" or "cifar10" policy (Cubuk et al. 2019).
    c.augment.rand_augment_n = 0  # > 0: RandAugment(N, M) (Cubuk et al. 2020).
    c.augment.rand_augment_m = 9
    c.augment.cutout = 0  # > 0: a cutout square of this side (DeVries & Taylor 2017).
    c.augment.random_erasing = 0.0  # Probability of random erasing (Zhong et al. 2020).
    c.augment.mixup_alpha = 0.0  # > 0: mixup (Zhang et al. 2018).
    c.augment.cutmix_alpha = 0.0  # > 0: CutMix (Yun et al. 2019); with mixup: switch per batch.
    c.augment.mix_prob = 1.0
    c.augment.switch_prob = 0.5
    c.tta = ml_collections.ConfigDict()  # Test-time augmentation of the evaluation.
    c.tta.flip = False
    c.tta.crops = 0  # 5 (corners and centre) or 10 (and their flips).
    c.tta.crop_fraction = 0.875
    c.tta.scales = ()  # Extra input scales, e.g. (0.875, 1.125).
    c.tta.translate = 0  # > 0: add views shifted by this many pixels (two, reflect-padded).

    c.log_every_steps = 100
    c.eval_every = "1ep"  # "<n>ep" or "<n>steps"; "0" for only at the end.
    c.checkpoint_every = "1ep"
    c.keep_checkpoints = 3  # The last K are kept, and the best by eval/accuracy.

    # Transfer learning and imbalanced data.
    c.init_from = ""  # Converted weights (python -m cvjax.convert) or a workdir to start from.
    c.init_from_checkpoint = "latest"  # For a workdir: latest, best or a step number.
    c.reinit_head = False  # True: a fresh classifier even where its shape matches (cRT).
    c.freeze = ""  # Regex on "/"-joined param paths, e.g. "^(?!head/)": those get no updates.
    c.lr_groups = ()  # ((regex, lr multiplier), ...); the first match wins, else 1.0.
    c.unfreeze = ()  # ((epoch, regex), ...): frozen params matching regex train from then on.
    c.freeze_from = ()  # ((epoch, regex), ...): params matching regex stop training then.
    c.linear_probe = False  # Only the head trains; backbone BatchNorm statistics stay as loaded.
    c.imbalance_ratio = 0.0  # > 0: a long-tailed training split, largest / smallest class.
    c.sampling = "uniform"  # uniform class_balanced sqrt (Kang et al. 2020).
    return c


def is_imagenet(dataset: str) -> bool:
    return dataset in ("imagenet2012", "tfds:imagenet2012")


def imagenet_data(config: ml_collections.ConfigDict, image_size: int, batch_size: int = 256):
    """ImageNet-1k from TFDS at `image_size`, streamed from disk (1.28M images do not fit in
    memory), without CIFAR's crop-after-padding."""
    config.dataset = "tfds:imagenet2012"
    config.stream = True
    config.image_size = image_size
    config.batch_size = batch_size
    config.augment.crop_padding = 0
    return config


def shorten(config: ml_collections.ConfigDict, epochs: float) -> ml_collections.ConfigDict:
    """Runs `config` for `epochs` instead, with its schedule (boundaries, warmup) scaled to fit."""
    if epochs <= 0:
        return config
    scale = epochs / config.num_epochs
    config.num_epochs = epochs
    config.schedule.boundaries_epochs = tuple(b * scale for b in config.schedule.boundaries_epochs)
    config.schedule.warmup_epochs = config.schedule.warmup_epochs * scale
    config.eval_every = "1ep"
    config.checkpoint_every = "1ep"
    return config


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
    """Parses "key=value,key2=value2" (the part after ':' in --config=file.py:arg).

    Values take the type of the default given for their key; unknown keys are an error.
    """
    result = ml_collections.ConfigDict(defaults)
    if not arg:
        return result
    for item in arg.split(","):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or key not in defaults:
            raise UserError(
                f"bad config argument {item!r}; use key=value with keys {sorted(defaults)}"
            )
        kind = type(defaults[key])
        if kind is bool:
            result[key] = value.lower() in ("1", "true", "yes")
        else:
            result[key] = kind(value)
    return result
