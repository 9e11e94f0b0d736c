"""Lookahead with a scheduled pull, as airbench uses it (Jordan 2024, Sec. 3.5).

Zhang et al. 2019 ("Lookahead Optimizer: k steps forward, 1 step back") keep slow weights and,
every k steps, move them towards the fast ones and restart the fast ones from them. airbench's
variant: from epoch `start_epochs` on, every `every` steps, slow <- rho * slow + (1 - rho) * fast
and fast <- slow, with rho = decay * (step / total_steps) ** decay_power (the first such step only
copies fast into slow); the pull covers the BatchNorm statistics too, and with `sync_each_epoch`
the fast weights also restart from the slow ones at the end of every epoch (so the run ends on
the slow weights). Every quantity is a function of the step: a resumed run replays it exactly.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
import ml_collections

from cvjax.errors import UserError


@dataclasses.dataclass(frozen=True)
class LookaheadConfig:
    every: int = 0  # 0: off.
    start_step: int = 0
    decay: float = 0.0
    decay_power: float = 0.0
    total_steps: int = 1
    steps_per_epoch: int = 1
    sync_each_epoch: bool = True

    @property
    def first_step(self) -> int:
        """The first step count (1-based) at which slow weights exist: they copy the fast ones."""
        return math.ceil((self.start_step + 1) / self.every) * self.every


def lookahead_config(
    config: ml_collections.ConfigDict, steps_per_epoch: int, total_steps: int
) -> LookaheadConfig:
    """`config.lookahead` (keys every, start_epochs, decay, decay_power, sync_each_epoch)."""
    c = config.get("lookahead", None)
    if c is None or not c.get("every", 0):
        return LookaheadConfig()
    every, decay = int(c.every), float(c.get("decay", 0.0))
    if every < 0 or not 0.0 <= decay <= 1.0:
        raise UserError(
            f"lookahead.every={every} must be >= 0 and lookahead.decay={decay} in [0, 1]; fix them"
        )
    return LookaheadConfig(
        every=every,
        start_step=int(round(float(c.get("start_epochs", 0.0)) * steps_per_epoch)),
        decay=decay,
        decay_power=float(c.get("decay_power", 0.0)),
        total_steps=max(1, total_steps),
        steps_per_epoch=steps_per_epoch,
        sync_each_epoch=bool(c.get("sync_each_epoch", True)),
    )


def update(cfg: LookaheadConfig, step: jax.Array, fast: dict, slow: dict) -> tuple[dict, dict]:
    """(fast, slow) after step count `step` (1-based: the number of updates done so far).

    `fast` and `slow` are {"params": ..., "batch_stats": ...}; jit-able, `cfg` static.
    """
    started = step >= cfg.first_step
    pull = started & (step % cfg.every == 0)
    rho = cfg.decay * (step / cfg.total_steps) ** cfg.decay_power
    rho = jnp.where(step == cfg.first_step, 0.0, rho)
    new_slow = jax.tree.map(
        lambda s, f: jnp.where(pull, rho * s + (1.0 - rho) * f, s).astype(s.dtype), slow, fast
    )
    restart = pull
    if cfg.sync_each_epoch:
        epoch_end = (step % cfg.steps_per_epoch == 0) | (step == cfg.total_steps)
        restart = restart | (started & epoch_end)
    new_fast = jax.tree.map(lambda s, f: jnp.where(restart, s, f), new_slow, fast)
    return new_fast, new_slow
