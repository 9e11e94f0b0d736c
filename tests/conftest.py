"""Shared test fixtures."""

import os

import jax
import pytest

from cvjax.configs import base_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Compiles are the slow part of the suite; repeated ones (subprocesses) hit this cache.
jax.config.update("jax_compilation_cache_dir", os.path.join(REPO, ".pytest_cache", "xla"))


def tiny_config(**overrides):
    """A run that compiles and trains in seconds: ResNet-8 on digits."""
    c = base_config()
    c.model = "resnet8"
    c.dataset = "digits"
    c.num_epochs = 2
    c.batch_size = 32
    c.learning_rate = 0.05
    c.augment.crop_padding = 1
    c.augment.flip = False
    c.log_every_steps = 10
    c.eval_every = "1ep"
    c.checkpoint_every = "1ep"
    for key, value in overrides.items():
        target = c
        *path, last = key.split(".")
        for part in path:
            target = target[part]
        target[last] = value
    return c


@pytest.fixture
def shared_datasets():
    """`../shared/datasets` beside the checkout; missing data fails under CI and skips elsewhere."""
    path = os.path.join(os.path.dirname(REPO), "shared", "datasets")
    if not os.path.isdir(path):
        message = f"shared datasets not found at {path}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path
