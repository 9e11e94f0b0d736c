"""Grouped and depthwise convolutions that XLA:CPU runs fast; the same function as lax's.

XLA's CPU backend lowers convolutions with `feature_group_count > 1` poorly, above all their
gradients (BENCHMARKS.md, "Grouped and depthwise convolutions on CPU"). `conv_general_dilated`
here has lax's signature (Flax's `nn.Conv(conv_general_dilated=...)` takes it) and computes:

- a depthwise convolution (one k x k filter per channel) as the sum of k*k shifted, strided
  slices of the padded input times each tap's per-channel weights; JAX differentiates it;
- any other grouped convolution with XLA's forward convolution, and its backward pass as the
  vector-Jacobian product of the same convolution written as k*k per-group matrix products.

Both are the same function as `lax.conv_general_dilated` (tests/test_fastconv.py checks values
and gradients). The fast path is taken on the CPU backend for NHWC inputs and HWIO kernels;
elsewhere (cuDNN, TPU) and for anything unusual, lax is called unchanged. The environment
variable CVJAX_GROUPED_CONV=xla turns the fast path off (for comparisons), and so does tracing
inside `with xla_only():` (the GMACs column counts the convolutions, not their formulation).
"""

import contextlib
import functools
import os

import jax
import jax.numpy as jnp
from jax import lax

_NHWC = ("NHWC", "HWIO", "NHWC")
_xla_only = False


@contextlib.contextmanager
def xla_only():
    """Functions traced inside use lax's grouped convolutions on every backend."""
    global _xla_only
    previous, _xla_only = _xla_only, True
    try:
        yield
    finally:
        _xla_only = previous


def conv_general_dilated(
    lhs,
    rhs,
    window_strides,
    padding,
    lhs_dilation=None,
    rhs_dilation=None,
    dimension_numbers=None,
    feature_group_count: int = 1,
    batch_group_count: int = 1,
    precision=None,
    preferred_element_type=None,
):
    """`lax.conv_general_dilated`, with a faster grouped/depthwise formulation on CPU."""
    call_lax = functools.partial(
        lax.conv_general_dilated,
        lhs,
        rhs,
        window_strides,
        padding,
        lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation,
        dimension_numbers=dimension_numbers,
        feature_group_count=feature_group_count,
        batch_group_count=batch_group_count,
        precision=precision,
        preferred_element_type=preferred_element_type,
    )
    if not _fast_path_applies(lhs, rhs, lhs_dilation, dimension_numbers, feature_group_count):
        return call_lax()
    if batch_group_count != 1 or preferred_element_type is not None:
        return call_lax()
    strides = tuple(window_strides)
    dilation = tuple(rhs_dilation or (1, 1))
    pads = _explicit_pads(lhs.shape[1:3], rhs.shape[:2], strides, dilation, padding)
    if rhs.shape[2] == 1 and rhs.shape[3] == lhs.shape[3]:
        return depthwise(lhs, rhs, strides, pads, dilation)
    return _grouped(lhs, rhs, strides, pads, dilation, feature_group_count)


def _fast_path_applies(lhs, rhs, lhs_dilation, dimension_numbers, groups) -> bool:
    if groups == 1 or lhs.ndim != 4 or _xla_only or os.environ.get("CVJAX_GROUPED_CONV") == "xla":
        return False
    if lhs_dilation is not None and tuple(lhs_dilation) != (1, 1):
        return False
    if jax.default_backend() != "cpu":
        return False
    expected = lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC)
    given = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers or _NHWC)
    return given == expected


def _explicit_pads(spatial, kernel, strides, dilation, padding):
    if isinstance(padding, str):
        effective = [(k - 1) * d + 1 for k, d in zip(kernel, dilation, strict=True)]
        return tuple(lax.padtype_to_pads(spatial, effective, strides, padding))
    return tuple(tuple(p) for p in padding)


def _taps(x, kernel, strides, pads, dilation):
    """Pads x, then yields (i, j, slice) for every kernel tap: the inputs that tap multiplies."""
    x = lax.pad(x, jnp.zeros((), x.dtype), [(0, 0, 0), (*pads[0], 0), (*pads[1], 0), (0, 0, 0)])
    n, h, w, c = x.shape
    (kh, kw), (sh, sw), (dh, dw) = kernel, strides, dilation
    oh = (h - dh * (kh - 1) - 1) // sh + 1
    ow = (w - dw * (kw - 1) - 1) // sw + 1
    for i in range(kh):
        for j in range(kw):
            start = (0, i * dh, j * dw, 0)
            limit = (n, i * dh + (oh - 1) * sh + 1, j * dw + (ow - 1) * sw + 1, c)
            yield i, j, lax.slice(x, start, limit, (1, sh, sw, 1))


def depthwise(x, w, strides=(1, 1), pads=((0, 0), (0, 0)), dilation=(1, 1)):
    """Depthwise convolution, kernel (kh, kw, 1, C), as a sum of shifted slices times weights.

    Accumulates in float32 (as XLA's convolution does) and returns x's dtype.
    """
    out = None
    for i, j, patch in _taps(x, w.shape[:2], strides, pads, dilation):
        term = patch.astype(jnp.float32) * w[i, j, 0].astype(jnp.float32)
        out = term if out is None else out + term
    return out.astype(x.dtype)


def grouped_einsum(x, w, strides, pads, dilation, groups):
    """A grouped convolution, kernel (kh, kw, C / groups, O), as per-tap per-group matmuls."""
    kh, kw, in_per_group, out_channels = w.shape
    per_group = w.reshape(kh, kw, in_per_group, groups, out_channels // groups)
    out = None
    for i, j, patch in _taps(x, (kh, kw), strides, pads, dilation):
        patch = patch.reshape(*patch.shape[:3], groups, in_per_group)
        term = jnp.einsum(
            "nhwgc,cgo->nhwgo", patch, per_group[i, j], preferred_element_type=jnp.float32
        )
        out = term if out is None else out + term
    return out.reshape(*out.shape[:3], out_channels).astype(x.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _grouped(x, w, strides, pads, dilation, groups):
    return lax.conv_general_dilated(
        x,
        w,
        strides,
        pads,
        rhs_dilation=dilation,
        dimension_numbers=_NHWC,
        feature_group_count=groups,
    )


def _grouped_fwd(x, w, strides, pads, dilation, groups):
    return _grouped(x, w, strides, pads, dilation, groups), (x, w)


def _grouped_bwd(strides, pads, dilation, groups, residuals, g):
    x, w = residuals
    _, vjp = jax.vjp(lambda x, w: grouped_einsum(x, w, strides, pads, dilation, groups), x, w)
    return vjp(g)


_grouped.defvjp(_grouped_fwd, _grouped_bwd)
