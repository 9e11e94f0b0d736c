"""Long-tailed splits (CIFAR-LT profile) and class-aware sampling (Kang et al. 2020)."""

import jax
import numpy as np
import pytest
from jax.sharding import Mesh

from cvjax.data import sampling, sources
from cvjax.errors import UserError


@pytest.fixture(scope="module")
def digits():
    return sources.load("digits", "train")


def test_long_tailed_follows_the_exponential_profile(digits):
    lt = sources.long_tailed(digits, 100, seed=0)
    counts = np.bincount(lt.labels, minlength=10)
    n_max = np.bincount(digits.labels).min()
    expected = [max(1, int(n_max * 100 ** (-k / 9))) for k in range(10)]
    assert counts.tolist() == expected
    assert counts[0] == n_max and counts[-1] == 1
    assert abs(counts[0] / 100 - counts[-1]) < 1  # largest / smallest = 100 within rounding.
    assert np.all(np.diff(counts) <= 0)
    # A subset of the source, in source order, reproducible per seed and different across seeds.
    rows = {row.tobytes() for row in digits.images}
    assert all(row.tobytes() in rows for row in lt.images)
    again = sources.long_tailed(digits, 100, seed=0)
    np.testing.assert_array_equal(again.images, lt.images)
    other = sources.long_tailed(digits, 100, seed=1)
    assert np.bincount(other.labels).tolist() == expected
    assert not np.array_equal(other.images, lt.images)
    assert sources.long_tailed(digits, 0, seed=0) is digits  # Off: the split is untouched.
    with pytest.raises(UserError, match="must be >= 1"):
        sources.long_tailed(digits, 0.5)
    with pytest.raises(UserError, match="stream=False"):
        sources.long_tailed(object(), 10)


LABELS = np.repeat(np.arange(4), [800, 160, 32, 8]).astype(np.int32)


@pytest.mark.parametrize("mode,q", [("class_balanced", 0.0), ("sqrt", 0.5)])
def test_class_frequencies_approach_n_k_to_the_q(mode, q):
    counts = np.bincount(LABELS)
    fn = jax.jit(lambda rng, e: sampling.epoch_indices(rng, e, LABELS, mode, 4))
    draws = np.concatenate([np.asarray(fn(jax.random.PRNGKey(0), e)) for e in range(25)])
    assert draws.min() >= 0 and draws.max() < len(LABELS)
    freq = np.bincount(LABELS[draws], minlength=4) / len(draws)
    target = counts**q / np.sum(counts**q)
    np.testing.assert_allclose(freq, target, atol=0.01)  # 25,000 draws: std < 0.004.
    # Within a class every example is drawn alike: class 3's eight members near 1/8 each.
    members = draws[LABELS[draws] == 3]
    np.testing.assert_allclose(
        np.bincount(members - 992, minlength=8) / len(members), 1 / 8, atol=0.03
    )


def test_the_order_is_a_function_of_rng_and_epoch():
    mesh = Mesh(np.asarray(jax.devices()), ("data",))
    fn = sampling.make_epoch_fn(mesh, len(LABELS), LABELS, "class_balanced", 4)
    rng = jax.random.PRNGKey(3)
    first = np.asarray(fn(rng, 2))
    assert first.shape == (len(LABELS),)  # As many examples per epoch as the split has.
    np.testing.assert_array_equal(first, np.asarray(fn(rng, 2)))
    fresh = sampling.make_epoch_fn(mesh, len(LABELS), LABELS, "class_balanced", 4)
    np.testing.assert_array_equal(first, np.asarray(fresh(rng, 2)))  # A resumed run replays it.
    assert not np.array_equal(first, np.asarray(fn(rng, 3)))
    assert not np.array_equal(first, np.asarray(fn(jax.random.PRNGKey(4), 2)))


def test_uniform_is_the_engines_permutation():
    mesh = Mesh(np.asarray(jax.devices()), ("data",))
    rng = jax.random.PRNGKey(0)
    uniform = sampling.make_epoch_fn(mesh, len(LABELS), LABELS, "uniform", 4)(rng, 5)
    # The engine's shuffle before class-aware sampling existed: old runs resume unchanged.
    engine = jax.random.permutation(jax.random.fold_in(rng, 5), len(LABELS))
    np.testing.assert_array_equal(uniform, engine)
    np.testing.assert_array_equal(np.sort(uniform), np.arange(len(LABELS)))
    unlabeled = sampling.make_epoch_fn(mesh, len(LABELS))(rng, 5)
    np.testing.assert_array_equal(uniform, unlabeled)


def test_bad_modes_are_clear_errors():
    mesh = Mesh(np.asarray(jax.devices()), ("data",))
    with pytest.raises(UserError, match="did you mean class_balanced"):
        sampling.make_epoch_fn(mesh, 10, LABELS[:10], "class_balance", 4)
    with pytest.raises(UserError, match="sampling=uniform or stream=False"):
        sampling.make_epoch_fn(mesh, 10, None, "sqrt", 4)
