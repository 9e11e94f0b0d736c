"""Weight-sharing NAS on NB201: the SPOS supernet (cvjax/nas/supernet.py) and first-order DARTS
(cvjax/nas/darts.py), trained for real on digits at tiny size (width 8, one cell per stage, 8x8
images)."""

import json
import os

import jax
import numpy as np
import pytest

from cvjax.errors import UserError
from cvjax.nas import darts as darts_lib
from cvjax.nas import supernet
from cvjax.nas.nb201 import OPS, NB201Space
from tests.conftest import tiny_config

SPACE = NB201Space()
TINY = {"width": 8, "cells": 1, "batch_size": 32, "learning_rate": 0.1, "eval_batches": 4}
ARCHS = (
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|",
    "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|none~1|avg_pool_3x3~2|",
    "|skip_connect~0|+|none~0|nor_conv_3x3~1|+|none~0|skip_connect~1|nor_conv_1x1~2|",
)


def spos_config(**supernet_keys):
    c = tiny_config()
    c.holdout = 256  # 1,181 of digits' 1,437 training images are trained on: 36 steps/epoch.
    c.supernet = supernet.supernet_defaults()
    c.supernet.update({"epochs": 3, **TINY, **supernet_keys})
    return c


def darts_config(epochs: int):
    c = tiny_config()
    c.holdout, c.train_examples = 256, 256  # 8 steps per epoch.
    c.darts = darts_lib.darts_defaults()
    # A constant schedule does not depend on the run's length, so 1 + 1 epochs = 2 epochs.
    c.darts.update({"epochs": epochs, "schedule": "constant", **TINY})
    return c


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def forbid_training(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("a finished run trained again")

    monkeypatch.setattr(supernet.Supernet, "run_epoch", fail)


@pytest.fixture(scope="module")
def spos(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("spos"))
    estimator = supernet.SupernetEstimator(spos_config(), SPACE)
    estimator.prepare(workdir)
    return workdir, estimator


def test_sample_architecture_is_uniform_one_hot():
    keys = jax.random.split(jax.random.PRNGKey(0), 2000)
    weights = np.asarray(jax.vmap(supernet.sample_architecture)(keys))
    assert weights.shape == (2000, 6, 5)
    np.testing.assert_array_equal(weights.sum(-1), 1.0)
    frequency = weights.mean(axis=(0, 1))
    np.testing.assert_allclose(frequency, 0.2, atol=0.02)  # 12,000 draws: std 0.004.


def test_derive_and_arch_weights():
    alpha = np.zeros((6, 5))
    alpha[:, 0] = 2.0  # "none" strongest everywhere,
    alpha[:, 3] = 1.0  # then nor_conv_3x3.
    assert darts_lib.derive(alpha) == "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
    assert set(SPACE.to_choices(darts_lib.derive(alpha, exclude_none=True))) == {3}
    weights = np.asarray(supernet.arch_weights(ARCHS[1]))
    np.testing.assert_array_equal(weights.sum(1), 1.0)
    expected = ["avg_pool_3x3", "nor_conv_1x1", "skip_connect", "nor_conv_1x1", "none"]
    assert [OPS[i] for i in weights.argmax(1)] == [*expected, "avg_pool_3x3"]


def test_spos_training_reduces_the_loss(spos):
    workdir, estimator = spos
    records = read_jsonl(os.path.join(workdir, "supernet", "metrics.jsonl"))
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert records[0]["train/loss"] > 2.2  # Near chance (ln 10 = 2.30) while it starts.
    assert records[-1]["train/loss"] < records[0]["train/loss"] - 0.15
    scores = [estimator.evaluate(arch, "")["score"] for arch in ARCHS]
    assert max(scores) > 25.0  # Chance is 10%; 128 validation images.


def test_one_compile_serves_every_architecture(spos):
    _, estimator = spos
    results = [estimator.evaluate(arch, "") for arch in ARCHS]
    assert len({r["val/loss"] for r in results}) == 3  # Three different networks...
    assert estimator.net.eval_fn._cache_size() == 1  # ...from one compiled evaluation.


def test_evaluate_is_deterministic_and_validated(spos):
    _, estimator = spos
    assert estimator.evaluate(ARCHS[0], "") == estimator.evaluate(ARCHS[0], "")
    with pytest.raises(UserError, match="NB201"):
        estimator.evaluate("|conv~0|", "")


def test_finished_supernet_resumes_without_training(spos, monkeypatch):
    workdir, estimator = spos
    forbid_training(monkeypatch)
    again = supernet.SupernetEstimator(spos_config(), SPACE)
    again.prepare(workdir)
    assert again.evaluate(ARCHS[0], "") == estimator.evaluate(ARCHS[0], "")
    assert len(read_jsonl(os.path.join(workdir, "supernet", "metrics.jsonl"))) == 3
    with pytest.raises(UserError, match="width=8, not 4"):
        supernet.SupernetEstimator(spos_config(width=4), SPACE).prepare(workdir)


def test_bad_settings_are_user_errors(tmp_path):
    config = spos_config()
    config.holdout = 0
    with pytest.raises(UserError, match="--config.holdout"):
        supernet.SupernetEstimator(config, SPACE).prepare(str(tmp_path))
    config = spos_config()
    config.supernet.epoch = 3
    with pytest.raises(UserError, match="no key epoch"):
        supernet.SupernetEstimator(config, SPACE)


@pytest.fixture(scope="module")
def darts(tmp_path_factory):
    fresh = str(tmp_path_factory.mktemp("darts_fresh"))
    resumed = str(tmp_path_factory.mktemp("darts_resumed"))
    supernet.run_darts(darts_config(2), fresh)
    supernet.run_darts(darts_config(1), resumed)  # Stopped after one epoch...
    supernet.run_darts(darts_config(2), resumed)  # ...and continued.
    return fresh, resumed


def test_darts_writes_trials_and_best(darts):
    fresh, _ = darts
    trials = read_jsonl(os.path.join(fresh, "trials.jsonl"))
    assert [t["trial"] for t in trials] == [0, 1]
    for t in trials:
        assert SPACE.validate(t["arch"]) == t["arch"]
        assert 0.0 <= t["score"] <= 100.0
        assert t["metrics"]["val/accuracy"] * 100 == pytest.approx(t["score"])
        assert 0.0 <= t["metrics"]["val/mixed_accuracy"] <= 1.0
        assert set(t["cost"]) == {"params", "gmacs"} and t["wall_s"] > 0
        assert np.shape(t["alpha"]) == (6, 5)
    with open(os.path.join(fresh, "best.json")) as f:
        best = json.load(f)
    assert best["space"] == "nb201" and best["strategy"] == "darts"
    assert (best["arch"], best["score"], best["alpha"]) == (
        trials[-1]["arch"],
        trials[-1]["score"],
        trials[-1]["alpha"],
    )
    assert os.path.exists(os.path.join(fresh, "best_cell.png"))


def test_darts_moves_alpha(darts):
    fresh, _ = darts
    trials = read_jsonl(os.path.join(fresh, "trials.jsonl"))
    init = darts_lib.initial_alpha(0, darts_lib.darts_defaults().alpha_init_std)
    first, last = np.array(trials[0]["alpha"]), np.array(trials[1]["alpha"])
    # Adam moves each alpha by up to lr = 3e-4 per step: 8 steps per epoch.
    assert np.abs(first - init).max() > 1e-3
    assert np.abs(last - first).max() > 1e-3


def test_darts_resume_equals_an_uninterrupted_run(darts):
    fresh, resumed = darts
    a = read_jsonl(os.path.join(fresh, "trials.jsonl"))
    b = read_jsonl(os.path.join(resumed, "trials.jsonl"))
    assert [t["trial"] for t in b] == [0, 1]
    for x, y in zip(a, b, strict=True):
        assert x["arch"] == y["arch"]
        assert x["score"] == pytest.approx(y["score"])
        np.testing.assert_allclose(x["alpha"], y["alpha"], rtol=1e-5, atol=1e-7)


def test_finished_darts_reruns_nothing_and_drops_unsaved_trials(darts, monkeypatch):
    fresh, _ = darts
    path = os.path.join(fresh, "trials.jsonl")
    before = read_jsonl(path)
    with open(path, "a") as f:  # A trial written by a run killed before its checkpoint.
        f.write(json.dumps({**before[-1], "trial": 2}) + "\n")
    forbid_training(monkeypatch)
    result = supernet.run_darts(darts_config(2), fresh)
    assert read_jsonl(path) == before
    assert result["arch"] == before[-1]["arch"]
