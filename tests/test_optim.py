import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cvjax import optim
from cvjax.errors import UserError
from tests.conftest import tiny_config


@pytest.mark.parametrize("name", optim.OPTIMIZERS)
def test_every_optimizer_descends_a_quadratic(name):
    config = tiny_config(
        **{
            "optimizer.name": name,
            "learning_rate": 0.05,
            "schedule.name": "constant",
            "weight_decay": 1e-4,
        }
    )
    tx, _ = optim.create_optimizer(config, steps_per_epoch=10)
    params = {"w": jnp.full((4, 3), 2.0), "b": jnp.ones((3,))}
    loss = lambda p: sum(jnp.sum(x**2) for x in jax.tree.leaves(p))  # noqa: E731
    state = tx.init(params)
    start = loss(params)
    for _ in range(20):
        updates, state = tx.update(jax.grad(loss)(params), state, params)
        params = optax.apply_updates(params, updates)
    assert loss(params) < start


def test_l2_decay_matches_pytorch_sgd_and_respects_the_mask():
    # PyTorch SGD: p -= lr * (g + wd * p). With a zero gradient only the decay moves p.
    config = tiny_config(
        **{
            "optimizer.name": "sgd",
            "learning_rate": 0.5,
            "schedule.name": "constant",
            "weight_decay": 0.1,
            "optimizer.decay_norm_and_bias": False,
        }
    )
    tx, _ = optim.create_optimizer(config, steps_per_epoch=1)
    params = {"kernel": jnp.ones((2, 2)), "bias": jnp.ones((2,))}
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zeros, tx.init(params), params)
    new = optax.apply_updates(params, updates)
    np.testing.assert_allclose(new["kernel"], 1 - 0.5 * 0.1)
    np.testing.assert_allclose(new["bias"], 1.0)


def test_schedules():
    spe = 10
    cosine = optim.create_schedule(
        tiny_config(
            **{
                "num_epochs": 10,
                "learning_rate": 1.0,
                "schedule.name": "warmup_cosine",
                "schedule.warmup_epochs": 2,
            }
        ),
        spe,
    )
    assert float(cosine(0)) == 0.0
    np.testing.assert_allclose(cosine(20), 1.0, rtol=1e-6)
    np.testing.assert_allclose(cosine(60), 0.5, rtol=1e-5)  # Half-way through the cosine.
    assert float(cosine(100)) < 1e-6
    step = optim.create_schedule(
        tiny_config(
            **{
                "num_epochs": 10,
                "learning_rate": 1.0,
                "schedule.name": "piecewise",
                "schedule.boundaries_epochs": (5, 8),
            }
        ),
        spe,
    )
    np.testing.assert_allclose([step(49), step(50), step(80)], [1.0, 0.1, 0.01], rtol=1e-6)
    exponential = optim.create_schedule(
        tiny_config(
            **{"learning_rate": 1.0, "schedule.name": "exponential", "schedule.decay_rate": 0.5}
        ),
        spe,
    )
    np.testing.assert_allclose(exponential(20), 0.25, rtol=1e-6)
    onecycle = optim.create_schedule(
        tiny_config(**{"num_epochs": 10, "learning_rate": 1.0, "schedule.name": "onecycle"}), spe
    )
    np.testing.assert_allclose(onecycle(30), 1.0, rtol=1e-5)
    assert float(onecycle(0)) < 0.05


def test_bad_names_and_warmup_give_one_line_errors():
    with pytest.raises(UserError, match="did you mean adamw"):
        optim.create_optimizer(tiny_config(**{"optimizer.name": "adamww"}), 10)
    with pytest.raises(UserError, match="unknown schedule"):
        optim.create_schedule(tiny_config(**{"schedule.name": "cosin"}), 10)
    with pytest.raises(UserError, match="warmup_epochs"):
        optim.create_schedule(tiny_config(**{"schedule.warmup_epochs": 5.0}), 10)


def test_gradient_clipping():
    config = tiny_config(
        **{
            "optimizer.name": "sgd",
            "learning_rate": 1.0,
            "weight_decay": 0.0,
            "schedule.name": "constant",
            "optimizer.grad_clip_norm": 1.0,
        }
    )
    tx, _ = optim.create_optimizer(config, 1)
    params = {"w": jnp.zeros(4)}
    updates, _ = tx.update({"w": jnp.full(4, 10.0)}, tx.init(params), params)
    np.testing.assert_allclose(optax.tree.norm(updates), 1.0, rtol=1e-6)


def test_linear_schedule_decays_to_the_end_factor():
    config = tiny_config(
        **{
            "num_epochs": 10,
            "learning_rate": 0.5,
            "schedule.name": "linear",
            "schedule.end_lr_factor": 0.0,
        }
    )
    linear = optim.create_schedule(config, 10)
    np.testing.assert_allclose([linear(0), linear(50), linear(100)], [0.5, 0.25, 0.0], atol=1e-7)
