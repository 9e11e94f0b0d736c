"""Classification metrics, as sums over examples so that batches and devices add up exactly.

A metrics dict maps a name to a float32 scalar sum plus a "count"; `means` divides once at the
end, on the host, so an epoch's accuracy is exact whatever the batch size or padding.
"""

import jax
import jax.numpy as jnp


def classification_sums(
    logits: jax.Array, labels: jax.Array, loss: jax.Array, mask: jax.Array | None = None
) -> dict[str, jax.Array]:
    """Sums of loss, top-1 and (for more than 5 classes) top-5 correctness over unmasked rows."""
    if mask is None:
        mask = jnp.ones(labels.shape, jnp.float32)
    mask = mask.astype(jnp.float32)
    logits = logits.astype(jnp.float32)
    # Rank of the true class = number of classes with a strictly larger logit.
    true_logit = jnp.take_along_axis(logits, labels[:, None], axis=-1)
    rank = jnp.sum(logits > true_logit, axis=-1)
    sums = {
        "loss": jnp.sum(loss * mask),
        "accuracy": jnp.sum((rank < 1) * mask),
        "count": jnp.sum(mask),
    }
    if logits.shape[-1] > 5:
        sums["top5_accuracy"] = jnp.sum((rank < 5) * mask)
    return sums


def add(a: dict[str, jax.Array] | None, b: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """Adds two metric-sum dicts (None acts as zero)."""
    return b if a is None else jax.tree.map(jnp.add, a, b)


def means(sums: dict, prefix: str) -> dict[str, float]:
    """Host-side means, named "<prefix>/<metric>"."""
    sums = jax.device_get(sums)
    count = float(sums["count"])
    return {f"{prefix}/{k}": float(v) / count for k, v in sums.items() if k != "count"}
