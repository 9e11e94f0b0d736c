"""The model tests' shared checks: a registered model's count and logits; one compiled
train-mode forward and backward of a tiny model."""

from collections.abc import Callable, Sequence
from typing import Any, Literal, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np

from cvjax import models
from cvjax.models import __main__ as table
from cvjax.models import fastconv


def check_count_and_output_shape(name: str, reference: int) -> jax.ShapeDtypeStruct:
    """`table.count_params(name)` is `reference`, and the registered model's eval-mode logits for
    a batch of 2 at its default input size have shape (2, num_classes); returns their shape."""
    assert table.count_params(name) == reference
    model, variables, shape = table.abstract_variables(name)
    with fastconv.xla_only():  # Shapes only: lax's convolutions trace much faster.
        out = jax.eval_shape(
            lambda v: model.apply(v, jnp.zeros((2, *shape[1:])), train=False), variables
        )
    assert out.shape == (2, models.model_info(name)["num_classes"])
    return out


def mean_square(logits: jax.Array, updates: dict) -> jax.Array:
    """The default loss: it has a gradient for every parameter that reaches the logits."""
    del updates
    return jnp.mean(logits**2)


class StepOutput(NamedTuple):
    loss: jax.Array
    logits: jax.Array  # The train-mode logits.
    updates: dict  # The mutable collections after the step: batch_stats, and any extra ones.
    grads: Any  # Of the loss, with respect to variables["params"].
    eval_logits: Any  # Eval mode; a ShapeDtypeStruct where the eval was only traced.
    eval_state: dict  # The extra mutable collections as the eval-mode apply left them.


def train_step(
    model,
    x: jax.Array,
    *,
    mutable_extra: Sequence[str] = (),
    loss_fn: Callable[[jax.Array, dict], jax.Array] = mean_square,
    eval_mode: Literal["run", "shape"] | None = "run",
    compiler_options: dict | None = None,
) -> Callable[[Any, jax.Array], StepOutput]:
    """`(variables, dropout_rng) -> StepOutput`: value_and_grad of `loss_fn(logits, updates)`.

    The train-mode apply has `batch_stats` and `mutable_extra` mutable. `eval_mode="run"`
    compiles the eval-mode apply into the same program, "shape" only traces it (eval_shape),
    None leaves it out. The eval apply has `mutable_extra` mutable, so `eval_state` shows what
    an eval sows there.
    """
    mutable = ["batch_stats", *mutable_extra]

    def evaluate(variables):
        if not mutable_extra:
            return model.apply(variables, x, train=False), {}
        return model.apply(variables, x, train=False, mutable=list(mutable_extra))

    def run(variables, rng):
        def loss(params):
            logits, updates = model.apply(
                {**variables, "params": params},
                x,
                train=True,
                mutable=mutable,
                rngs={"dropout": rng},
            )
            return loss_fn(logits, updates), (logits, updates)

        (value, (logits, updates)), grads = jax.value_and_grad(loss, has_aux=True)(
            variables["params"]
        )
        eval_logits, eval_state = evaluate(variables) if eval_mode == "run" else (None, {})
        return StepOutput(value, logits, updates, grads, eval_logits, eval_state)

    compiled = jax.jit(run, compiler_options=compiler_options)

    def step(variables, rng):
        out = compiled(variables, rng)
        if eval_mode == "shape":
            eval_logits, eval_state = jax.eval_shape(evaluate, variables)
            out = out._replace(eval_logits=eval_logits, eval_state=eval_state)
        return out

    return step


def check_step_results(
    grads: Any,
    batch_stats: Any,
    new_batch_stats: Any,
    *,
    loss: jax.Array | None = None,
    all_grads_nonzero: bool = True,
) -> None:
    """Finite loss and gradients; every gradient leaf non-zero (or, if not
    `all_grads_nonzero`, at least one); every BatchNorm statistic moved by the step."""
    chex.assert_tree_all_finite((loss, grads) if loss is not None else grads)
    nonzero = [float(jnp.abs(g).sum()) > 0 for g in jax.tree.leaves(grads)]
    assert nonzero and (all(nonzero) if all_grads_nonzero else any(nonzero)), (
        f"{nonzero.count(False)} of {len(nonzero)} gradient leaves are zero"
    )
    changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), batch_stats, new_batch_stats)
    assert all(jax.tree.leaves(changed)), "a BatchNorm statistic did not change in training"


class TrainCheck(NamedTuple):
    variables: Any  # The variables the step ran on.
    out: StepOutput
    step: Callable[[Any, jax.Array], StepOutput]  # The compiled step, to run it again.


def check_train_step(
    model,
    x: jax.Array,
    variables: Any = None,
    *,
    rng: jax.Array | None = None,
    mutable_extra: Sequence[str] = (),
    loss_fn: Callable[[jax.Array, dict], jax.Array] = mean_square,
    all_grads_nonzero: bool = True,
    require_batch_stats: bool = True,
    eval_mode: Literal["run", "shape"] = "run",
    compiler_options: dict | None = None,
) -> TrainCheck:
    """Runs one compiled train step (see `train_step`) and checks what every model must do.

    `variables` defaults to `model.init(PRNGKey(0), x)` (pass pre-built ones to skip compiling
    `init`); `rng`, the dropout key, to PRNGKey(2). Checked: finite loss and gradients, every
    gradient leaf non-zero (at least one if not `all_grads_nonzero`), every `batch_stats` leaf
    changed (the model must have some unless not `require_batch_stats`), and the eval-mode
    logits of shape (batch, model.num_classes).
    """
    if variables is None:
        variables = model.init(jax.random.PRNGKey(0), x)
    if rng is None:
        rng = jax.random.PRNGKey(2)
    step = train_step(
        model,
        x,
        mutable_extra=mutable_extra,
        loss_fn=loss_fn,
        eval_mode=eval_mode,
        compiler_options=compiler_options,
    )
    out = step(variables, rng)
    if require_batch_stats or "batch_stats" in variables:
        stats, new_stats = variables["batch_stats"], out.updates["batch_stats"]
    else:
        stats = new_stats = {}
    check_step_results(
        out.grads, stats, new_stats, loss=out.loss, all_grads_nonzero=all_grads_nonzero
    )
    chex.assert_shape(out.eval_logits, (x.shape[0], model.num_classes))
    return TrainCheck(variables, out, step)
