"""Convolutions that XLA:CPU runs fast; the same functions as lax's.

`conv_general_dilated` here has lax's signature (Flax's `nn.Conv(conv_general_dilated=...)` takes
it). On the CPU backend, for NHWC inputs and HWIO kernels, it computes:

- a depthwise convolution (one k x k filter per channel) as the sum of k*k shifted, strided
  slices of the padded input times each tap's per-channel weights; JAX differentiates it;
- any other grouped convolution with XLA's forward convolution, and its backward pass as the
  vector-Jacobian product of the same convolution written as k*k per-group matrix products;
- a dense convolution with XLA's forward convolution and input gradient, and its weight gradient
  (`weight_grad`) as convolutions that take the layer's input as their kernel operand.

XLA's CPU backend lowers grouped convolutions poorly, above all their gradients (BENCHMARKS.md,
"Grouped and depthwise convolutions on CPU"). For dense convolutions the trouble is the weight
gradient: XLA computes it as a convolution over the batch, which needs the layer's input
transposed batch-minor, [C, H, W, N]. XLA fuses that transpose with the elementwise ops that
produced the input (BatchNorm, ReLU, the residual additions of every earlier block of the stage)
and recomputes them with a strided read per element: in ResNet-20's backward pass these
transposes took longer than the convolutions. `weight_grad` instead transposes the output
gradient (batch-minor) and passes the input as the kernel, [H, W, N, C], a layout that keeps
channels contiguous. A strided convolution is split into its stride phases, so each part is a
stride-1 convolution. It is used when the output gradient is no larger than the input (the
transposed tensor is then the smaller one) and the input has at least DENSE_MIN_ELEMENTS
elements; otherwise lax's gradient is used.

All of them are the same function as `lax.conv_general_dilated` (tests/test_fastconv.py checks
values and gradients). Elsewhere (cuDNN, TPU) and for anything unusual, lax is called unchanged.
CVJAX_GROUPED_CONV=xla and CVJAX_DENSE_CONV=xla turn the grouped and the dense paths off (for
comparisons), and tracing inside `with xla_only():` turns both off (the GMACs column counts the
convolutions, not their formulation).
"""

import contextlib
import functools
import math
import os

import jax
import jax.numpy as jnp
from jax import lax

_NHWC = ("NHWC", "HWIO", "NHWC")
# Inputs below this many elements (512 KiB in float32, about a core's L2 cache) are transposed
# quickly enough that the dense weight gradient keeps lax's form, which compiles faster.
DENSE_MIN_ELEMENTS = 1 << 17
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
    """`lax.conv_general_dilated`, with the faster formulations above on CPU."""
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
    if feature_group_count == 1:
        out_shape = _output_shape(lhs.shape, rhs.shape, strides, pads, dilation)
        small = lhs.size < DENSE_MIN_ELEMENTS
        if small or dilation != (1, 1) or math.prod(out_shape) > lhs.size:
            return call_lax()
        return _dense(lhs, rhs, strides, pads, precision)
    if rhs.shape[2] == 1 and rhs.shape[3] == lhs.shape[3]:
        return depthwise(lhs, rhs, strides, pads, dilation)
    return _grouped(lhs, rhs, strides, pads, dilation, feature_group_count)


def _fast_path_applies(lhs, rhs, lhs_dilation, dimension_numbers, groups) -> bool:
    switch = "CVJAX_DENSE_CONV" if groups == 1 else "CVJAX_GROUPED_CONV"
    if lhs.ndim != 4 or _xla_only or os.environ.get(switch) == "xla":
        return False
    if lhs_dilation is not None and tuple(lhs_dilation) != (1, 1):
        return False
    if jax.default_backend() != "cpu":
        return False
    expected = lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC)
    given = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers or _NHWC)
    return given == expected


def _output_shape(lhs_shape, rhs_shape, strides, pads, dilation):
    spatial = [
        (size + lo + hi - d * (k - 1) - 1) // s + 1
        for size, k, s, (lo, hi), d in zip(
            lhs_shape[1:3], rhs_shape[:2], strides, pads, dilation, strict=True
        )
    ]
    return (lhs_shape[0], *spatial, rhs_shape[3])


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


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _dense(x, w, strides, pads, precision):
    return lax.conv_general_dilated(
        x, w, strides, pads, dimension_numbers=_NHWC, precision=precision
    )


def _dense_fwd(x, w, strides, pads, precision):
    return _dense(x, w, strides, pads, precision), (x, w)


def _dense_bwd(strides, pads, precision, residuals, g):
    x, w = residuals
    _, vjp = jax.vjp(
        lambda x: lax.conv_general_dilated(
            x, w, strides, pads, dimension_numbers=_NHWC, precision=precision
        ),
        x,
    )
    (dx,) = vjp(g)
    return dx, weight_grad(x, g, w.shape[:2], strides, pads, precision).astype(w.dtype)


_dense.defvjp(_dense_fwd, _dense_bwd)


def weight_grad(x, g, kernel, strides=(1, 1), pads=((0, 0), (0, 0)), precision=None):
    """The weight gradient of a dense NHWC/HWIO convolution, with x as the kernel operand.

    dW[i, j] = sum over n, h, w of g[n, h, w] * xpad[n, s*h + i, s*w + j], for output gradient
    g and input x padded by `pads`. Taps i = a (mod s) see only the stride phase a of x, rows
    xpad[s*m + a]; for that phase dW[a + s*u] = sum_h g[h] * phase[h + u], a stride-1
    correlation. Each phase is computed as a convolution whose input is g (batch = output
    channels, features = N) and whose kernel is the phase of x ([H, W, N, C]); its taps come out
    in reverse order. Phase rows outside x are zero and are left out of the slice, which moves
    into the padding of g.
    """
    kh, kw = kernel
    dw = jnp.zeros((kh, kw, x.shape[3], g.shape[3]), jnp.result_type(x, g))
    for a in range(min(strides[0], kh)):
        for b in range(min(strides[1], kw)):
            taps = (len(range(a, kh, strides[0])), len(range(b, kw, strides[1])))
            start, limit, g_pads = [0], [x.shape[0]], []
            for axis, phase in enumerate((a, b)):
                s, lo, size = strides[axis], pads[axis][0], x.shape[1 + axis]
                first = -((phase - lo) // s)  # the first phase row inside x: ceil((lo - a) / s)
                end = (size - 1 + lo - phase) // s + 1
                start.append(s * first + phase - lo)
                limit.append(s * (end - 1) + phase - lo + 1)
                g_pads.append((taps[axis] - 1 - first, end - g.shape[1 + axis]))
            if limit[1] <= start[1] or limit[2] <= start[2]:
                continue  # this phase never meets the input: its taps get no gradient
            phase_x = lax.slice(x, (*start, 0), (*limit, x.shape[3]), (1, *strides, 1))
            out = lax.conv_general_dilated(
                g,
                phase_x,
                (1, 1),
                g_pads,
                dimension_numbers=("CHWN", "IHWO", "CHWN"),
                precision=precision,
            )
            part = jnp.flip(jnp.transpose(out, (1, 2, 0, 3)), (0, 1))
            if strides == (1, 1):
                return part
            dw = dw.at[a :: strides[0], b :: strides[1]].set(part)
    return dw
