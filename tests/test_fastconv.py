"""CPU formulations of grouped, depthwise and dense convolutions: the same values and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from cvjax.models import fastconv

NHWC = ("NHWC", "HWIO", "NHWC")


def _both(x, w, strides, padding, dilation, groups):
    def ours(x, w):
        return fastconv.conv_general_dilated(
            x,
            w,
            strides,
            padding,
            rhs_dilation=dilation,
            dimension_numbers=NHWC,
            feature_group_count=groups,
        )

    def reference(x, w):
        return lax.conv_general_dilated(
            x,
            w,
            strides,
            padding,
            rhs_dilation=dilation,
            dimension_numbers=NHWC,
            feature_group_count=groups,
        )

    return ours, reference


CASES = [
    # (channels in, channels out, groups, kernel, stride, padding, dilation)
    (8, 8, 8, 3, 1, ((1, 1), (1, 1)), 1),  # depthwise 3x3
    (12, 12, 12, 5, 2, ((2, 2), (2, 2)), 1),  # depthwise 5x5 stride 2 (MBConv)
    (8, 8, 8, 3, 1, ((2, 2), (2, 2)), 2),  # dilated depthwise (DARTS dil_conv)
    (8, 8, 8, 3, 2, "SAME", 1),  # TF padding, asymmetric
    (8, 8, 8, 3, 2, ((0, 1), (1, 0)), 1),  # explicit asymmetric padding
    (16, 32, 4, 3, 1, ((1, 1), (1, 1)), 1),  # grouped 3x3 (ResNeXt)
    (16, 16, 4, 3, 2, ((1, 1), (1, 1)), 1),  # grouped, strided
    (12, 24, 3, 1, 1, ((0, 0), (0, 0)), 1),  # grouped pointwise (ShuffleNet v1)
]


@pytest.mark.parametrize("cin,cout,groups,k,s,padding,d", CASES)
def test_values_and_gradients_equal_lax(cin, cout, groups, k, s, padding, d):
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 9, 9, cin))
    w = jax.random.normal(jax.random.PRNGKey(1), (k, k, cin // groups, cout)) * 0.3
    ours, reference = _both(x, w, (s, s), padding, (d, d), groups)
    np.testing.assert_allclose(jax.jit(ours)(x, w), reference(x, w), rtol=1e-5, atol=1e-5)
    probe = jax.random.normal(jax.random.PRNGKey(2), reference(x, w).shape)

    def grads(f):
        return jax.jit(jax.grad(lambda x, w: jnp.sum(f(x, w) * probe), argnums=(0, 1)))(x, w)

    for got, want in zip(grads(ours), grads(reference), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_bfloat16_stays_bfloat16_and_close_to_lax():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 16)).astype(jnp.bfloat16)
    w = (jax.random.normal(jax.random.PRNGKey(1), (3, 3, 1, 16)) * 0.3).astype(jnp.bfloat16)
    ours, reference = _both(x, w, (1, 1), ((1, 1), (1, 1)), (1, 1), 16)
    out = jax.jit(ours)(x, w)
    assert out.dtype == jnp.bfloat16
    np.testing.assert_allclose(
        out.astype(jnp.float32), reference(x, w).astype(jnp.float32), rtol=2e-2, atol=2e-2
    )


def test_opted_out_calls_are_lax(monkeypatch):
    x = jnp.ones((1, 6, 6, 4))
    w = jnp.ones((3, 3, 1, 4))
    conv = jax.jit(
        lambda x, w: fastconv.conv_general_dilated(
            x, w, (1, 1), "SAME", dimension_numbers=NHWC, feature_group_count=4
        )
    )
    assert "convolution" not in conv.lower(x, w).as_text()
    monkeypatch.setenv("CVJAX_GROUPED_CONV", "xla")
    conv = jax.jit(
        lambda x, w: fastconv.conv_general_dilated(
            x, w, (1, 1), "SAME", dimension_numbers=NHWC, feature_group_count=4
        )
    )
    assert "convolution" in conv.lower(x, w).as_text()


DENSE_CASES = [
    # (channels in, channels out, kernel, stride, padding): the weight gradient's phases
    (7, 5, 3, 1, ((1, 1), (1, 1))),  # 3x3 (channels out <= in: the custom gradient)
    (6, 8, 3, 2, ((1, 1), (1, 1))),  # downsampling 3x3: two phases per axis, 2 taps and 1
    (8, 4, 1, 1, ((0, 0), (0, 0))),  # 1x1 reduction
    (8, 8, 1, 2, ((0, 0), (0, 0))),  # strided 1x1 projection: phase 0 only
    (3, 4, 7, 2, ((3, 3), (3, 3))),  # ImageNet stem 7x7/2
    (4, 4, 5, 3, ((2, 2), (2, 2))),  # stride 3
    (4, 6, 4, 2, ((1, 2), (2, 1))),  # even kernel, asymmetric padding
    (4, 4, 3, 2, "SAME"),  # TF padding
    (4, 4, 3, 1, "VALID"),
]


@pytest.mark.parametrize("cin,cout,k,s,padding", DENSE_CASES)
def test_dense_weight_gradient_is_exact_in_float64(cin, cout, k, s, padding):
    """The phase-split weight gradient is the same sum as lax's, to float64 rounding."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(k * 10 + s)
        x = jnp.asarray(rng.normal(size=(3, 11, 10, cin)))
        w = jnp.asarray(rng.normal(size=(k, k, cin, cout)))
        pads = fastconv._explicit_pads(x.shape[1:3], (k, k), (s, s), (1, 1), padding)
        out, vjp = jax.vjp(
            lambda w: lax.conv_general_dilated(x, w, (s, s), pads, None, None, NHWC), w
        )
        g = jnp.asarray(rng.normal(size=out.shape))
        got = fastconv.weight_grad(x, g, (k, k), (s, s), pads)
        (want,) = vjp(g)
        assert got.dtype == jnp.float64
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cin,cout,k,s,padding", DENSE_CASES)
def test_dense_values_and_gradients_equal_lax(cin, cout, k, s, padding, monkeypatch):
    monkeypatch.setattr(fastconv, "DENSE_MIN_ELEMENTS", 0)  # these inputs are tiny
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 9, 9, cin))
    w = jax.random.normal(jax.random.PRNGKey(1), (k, k, cin, cout)) * 0.3
    ours, reference = _both(x, w, (s, s), padding, (1, 1), 1)
    np.testing.assert_array_equal(jax.jit(ours)(x, w), jax.jit(reference)(x, w))
    probe = jax.random.normal(jax.random.PRNGKey(2), reference(x, w).shape)

    def grads(f):
        return jax.jit(jax.grad(lambda x, w: jnp.sum(f(x, w) * probe), argnums=(0, 1)))(x, w)

    (dx, dw), (want_dx, want_dw) = grads(ours), grads(reference)
    np.testing.assert_array_equal(dx, want_dx)  # lax's own input gradient
    np.testing.assert_allclose(dw, want_dw, rtol=1e-5, atol=1e-5)


