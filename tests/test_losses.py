import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cvjax import losses
from cvjax.errors import UserError

RNG = np.random.default_rng(0)
LOGITS = RNG.normal(size=(8, 5)).astype(np.float32) * 3
LABELS = np.array([0, 1, 2, 3, 4, 0, 1, 2])
WEIGHTS = np.array([0.5, 1.0, 2.0, 1.5, 0.25], np.float32)


def np_log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def np_ce(logits, labels):
    return -np_log_softmax(logits.astype(np.float64))[np.arange(len(labels)), labels]


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_cross_entropy_default_is_unchanged_and_weights_scale_each_example():
    plain = losses.softmax_cross_entropy(LOGITS, LABELS)
    assert plain.shape == (8,) and plain.dtype == jnp.float32
    np.testing.assert_allclose(plain, np_ce(LOGITS, LABELS), rtol=1e-5)
    smooth = losses.softmax_cross_entropy(LOGITS, LABELS, 0.1)
    targets = np.full((8, 5), 0.1 / 5) + 0.9 * np.eye(5)[LABELS]
    np.testing.assert_allclose(smooth, -(targets * np_log_softmax(LOGITS)).sum(-1), rtol=1e-5)
    weighted = losses.softmax_cross_entropy(LOGITS, LABELS, weights=WEIGHTS)
    np.testing.assert_allclose(weighted, np_ce(LOGITS, LABELS) * WEIGHTS[LABELS], rtol=1e-5)


def test_weighted_mean_matches_pytorch_weighted_cross_entropy():
    torch = pytest.importorskip("torch")
    per_example = losses.softmax_cross_entropy(LOGITS, LABELS, weights=WEIGHTS)
    ours = losses.weighted_mean(per_example, LABELS, WEIGHTS)
    ref = torch.nn.functional.cross_entropy(
        torch.tensor(LOGITS), torch.tensor(LABELS), weight=torch.tensor(WEIGHTS)
    )
    np.testing.assert_allclose(ours, ref.item(), rtol=1e-5)
    np.testing.assert_allclose(losses.weighted_mean(per_example, LABELS), per_example.mean())


def test_focal_loss():
    np.testing.assert_allclose(
        losses.focal_loss(LOGITS, LABELS, gamma=0.0), np_ce(LOGITS, LABELS), rtol=1e-5
    )
    pt = np.exp(-np_ce(LOGITS, LABELS))
    expected = -WEIGHTS[LABELS] * (1 - pt) ** 2 * np.log(pt)
    got = losses.focal_loss(LOGITS, LABELS, gamma=2.0, weights=WEIGHTS)
    np.testing.assert_allclose(got, expected, rtol=1e-4)
    # A certain prediction (p_t == 1 in float32) keeps a finite gradient even for gamma < 1.
    confident = jnp.array([[200.0, 0.0, 0.0]])
    grad = jax.grad(lambda x: losses.focal_loss(x, jnp.array([0]), gamma=0.5).sum())(confident)
    assert np.isfinite(grad).all()


def test_class_balanced_weights():
    counts = np.array([5000, 500, 50, 5])
    np.testing.assert_allclose(losses.class_balanced_weights(counts, 0.0), np.ones(4))
    near_one = losses.class_balanced_weights(counts, 1 - 1e-9)
    inverse = (1 / counts) / (1 / counts).sum() * 4
    np.testing.assert_allclose(near_one, inverse, rtol=1e-5)
    # Hand computation for beta = 0.9: E_n = (1 - 0.9^n) / 0.1.
    effective = (1 - 0.9 ** np.array([1.0, 10.0])) / 0.1
    expected = (1 / effective) * 2 / (1 / effective).sum()
    np.testing.assert_allclose(losses.class_balanced_weights([1, 10], 0.9), expected, rtol=1e-6)
    w = losses.class_balanced_weights(counts, 0.9999)
    assert np.isclose(w.sum(), 4) and (np.diff(w) > 0).all()
    with pytest.raises(UserError, match="positive training count"):
        losses.class_balanced_weights([10, 0], 0.99)
    with pytest.raises(UserError, match="beta"):
        losses.class_balanced_weights([10, 1], 1.0)


