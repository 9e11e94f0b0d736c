"""The train state: everything a step reads and writes, and everything a checkpoint holds."""

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
    """Params, BatchNorm statistics, optimizer state, step and RNG (and optional EMA params).

    `rng` is never split in place: a step derives its randomness from `fold_in(rng, step)`, so the
    state at step `s` fully determines step `s`'s augmentation and dropout, and a resumed run
    replays the uninterrupted one exactly.
    """

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    rng: jax.Array
    ema_params: Any = None
    # Lookahead's slow weights, {"params": ..., "batch_stats": ...} (cvjax/train/lookahead.py).
    lookahead: Any = None

    def variables(self, use_ema: bool = False) -> dict:
        params = self.ema_params if use_ema else self.params
        return {"params": params, "batch_stats": self.batch_stats}


def create_train_state(
    model: flax.linen.Module,
    tx: optax.GradientTransformation,
    rng: jax.Array,
    input_shape: tuple[int, ...],
    ema: bool = False,
    lookahead: bool = False,
) -> TrainState:
    """Initializes the model on a dummy batch of `input_shape` (N, H, W, C)."""
    init_rng, state_rng = jax.random.split(rng)
    variables = model.init(
        {"params": init_rng, "dropout": init_rng},
        jnp.zeros(input_shape, model_dtype(model)),
        train=False,
    )
    params = variables["params"]
    batch_stats = variables.get("batch_stats", {})
    slow = {"params": params, "batch_stats": batch_stats}
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=batch_stats,
        opt_state=tx.init(params),
        rng=state_rng,
        ema_params=jax.tree.map(jnp.copy, params) if ema else None,
        lookahead=jax.tree.map(jnp.copy, slow) if lookahead else None,
    )


def model_dtype(model: flax.linen.Module):
    return getattr(model, "dtype", jnp.float32) or jnp.float32
