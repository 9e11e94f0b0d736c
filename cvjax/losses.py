"""Losses, as pure jit-traceable functions that return one float32 value per example.

Every loss returns shape (N,); the step takes the mean (or `weighted_mean`). Class weights are a
(K,) array: example i is weighted by `weights[labels[i]]`. PyTorch's `reduction="mean"` with
`weight=` divides by the sum of those weights instead of N; `weighted_mean` reproduces it.

The host-side helpers that turn training-set class counts into weights or margins
(`class_balanced_weights`, `ldam_margins`) return NumPy arrays, computed once before training.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.typing import ArrayLike

from cvjax.errors import UserError


def _example_weights(labels: jax.Array, weights: ArrayLike | None) -> jax.Array | None:
    if weights is None:
        return None
    return jnp.asarray(weights, jnp.float32)[labels]


def _apply(per_example: jax.Array, labels: jax.Array, weights: ArrayLike | None) -> jax.Array:
    w = _example_weights(labels, weights)
    return per_example if w is None else per_example * w


def weighted_mean(
    per_example: jax.Array, labels: jax.Array, weights: ArrayLike | None = None
) -> jax.Array:
    """Mean of weighted per-example losses, divided by the sum of the examples' weights.

    This is PyTorch's `cross_entropy(..., weight=w, reduction="mean")` normalization (used by the
    LDAM-DRW reference code); with `weights=None` it is the plain mean.
    """
    w = _example_weights(labels, weights)
    return per_example.mean() if w is None else per_example.sum() / w.sum()


def softmax_cross_entropy(
    logits: jax.Array,
    labels: jax.Array,
    label_smoothing: float = 0.0,
    weights: ArrayLike | None = None,
) -> jax.Array:
    """Per-example cross-entropy with label smoothing (Szegedy et al. 2016, Sec. 7).

    `labels` are integer class ids; the smoothed target puts `1 - label_smoothing +
    label_smoothing / K` on the true class and `label_smoothing / K` on the others. With
    `weights`, the whole per-example loss is scaled by the true class's weight.
    """
    logits = logits.astype(jnp.float32)
    targets = jax.nn.one_hot(labels, logits.shape[-1], dtype=jnp.float32)
    if label_smoothing:
        targets = optax.smooth_labels(targets, label_smoothing)
    return _apply(optax.softmax_cross_entropy(logits, targets), labels, weights)


def focal_loss(
    logits: jax.Array, labels: jax.Array, gamma: float = 2.0, weights: ArrayLike | None = None
) -> jax.Array:
    """Softmax focal loss -alpha_t (1 - p_t)^gamma log p_t (Lin et al. 2017, Eq. 5).

    The multi-class form applies the modulating factor to the true class's softmax probability;
    alpha_t is `weights[label]`. `gamma=0` is the cross-entropy.
    """
    log_p = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    log_pt = jnp.take_along_axis(log_p, labels[:, None], axis=-1)[:, 0]
    # 1 - p_t via expm1 keeps precision when p_t is near 1; the floor keeps the gradient of
    # x**gamma finite (for gamma < 1) where p_t rounds to exactly 1.
    one_minus_pt = jnp.maximum(-jnp.expm1(log_pt), jnp.finfo(jnp.float32).tiny)
    return _apply(-(one_minus_pt**gamma) * log_pt, labels, weights)


def class_balanced_weights(counts: ArrayLike, beta: float) -> np.ndarray:
    """Class-balanced weights from the effective number of samples (Cui et al. 2019, Eq. 3-5).

    E_n = (1 - beta^n) / (1 - beta); the weights are proportional to 1 / E_n and sum to the
    number of classes K. `beta=0` gives uniform weights; as beta -> 1 they approach inverse class
    frequency. The paper uses beta in {0.9, 0.99, 0.999, 0.9999}.
    """
    counts = np.asarray(counts, np.float64)
    if counts.ndim != 1 or (counts <= 0).any():
        raise UserError("class-balanced weights need a positive training count for every class")
    if not 0.0 <= beta < 1.0:
        raise UserError(f"class-balanced beta must be in [0, 1), got {beta}")
    if beta == 0.0:
        effective = np.ones_like(counts)
    else:
        effective = -np.expm1(counts * np.log(beta)) / (1.0 - beta)
    weights = 1.0 / effective
    return (weights * len(counts) / weights.sum()).astype(np.float32)


def drw_weights(epoch: ArrayLike, drw_epoch: int, class_weights: ArrayLike) -> jax.Array:
    """Deferred re-weighting (Cao et al. 2019, Sec. 3.3): ones before `drw_epoch`, then
    `class_weights` (class-balanced with beta = 0.9999 in the paper). `epoch` may be traced."""
    class_weights = jnp.asarray(class_weights, jnp.float32)
    return jnp.where(jnp.asarray(epoch) >= drw_epoch, class_weights, jnp.ones_like(class_weights))


def ldam_margins(counts: ArrayLike, max_margin: float = 0.5) -> np.ndarray:
    """Label-distribution-aware margins m_j = C / n_j^(1/4) (Cao et al. 2019, Eq. 13), with C set
    so that the rarest class gets `max_margin` (0.5 in the paper)."""
    counts = np.asarray(counts, np.float64)
    if counts.ndim != 1 or (counts <= 0).any():
        raise UserError("LDAM margins need a positive training count for every class")
    margins = counts**-0.25
    return (margins * (max_margin / margins.max())).astype(np.float32)


def ldam_loss(
    logits: jax.Array,
    labels: jax.Array,
    margins: ArrayLike,
    scale: float = 30.0,
    weights: ArrayLike | None = None,
) -> jax.Array:
    """LDAM loss (Cao et al. 2019, Eq. 10): cross-entropy of `scale * (logits - m_y 1_y)`.

    Cao et al. apply it to cosine logits (`cosine_logits`: L2-normalized features times
    L2-normalized class vectors, in [-1, 1]), hence the scale s (30 in their code); with raw
    logits use `scale=1`.
    """
    logits = logits.astype(jnp.float32)
    one_hot = jax.nn.one_hot(labels, logits.shape[-1], dtype=jnp.float32)
    margin = jnp.asarray(margins, jnp.float32)[labels]
    shifted = scale * (logits - margin[:, None] * one_hot)
    return _apply(optax.softmax_cross_entropy(shifted, one_hot), labels, weights)


def _l2_normalize(x: jax.Array, axis: int, eps: float = 1e-12) -> jax.Array:
    norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=axis, keepdims=True))
    return x / jnp.maximum(norm, eps)


def cosine_logits(features: jax.Array, kernel: jax.Array) -> jax.Array:
    """Cosine similarities (N, K) of feature rows (N, D) and kernel columns (D, K), both
    L2-normalized: the "normed linear" classifier of LDAM (Cao et al. 2019, Sec. 4)."""
    features = _l2_normalize(features.astype(jnp.float32), axis=-1)
    kernel = _l2_normalize(kernel.astype(jnp.float32), axis=0)
    return jnp.matmul(features, kernel, precision=jax.lax.Precision.HIGHEST)


def sigmoid_binary_cross_entropy(
    logits: jax.Array, targets: jax.Array, pos_weight: ArrayLike | None = None
) -> jax.Array:
    """Multi-label loss: binary cross-entropy of each of the L logits, averaged over labels.

    `targets` is multi-hot (N, L). `pos_weight` (L,) scales the positive term, as PyTorch's
    `BCEWithLogitsLoss(pos_weight=...)`.
    """
    logits = logits.astype(jnp.float32)
    targets = targets.astype(jnp.float32)
    # log sigmoid(x) = -softplus(-x) and log(1 - sigmoid(x)) = -softplus(x), stable for any x.
    positive = targets * jax.nn.softplus(-logits)
    if pos_weight is not None:
        positive = positive * jnp.asarray(pos_weight, jnp.float32)
    negative = (1.0 - targets) * jax.nn.softplus(logits)
    return jnp.mean(positive + negative, axis=-1)


def _per_example_mean(x: jax.Array) -> jax.Array:
    return x.reshape(x.shape[0], -1).mean(axis=-1)


def l2_loss(pred: jax.Array, target: jax.Array) -> jax.Array:
    """Squared error, averaged over each example's outputs (the per-example MSE)."""
    diff = pred.astype(jnp.float32) - target.astype(jnp.float32)
    return _per_example_mean(jnp.square(diff))


