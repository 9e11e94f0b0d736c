"""Long-tailed classification: plain CE, class-balanced CE, LDAM-DRW and cRT on one LT split.

    python -m cvjax.main --config=configs/longtail.py:method=ldam_drw --workdir=/tmp/cvjax/lt_ldam
    python -m cvjax.main --config=configs/longtail.py:method=crt,stage1=/tmp/cvjax/lt_ce \\
        --workdir=/tmp/cvjax/lt_crt

The training split keeps n_k = n_max * ratio^(-k / (K - 1)) images of class k (the exponential
profile of Cui et al. 2019 and Cao et al. 2019); the test split stays balanced. Methods:

- `ce`: softmax cross-entropy, uniform sampling.
- `cb`: class-balanced CE, weights (1 - beta) / (1 - beta^n_k), beta = 0.9999 (Cui et al. 2019).
- `ldam_drw`: LDAM loss (margins ~ n_k^(-1/4), largest 0.5, scale 30, cosine logits) with
  deferred re-weighting: class-balanced weights from 80% of the epochs on (Cao et al. 2019,
  their 160 of 200).
- `crt`: classifier re-training (Kang et al. 2020): from the `ce` run in `stage1`, the head is
  re-initialized and trained alone with class-balanced sampling for `crt_epochs`.

The schedule follows Cao et al.'s CIFAR recipe, scaled to `epochs`: SGD momentum 0.9, lr 0.1,
linear warmup over the first 2.5% of training, x0.01 at 80% and 90%, weight decay 2e-4, batch 128.

Measured: `python experiments/longtail.py` (experiments/results/longtail.md) runs all four on
MNIST-LT (ratio 100) and writes the table with its commands, times and per-group accuracies.
"""

from cvjax.configs import base_config, parse_arg
from cvjax.errors import UserError

METHODS = ("ce", "cb", "ldam_drw", "crt")


def get_config(arg: str | None = None):
    a = parse_arg(
        arg,
        method="ce",
        dataset="mnist",
        data_dir="../shared/datasets",
        ratio=100.0,
        model="resnet8",
        epochs=10.0,
        stage1="",
        crt_epochs=3.0,
    )
    if a.method not in METHODS:
        raise UserError(f"unknown method {a.method!r}; use one of {', '.join(METHODS)}")
    c = base_config()
    c.model = a.model
    c.dataset = a.dataset
    c.data_dir = a.data_dir
    c.imbalance_ratio = a.ratio
    c.num_epochs = a.epochs
    c.batch_size = 128
    c.learning_rate = 0.1
    c.weight_decay = 2e-4
    c.schedule.name = "piecewise"
    c.schedule.boundaries_epochs = (0.8 * a.epochs, 0.9 * a.epochs)
    c.schedule.decay_factor = 0.01
    c.schedule.warmup_epochs = 0.025 * a.epochs
    gray = a.dataset in ("mnist", "fashion_mnist", "digits")
    c.augment.crop_padding = 2 if gray else 4
    c.augment.flip = not gray
    c.eval_every = "5ep"
    c.checkpoint_every = "5ep"
    if a.method == "cb":
        c.loss.class_weights = "class_balanced"
        c.loss.cb_beta = 0.9999
    elif a.method == "ldam_drw":
        c.loss.name = "ldam"
        c.loss.drw_epoch = int(round(0.8 * a.epochs))
        c.loss.cb_beta = 0.9999
    elif a.method == "crt":
        if not a.stage1:
            raise UserError("method=crt needs stage1=<workdir of a finished ce run>")
        from cvjax.train import transfer

        c = transfer.crt_config(c, a.stage1, a.crt_epochs)
    return c
