"""cvjax's XLA options: when they are set, that they take effect, that gradients are unchanged."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from cvjax import xla_flags

FLAG = xla_flags.CPU_FLAGS[0]
ACTIVE = xla_flags.flags_to_add("", xla_flags._jaxlib_version()) != []

# In a fresh process: the convolutions' values and gradients, the compiled forward HLO, XLA_FLAGS.
_PROBE = r"""
import json, sys
import numpy as np
import cvjax  # sets XLA_FLAGS before the backend starts
import jax
from jax import lax

dn = ("NHWC", "HWIO", "NHWC")
cases = [((4, 12, 12, 16), (3, 3, 16, 8), 1, 1), ((4, 12, 12, 16), (3, 3, 16, 8), 2, 1),
         ((4, 12, 12, 32), (1, 1, 32, 16), 1, 0)]
out = {"xla_flags": __import__("os").environ.get("XLA_FLAGS", ""), "cases": []}
for i, (xs, ws, stride, pad) in enumerate(cases):
    rng = np.random.default_rng(i)
    x = rng.normal(size=xs).astype(np.float32)
    w = (rng.normal(size=ws) / np.sqrt(np.prod(ws[:3]))).astype(np.float32)
    f = lambda x, w: lax.conv_general_dilated(x, w, (stride, stride), ((pad, pad), (pad, pad)),
                                              dimension_numbers=dn)
    y, vjp = jax.vjp(f, x, w)
    g = np.random.default_rng(10 + i).normal(size=y.shape).astype(np.float32)
    dx, dw = jax.jit(lambda x, w, g: jax.vjp(f, x, w)[1](g))(x, w, g)
    hlo = jax.jit(f).lower(x, w).compile().as_text()
    arrays = {"x": x, "w": w, "g": g, "y": y, "dx": dx, "dw": dw}
    case = {k: np.asarray(v).tolist() for k, v in arrays.items()}
    case.update(stride=stride, pad=pad, ynn_conv="__ynn_fusion" in hlo)
    out["cases"].append(case)
print(json.dumps(out))
"""


def _probe(**env) -> dict:
    environ = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "CVJAX_XLA_FLAGS")}
    environ.update(JAX_PLATFORMS="cpu", **env)
    result = subprocess.run(
        [sys.executable, "-c", _PROBE], env=environ, capture_output=True, text=True, check=True
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def _reference(case: dict):
    """Float64 numpy convolution, its input and weight gradients, for one probe case."""
    x, w, g = (np.asarray(case[k], np.float64) for k in ("x", "w", "g"))
    s, p = case["stride"], case["pad"]
    kh, kw = w.shape[:2]
    xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    oh, ow = g.shape[1:3]
    y = np.zeros(g.shape)
    dxp = np.zeros(xp.shape)
    dw = np.zeros(w.shape)
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, i : i + s * oh : s, j : j + s * ow : s, :]
            y += patch @ w[i, j]
            dw[i, j] = np.einsum("bhwc,bhwd->cd", patch, g)
            dxp[:, i : i + s * oh : s, j : j + s * ow : s, :] += g @ w[i, j].T
    dx = dxp[:, p : p + x.shape[1], p : p + x.shape[2], :]
    return y, dx, dw


def test_flags_to_add_respects_the_user_old_jaxlib_and_simulated_devices():
    assert xla_flags.flags_to_add("", (0, 10)) == [FLAG]
    assert xla_flags.flags_to_add("--xla_force_host_platform_device_count=1", (0, 11)) == [FLAG]
    user = "--xla_cpu_experimental_ynn_fusion_type=dot"
    assert xla_flags.flags_to_add(user, (0, 10)) == []
    assert xla_flags.flags_to_add("", (0, 9)) == []
    # Simulated devices share a thread pool: XLA's convolutions, a longer rendezvous timeout.
    simulated = "--xla_force_host_platform_device_count=8"
    timeout = "--xla_cpu_collective_call_terminate_timeout_seconds=300"
    assert xla_flags.flags_to_add(simulated, (0, 10)) == [timeout]
    assert xla_flags.flags_to_add(f"{simulated} {timeout[:-4]}=60", (0, 10)) == []


@pytest.mark.skipif(not ACTIVE, reason="this jaxlib predates the flag; cvjax sets nothing")
def test_flag_is_set_takes_effect_and_gradients_match_float64():
    with_flag = _probe(XLA_FLAGS="--xla_force_host_platform_device_count=1")
    without = _probe(CVJAX_XLA_FLAGS="0")
    assert FLAG in with_flag["xla_flags"]
    assert "--xla_force_host_platform_device_count=1" in with_flag["xla_flags"]
    assert FLAG not in without["xla_flags"]
    # The flag takes the convolutions away from YNNPACK (XLA's default on this jaxlib).
    assert not any(case["ynn_conv"] for case in with_flag["cases"])
    assert any(case["ynn_conv"] for case in without["cases"])
    # What is computed is unchanged: values and both gradients equal float64 numpy's, either way.
    for run in (with_flag, without):
        for case in run["cases"]:
            for name, ref in zip(("y", "dx", "dw"), _reference(case), strict=True):
                got = np.asarray(case[name])
                err = np.linalg.norm(got - ref) / np.linalg.norm(ref)
                assert err < 2e-6, (name, case["stride"], err)
