"""Every task kind and the recipe switches, through the real engine on real data (digits)."""

import json
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cvjax import tasks
from cvjax.configs import base_config
from cvjax.errors import UserError
from cvjax.train.loop import train_and_evaluate

from .conftest import tiny_config

# Attributes of a digit, one row per class: even, >= 5, has a closed loop (0 6 8 9; 4 open).
ATTRIBUTES = tuple((float(d % 2 == 0), float(d >= 5), float(d in (0, 6, 8, 9))) for d in range(10))
# Two heads: the digit itself and its parity.
DIGIT_AND_PARITY = tuple((d, d % 2) for d in range(10))


def _metrics(workdir) -> dict:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return {k: v for row in rows for k, v in row.items()}


def test_create_task_validates_its_config():
    config = base_config()
    config.task = "segmentation"
    with pytest.raises(UserError, match="unknown task"):
        tasks.create_task(config, 10, None)
    config = base_config()
    config.loss.name = "hinge"
    with pytest.raises(UserError, match="unknown loss"):
        tasks.create_task(config, 10, None)
    config = base_config()
    config.task = "multilabel"
    with pytest.raises(UserError, match="loss.targets"):
        tasks.create_task(config, 10, None)
    config.loss.targets = ATTRIBUTES[:9]
    with pytest.raises(UserError, match="one row per class"):
        tasks.create_task(config, 10, None)
    config = base_config()
    config.loss.name = "ldam"
    with pytest.raises(UserError, match="in-memory"):
        tasks.create_task(config, 10, None)


def test_class_balanced_drw_and_ldam_tasks_follow_the_counts():
    config = base_config()
    config.loss.name = "ldam"
    config.loss.drw_epoch = 3
    counts = np.array([1000, 100, 10])
    task = tasks.create_task(config, 3, counts)
    assert task.normed_head and task.class_weights is None and task.drw_epoch == 3
    assert task.drw_weights[2] > task.drw_weights[1] > task.drw_weights[0]
    assert task.ldam_margins[2] == pytest.approx(0.5)
    logits = jnp.zeros((3, 3))
    labels = jnp.array([0, 1, 2])
    before = task.per_example_loss(logits, labels, jnp.asarray(2))
    after = task.per_example_loss(logits, labels, jnp.asarray(3))
    # Before DRW every class weighs 1; after it, rare classes weigh more.
    assert after[2] / after[0] > before[2] / before[0]


def test_batch_recall_at_1_finds_same_label_neighbours():
    emb = jnp.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    mask = jnp.ones(4)
    assert tasks.batch_recall_at_1(emb, jnp.array([0, 0, 1, 1]), mask) == 4
    assert tasks.batch_recall_at_1(emb, jnp.array([0, 1, 0, 1]), mask) == 0


@pytest.mark.parametrize(
    "overrides, check",
    [
        (
            {"task": "multilabel", "loss.targets": ATTRIBUTES},
            lambda m: m["eval/hamming_accuracy"] > 0.7,
        ),
        (
            {"task": "regression", "loss.huber_delta": 1.0},
            lambda m: m["eval/mae"] < 2.0,  # Predicting the mean digit gives 2.5.
        ),
        (
            {
                "task": "multitask",
                "loss.targets": DIGIT_AND_PARITY,
                "loss.head_names": ("digit", "parity"),
            },
            lambda m: m["eval/digit/accuracy"] > 0.5 and m["eval/parity/accuracy"] > 0.7,
        ),
        (
            {"task": "embedding", "loss.embedding_dim": 16, "loss.margin": 0.2},
            lambda m: m["eval/recall_at_1"] > 0.5,
        ),
    ],
    ids=["multilabel", "regression", "multitask", "embedding"],
)
def test_each_task_kind_learns_on_digits(tmp_path, overrides, check):
    config = tiny_config(num_epochs=3, **overrides)
    train_and_evaluate(config, str(tmp_path))
    found = _metrics(tmp_path)
    assert check(found), found


