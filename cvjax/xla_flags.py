"""XLA options that cvjax sets for the user, before JAX starts its backend.

On CPU, XLA 0.10 hands every convolution to YNNPACK by default (the `individual_convolution`
YNN fusion type). On the project's CPU machine that path is 1.5-4x slower than XLA's own
(Eigen) convolution, for training above all. For example, at batch 32 and 56x56 a 1x1
convolution forward + backward took 725 ms with YNNPACK and 179 ms without it, and a 3x3 one
took 379 vs 186 ms (`python experiments/conv_layers.py`). BENCHMARKS.md, "CPU speed", has the
measurements. Only `-individual_convolution` is removed: YNNPACK keeps its other default
fusions (reductions, dots), which are fast.

The options are appended to the XLA_FLAGS environment variable when `cvjax` is imported, so
they apply only if JAX's backend has not started yet: import cvjax (or any of its modules)
before calling into JAX. An option the user already set in XLA_FLAGS wins. CVJAX_XLA_FLAGS=0
leaves XLA_FLAGS alone, for A/B comparisons.

jaxlib releases before 0.10 do not know these flags, and XLA aborts on an unknown flag, so
nothing is set for them. Simulated multi-device CPU runs (`--xla_force_host_platform_device_count`
> 1) get a different option. There the simulated devices share one thread pool, and under CPU
load one device can reach an all-reduce long after the others: XLA then aborts the process once
its collective rendezvous has waited 40 s ("Termination timeout for all reduce"). That happened
in 1 of 2 runs of tests/test_train.py's two-device check beside a busy CPU with the convolution
option (0 of 2 without it), and once in a full local test run without it (2026-11-23). So
simulated runs keep XLA's convolutions and get a 300 s rendezvous timeout instead
(SIMULATED_DEVICE_FLAGS); a real deadlock still ends the process, later.
"""

import importlib.metadata
import os

CPU_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=-individual_convolution",)
SIMULATED_DEVICE_FLAGS = ("--xla_cpu_collective_call_terminate_timeout_seconds=300",)
MIN_JAXLIB = (0, 10)


def _jaxlib_version() -> tuple[int, ...]:
    try:
        text = importlib.metadata.version("jaxlib")
    except importlib.metadata.PackageNotFoundError:
        return ()
    parts = []
    for piece in text.split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def flags_to_add(xla_flags: str, jaxlib_version: tuple[int, ...]) -> list[str]:
    """The options that `xla_flags` does not already set: CPU_FLAGS, or SIMULATED_DEVICE_FLAGS
    for simulated multi-device CPU runs (none for old jaxlib)."""
    if jaxlib_version < MIN_JAXLIB:
        return []
    settings = dict(item.partition("=")[::2] for item in xla_flags.split())
    devices = settings.get("--xla_force_host_platform_device_count", "1")
    simulated = not devices.isdigit() or int(devices) > 1  # See the module docstring.
    wanted = SIMULATED_DEVICE_FLAGS if simulated else CPU_FLAGS
    return [flag for flag in wanted if flag.split("=", 1)[0] not in settings]


def apply() -> None:
    """Appends cvjax's options to XLA_FLAGS unless CVJAX_XLA_FLAGS=0."""
    if os.environ.get("CVJAX_XLA_FLAGS", "1") == "0":
        return
    current = os.environ.get("XLA_FLAGS", "")
    extra = flags_to_add(current, _jaxlib_version())
    if extra:
        os.environ["XLA_FLAGS"] = " ".join([current, *extra]).strip()
