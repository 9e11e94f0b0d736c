"""Shared machinery of the PyTorch weight converters: layouts, the bookkeeping, the final check.

A converter reads a torch state dict through a `TorchState`: `take(key)` marks a tensor as used,
`put(path, value)` sets one Flax leaf, and `conv` / `dense` / `bn` / `conv_bn` do both for a whole
layer with the layout change. `build(model, state, input_shape)` then compares the assignments with
the model's own variables (`jax.eval_shape` of `model.init`, nothing compiled): every Flax leaf set
exactly once with its shape, every torch tensor used (`num_batches_tracked` aside).

Layouts: a torch convolution weight is OIHW with I = in_channels / groups, Flax's kernel is HWIO
with the same I, so one transpose serves plain, grouped and depthwise convolutions alike; a torch
Linear weight is (out, in), a Flax Dense kernel (in, out). BatchNorm's weight / bias become the
params scale / bias and running_mean / running_var the batch_stats mean / var; its epsilon is a
model field (checked by the converters against the reference, not stored in a state dict).
"""

from collections.abc import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from cvjax.errors import UserError

Path = tuple[str, ...]
COLLECTIONS = ("params", "batch_stats")
# Bookkeeping tensors that carry no weights.
IGNORED_SUFFIXES = ("num_batches_tracked",)
_SHOWN = 5  # Names listed in an error message.


def conv_kernel(weight: np.ndarray) -> np.ndarray:
    """torch Conv2d weight (O, I/groups, kh, kw) -> Flax kernel (kh, kw, I/groups, O)."""
    if weight.ndim != 4:
        raise ValueError(f"a conv weight has 4 dimensions, got shape {weight.shape}")
    return np.transpose(weight, (2, 3, 1, 0))


def dense_kernel(weight: np.ndarray) -> np.ndarray:
    """torch Linear weight (out, in) -> Flax Dense kernel (in, out)."""
    if weight.ndim != 2:
        raise ValueError(f"a linear weight has 2 dimensions, got shape {weight.shape}")
    return np.transpose(weight)


