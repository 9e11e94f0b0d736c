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
    c.learning_rate = 0.1
    c.schedule = ml_collections.ConfigDict()
    c.schedule.name = (
        "cosine"  # constant piecewise exponential linear cosine warmup_cosine onecycle
    )
    c.schedule.warmup_epochs = 0.0
    c.schedule.boundaries_epochs = (0.5, 0.75)  # piecewise: epochs where lr *= decay_factor.
    c.schedule.decay_factor = 0.1
    c.schedule.decay_rate = 0.97  # exponential: factor per epoch.
    c.schedule.end_lr_factor = 0.0  # cosine, linear: final lr as a fraction of the peak.
    c.schedule.pct_start = 0.3  # onecycle.
    c.weight_decay = 1e-4
    c.label_smoothing = 0.0
    c.aux_loss_weight = 0.0  # > 0: add this times the auxiliary heads' loss (GoogLeNet, Inc-v3).
    c.ema_decay = 0.0  # > 0: keep an EMA of the params and evaluate it beside the raw ones.
    c.half_precision = False  # bfloat16 compute, float32 params and BatchNorm statistics.

    c.augment = ml_collections.ConfigDict()
    c.augment.crop_padding = 4  # Random crop after zero padding by this many pixels; 0: none.
    c.augment.flip = True  # Random horizontal flip.

    c.log_every_steps = 100
    c.eval_every = "1ep"  # "<n>ep" or "<n>steps"; "0" for only at the end.
    c.checkpoint_every = "1ep"
    c.keep_checkpoints = 3  # The last K are kept, and the best by eval/accuracy.
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