def test_ldam_margins_and_loss():
    counts = np.array([1000, 100, 10])
    m = losses.ldam_margins(counts, max_margin=0.5)
    assert m.max() == pytest.approx(0.5) and m.argmax() == 2
    np.testing.assert_allclose(m[0] / m[1], (100 / 1000) ** 0.25, rtol=1e-6)
    np.testing.assert_allclose(m[1] / m[2], (10 / 100) ** 0.25, rtol=1e-6)
    zero = losses.ldam_loss(LOGITS, LABELS, np.zeros(5), scale=1.0)
    np.testing.assert_allclose(zero, losses.softmax_cross_entropy(LOGITS, LABELS), rtol=1e-6)
    margins = np.linspace(0.1, 0.5, 5).astype(np.float32)
    shifted = 30.0 * (LOGITS - margins[LABELS][:, None] * np.eye(5)[LABELS])
    got = losses.ldam_loss(LOGITS, LABELS, margins, scale=30.0, weights=WEIGHTS)
    np.testing.assert_allclose(got, np_ce(shifted, LABELS) * WEIGHTS[LABELS], rtol=1e-4, atol=1e-5)


def test_cosine_logits():
    features = RNG.normal(size=(4, 6)).astype(np.float32)
    kernel = RNG.normal(size=(6, 3)).astype(np.float32)
    expected = unit(features) @ unit(kernel.T).T
    np.testing.assert_allclose(losses.cosine_logits(features, kernel), expected, atol=1e-6)


def test_drw_weights_switch_on_a_traced_epoch():
    cb = jnp.asarray(losses.class_balanced_weights([100, 10, 1], 0.9999))
    fn = jax.jit(lambda epoch: losses.drw_weights(epoch, 160, cb))
    np.testing.assert_allclose(fn(jnp.int32(159)), np.ones(3))
    np.testing.assert_allclose(fn(jnp.int32(160)), cb)


def test_sigmoid_binary_cross_entropy():
    targets = (RNG.random((8, 5)) > 0.5).astype(np.float32)
    got = losses.sigmoid_binary_cross_entropy(LOGITS, targets)
    ref = optax.sigmoid_binary_cross_entropy(LOGITS, targets).mean(-1)
    np.testing.assert_allclose(got, ref, rtol=1e-5)
    pos_weight = np.array([1.0, 2.0, 3.0, 0.5, 1.0], np.float32)
    sig = 1 / (1 + np.exp(-LOGITS.astype(np.float64)))
    hand = -(pos_weight * targets * np.log(sig) + (1 - targets) * np.log(1 - sig)).mean(-1)
    got = losses.sigmoid_binary_cross_entropy(LOGITS, targets, pos_weight)
    np.testing.assert_allclose(got, hand, rtol=1e-5)


def test_regression_losses():
    pred = RNG.normal(size=(6, 3)).astype(np.float32) * 2
    target = RNG.normal(size=(6, 3)).astype(np.float32)
    np.testing.assert_allclose(losses.l2_loss(pred, target), ((pred - target) ** 2).mean(-1))
    for delta in (0.5, 1.0):
        ref = optax.huber_loss(pred, target, delta=delta).mean(-1)
        np.testing.assert_allclose(losses.huber_loss(pred, target, delta), ref, rtol=1e-6)
    assert losses.l2_loss(pred[:, 0], target[:, 0]).shape == (6,)


EMB = RNG.normal(size=(7, 4)).astype(np.float32)
EMB_LABELS = np.array([0, 0, 1, 1, 1, 2, 3])  # Classes 2 and 3 have no positive.