def linear_as_conv(weight: np.ndarray, kh: int, kw: int) -> np.ndarray:
    """torch Linear (out, C*kh*kw) over a flattened NCHW map -> VALID conv kernel (kh, kw, C, out).

    torch flattens C before H and W; the Flax map is NHWC, so the input axis is unflattened as
    (C, kh, kw) and moved behind the spatial axes (VGG's and AlexNet's first classifier layer).
    """
    out, fan_in = weight.shape
    if fan_in % (kh * kw):
        raise ValueError(f"linear input {fan_in} is not a multiple of {kh}x{kw}")
    return np.transpose(weight.reshape(out, fan_in // (kh * kw), kh, kw), (2, 3, 1, 0))


def _path(path: str | Sequence[str]) -> Path:
    return tuple(path.split("/")) if isinstance(path, str) else tuple(path)


class TorchState:
    """A torch state dict being mapped onto Flax variables: what was read, what was written.

    Flax paths are "/"-joined strings (or tuples) below the collection, e.g.
    `put("head/fc/kernel", w)`; torch keys are the state dict's dotted names.
    """

    def __init__(self, state_dict: Mapping[str, np.ndarray]):
        self.tensors = {k: np.asarray(v) for k, v in state_dict.items()}
        self.used: set[str] = set()
        self.assigned: dict[tuple[str, Path], np.ndarray] = {}
        self.source: dict[tuple[str, Path], str] = {}

    def __contains__(self, key: str) -> bool:
        return key in self.tensors

    def keys(self, prefix: str = "") -> list[str]:
        """The state dict's keys starting with `prefix`, in their order."""
        return [k for k in self.tensors if k.startswith(prefix)]

    def take(self, key: str) -> np.ndarray:
        """The tensor `key` as float32 numpy, marked as used."""
        if key not in self.tensors:
            raise UserError(
                f"the state dict has no tensor {key!r} (it has {len(self.tensors)}, e.g. "
                f"{', '.join(list(self.tensors)[:_SHOWN])}); check that --model and the source "
                "match the weights"
            )
        self.used.add(key)
        return self.tensors[key].astype(np.float32)

    def put(
        self, path: str | Sequence[str], value: np.ndarray, collection: str = "params", key=""
    ) -> None:
        """Sets the Flax leaf `collection/path`; `key` names the torch tensor it came from."""
        full = (collection, _path(path))
        if full in self.assigned:
            raise ValueError(f"{collection}/{'/'.join(full[1])} is assigned twice")
        self.assigned[full] = np.asarray(value, np.float32)
        self.source[full] = key

    def conv(self, path: str, key: str, bias: bool | None = None) -> None:
        """torch Conv2d `key` -> Flax nn.Conv at `path`; `bias=None`: if the state dict has one."""
        self.put(f"{path}/kernel", conv_kernel(self.take(f"{key}.weight")), key=f"{key}.weight")
        if bias or (bias is None and f"{key}.bias" in self):
            self.put(f"{path}/bias", self.take(f"{key}.bias"), key=f"{key}.bias")

    def dense(self, path: str, key: str, bias: bool = True) -> None:
        """torch Linear `key` -> Flax nn.Dense at `path`."""
        self.put(f"{path}/kernel", dense_kernel(self.take(f"{key}.weight")), key=f"{key}.weight")
        if bias:
            self.put(f"{path}/bias", self.take(f"{key}.bias"), key=f"{key}.bias")

    def bn(self, path: str, key: str) -> None:
        """torch BatchNorm2d `key` -> Flax nn.BatchNorm at `path` (params and batch_stats)."""
        self.put(f"{path}/scale", self.take(f"{key}.weight"), key=f"{key}.weight")
        self.put(f"{path}/bias", self.take(f"{key}.bias"), key=f"{key}.bias")
        for torch_name, flax_name in (("running_mean", "mean"), ("running_var", "var")):
            self.put(
                f"{path}/{flax_name}",
                self.take(f"{key}.{torch_name}"),
                "batch_stats",
                key=f"{key}.{torch_name}",
            )

    def conv_bn(self, path: str, conv_key: str, bn_key: str) -> None:
        """torch conv + BatchNorm -> a Flax `layers.ConvBN` at `path` (Conv_0, BatchNorm_0)."""
        self.conv(f"{path}/Conv_0", conv_key)
        self.bn(f"{path}/BatchNorm_0", bn_key)

    def unused(self) -> list[str]:
        """Keys not read yet, bookkeeping tensors aside."""
        return [k for k in self.tensors if k not in self.used and not k.endswith(IGNORED_SUFFIXES)]


def variable_shapes(model: nn.Module, input_shape: Sequence[int]) -> dict[str, dict[Path, tuple]]:
    """The model's params and batch_stats shapes, flattened, by `jax.eval_shape` (no compile)."""

    def init():
        x = jnp.zeros(tuple(input_shape), jnp.float32)
        return model.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, x)

    variables = jax.eval_shape(init)
    return {
        c: {p: tuple(v.shape) for p, v in traverse_util.flatten_dict(variables[c]).items()}
        for c in COLLECTIONS
        if c in variables
    }


def _listing(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_SHOWN])
    return shown + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")


def build(model: nn.Module, state: TorchState, input_shape: Sequence[int]) -> dict:
    """The Flax variables {"params", "batch_stats"} of `model` from `state`'s assignments.

    Checks that every leaf of the model is assigned once with its shape and that every torch
    tensor was used; a mismatch is a `UserError` naming the first few leaves or keys.
    """
    expected = variable_shapes(model, input_shape)
    want = {(c, p): s for c, leaves in expected.items() for p, s in leaves.items()}
    for full, value in state.assigned.items():
        name = "/".join((full[0],) + full[1])
        if full not in want:
            raise UserError(
                f"torch tensor {state.source[full]!r} maps to {name}, which this model does not "
                "have; check that --model (and its kwargs) match the weights"
            )
        if value.shape != want[full]:
            raise UserError(
                f"torch tensor {state.source[full]!r} has shape {value.shape} after conversion, "
                f"{name} needs {want[full]}; create the model with the weights' sizes "
                "(e.g. num_classes) or pick the matching --model"
            )
    missing = ["/".join((c,) + p) for c, p in want if (c, p) not in state.assigned]
    if missing:
        raise UserError(
            f"{len(missing)} model variables got no torch tensor: {_listing(missing)}; "
            "check that --model and the source match the weights"
        )
    unused = state.unused()
    if unused:
        raise UserError(
            f"{len(unused)} torch tensors have no place in the model: {_listing(unused)}; "
            "check that --model (and its kwargs) match the weights"
        )
    out: dict = {c: {} for c in expected}
    for (c, p), value in state.assigned.items():
        # One transfer per leaf; jnp.asarray would compile a conversion per distinct shape.
        out[c][p] = jax.device_put(np.asarray(value, np.float32))
    return {c: traverse_util.unflatten_dict(leaves) for c, leaves in out.items()}
