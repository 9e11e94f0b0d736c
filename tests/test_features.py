"""Embeddings and k-NN: GeM pooling, the k-NN classifier, and the CLI on a trained digits run."""

import functools
import json
import os
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from cvjax import data, features, models
from cvjax.data import augment
from cvjax.errors import UserError
from cvjax.models.features import forward_features, gem_pool, pooled_features
from cvjax.train import loop
from tests.conftest import REPO, tiny_config

# The trained run that this file and tests/test_explain.py share: ResNet-8, 2 epochs of digits
# upscaled to 16x16, so that the last map is 4x4 rather than 2x2. The CLI's config must match it.
CLI_CONFIG = [
    "--config=configs/resnet.py:model=resnet8,dataset=digits",
    "--config.image_size=16",
    "--config.batch_size=32",
]


def trained_config():
    return tiny_config(image_size=16)


def trained_workdir(tmp_path_factory) -> str:
    """Trains the shared run once per test session and returns its workdir."""
    workdir = tmp_path_factory.getbasetemp() / "digits_resnet8_16px"
    done = workdir / "trained.json"
    if not done.exists():
        result = loop.train_and_evaluate(trained_config(), str(workdir))
        done.write_text(json.dumps(result))
    return str(workdir)


def random_variables(model: nn.Module, x: jax.Array, seed: int = 0) -> dict:
    """Variables of the model's shapes drawn with numpy: no initialization program to compile.

    Kernels are N(0, 1 / fan-in), BatchNorm scales and variances 1, the rest N(0, 0.1^2).
    """
    shapes = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), x)
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = jax.tree_util.keystr(path)
        if name.endswith("['var']") or name.endswith("['scale']"):
            return np.ones(leaf.shape, leaf.dtype)
        if len(leaf.shape) >= 2:
            return (rng.normal(size=leaf.shape) / np.sqrt(np.prod(leaf.shape[:-1]))).astype(
                leaf.dtype
            )
        return (0.1 * rng.normal(size=leaf.shape)).astype(leaf.dtype)

    return jax.tree_util.tree_map_with_path(draw, shapes)


def run_cli(module: str, workdir: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *CLI_CONFIG, f"--workdir={workdir}", *args],
        cwd=REPO,
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_gem_pool_is_the_generalized_mean():
    x = jax.random.uniform(jax.random.PRNGKey(0), (2, 3, 4, 5))
    gem = jax.jit(gem_pool, static_argnames="p")
    expected = np.mean(np.asarray(x, np.float64) ** 3, axis=(1, 2)) ** (1 / 3)
    chex.assert_trees_all_close(gem(x), expected, rtol=1e-5)
    chex.assert_trees_all_close(gem(x, p=1.0), np.mean(x, axis=(1, 2)), rtol=1e-5)
    mean, high, peak = np.mean(x, (1, 2)), gem(x, p=200.0), np.max(x, (1, 2))
    assert np.all((mean <= gem(x)) & (gem(x) <= high) & (high <= peak + 1e-6))
    chex.assert_trees_all_close(high, peak, rtol=0.02)  # p -> inf is max pooling.
    # Negative activations are clamped at eps, so the root is defined.
    chex.assert_trees_all_close(gem(-jnp.ones((1, 2, 2, 3))), jnp.full((1, 3), 1e-6))


