"""`scan_blocks`: a scanned ResNet is the same function, and both variable layouts load anywhere."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cvjax import models
from cvjax.errors import UserError
from cvjax.models import scan
from tests.conftest import tiny_config


def _both(name, size=32, batch=4):
    plain, scanned = models.create(name), models.create(name, scan_blocks=True)
    x = jax.random.normal(jax.random.PRNGKey(0), (batch, size, size, 3))
    variables = jax.jit(lambda k: plain.init(k, x, train=False))(jax.random.PRNGKey(1))
    target = jax.eval_shape(lambda: scanned.init(jax.random.PRNGKey(1), x, train=False))
    converted = {c: scan.stack_like(variables[c], target[c]) for c in variables}
    return plain, scanned, x, variables, converted, target


def _unstacked(tree):
    return {c: scan.unstack(v) for c, v in tree.items()}


def test_scanned_resnet20_is_the_same_function_with_the_same_gradients():
    plain, scanned, x, variables, converted, target = _both("resnet20")
    assert jax.tree.map(np.shape, converted) == jax.tree.map(np.shape, target)
    assert "scan__ResidualBlock__1__2" in converted["params"]  # stage 1: blocks 1 and 2
    count = lambda t: sum(np.size(a) for a in jax.tree.leaves(t))  # noqa: E731
    assert count(converted) == count(variables) == count(target)

    apply = jax.jit(lambda model, v: model.apply(v, x, train=False), static_argnums=0)
    np.testing.assert_allclose(apply(scanned, converted), apply(plain, variables), atol=1e-5)
    labels = jnp.arange(x.shape[0]) % 10

    def loss(model, params, stats):
        logits, new = model.apply(
            {"params": params, "batch_stats": stats}, x, train=True, mutable=["batch_stats"]
        )
        picked = jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1)
        return -picked.mean(), new

    grad = jax.jit(  # One compile each, not one per operation.
        lambda m, v: jax.grad(loss, 1, has_aux=True)(m, v["params"], v["batch_stats"]),
        static_argnums=0,
    )
    g_plain, new_plain = grad(plain, variables)
    g_scan, new_scan = grad(scanned, converted)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
        _unstacked({"params": g_scan, **new_scan}),
        {"params": g_plain, **new_plain},
    )


def test_both_layouts_load_into_both_models_through_merge_pretrained():
    from cvjax.train import transfer

    _, _, _, variables, converted, target = _both("resnet20")
    zeros = lambda t: jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), t)  # noqa: E731
    into_scanned, counts = transfer.merge_pretrained(zeros(target), variables)
    assert counts["reinitialized"] == 0
    jax.tree.map(np.testing.assert_array_equal, into_scanned, converted)
    into_plain, _ = transfer.merge_pretrained(zeros(variables), converted)
    jax.tree.map(np.testing.assert_array_equal, into_plain, jax.device_get(variables))
    # A missing block is reported, not silently zero-filled.
    params = dict(variables["params"])
    del params["ResidualBlock_2"]
    with pytest.raises(UserError, match="scan__ResidualBlock__1__2/.* missing"):
        transfer.merge_pretrained(zeros(target), {**variables, "params": params})


def test_scan_blocks_refuses_per_block_drop_path_rates():
    model = models.create("resnet50", scan_blocks=True, drop_path_rate=0.1)
    with pytest.raises(UserError, match="drop_path_rate=0 or scan_blocks=False"):
        jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.ones((1, 64, 64, 3))))


def test_scanned_training_on_digits_then_init_from_into_the_plain_model(tmp_path):
    """Real data: a scanned ResNet-20 learns digits; its checkpoint evaluates the same unscanned."""
    from cvjax.train import loop

    kwargs = {"scan_blocks": True}
    config = tiny_config(model="resnet20", num_epochs=1, model_kwargs=kwargs)
    metrics = loop.train_and_evaluate(config, str(tmp_path / "scanned"))
    assert metrics["eval/accuracy"] > 0.3  # chance is 0.1
    plain = tiny_config(
        model="resnet20", num_epochs=0, init_from=str(tmp_path / "scanned"), model_kwargs={}
    )
    again = loop.train_and_evaluate(plain, str(tmp_path / "plain"))
    assert again["eval/accuracy"] == pytest.approx(metrics["eval/accuracy"], abs=1e-6)