def huber_loss(pred: jax.Array, target: jax.Array, delta: float = 1.0) -> jax.Array:
    """Huber loss (Huber 1964): 0.5 x^2 for |x| <= delta, else delta (|x| - 0.5 delta), averaged
    over each example's outputs (PyTorch's `HuberLoss`, optax's `huber_loss`)."""
    diff = jnp.abs(pred.astype(jnp.float32) - target.astype(jnp.float32))
    quadratic = jnp.minimum(diff, delta)
    return _per_example_mean(0.5 * quadratic**2 + delta * (diff - quadratic))


def _pair_distances(embeddings: jax.Array, squared: bool) -> jax.Array:
    """(N, N) Euclidean distances of the L2-normalized embeddings, with a finite gradient at 0."""
    e = _l2_normalize(embeddings.astype(jnp.float32), axis=-1)
    norms = jnp.sum(jnp.square(e), axis=-1)
    gram = jnp.matmul(e, e.T, precision=jax.lax.Precision.HIGHEST)
    d2 = jnp.maximum(norms[:, None] + norms[None, :] - 2.0 * gram, 0.0)
    d2 = d2 * (1.0 - jnp.eye(e.shape[0], dtype=d2.dtype))
    if squared:
        return d2
    positive = d2 > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, d2, 1.0)), 0.0)


