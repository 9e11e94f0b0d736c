"""airbench94 (Jordan 2024): the model, its whitening init, alternating flip, translate TTA,
lookahead, the optimizer's parameter groups, and a tiny run of configs/airbench.py."""

import importlib.util
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from cvjax import data, optim
from cvjax.data import augment, tta
from cvjax.errors import UserError
from cvjax.models import __main__ as table
from cvjax.models import airbench
from cvjax.train import lookahead, loop
from tests.conftest import REPO
from tests.test_main import run_main


def reference_param_count() -> int:
    """airbench94.py's `sum(p.numel() for p in make_net().parameters())`, from its layers:
    whitening conv 3 -> 24 (2x2, bias), three groups (conv3x3 in -> out, BN, conv3x3 out -> out,
    BN) of widths 64, 256, 256, linear 256 -> 10 without bias. Each BN holds weight and bias."""
    whiten = 24 * 3 * 2 * 2 + 24
    count, cin = whiten, 24
    for cout in (64, 256, 256):
        count += cout * cin * 9 + 2 * cout + cout * cout * 9 + 2 * cout
        cin = cout
    return count + 256 * 10


def test_parameter_count_matches_the_reference():
    # The reference counts each BatchNorm weight, frozen at 1; here BN has no scale at all.
    frozen_bn_weights = 2 * (64 + 256 + 256)
    assert reference_param_count() == 1_972_792
    assert table.count_params("airbench94") == reference_param_count() - frozen_bn_weights
    model, variables, shape = table.abstract_variables("airbench94")
    assert shape[1:] == (32, 32, 3)
    out = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((2, 32, 32, 3))), variables)
    assert out.shape == (2, 10)
    params = variables["params"]
    assert params["whiten"]["kernel"].shape == (2, 2, 3, 24)
    assert "bias" not in params["head"]["fc"]
    assert set(params["group1"]["norm1"]) == {"bias"}


def test_convolutions_start_as_identity_in_their_first_channels():
    kernel = airbench.dirac_init()(jax.random.PRNGKey(0), (3, 3, 4, 6))
    np.testing.assert_array_equal(kernel[1, 1, :, :4], np.eye(4))
    assert float(jnp.abs(kernel[:, :, :, :4]).sum()) == 4.0
    assert float(jnp.abs(kernel[:, :, :, 4:]).sum()) > 0


