"""The CPU formulations of grouped and depthwise convolutions equal lax's, values and gradients."""

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


def test_ungrouped_and_opted_out_calls_are_lax(monkeypatch):
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
