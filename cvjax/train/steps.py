"""Jitted train and eval steps, data-parallel over a device mesh.

Parameters and state are replicated; each batch is sharded along the mesh axis "data". The batch
is gathered from device-resident arrays inside the step, so no image crosses the host per step;
XLA (GSPMD) inserts the gradient all-reduce, and BatchNorm sees global-batch statistics.
"""

import dataclasses
import functools
from collections.abc import Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from cvjax import losses, metrics
from cvjax.data import augment
from cvjax.errors import UserError
from cvjax.train.state import TrainState

DATA_AXIS = "data"


def create_mesh(devices=None) -> Mesh:
    """A 1-D mesh over all devices of all hosts (data parallelism)."""
    devices = np.asarray(jax.devices() if devices is None else devices)
    return Mesh(devices.reshape(-1), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
    if batch_size % mesh.size:
        raise UserError(
            f"batch_size={batch_size} is not divisible by the {mesh.size} devices; set "
            f"--config.batch_size to a multiple of {mesh.size}"
        )


def put_replicated(array: np.ndarray, mesh: Mesh) -> jax.Array:
    """A host array as one global array replicated on every device (works multi-host too)."""
    array = np.asarray(array)
    return jax.make_array_from_callback(array.shape, replicated(mesh), lambda index: array[index])


@dataclasses.dataclass(frozen=True)
class StepConfig:
    """What a step needs to know beyond the state: the batch layout and preprocessing."""

    batch_size: int
    steps_per_epoch: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_padding: int = 0
    flip: bool = False
    label_smoothing: float = 0.0
    aux_loss_weight: float = 0.0
    ema_decay: float = 0.0
    dtype: jnp.dtype = jnp.float32


def epoch_permutation(rng: jax.Array, epoch: jax.Array, num_examples: int) -> jax.Array:
    """The example order of one epoch, a function of (rng, epoch) only, so it can be replayed."""
    return jax.random.permutation(jax.random.fold_in(rng, epoch), num_examples)


def make_permutation_fn(mesh: Mesh, num_examples: int) -> Callable:
    return jax.jit(
        functools.partial(epoch_permutation, num_examples=num_examples),
        out_shardings=replicated(mesh),
    )


def loss_and_grads(
    model: flax.linen.Module,
    state: TrainState,
    images: jax.Array,
    labels: jax.Array,
    rng: jax.Array,
    label_smoothing: float,
    aux_loss_weight: float = 0.0,
):
    """Mean loss, its gradient w.r.t. the params, and the per-example outputs.

    With `aux_loss_weight`, the cross-entropy of every auxiliary classifier the model sows into
    "aux" is added with that weight (Szegedy et al. 2015: 0.3 each for GoogLeNet).
    """

    def loss_fn(params):
        logits, new_vars = model.apply(
            {"params": params, "batch_stats": state.batch_stats},
            images,
            train=True,
            mutable=["batch_stats", "aux"] if aux_loss_weight else ["batch_stats"],
            rngs={"dropout": rng},
        )
        per_example = losses.softmax_cross_entropy(logits, labels, label_smoothing)
        loss = per_example.mean()
        for aux_logits in jax.tree.leaves(new_vars.get("aux", {})):
            aux = losses.softmax_cross_entropy(aux_logits, labels, label_smoothing)
            loss = loss + aux_loss_weight * aux.mean()
        return loss, (logits, per_example, new_vars.get("batch_stats", {}))

    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    return loss, grads, aux


def train_on_batch(
    model: flax.linen.Module,
    tx: optax.GradientTransformation,
    cfg: StepConfig,
    state: TrainState,
    x: jax.Array,
    y: jax.Array,
):
    """One update on a uint8 batch: augment, normalize, forward, backward, optimizer, EMA."""
    rng = jax.random.fold_in(state.rng, state.step)
    aug_rng, dropout_rng = jax.random.split(rng)
    x = augment.random_crop_flip(aug_rng, x, cfg.crop_padding, cfg.flip)
    x = augment.normalize(x, cfg.mean, cfg.std, cfg.dtype)
    _, grads, (logits, per_example, batch_stats) = loss_and_grads(
        model, state, x, y, dropout_rng, cfg.label_smoothing, cfg.aux_loss_weight
    )
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema_params = state.ema_params
    if ema_params is not None:
        ema_params = optax.incremental_update(params, ema_params, 1.0 - cfg.ema_decay)
    new_state = state.replace(
        step=state.step + 1,
        params=params,
        batch_stats=batch_stats,
        opt_state=opt_state,
        ema_params=ema_params,
    )
    return new_state, metrics.classification_sums(logits, y, per_example)


def batch_index(
    perm: jax.Array, step: jax.Array, batch_size: int, steps_per_epoch: int, sharding
) -> jax.Array:
    """The example indices of step `step`'s batch: its slice of the epoch's order `perm`."""
    start = (step % steps_per_epoch) * batch_size
    index = jax.lax.dynamic_slice(perm, (start,), (batch_size,))
    return jax.lax.with_sharding_constraint(index, sharding)


def make_train_step(
    model: flax.linen.Module, tx: optax.GradientTransformation, cfg: StepConfig, mesh: Mesh
) -> Callable:
    """`step(state, images, labels, perm) -> (state, metric_sums)`, jitted, state donated.

    `images`/`labels` hold the whole (replicated) training set; `perm` is this epoch's order.
    """
    sharding = batch_sharded(mesh)

    def train_step(state: TrainState, images, labels, perm):
        index = batch_index(perm, state.step, cfg.batch_size, cfg.steps_per_epoch, sharding)
        return train_on_batch(model, tx, cfg, state, images[index], labels[index])

    return jax.jit(train_step, donate_argnums=(0,))


def make_batch_train_step(
    model: flax.linen.Module, tx: optax.GradientTransformation, cfg: StepConfig
) -> Callable:
    """`step(state, images, labels) -> (state, metric_sums)` on one streamed, sharded batch."""
    return jax.jit(functools.partial(train_on_batch, model, tx, cfg), donate_argnums=(0,))


def eval_on_batch(model: flax.linen.Module, cfg: StepConfig, variables, x, y, mask):
    """Metric sums of one uint8 batch; `mask` is 0 on padding rows."""
    x = augment.normalize(x, cfg.mean, cfg.std, cfg.dtype)
    logits = model.apply(variables, x, train=False)
    per_example = losses.softmax_cross_entropy(logits, y)
    return metrics.classification_sums(logits, y, per_example, mask)


def make_eval_step(model: flax.linen.Module, cfg: StepConfig, mesh: Mesh) -> Callable:
    """`step(variables, images, labels, mask, batch_index) -> metric_sums`, jitted.

    The eval set is padded to a whole number of batches; `mask` is 0 on the padding.
    """
    sharding = batch_sharded(mesh)

    def eval_step(variables, images, labels, mask, batch_index):
        start = batch_index * cfg.batch_size
        take = functools.partial(
            jax.lax.dynamic_slice_in_dim, start_index=start, slice_size=cfg.batch_size
        )
        x = jax.lax.with_sharding_constraint(take(images), sharding)
        return eval_on_batch(model, cfg, variables, x, take(labels), take(mask))

    return jax.jit(eval_step)


def make_batch_eval_step(model: flax.linen.Module, cfg: StepConfig) -> Callable:
    """`step(variables, images, labels, mask) -> metric_sums` on one streamed batch."""
    return jax.jit(functools.partial(eval_on_batch, model, cfg))


def pad_for_eval(images: np.ndarray, labels: np.ndarray, batch_size: int):
    """Pads the eval set to whole batches; returns images, labels, mask, num_batches."""
    n = len(labels)
    num_batches = -(-n // batch_size)
    pad = num_batches * batch_size - n
    mask = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)])
    images = np.concatenate([images, np.zeros((pad, *images.shape[1:]), images.dtype)])
    labels = np.concatenate([labels, np.zeros(pad, labels.dtype)])
    return images, labels, mask, num_batches