def test_whitened_patches_of_mnist_have_identity_covariance(shared_datasets):
    train = data.load("mnist", "train", data_dir=shared_datasets)
    images = train.images[:2000]
    mean, std = data.channel_stats(train)
    x = augment.normalize(images, mean, std)
    kernel = airbench.whitening_kernel(x, 2, eps=5e-4)
    assert kernel.shape == (2, 2, 1, 8)
    np.testing.assert_allclose(kernel[..., 4:], -kernel[..., :4])
    out = jax.lax.conv_general_dilated(
        x, kernel[..., :4], (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    flat = out.reshape(-1, 4)
    covariance = np.asarray(flat.T @ flat / flat.shape[0])
    patches = airbench.image_patches(x, 2)
    eigenvalues = np.linalg.eigvalsh(np.asarray(patches.T @ patches / patches.shape[0]))[::-1]
    # Exactly diag(lambda / (lambda + eps)), which is the identity to within eps / lambda.
    np.testing.assert_allclose(covariance, np.diag(eigenvalues / (eigenvalues + 5e-4)), atol=1e-4)
    np.testing.assert_allclose(covariance, np.eye(4), atol=0.02)


def test_init_whitening_needs_a_whitening_layer():
    with pytest.raises(UserError, match="init_whitening=False"):
        airbench.init_whitening(
            {"conv": {"kernel": jnp.zeros((3, 3, 1, 1))}}, np.zeros((1, 4, 4, 1))
        )


def test_alternating_flip_is_deterministic_and_flips_the_complement_each_epoch():
    n = 64
    images = jnp.broadcast_to(jnp.arange(4, dtype=jnp.uint8)[None, None, :, None], (n, 2, 4, 1))
    index = jnp.arange(100, 100 + n)
    rng = jax.random.PRNGKey(3)

    def flipped(epoch, idx=index):
        out = augment.alternating_flip(rng, images[: len(idx)], idx, epoch)
        return np.asarray(out[:, 0, 0, 0] == 3)

    first = flipped(0)
    assert 0.25 < first.mean() < 0.75
    np.testing.assert_array_equal(flipped(0), first)  # Deterministic.
    np.testing.assert_array_equal(flipped(1), ~first)  # The complement of the previous epoch.
    np.testing.assert_array_equal(flipped(2), first)
    np.testing.assert_array_equal(flipped(7), ~first)
    # A function of the example, not of its position in the batch.
    np.testing.assert_array_equal(flipped(0, index[::-1]), first[::-1])


def test_reflect_translation_keeps_the_image_content():
    images = jnp.arange(2 * 5 * 5, dtype=jnp.uint8).reshape(2, 5, 5, 1)
    out = augment.random_crop_flip(jax.random.PRNGKey(0), images, 2, False, "reflect")
    padded = np.pad(np.asarray(images), ((0, 0), (2, 2), (2, 2), (0, 0)), mode="reflect")
    for i in range(2):
        windows = [padded[i, y : y + 5, x : x + 5] for y in range(5) for x in range(5)]
        assert any(np.array_equal(out[i], w) for w in windows)
    with pytest.raises(UserError, match="pad mode"):
        augment.random_crop_flip(jax.random.PRNGKey(0), images, 2, False, "wrap")


def test_translate_tta_weights_six_views():
    x = jax.random.normal(jax.random.PRNGKey(0), (3, 6, 6, 2))
    weights = jnp.arange(6 * 6 * 2 * 4, dtype=jnp.float32).reshape(-1, 4) / 100

    def predict(images):
        return images.reshape(len(images), -1) @ weights

    views = [x, *tta.translations(x, 1)]
    np.testing.assert_allclose(views[1][:, 1:, 1:], x[:, :-1, :-1])  # Down-right.
    np.testing.assert_allclose(views[2][:, :-1, :-1], x[:, 1:, 1:])  # Up-left.
    views += [v[:, :, ::-1] for v in views]
    probs = [jax.nn.softmax(predict(v)) for v in views]
    w = np.array([2, 1, 1, 2, 1, 1]) / 8
    expected = np.log(sum(wi * p for wi, p in zip(w, probs, strict=True)))
    got = tta.tta_logits(predict, x, flip=True, translate=1)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_lookahead_pulls_every_k_steps_and_restarts_each_epoch():
    cfg = lookahead.LookaheadConfig(
        every=5, start_step=6, decay=0.5, decay_power=1.0, total_steps=40, steps_per_epoch=8
    )
    assert cfg.first_step == 10
    fast, slow = {"w": jnp.float32(0.0)}, {"w": jnp.float32(-1.0)}
    history = []
    for step in range(1, 25):
        fast = {"w": fast["w"] + 1.0}  # An optimizer step.
        fast, slow = lookahead.update(cfg, jnp.int32(step), fast, slow)
        history.append((float(fast["w"]), float(slow["w"])))
    assert history[8] == (9.0, -1.0)  # Nothing before the first pull.
    assert history[9] == (10.0, 10.0)  # Step 10: the slow weights start as a copy.
    # Step 15: rho = 0.5 * 15 / 40; slow <- rho * 10 + (1 - rho) * 15; fast restarts from it.
    rho = 0.5 * 15 / 40
    assert history[14] == pytest.approx((rho * 10 + (1 - rho) * 15,) * 2)
    # Step 16 ends epoch 2: fast restarts from slow without a pull.
    assert history[15][0] == pytest.approx(history[15][1]) == pytest.approx(history[14][1])


def test_freeze_from_and_bias_lr_groups_with_fixed_decay():
    config = ml_collections.ConfigDict(
        {
            "optimizer": {"name": "nesterov", "momentum": 0.0, "lr_groups_scale_decay": False},
            "learning_rate": 0.1,
            "weight_decay": 0.01,
            "num_epochs": 4,
            "schedule": {"name": "constant"},
            "freeze": "^k$",
            "freeze_from": ((1, "^b$"),),
            "lr_groups": (("^n$", 10.0),),
        }
    )
    tx, _ = optim.create_optimizer(config, steps_per_epoch=2)
    params = {"k": jnp.ones(()), "b": jnp.ones(()), "n": jnp.ones(()), "w": jnp.ones(())}
    grads = jax.tree.map(jnp.zeros_like, params)
    state = tx.init(params)
    moved = []
    for _ in range(3):
        updates, state = tx.update(grads, state, params)
        moved.append({k: float(v) for k, v in updates.items()})
    assert all(m["k"] == 0 for m in moved)  # Frozen.
    assert moved[0]["b"] != 0 and moved[1]["b"] != 0 and moved[2]["b"] == 0  # Stops at step 2.
    # With zero gradients, only weight decay moves "n", at the base rate despite its 10x lr.
    assert moved[0]["n"] == pytest.approx(moved[0]["w"]) == pytest.approx(-0.1 * 0.01)
    with pytest.raises(UserError, match="freeze_from"):
        bad = ml_collections.ConfigDict(config.to_dict())
        bad.freeze_from = ((1, "^nothing$"),)
        tx, _ = optim.create_optimizer(bad, steps_per_epoch=2)
        tx.init(params)


def test_airbench_config_trains_above_chance_with_translate_tta(tmp_path, monkeypatch):
    """configs/airbench.py through the CLI, 16 times narrower, on 32x32 digits; then a resumed
    Experiment keeps the checkpoint's whitening instead of recomputing it."""
    workdir = tmp_path / "airbench"
    run = run_main(
        "--config=configs/airbench.py:dataset=digits,epochs=3,base_width=4",
        "--config.image_size=32",
        "--config.batch_size=128",
        "--config.whitening_images=512",
        "--compilation_cache=",
        workdir=workdir,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    with open(workdir / "metrics.jsonl") as f:
        rows = [json.loads(line) for line in f]
    final = [r for r in rows if "eval/accuracy" in r][-1]
    assert final["step"] == 33  # 3 epochs of 1,437 // 128 = 11 steps.
    assert final["eval/accuracy"] > 0.3  # Chance is 0.1; 0.58 measured.
    with open(workdir / "config.json") as f:
        saved = json.load(f)
    assert saved["tta"]["translate"] == 1 and saved["augment"]["alternating_flip"]

    # A rerun resumes: the whitening comes from the checkpoint, and is the frozen initial one.
    config = load_config("configs/airbench.py", "dataset=digits,epochs=3,base_width=4")
    config.image_size, config.batch_size, config.whitening_images = 32, 128, 512

    def recompute(self, state):
        raise AssertionError("a resumed run recomputed the whitening")

    monkeypatch.setattr(loop.Experiment, "init_whitening", recompute)
    exp = loop.Experiment(config, str(workdir))
    state = exp.checkpoints.restore(exp.initial_state())
    exp.checkpoints.close()
    cfg = exp.step_config
    images = augment.normalize(exp.whitening_images, cfg.mean, cfg.std)
    # Eigenvectors are defined up to sign (eigh on another backend may pick the other one).
    np.testing.assert_allclose(
        np.abs(state.params["whiten"]["kernel"]),
        np.abs(airbench.whitening_kernel(images)),
        rtol=1e-3,
        atol=1e-3,
    )
    assert state.lookahead is not None


def load_config(path: str, arg: str) -> ml_collections.ConfigDict:
    spec = importlib.util.spec_from_file_location("config_under_test", os.path.join(REPO, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)
