"""Classification losses."""

import jax
import jax.numpy as jnp
import optax


def softmax_cross_entropy(
    logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0
) -> jax.Array:
    """Per-example cross-entropy with label smoothing (Szegedy et al. 2016, Sec. 7).

    `labels` are integer class ids; the smoothed target puts `1 - label_smoothing +
    label_smoothing / K` on the true class and `label_smoothing / K` on the others.
    """
    logits = logits.astype(jnp.float32)
    targets = jax.nn.one_hot(labels, logits.shape[-1], dtype=jnp.float32)
    if label_smoothing:
        targets = optax.smooth_labels(targets, label_smoothing)
    return optax.softmax_cross_entropy(logits, targets)