def np_distances(x, squared=False):
    x = unit(x.astype(np.float64))
    d2 = ((x[:, None] - x[None]) ** 2).sum(-1)
    return d2 if squared else np.sqrt(d2)


def test_contrastive_loss_matches_a_loop():
    d = np_distances(EMB)
    n = len(EMB)
    expected = np.zeros(n)
    for i, j in itertools.permutations(range(n), 2):
        same = EMB_LABELS[i] == EMB_LABELS[j]
        expected[i] += 0.5 * d[i, j] ** 2 if same else 0.5 * max(0.0, 1.0 - d[i, j]) ** 2
    expected /= n - 1
    got = losses.contrastive_loss(EMB, EMB_LABELS, margin=1.0)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("squared", [False, True])
def test_triplet_losses_match_brute_force(squared):
    d = np_distances(EMB, squared)
    margin, n = 0.5, len(EMB)
    hard, every = np.zeros(n), np.zeros(n)
    for a in range(n):
        pos = [p for p in range(n) if p != a and EMB_LABELS[p] == EMB_LABELS[a]]
        neg = [q for q in range(n) if EMB_LABELS[q] != EMB_LABELS[a]]
        if not pos:
            continue
        hard[a] = max(0.0, margin + max(d[a, pos]) - min(d[a, neg]))
        every[a] = np.mean([max(0.0, margin + d[a, p] - d[a, q]) for p in pos for q in neg])
    got = losses.triplet_loss(EMB, EMB_LABELS, margin, "batch_hard", squared)
    np.testing.assert_allclose(got, hard, rtol=1e-5, atol=1e-6)
    got = losses.triplet_loss(EMB, EMB_LABELS, margin, "batch_all", squared)
    np.testing.assert_allclose(got, every, rtol=1e-5, atol=1e-6)
    assert got[5] == 0 and got[6] == 0


def test_metric_losses_mask_rows_and_keep_gradients_finite():
    # Rows 0 and 1 are identical (distance 0); row 3 is padding.
    emb = jnp.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [5.0, 5.0]])
    labels = jnp.array([0, 1, 0, 1])
    mask = jnp.array([1.0, 1.0, 1.0, 0.0])

    def total(e):
        tri = losses.triplet_loss(e, labels, 0.2, mask=mask)
        con = losses.contrastive_loss(e, labels, 1.0, mask=mask)
        return tri.sum() + con.sum(), (tri, con)

    grads, (tri, con) = jax.jit(jax.grad(total, has_aux=True))(emb)
    assert np.isfinite(grads).all()
    assert tri[1] == 0 and tri[3] == 0 and con[3] == 0  # Row 1 has no unmasked positive.
    # Anchor 0: positive at distance sqrt(2), negative (row 1) at distance 0.
    np.testing.assert_allclose(tri[0], 0.2 + np.sqrt(2), rtol=1e-6)
    with pytest.raises(UserError, match="mining"):
        losses.triplet_loss(emb, labels, mining="semi_hard")


def test_all_losses_trace_under_jit():
    labels = jnp.asarray(LABELS)

    @jax.jit
    def all_losses(logits, epoch):
        w = losses.drw_weights(epoch, 2, jnp.asarray(WEIGHTS))
        outs = [
            losses.softmax_cross_entropy(logits, labels, 0.1, w),
            losses.focal_loss(logits, labels, 2.0, w),
            losses.ldam_loss(losses.cosine_logits(logits, jnp.eye(5)), labels, w, 30.0, w),
            losses.sigmoid_binary_cross_entropy(logits, logits > 0),
            losses.l2_loss(logits, logits * 0.5),
            losses.huber_loss(logits, logits * 0.5),
            losses.contrastive_loss(logits, labels),
            losses.triplet_loss(logits, labels, mining="batch_all"),
        ]
        return jnp.stack(outs)

    out = all_losses(jnp.asarray(LOGITS), jnp.int32(3))
    assert out.shape == (8, 8) and out.dtype == jnp.float32 and np.isfinite(out).all()