def _pair_masks(labels: jax.Array, mask: jax.Array | None) -> tuple[jax.Array, jax.Array]:
    """Positive (same label, not itself) and negative pair masks among unmasked rows."""
    valid = jnp.ones(labels.shape, bool) if mask is None else mask.astype(bool)
    both = valid[:, None] & valid[None, :]
    same = labels[:, None] == labels[None, :]
    not_self = ~jnp.eye(labels.shape[0], dtype=bool)
    return same & not_self & both, ~same & both


def contrastive_loss(
    embeddings: jax.Array,
    labels: jax.Array,
    margin: float = 1.0,
    mask: jax.Array | None = None,
) -> jax.Array:
    """Contrastive loss (Hadsell et al. 2006, Eq. 4) over all pairs of the batch.

    A same-label pair costs D^2 / 2 and a different-label pair max(0, margin - D)^2 / 2, with D
    the Euclidean distance of the L2-normalized embeddings (so 0 <= D <= 2). Example i's loss is
    the mean over its pairs with every other unmasked example; masked rows (`mask` = 0) and a
    batch of one give 0.
    """
    d = _pair_distances(embeddings, squared=False)
    pos, neg = _pair_masks(labels, mask)
    pair = jnp.where(pos, 0.5 * d**2, 0.0) + jnp.where(
        neg, 0.5 * jnp.maximum(margin - d, 0.0) ** 2, 0.0
    )
    pairs = jnp.sum(pos | neg, axis=-1)
    return jnp.sum(pair, axis=-1) / jnp.maximum(pairs, 1)


def triplet_loss(
    embeddings: jax.Array,
    labels: jax.Array,
    margin: float = 0.2,
    mining: str = "batch_hard",
    squared: bool = False,
    mask: jax.Array | None = None,
) -> jax.Array:
    """Triplet loss max(0, margin + D(a, p) - D(a, n)) per anchor a, on L2-normalized embeddings.

    "batch_hard" (Hermans et al. 2017, Eq. 5): the farthest positive and the nearest negative of
    each anchor in the batch, with non-squared Euclidean D as in that paper. "batch_all"
    (Hermans et al. 2017, Eq. 6): the mean over all the anchor's (positive, negative) pairs.
    `squared=True` uses squared distances, as FaceNet (Schroff et al. 2015, Eq. 1, margin 0.2).
    An anchor without a positive or a negative in the batch (or masked by `mask`) gets 0: batches
    should hold several images per class (P x K sampling).
    """
    if mining not in ("batch_hard", "batch_all"):
        raise UserError(f"unknown triplet mining {mining!r}; use 'batch_hard' or 'batch_all'")
    d = _pair_distances(embeddings, squared)
    pos, neg = _pair_masks(labels, mask)
    has_triplet = jnp.any(pos, axis=-1) & jnp.any(neg, axis=-1)
    if mining == "batch_hard":
        hardest_pos = jnp.max(jnp.where(pos, d, -jnp.inf), axis=-1)
        hardest_neg = jnp.min(jnp.where(neg, d, jnp.inf), axis=-1)
        gap = jnp.where(has_triplet, hardest_pos - hardest_neg, 0.0)
        return jnp.where(has_triplet, jnp.maximum(margin + gap, 0.0), 0.0)
    # [a, p, n]: hinge of every triplet; only positives p and negatives n of anchor a count.
    hinge = jnp.maximum(margin + d[:, :, None] - d[:, None, :], 0.0)
    valid = pos[:, :, None] & neg[:, None, :]
    total = jnp.sum(jnp.where(valid, hinge, 0.0), axis=(1, 2))
    return total / jnp.maximum(jnp.sum(valid, axis=(1, 2)), 1)
