"""Optax optimizer and learning-rate schedule from a config.

Optimizers: sgd, momentum, nesterov, adagrad, rmsprop, adam, adamw, lars, lamb.
Schedules: constant, piecewise (step), exponential, linear, cosine, warmup_cosine, onecycle; any
schedule may start with a linear warmup (`schedule.warmup_epochs`).

Weight decay is L2 (added to the gradient, as PyTorch's `weight_decay` does for SGD) for sgd,
momentum, nesterov, adagrad, rmsprop and adam, and decoupled (Loshchilov & Hutter 2019) for adamw,
lars and lamb, or for any optimizer with `optimizer.decoupled_weight_decay=True`.

Parameter groups (`ParamGroups`) freeze parameters by a regex on their "/"-joined path, release
them at given epochs (gradual unfreezing) and scale their learning rate per group.
"""

import dataclasses
import re
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
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
    start = lr * s.get("warmup_start_factor", 0.0)
    return optax.join_schedules([optax.linear_schedule(start, lr, warmup), main], [warmup])


def decay_mask(params, decay_norm_and_bias: bool):
    """True for parameters that get weight decay: all, or only those with ndim > 1."""
    return jax.tree.map(lambda p: decay_norm_and_bias or p.ndim > 1, params)


def create_optimizer(
    config: ml_collections.ConfigDict, steps_per_epoch: int
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """The optimizer chain (clipping, decay, update rule, learning rate) and its schedule.

    With `freeze`, `unfreeze`, `linear_probe` or `lr_groups` set, the chain runs per parameter
    group (see `ParamGroups`); otherwise it is one chain over all parameters.
    """
    o = config.optimizer
    if o.name not in OPTIMIZERS:
        raise unknown_name("optimizer", o.name, OPTIMIZERS)
    schedule = create_schedule(config, steps_per_epoch)
    groups = ParamGroups.from_config(config, steps_per_epoch)
    decay_scale = None
    if groups is not None and not o.get("lr_groups_scale_decay", True):
        # Each group's weight decay per step stays the base one: its L2 coefficient is divided
        # by the group's lr multiplier (airbench's bias_scaler, Jordan 2024).
        decay_scale = lambda path: 1.0 / groups.multiplier(path)  # noqa: E731
    if groups is None:
        tx = _rule_chain(config, schedule)
    else:
        tx = groups.transform(lambda sched: _rule_chain(config, sched, decay_scale), schedule)
    clip = o.get("grad_clip_norm", 0.0)
    if clip:
        # Frozen gradients are zeroed first so that they do not count towards the global norm.
        before = [groups.zero_frozen_gradients()] if groups is not None else []
        tx = optax.chain(*before, optax.clip_by_global_norm(clip), tx)
    return tx, schedule


def _rule_chain(
    config: ml_collections.ConfigDict,
    schedule: optax.Schedule,
    decay_scale: Callable[[str], float] | None = None,
) -> optax.GradientTransformation:
    """Weight decay, update rule and learning rate (everything but clipping); `decay_scale(path)`
    multiplies the weight decay of the parameter at `path` (lars and lamb: unsupported)."""
    o = config.optimizer
    name = o.name
    wd = config.weight_decay
    decay_all = o.get("decay_norm_and_bias", True)

    def mask(params):
        return decay_mask(params, decay_all)

    if name == "lars":
        return optax.lars(
            schedule,
            weight_decay=wd,
            weight_decay_mask=mask,
            trust_coefficient=o.get("trust_coefficient", 0.001),
            momentum=o.get("momentum", 0.9),
            nesterov=o.get("nesterov", False),
        )
    if name == "lamb":
        return optax.lamb(
            schedule,
            b1=o.get("b1", 0.9),
            b2=o.get("b2", 0.999),
            eps=o.get("eps", 1e-6),
            weight_decay=wd,
            mask=mask,
        )
    decoupled = name in _ALWAYS_DECOUPLED or o.get("decoupled_weight_decay", False)
    decay = optax.add_decayed_weights(wd, mask)
    if decay_scale is not None:
        decay = _add_decayed_weights_per_leaf(wd, mask, decay_scale)
    parts: list[optax.GradientTransformation] = []
    if wd and not decoupled:
        parts.append(decay)
    parts.append(_update_rule(name, o))
    if wd and decoupled:
        parts.append(decay)
    parts.append(optax.scale_by_learning_rate(schedule))
    return optax.chain(*parts)


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


# --- parameter groups: freezing, gradual unfreezing, per-group learning rates ------------------

NEVER = -1  # The start step of a parameter that stays frozen.
BACKBONE = r"^(?!head/)"  # Every parameter outside the classifier "head".


def path_str(path) -> str:
    """A tree path as "/"-joined keys, e.g. "head/fc/kernel"."""
    parts = []
    for key in path:
        if isinstance(key, jax.tree_util.DictKey):
            parts.append(str(key.key))
        elif isinstance(key, jax.tree_util.GetAttrKey):
            parts.append(key.name)
        elif isinstance(key, jax.tree_util.SequenceKey):
            parts.append(str(key.idx))
        else:
            parts.append(str(key))
    return "/".join(parts)


def param_paths(tree) -> Any:
    """The tree with every leaf replaced by its "/"-joined path."""
    return jax.tree_util.tree_map_with_path(lambda path, _: path_str(path), tree)


def _compile(pattern: str, key: str) -> re.Pattern:
    try:
        return re.compile(pattern)
    except re.error as e:
        raise UserError(f"{key}={pattern!r} is not a regular expression ({e}); fix it") from None


@dataclasses.dataclass(frozen=True)
class ParamGroups:
    """Which parameters train from which step, and with which learning-rate multiplier.

    Patterns are matched with `re.search` against "/"-joined parameter paths ("head/fc/kernel").
    A parameter matching `freeze` gets no update, no weight decay and no optimizer-state change,
    until an `unfreeze` entry (start step, regex) that matches it releases it: gradual
    unfreezing (Howard & Ruder 2018, Sec. 3.3), the head first and deeper layers later. Each
    release time has its own copy of the optimizer, started at that step, so a released group
    begins with fresh moments (Adam's bias correction counts from its first step, as PyTorch's
    per-parameter `step` does) while the learning rate follows the global schedule. The switch
    is a function of the optimizer's step count: one compiled step, exact on resume.
    `lr_groups` (regex, multiplier) scale the final update (the learning rate, decoupled weight
    decay included) by the multiplier of the first pattern a parameter matches, 1.0 if none:
    discriminative fine-tuning (Howard & Ruder 2018, Sec. 3.2). `freeze_from` (stop step,
    regex) is the reverse of `unfreeze`: a matching parameter trains until that step and keeps
    its value from then on (airbench's whitening bias, trained for 3 epochs, Jordan 2024).
    """

    freeze: re.Pattern | None = None
    unfreeze: tuple[tuple[int, re.Pattern], ...] = ()
    lr_groups: tuple[tuple[re.Pattern, float], ...] = ()
    freeze_from: tuple[tuple[int, re.Pattern], ...] = ()

    @classmethod
    def from_config(
        cls, config: ml_collections.ConfigDict, steps_per_epoch: int
    ) -> "ParamGroups | None":
        """The groups a config asks for (keys freeze, unfreeze, freeze_from, linear_probe,
        lr_groups); None when it asks for none."""
        freeze = config.get("freeze", "")
        if config.get("linear_probe", False):
            if freeze:
                raise UserError(
                    "linear_probe already freezes everything but the head; drop --config.freeze"
                )
            freeze = BACKBONE
        unfreeze = tuple(config.get("unfreeze", ()) or ())
        lr_groups = tuple(config.get("lr_groups", ()) or ())
        freeze_from = tuple(config.get("freeze_from", ()) or ())
        if not (freeze or unfreeze or lr_groups or freeze_from):
            return None
        if unfreeze and not freeze:
            raise UserError(
                "unfreeze releases frozen parameters, but none are frozen; set --config.freeze "
                f"(e.g. {BACKBONE!r})"
            )
        try:
            starts = tuple(
                (int(round(float(epoch) * steps_per_epoch)), _compile(str(rx), "unfreeze"))
                for epoch, rx in unfreeze
            )
            scales = tuple((_compile(str(rx), "lr_groups"), float(m)) for rx, m in lr_groups)
            stops = tuple(
                (int(round(float(epoch) * steps_per_epoch)), _compile(str(rx), "freeze_from"))
                for epoch, rx in freeze_from
            )
        except (TypeError, ValueError):
            raise UserError(
                f"unfreeze={unfreeze!r} / freeze_from={freeze_from!r} / lr_groups={lr_groups!r} "
                "are malformed; write ((epoch, regex), ...) and ((regex, multiplier), ...)"
            ) from None
        return cls(_compile(freeze, "freeze") if freeze else None, starts, scales, stops)

    def start_step(self, path: str) -> int:
        """The first step at which the parameter at `path` trains (NEVER if it stays frozen)."""
        if self.freeze is None or not self.freeze.search(path):
            return 0
        starts = [start for start, rx in self.unfreeze if rx.search(path)]
        return min(starts) if starts else NEVER

    def stop_step(self, path: str) -> int | None:
        """The step from which the parameter at `path` stops training (None: never)."""
        stops = [stop for stop, rx in self.freeze_from if rx.search(path)]
        return min(stops) if stops else None

    def multiplier(self, path: str) -> float:
        return next((m for rx, m in self.lr_groups if rx.search(path)), 1.0)

    def check(self, params) -> None:
        """Refuses a pattern that matches no parameter (a typo would silently do nothing)."""
        paths = jax.tree.leaves(param_paths(params))
        if not paths:
            return
        patterns = [("freeze", self.freeze)] if self.freeze is not None else []
        frozen = [p for p in paths if self.freeze is not None and self.freeze.search(p)]
        patterns += [("lr_groups", rx) for rx, _ in self.lr_groups]
        patterns += [("freeze_from", rx) for _, rx in self.freeze_from]
        for key, rx in patterns:
            if not any(rx.search(p) for p in paths):
                raise UserError(
                    f"{key} pattern {rx.pattern!r} matches no parameter (paths look like "
                    f"{paths[0]!r}, {paths[-1]!r}); fix --config.{key}"
                )
        for _, rx in self.unfreeze:
            if not any(rx.search(p) for p in frozen):
                raise UserError(
                    f"unfreeze pattern {rx.pattern!r} matches no frozen parameter (frozen: "
                    f"{frozen[0]!r}, ...); fix --config.unfreeze"
                )

    def labels(self, params) -> Any:
        self.check(params)
        return jax.tree.map(_label, jax.tree.map(self.start_step, param_paths(params)))

    def describe(self, params) -> str:
        """For the log: how many parameters train from the start, later, and never."""
        sizes = {}
        for path, leaf in jax.tree_util.tree_leaves_with_path(params):
            start = self.start_step(path_str(path))
            sizes[start] = sizes.get(start, 0) + int(leaf.size)
        parts = [f"{sizes.pop(0, 0):,} parameters train from step 0"]
        frozen = sizes.pop(NEVER, 0)
        parts += [f"{n:,} from step {s}" for s, n in sorted(sizes.items())]
        parts.append(f"{frozen:,} stay frozen")
        return ", ".join(parts)

    def transform(
        self, build: Callable[[optax.Schedule], optax.GradientTransformation], schedule
    ) -> optax.GradientTransformation:
        """The optimizer `build(schedule)` applied per group, frozen groups set to zero."""
        parts = {_label(NEVER): optax.set_to_zero(), _label(0): build(schedule)}
        for start in sorted({s for s, _ in self.unfreeze if s > 0}):
            shifted = _shifted(schedule, start)
            parts[_label(start)] = _starting_at(build(shifted), start)
        tx = optax.multi_transform(parts, self.labels)
        if any(m != 1.0 for _, m in self.lr_groups):
            tx = optax.chain(tx, _scale_per_leaf(self.multiplier))
        if self.freeze_from:
            tx = optax.chain(tx, self.zero_frozen_gradients())
        return tx

    def zero_frozen_gradients(self) -> optax.GradientTransformation:
        """Zeroes the gradients (or updates) of parameters not (yet, or no longer) training."""

        def update(updates, state, params=None):
            del params

            def gate(path, u):
                start, stop = self.start_step(path_str(path)), self.stop_step(path_str(path))
                if start == NEVER:
                    return jnp.zeros_like(u)
                if start == 0 and stop is None:
                    return u
                active = state.count >= start
                if stop is not None:
                    active &= state.count < stop
                return jnp.where(active, u, jnp.zeros_like(u))

            gated = jax.tree_util.tree_map_with_path(gate, updates)
            return gated, _Count(optax.safe_int32_increment(state.count))

        return optax.GradientTransformation(lambda _: _Count(jnp.zeros([], jnp.int32)), update)


def _label(start: int) -> str:
    return "frozen" if start == NEVER else f"from_step_{start}"


def _shifted(schedule: optax.Schedule, start: int) -> optax.Schedule:
    return lambda count: schedule(count + start)


class _Count(NamedTuple):
    count: jax.Array


class _StartingAtState(NamedTuple):
    count: jax.Array
    inner: Any


def _starting_at(inner: optax.GradientTransformation, start: int) -> optax.GradientTransformation:
    """`inner`, idle (zero updates, state untouched) before step `start`."""

    def init(params):
        return _StartingAtState(jnp.zeros([], jnp.int32), inner.init(params))

    def update(updates, state, params=None):
        new_updates, new_inner = inner.update(updates, state.inner, params)
        active = state.count >= start
        new_updates = jax.tree.map(lambda u: jnp.where(active, u, jnp.zeros_like(u)), new_updates)
        new_inner = jax.tree.map(lambda n, o: jnp.where(active, n, o), new_inner, state.inner)
        return new_updates, _StartingAtState(optax.safe_int32_increment(state.count), new_inner)

    return optax.GradientTransformation(init, update)


def _scale_per_leaf(multiplier: Callable[[str], float]) -> optax.GradientTransformation:
    def update(updates, state, params=None):
        del params

        def scale(path, u):
            m = multiplier(path_str(path))
            return u if m == 1.0 else u * jnp.asarray(m, u.dtype)

        return jax.tree_util.tree_map_with_path(scale, updates), state

    return optax.GradientTransformation(optax.init_empty_state, update)


def _add_decayed_weights_per_leaf(
    weight_decay: float, mask: Callable, scale: Callable[[str], float]
) -> optax.GradientTransformation:
    """`optax.add_decayed_weights`, the coefficient multiplied by `scale(path)` per parameter."""

    def update(updates, state, params):
        decays = mask(params)

        def add(path, u, p, decays_p):
            coefficient = weight_decay * scale(path_str(path))
            return u + jnp.asarray(coefficient, u.dtype) * p if decays_p else u

        return jax.tree_util.tree_map_with_path(add, updates, params, decays), state

    return optax.GradientTransformation(optax.init_empty_state, update)