def test_long_tail_recipe_with_every_augmentation_writes_the_report(tmp_path):
    """LDAM-DRW on a long-tailed digits split with RRC, RandAugment, cutout, erasing, mixup and
    CutMix in the step, TTA in evaluation: it trains, and writes the confusion report."""
    config = tiny_config(
        num_epochs=2,
        imbalance_ratio=10.0,
        **{
            "loss.name": "ldam",
            "loss.drw_epoch": 1,
            "augment.random_resized_crop": True,
            "augment.rrc_scale": (0.5, 1.0),
            "augment.rand_augment_n": 2,
            "augment.cutout": 3,
            "augment.random_erasing": 0.25,
            "augment.mixup_alpha": 0.2,
            "augment.cutmix_alpha": 1.0,
            "tta.flip": True,
            "tta.scales": (1.25,),
        },
    )
    result = train_and_evaluate(config, str(tmp_path))
    assert result["eval/accuracy"] > 0.15  # Chance is 0.1; 2 epochs of 8x8 under all of these.
    assert 0 <= result["eval/f1_macro"] <= 1
    assert 0 <= result["eval/few_shot_accuracy"] <= 1
    with open(tmp_path / "eval_report.json") as f:
        report = json.load(f)
    confusion = np.asarray(report["confusion"])
    assert confusion.shape == (10, 10) and confusion.sum() == 360  # The test split stays whole.
    counts = report["train_counts"]
    assert max(counts) / min(counts) == pytest.approx(10, rel=0.1)
    assert (tmp_path / "confusion.png").stat().st_size > 1000
    assert np.trace(confusion) / 360 == pytest.approx(result["eval/accuracy"])


def test_mixup_loss_is_the_lam_weighted_pair_of_losses():
    """With mixing, the step's loss is lam * L(y) + (1 - lam) * L(y[partner])."""
    from cvjax import models
    from cvjax.train import steps
    from cvjax.train.state import create_train_state

    model = models.create("resnet8", num_classes=10, in_channels=1)
    state = create_train_state(model, optax.sgd(0.1), jax.random.PRNGKey(0), (1, 8, 8, 1))
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 8, 8, 1))
    y = jnp.array([0, 1, 2, 3])
    partner = jnp.array([3, 2, 1, 0])
    task = tasks.Task()
    loss, _, (outputs, per_example, _) = steps.loss_and_grads(
        model, state, x, y, jax.random.PRNGKey(2), task=task, mixed=(partner, 0.3)
    )
    ce = task.per_example_loss(outputs, y, 0)
    expected = 0.3 * ce + 0.7 * task.per_example_loss(outputs, y[partner], 0)
    np.testing.assert_allclose(per_example, expected, rtol=1e-5)
    np.testing.assert_allclose(loss, expected.mean(), rtol=1e-5)


def test_ema_tracks_the_params_and_linear_probe_keeps_batch_stats():
    """One real step: the EMA is decay * old + (1 - decay) * new params, and with
    keep_batch_stats (linear probe) the BatchNorm statistics are those it started with."""
    from cvjax import data, models
    from cvjax.train import steps
    from cvjax.train.state import create_train_state

    digits = data.load("digits", "train")
    x, y = jnp.asarray(digits.images[:16]), jnp.asarray(digits.labels[:16])
    model = models.create("resnet8", num_classes=10, in_channels=1)
    state = create_train_state(model, optax.sgd(0.1), jax.random.PRNGKey(0), (1, 8, 8, 1), ema=True)
    cfg = steps.StepConfig(16, 1, (100.0,), (100.0,), ema_decay=0.9, keep_batch_stats=True)
    new, sums = jax.jit(lambda s: steps.train_on_batch(model, optax.sgd(0.1), cfg, s, x, y))(state)
    expected = jax.tree.map(lambda e, p: 0.9 * e + 0.1 * p, state.ema_params, new.params)
    chex.assert_trees_all_close(new.ema_params, expected, rtol=1e-5, atol=1e-7)
    assert not jax.tree.all(jax.tree.map(jnp.array_equal, new.params, state.params))
    chex.assert_trees_all_equal(new.batch_stats, state.batch_stats)
    assert float(sums["count"]) == 16