def test_dense_weight_gradient_of_a_phase_that_misses_the_input_is_zero():
    # 1x1 input, 3x3 kernel, stride 2, padding 1: taps 0 and 2 only ever see padding.
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 1, 1, 3))
    g = jax.random.normal(jax.random.PRNGKey(1), (2, 1, 1, 4))
    pads = ((1, 1), (1, 1))
    got = fastconv.weight_grad(x, g, (3, 3), (2, 2), pads)
    w = jnp.zeros((3, 3, 3, 4))
    _, vjp = jax.vjp(lambda w: lax.conv_general_dilated(x, w, (2, 2), pads, None, None, NHWC), w)
    np.testing.assert_allclose(got, vjp(g)[0], rtol=1e-6, atol=1e-6)
    assert not np.any(np.asarray(got)[0]) and np.any(np.asarray(got)[1, 1])


def test_dense_dispatch(monkeypatch):
    """The custom gradient for large inputs whose output gradient is no larger; lax's otherwise."""

    def jaxpr(cin, cout, strides=(1, 1), dilation=(1, 1), size=96):
        x, w = jnp.ones((2, size, size, cin)), jnp.ones((3, 3, cin, cout))
        f = lambda x, w: fastconv.conv_general_dilated(  # noqa: E731
            x, w, strides, "SAME", rhs_dilation=dilation, dimension_numbers=NHWC
        )
        return str(jax.make_jaxpr(jax.grad(lambda x, w: f(x, w).sum(), (0, 1)))(x, w))

    assert "custom_vjp" in jaxpr(8, 8)
    assert "custom_vjp" in jaxpr(8, 16, strides=(2, 2))  # half the positions, twice the channels
    assert "custom_vjp" not in jaxpr(3, 16, size=256)  # a stem: transposing the input is cheaper
    assert "custom_vjp" not in jaxpr(8, 8, dilation=(2, 2))
    assert "custom_vjp" not in jaxpr(8, 8, size=8)  # fits in cache: lax's gradient compiles faster
    monkeypatch.setenv("CVJAX_DENSE_CONV", "xla")
    assert "custom_vjp" not in jaxpr(8, 8)


def test_dense_bfloat16_gradient_stays_bfloat16(monkeypatch):
    monkeypatch.setattr(fastconv, "DENSE_MIN_ELEMENTS", 0)
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 8)).astype(jnp.bfloat16)
    w = (jax.random.normal(jax.random.PRNGKey(1), (3, 3, 8, 8)) * 0.3).astype(jnp.bfloat16)
    ours, reference = _both(x, w, (1, 1), ((1, 1), (1, 1)), (1, 1), 1)

    def grad_w(f):
        return jax.jit(jax.grad(lambda w: f(x, w).astype(jnp.float32).sum()))(w)

    got, want = grad_w(ours), grad_w(reference)
    assert got.dtype == jnp.bfloat16
    np.testing.assert_allclose(
        got.astype(jnp.float32), want.astype(jnp.float32), rtol=2e-2, atol=5e-2
    )


def test_resnet20_gradients_equal_lax_gradients(monkeypatch):
    """Through a whole network (BatchNorm, residual additions, downsampling): the same gradient."""
    from cvjax import models

    model = models.create("resnet20", num_classes=10)
    x = jax.random.normal(jax.random.PRNGKey(0), (8, 32, 32, 3))
    variables = model.init(jax.random.PRNGKey(1), x, train=False)

    def grads():
        def loss(params):
            logits, _ = model.apply(
                {**variables, "params": params}, x, train=True, mutable=["batch_stats"]
            )
            return jnp.sum(logits * jnp.arange(10.0))

        return jax.jit(jax.grad(loss))(variables["params"])

    ours = grads()
    monkeypatch.setenv("CVJAX_DENSE_CONV", "xla")
    reference = grads()
    for (path, got), want in zip(
        jax.tree_util.tree_leaves_with_path(ours), jax.tree.leaves(reference), strict=True
    ):
        scale = float(jnp.abs(want).max())
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * scale, err_msg=str(path))
