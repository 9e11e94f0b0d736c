"""Quickstart: ResNet-20 on scikit-learn's digits (8x8 grayscale, 10 classes). Works offline.

    python -m cvjax.main --config=configs/quickstart.py --workdir=/tmp/cvjax/quickstart

Data: the 1,797 digits images, split 1,437 train / 360 test (stratified, random_state=0).
Expected: eval/accuracy 0.9972 (359 of 360) after 30 epochs (660 steps), about 40 s from start to
exit on a 2-core CPU including compilation (measured 2026-11-23; 0.9944 with CVJAX_XLA_FLAGS=0,
whose floating-point rounding differs; BENCHMARKS.md).
"""

from cvjax.configs import base_config


def get_config():
    config = base_config()
    config.model = "resnet20"
    config.dataset = "digits"
    config.num_epochs = 30
    config.batch_size = 64
    config.learning_rate = 0.1
    config.weight_decay = 5e-4
    config.augment.crop_padding = 1  # Shifts of one pixel; no flips, digits are not symmetric.
    config.augment.flip = False
    config.log_every_steps = 50
    config.eval_every = "5ep"
    config.checkpoint_every = "10ep"
    return config
