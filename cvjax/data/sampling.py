"""The example order of an epoch: a shuffle, or class-aware sampling for long-tailed data.

Kang et al. 2020 ("Decoupling Representation and Classifier for Long-Tailed Recognition",
Sec. 3.1) sample class k with probability p_k = n_k^q / sum_j n_j^q and then an example of that
class uniformly: q = 1 is instance-balanced (the ordinary shuffle), q = 0 class-balanced, and
q = 1/2 square-root sampling. Every order is a pure function of (rng, epoch), so a resumed run
replays it exactly, and has as many examples as the training set (class-aware modes draw with
replacement).
"""

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from cvjax.errors import UserError, unknown_name

# Mode -> the exponent q of p_k ∝ n_k^q; "uniform" is a permutation (each example once).
SAMPLING_EXPONENTS = {"uniform": 1.0, "class_balanced": 0.0, "sqrt": 0.5}


def class_probabilities(counts: jax.Array, q: float) -> jax.Array:
    """p_k ∝ n_k^q over the classes that have examples (an empty class is never drawn)."""
    counts = jnp.asarray(counts, jnp.float32)
    weights = jnp.where(counts > 0, counts**q, 0.0)
    return weights / weights.sum()


def shuffle(rng: jax.Array, epoch: jax.Array, num_examples: int) -> jax.Array:
    """Each example once, in an order drawn from (rng, epoch)."""
    return jax.random.permutation(jax.random.fold_in(rng, epoch), num_examples)


def epoch_indices(
    rng: jax.Array, epoch: jax.Array, labels: jax.Array, mode: str, num_classes: int
) -> jax.Array:
    """The N example indices of epoch `epoch` (N = len(labels)); jit-able, `mode` and
    `num_classes` static.

    "uniform" is `shuffle` (each example once); the class-aware modes draw N (class, member)
    pairs: the class by `class_probabilities`, then a member of it uniformly (Kang et al.
    2020's two-stage class-balanced sampling).
    """
    if mode not in SAMPLING_EXPONENTS:
        raise unknown_name("sampling", mode, SAMPLING_EXPONENTS)
    n = labels.shape[0]
    if mode == "uniform":
        return shuffle(rng, epoch, n)
    class_key, member_key = jax.random.split(jax.random.fold_in(rng, epoch))
    counts = jnp.bincount(labels, length=num_classes)
    p = class_probabilities(counts, SAMPLING_EXPONENTS[mode])
    classes = jax.random.choice(class_key, num_classes, (n,), replace=True, p=p)
    member = jax.random.randint(member_key, (n,), 0, counts[classes])
    by_class = jnp.argsort(labels, stable=True)  # Class k's examples are a contiguous run.
    first = jnp.cumsum(counts) - counts
    return by_class[first[classes] + member]


def make_epoch_fn(
    mesh: Mesh,
    num_examples: int,
    labels: np.ndarray | None = None,
    mode: str = "uniform",
    num_classes: int = 0,
) -> Callable[[jax.Array, int], jax.Array]:
    """`order(rng, epoch)`: the jitted, replicated `epoch_indices` for a training set.

    `labels` (host array) is needed for every mode but "uniform" (streamed TFDS data has none).
    """
    if mode not in SAMPLING_EXPONENTS:
        raise unknown_name("sampling", mode, SAMPLING_EXPONENTS)
    replicated = NamedSharding(mesh, PartitionSpec())
    if mode == "uniform" or labels is None:
        if mode != "uniform":
            raise UserError(
                f"sampling={mode!r} needs the labels of every training example, which this "
                "streamed dataset does not list; set --config.sampling=uniform or stream=False"
            )
        fn = functools.partial(shuffle, num_examples=num_examples)
        return jax.jit(fn, out_shardings=replicated)
    labels = np.asarray(labels, np.int32)
    on_device = jax.make_array_from_callback(labels.shape, replicated, lambda i: labels[i])
    jitted = jax.jit(
        functools.partial(epoch_indices, mode=mode, num_classes=num_classes),
        out_shardings=replicated,
    )
    return lambda rng, epoch: jitted(rng, epoch, on_device)
