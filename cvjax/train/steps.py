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

from cvjax import losses
from cvjax.data import augment, pipeline
from cvjax.errors import UserError
from cvjax.tasks import Task
from cvjax.train import lookahead as lookahead_lib
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
    """What a step needs to know beyond the state: the batch layout, preprocessing and task."""

    batch_size: int
    steps_per_epoch: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_padding: int = 0
    flip: bool = False
    aux_loss_weight: float = 0.0
    ema_decay: float = 0.0
    dtype: jnp.dtype = jnp.float32
    task: Task = Task()  # Also holds label smoothing.
    augment: pipeline.AugmentConfig = pipeline.AugmentConfig()
    tta: pipeline.TTAConfig = pipeline.TTAConfig()
    keep_batch_stats: bool = False  # Linear probe: BatchNorm statistics stay as loaded.
    lookahead: lookahead_lib.LookaheadConfig = lookahead_lib.LookaheadConfig()


def forward(
    model: flax.linen.Module,
    task: Task,
    variables: dict,
    x: jax.Array,
    train: bool,
    rng: jax.Array | None = None,
    aux: bool = False,
) -> tuple[jax.Array, dict]:
    """The task's outputs for a normalized batch, and the new BatchNorm statistics and aux heads.

    With `task.normed_head` the outputs are cosine logits: the pooled features and the head's
    class vectors, both L2-normalized (LDAM, Cao et al. 2019, Sec. 4).
    """
    mutable = (["batch_stats"] if train else []) + (["aux"] if aux else [])
    if task.normed_head:
        mutable.append("intermediates")
    rngs = {"dropout": rng} if rng is not None else None
    result = model.apply(variables, x, train=train, mutable=mutable or False, rngs=rngs)
    outputs, new_vars = result if mutable else (result, {})
    if task.normed_head:
        features = new_vars["intermediates"]["head"]["pre_logits"][0]
        outputs = losses.cosine_logits(features, variables["params"]["head"]["fc"]["kernel"])
    return outputs, new_vars


def loss_and_grads(
    model: flax.linen.Module,
    state: TrainState,
    images: jax.Array,
    labels: jax.Array,
    rng: jax.Array,
    label_smoothing: float = 0.0,
    aux_loss_weight: float = 0.0,
    task: Task | None = None,
    mixed: tuple[jax.Array, jax.Array] | None = None,
    epoch: jax.Array | int = 0,
):
    """Mean loss, its gradient w.r.t. the params, and the per-example outputs.

    With `aux_loss_weight`, the cross-entropy of every auxiliary classifier the model sows into
    "aux" is added with that weight (Szegedy et al. 2015: 0.3 each for GoogLeNet). `mixed` =
    (partner, lam) from mixup/cutmix: the loss is lam * L(y) + (1 - lam) * L(y[partner]).
    """
    if task is None:
        task = Task(label_smoothing=label_smoothing)

    def loss_fn(params):
        variables = {"params": params, "batch_stats": state.batch_stats}
        outputs, new_vars = forward(
            model, task, variables, images, True, rng, bool(aux_loss_weight)
        )
        per_example = task.per_example_loss(outputs, labels, epoch)
        # With class weights the batch loss is sum(w_i l_i) / sum(w_i), as PyTorch's
        # cross_entropy(weight=...) in the class-balanced and LDAM-DRW references.
        weights = task.class_weight_vector(epoch)
        denominator = None if weights is None else weights[labels]
        if mixed is not None:
            partner, lam = mixed
            other = task.per_example_loss(outputs, labels[partner], epoch)
            per_example = lam * per_example + (1.0 - lam) * other
            if weights is not None:
                denominator = lam * denominator + (1.0 - lam) * weights[labels[partner]]
        if denominator is None:
            loss = per_example.mean()
        else:
            loss = per_example.sum() / jnp.maximum(denominator.sum(), 1e-12)
        for aux_logits in jax.tree.leaves(new_vars.get("aux", {})):
            aux = losses.softmax_cross_entropy(aux_logits, labels, task.label_smoothing)
            loss = loss + aux_loss_weight * aux.mean()
        return loss, (outputs, per_example, new_vars.get("batch_stats", {}))

    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    return loss, grads, aux


def train_on_batch(
    model: flax.linen.Module,
    tx: optax.GradientTransformation,
    cfg: StepConfig,
    state: TrainState,
    x: jax.Array,
    y: jax.Array,
    index: jax.Array | None = None,
):
    """One update on a uint8 batch: augment, normalize, forward, backward, optimizer, lookahead,
    EMA. `index` (the examples' dataset positions) is needed by alternating flips only."""
    rng = jax.random.fold_in(state.rng, state.step)
    aug_rng, dropout_rng = jax.random.split(rng)
    epoch = state.step // cfg.steps_per_epoch
    x = pipeline.train_images(
        aug_rng,
        x,
        cfg.augment,
        cfg.crop_padding,
        cfg.flip,
        cfg.mean,
        cfg.std,
        cfg.dtype,
        index=index,
        epoch=epoch,
        example_rng=jax.random.fold_in(state.rng, 0xF11B),  # Fixed for the run.
    )
    mixed = None
    if cfg.augment.mixes:
        x, partner, lam = pipeline.mix(jax.random.fold_in(aug_rng, 1), x, cfg.augment)
        mixed = (partner, lam)
    _, grads, (outputs, per_example, batch_stats) = loss_and_grads(
        model,
        state,
        x,
        y,
        dropout_rng,
        aux_loss_weight=cfg.aux_loss_weight,
        task=cfg.task,
        mixed=mixed,
        epoch=epoch,
    )
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    if cfg.keep_batch_stats:
        batch_stats = state.batch_stats
    slow = state.lookahead
    if slow is not None:
        fast = {"params": params, "batch_stats": batch_stats}
        fast, slow = lookahead_lib.update(cfg.lookahead, state.step + 1, fast, slow)
        params, batch_stats = fast["params"], fast["batch_stats"]
    ema_params = state.ema_params
    if ema_params is not None:
        ema_params = optax.incremental_update(params, ema_params, 1.0 - cfg.ema_decay)
    new_state = state.replace(
        step=state.step + 1,
        params=params,
        batch_stats=batch_stats,
        opt_state=opt_state,
        ema_params=ema_params,
        lookahead=slow,
    )
    return new_state, cfg.task.train_sums(outputs, y, per_example)


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
        return train_on_batch(model, tx, cfg, state, images[index], labels[index], index)

    return jax.jit(train_step, donate_argnums=(0,))


def make_batch_train_step(
    model: flax.linen.Module, tx: optax.GradientTransformation, cfg: StepConfig
) -> Callable:
    """`step(state, images, labels) -> (state, metric_sums)` on one streamed, sharded batch."""
    return jax.jit(functools.partial(train_on_batch, model, tx, cfg), donate_argnums=(0,))


def eval_on_batch(model: flax.linen.Module, cfg: StepConfig, variables, x, y, mask):
    """Metric sums of one uint8 batch; `mask` is 0 on padding rows. With test-time
    augmentation, classification outputs are the log of the views' mean probabilities."""
    x = augment.normalize(x, cfg.mean, cfg.std, cfg.dtype)

    def predict(images):
        return forward(model, cfg.task, variables, images, False)[0].astype(jnp.float32)

    outputs = pipeline.tta_outputs(predict, x, cfg.tta) if cfg.tta.active else predict(x)
    return cfg.task.eval_sums(outputs, y, mask)


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