def test_pooled_features_pool_the_pre_logits_map():
    model = models.create("resnet8", num_classes=10, in_channels=1)
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 16, 16, 1))
    variables = random_variables(model, x)

    @jax.jit
    def everything(variables, x):
        pooled = {
            pool: pooled_features(model, variables, x, pool) for pool in ("avg", "gem", "max")
        }
        return pooled, forward_features(model.clone(global_pool=False), variables, x)

    pooled, feature_map = everything(variables, x)
    assert feature_map.shape == (2, 4, 4, 64)
    # "avg" is the classifier's own input, which for a ResNet is the map's mean.
    chex.assert_trees_all_close(pooled["avg"], feature_map.mean((1, 2)), atol=1e-6)
    chex.assert_trees_all_close(pooled["gem"], gem_pool(feature_map))
    chex.assert_trees_all_close(pooled["max"], feature_map.max((1, 2)))
    with pytest.raises(UserError, match="unknown pooling 'mean'"):
        pooled_features(model, variables, x, "mean")
    # VGG's fc6 needs its adaptive pooling at 32x32: without it the map would be empty.
    vgg = models.create("vgg11", num_classes=10)
    x = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    shapes = jax.eval_shape(functools.partial(vgg.init, train=False), jax.random.key(0), x)
    with pytest.raises(UserError, match="use pool='avg'"):
        jax.eval_shape(functools.partial(pooled_features, vgg, pool="gem"), shapes, x)
    assert jax.eval_shape(functools.partial(pooled_features, vgg), shapes, x).shape == (1, 4096)


def test_knn_majority_vote_breaks_ties_by_summed_similarity():
    train_x = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.1]])
    train_y = np.array([0, 1, 2])
    # Both queries tie 1:1 between classes 0 and 1 at k=2; the more similar class wins, where
    # breaking the tie by class index would give 0 twice.
    test_x = np.array([[0.6, 0.8], [0.8, 0.6]])
    result = features.knn_accuracy(train_x, train_y, test_x, np.array([1, 0]), ks=(1, 2, 3))
    assert result == {"knn/accuracy@1": 1.0, "knn/accuracy@2": 1.0, "knn/accuracy@3": 1.0}
    # Cosine, not Euclidean: scale does not matter.
    scaled = features.knn_accuracy(train_x * 100, train_y, test_x, np.array([1, 0]), ks=(1,))
    assert scaled["knn/accuracy@1"] == 1.0


def _reference_knn(train, train_y, test, test_y, k):
    predictions = []
    for query in test:
        similarity = train @ query
        nearest = np.argsort(-similarity, kind="stable")[:k]
        votes = np.bincount(train_y[nearest], minlength=3)
        mass = np.bincount(train_y[nearest], weights=similarity[nearest], minlength=3)
        mass[votes < votes.max()] = -np.inf
        predictions.append(np.argmax(mass))
    return float(np.mean(np.array(predictions) == test_y))


def test_knn_in_chunks_matches_a_direct_computation(monkeypatch):
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 8))
    train_y, test_y = rng.integers(0, 3, 300), rng.integers(0, 3, 50)
    train_x = centers[train_y] + rng.normal(size=(300, 8))
    test_x = centers[test_y] + rng.normal(size=(50, 8))
    monkeypatch.setattr(features, "_CHUNK_FLOATS", 300 * 7)  # Chunks of 7: the last is padded.
    result = features.knn_accuracy(train_x, train_y, test_x, test_y, ks=(1, 4, 15))
    train, test = features.prepare(train_x, test_x)
    for k in (1, 4, 15):
        expected = _reference_knn(train, train_y, test, test_y, k)
        assert result[f"knn/accuracy@{k}"] == pytest.approx(expected)
    assert result["knn/accuracy@15"] > 0.6


def test_centering_and_pca_whitening():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 5)) + 3.0
    train, _ = features.prepare(x, x[:3], center=True)  # SimpleShot's CL2N.
    centered = x - x.mean(axis=0)
    chex.assert_trees_all_close(
        train, centered / np.linalg.norm(centered, axis=1, keepdims=True), atol=1e-6
    )

    # The class is a small signal in one direction; three others carry large nuisance variance.
    # Cosine k-NN is at chance until PCA-whitening gives every direction unit variance.
    def sample(n):
        y = rng.integers(0, 2, n)
        x = np.where(y == 1, 0.05, -0.05)[:, None] * np.eye(4)[0]
        x = x + rng.normal(size=(n, 4)) * [0.01, 3.0, 3.0, 3.0] + [0, 0, 0, 10.0]
        return x, y

    train_x, train_y = sample(400)
    test_x, test_y = sample(200)
    plain = features.knn_accuracy(train_x, train_y, test_x, test_y, ks=(5,))
    whitened = features.knn_accuracy(train_x, train_y, test_x, test_y, ks=(5,), pca=4)
    assert plain["knn/accuracy@5"] < 0.7 and whitened["knn/accuracy@5"] > 0.95
    with pytest.raises(UserError, match="lower --pca"):
        features.prepare(train_x, test_x, pca=5)
    with pytest.raises(UserError, match="k must be between 1 and 400"):
        features.knn_accuracy(train_x, train_y, test_x, test_y, ks=(401,))


