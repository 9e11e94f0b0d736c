"""Optax optimizer and learning-rate schedule from a config.

Optimizers: sgd, momentum, nesterov, adagrad, rmsprop, adam, adamw, lars, lamb.
Schedules: constant, piecewise (step), exponential, linear, cosine, warmup_cosine, onecycle; any
schedule may start with a linear warmup (`schedule.warmup_epochs`).

Weight decay is L2 (added to the gradient, as PyTorch's `weight_decay` does for SGD) for sgd,
momentum, nesterov, adagrad, rmsprop and adam, and decoupled (Loshchilov & Hutter 2019) for adamw,
lars and lamb, or for any optimizer with `optimizer.decoupled_weight_decay=True`.
"""

from collections.abc import Callable

import jax
import ml_collections
import optax

from cvjax.errors import UserError, unknown_name

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw", "lars", "lamb")
SCHEDULES = (
    "constant",
    "piecewise",
    "exponential",
    "linear",
    "cosine",
    "warmup_cosine",
    "onecycle",
)
_ALWAYS_DECOUPLED = ("adamw", "lars", "lamb")


def create_schedule(config: ml_collections.ConfigDict, steps_per_epoch: int) -> optax.Schedule:
    """The learning-rate schedule, in steps, for `config.num_epochs` epochs."""
    s = config.schedule
    lr = config.learning_rate
    total = max(1, int(config.num_epochs * steps_per_epoch))
    warmup = int(s.get("warmup_epochs", 0) * steps_per_epoch)
    if warmup >= total and s.name != "onecycle":
        raise UserError(
            f"schedule.warmup_epochs={s.warmup_epochs} is not shorter than num_epochs="
            f"{config.num_epochs}; lower --config.schedule.warmup_epochs"
        )
    rest = total - warmup
    if s.name == "constant":
        main = optax.constant_schedule(lr)
    elif s.name == "piecewise":
        boundaries = {
            int(e * steps_per_epoch) - warmup: s.decay_factor for e in s.boundaries_epochs
        }
        main = optax.piecewise_constant_schedule(lr, boundaries)
    elif s.name == "exponential":
        main = optax.exponential_decay(lr, steps_per_epoch, s.decay_rate)
    elif s.name == "linear":  # ShuffleNet's release: linearly to end_lr_factor * lr.
        main = optax.linear_schedule(lr, lr * s.get("end_lr_factor", 0.0), rest)
    elif s.name in ("cosine", "warmup_cosine"):
        main = optax.cosine_decay_schedule(lr, rest, alpha=s.get("end_lr_factor", 0.0))
    elif s.name == "onecycle":
        return optax.cosine_onecycle_schedule(
            total,
            lr,
            s.get("pct_start", 0.3),
            s.get("div_factor", 25.0),
            s.get("final_div_factor", 1e4),
        )
    else:
        raise unknown_name("schedule", s.name, SCHEDULES)
    if warmup == 0:
        return main
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup])


def decay_mask(params, decay_norm_and_bias: bool):
    """True for parameters that get weight decay: all, or only those with ndim > 1."""
    return jax.tree.map(lambda p: decay_norm_and_bias or p.ndim > 1, params)


def create_optimizer(
    config: ml_collections.ConfigDict, steps_per_epoch: int
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """The optimizer chain (clipping, decay, update rule, learning rate) and its schedule."""
    o = config.optimizer
    name = o.name
    if name not in OPTIMIZERS:
        raise unknown_name("optimizer", name, OPTIMIZERS)
    schedule = create_schedule(config, steps_per_epoch)
    wd = config.weight_decay
    decay_all = o.get("decay_norm_and_bias", True)

    def mask(params):
        return decay_mask(params, decay_all)

    if name == "lars":
        tx = optax.lars(
            schedule,
            weight_decay=wd,
            weight_decay_mask=mask,
            trust_coefficient=o.get("trust_coefficient", 0.001),
            momentum=o.get("momentum", 0.9),
            nesterov=o.get("nesterov", False),
        )
    elif name == "lamb":
        tx = optax.lamb(
            schedule,
            b1=o.get("b1", 0.9),
            b2=o.get("b2", 0.999),
            eps=o.get("eps", 1e-6),
            weight_decay=wd,
            mask=mask,
        )
    else:
        decoupled = name in _ALWAYS_DECOUPLED or o.get("decoupled_weight_decay", False)
        parts: list[optax.GradientTransformation] = []
        if wd and not decoupled:
            parts.append(optax.add_decayed_weights(wd, mask))
        parts.append(_update_rule(name, o))
        if wd and decoupled:
            parts.append(optax.add_decayed_weights(wd, mask))
        parts.append(optax.scale_by_learning_rate(schedule))
        tx = optax.chain(*parts)
    clip = o.get("grad_clip_norm", 0.0)
    if clip:
        tx = optax.chain(optax.clip_by_global_norm(clip), tx)
    return tx, schedule


def _update_rule(name: str, o: ml_collections.ConfigDict) -> optax.GradientTransformation:
    rules: dict[str, Callable[[], optax.GradientTransformation]] = {
        "sgd": optax.identity,
        "momentum": lambda: optax.trace(decay=o.get("momentum", 0.9), nesterov=False),
        "nesterov": lambda: optax.trace(decay=o.get("momentum", 0.9), nesterov=True),
        "adagrad": lambda: optax.scale_by_rss(
            initial_accumulator_value=o.get("initial_accumulator_value", 0.1),
            eps=o.get("eps", 1e-7),
        ),
        "rmsprop": lambda: optax.chain(
            optax.scale_by_rms(decay=o.get("decay", 0.9), eps=o.get("eps", 1e-8)),
            optax.trace(decay=o.get("momentum", 0.0))
            if o.get("momentum", 0.0)
            else optax.identity(),
        ),
        "adam": lambda: optax.scale_by_adam(
            b1=o.get("b1", 0.9), b2=o.get("b2", 0.999), eps=o.get("eps", 1e-8)
        ),
    }
    rules["adamw"] = rules["adam"]
    return rules[name]()