def test_export_rejects_bad_requests_before_loading_anything(tmp_path):
    with pytest.raises(UserError, match="k-NN needs both splits"):
        features.export(trained_config(), str(tmp_path), splits=["test"], ks=(1,))
    with pytest.raises(UserError, match="unknown split 'val'"):
        features.export(trained_config(), str(tmp_path), splits=["val"], ks=())
    with pytest.raises(UserError, match="unknown pooling 'sum'"):
        features.export(trained_config(), str(tmp_path), pool="sum")
    with pytest.raises(UserError, match="no checkpoint in"):
        features.export(trained_config(), str(tmp_path))


def test_cli_writes_embeddings_and_knn_of_a_trained_model(tmp_path_factory):
    workdir = trained_workdir(tmp_path_factory)
    output = os.path.join(workdir, "emb", "features.npz")
    run = run_cli("cvjax.features", workdir, "--knn=1,5", "--center", f"--output={output}")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "knn/accuracy@1" in run.stderr and "knn/accuracy@1" in run.stdout

    with np.load(output, allow_pickle=False) as saved:  # Plain arrays only.
        arrays = dict(saved)
    train = data.load("digits", "train", image_size=16)
    test = data.load("digits", "test", image_size=16)
    assert arrays["train_features"].shape == (len(train), 64)
    assert arrays["test_features"].dtype == np.float32
    np.testing.assert_array_equal(arrays["train_labels"], train.labels)
    np.testing.assert_array_equal(arrays["test_labels"], test.labels)
    assert str(arrays["pool"]) == "avg" and int(arrays["step"]) == 2 * (1437 // 32)

    with open(os.path.join(workdir, "knn.json")) as f:
        report = json.load(f)
    assert report["center"] is True and report["step"] == int(arrays["step"])
    assert report["knn/accuracy@1"] > 0.5  # Ten classes: chance is 0.1.
    train_split = arrays["train_features"], arrays["train_labels"]
    test_split = arrays["test_features"], arrays["test_labels"]
    recomputed = features.knn_accuracy(*train_split, *test_split, ks=(1, 5), center=True)
    assert recomputed["knn/accuracy@5"] == pytest.approx(report["knn/accuracy@5"])

    # The API gives the CLI's embeddings, from uint8 images through the experiment's
    # normalization, or from normalized images through the model.
    exp, state = features.restore(trained_config(), workdir)
    exp.checkpoints.close()
    images, variables = test.images[:20], state.variables()
    from_uint8 = features.extract(exp, variables, images, batch_size=8)
    np.testing.assert_allclose(from_uint8, arrays["test_features"][:20], rtol=1e-5, atol=1e-6)
    x = np.asarray(augment.normalize(images, exp.step_config.mean, exp.step_config.std))
    from_model = features.extract(exp.model, variables, x)
    np.testing.assert_allclose(from_model, arrays["test_features"][:20], rtol=1e-5, atol=1e-6)
    # The last map is post-ReLU, where the generalized mean (p = 3) bounds the mean from above.
    gem = features.extract(exp.model, variables, x, pool="gem")
    assert np.all(gem >= from_model - 1e-6) and np.any(gem > from_model + 1e-3)


def test_knn_flag_must_list_integers():
    assert features.parse_ks(["1", "5"]) == [1, 5]
    with pytest.raises(UserError, match="--knn=one must list integers"):
        features.parse_ks(["one"])
