"""Import of PyTorch (torchvision / timm) weights into cvjax models.

    state_dict = weights.load_state_dict("resnet50.safetensors")  # name -> numpy array
    variables = weights.from_torch("resnet50", state_dict, source="torchvision")
    logits = models.create("resnet50").apply(variables, images)  # NHWC

A converter per (source, model) maps the torch names onto the Flax tree (`register`); `core.build`
checks that every variable and every tensor is used exactly once. The model kwargs a source's
reference needs (BatchNorm epsilon, padding, ...) are registered with the converter and applied by
`from_torch`; `num_classes` is read off the classifier's weight unless given. Nothing is
unpickled: weights come from safetensors or .npz files (`cvjax.weights.io`).
"""

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import numpy as np

from cvjax import models
from cvjax.errors import unknown_name
from cvjax.weights.core import TorchState, build
from cvjax.weights.io import load_converted, load_state_dict, save_converted

SOURCES = ("torchvision", "timm")
ConverterFn = Callable[[nn.Module, TorchState], None]


@dataclasses.dataclass(frozen=True)
class Converter:
    fn: ConverterFn
    defaults: Mapping[str, Any]  # Model kwargs that make the cvjax model match the reference.
    classifier: str | None  # Torch key of the final layer's weight: its rows are the classes.
    input_size: int | None  # Input side for the structural check; None: the model's own.
    infer: Callable[[Mapping[str, np.ndarray]], Mapping[str, Any]] | None  # Kwargs from tensors.


_CONVERTERS: dict[str, dict[str, Converter]] = {s: {} for s in SOURCES}


def register(
    source: str,
    names: Sequence[str],
    *,
    defaults: Mapping[str, Any] | Callable[[str], Mapping[str, Any]] | None = None,
    classifier: str | None = None,
    input_size: int | None = None,
    infer: Callable[[Mapping[str, np.ndarray]], Mapping[str, Any]] | None = None,
) -> Callable[[ConverterFn], ConverterFn]:
    """Decorator: `fn(model, state)` converts the torch `source` weights of the cvjax `names`.

    `fn` gets the created cvjax module (read its fields for depths and widths) and a
    `core.TorchState`, and assigns every variable through it. `defaults` (a dict, or a function of
    the model name returning one) are model kwargs the reference needs; `infer(state_dict)`
    returns kwargs read off the tensors (e.g. `aux_logits` when aux-head weights are present);
    `classifier` is the torch key whose rows give `num_classes`. The user's kwargs override all.
    """
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}")

    def decorate(fn: ConverterFn) -> ConverterFn:
        for name in names:
            if name in _CONVERTERS[source]:
                raise ValueError(f"{source} converter for {name!r} is registered twice")
            kwargs = defaults(name) if callable(defaults) else defaults or {}
            _CONVERTERS[source][name] = Converter(fn, dict(kwargs), classifier, input_size, infer)
        return fn

    return decorate


def list_convertible(source: str = "torchvision") -> list[str]:
    """cvjax model names with a converter for `source`, sorted."""
    return sorted(_converters(source))


def get_converter(source: str, model_name: str) -> Converter:
    """The registered converter of `model_name`'s `source` weights (its `fn.__module__` tells
    the family file)."""
    converters = _converters(source)
    if model_name not in converters:
        raise unknown_name(f"model with {source} weights", model_name, converters)
    return converters[model_name]


def _converters(source: str) -> dict[str, Converter]:
    if source not in _CONVERTERS:
        raise unknown_name("weight source", source, SOURCES)
    return _CONVERTERS[source]


def resolve_kwargs(
    model_name: str, state_dict: Mapping[str, np.ndarray], source: str = "torchvision", **kwargs
) -> dict[str, Any]:
    """The model kwargs `from_torch` uses: the converter's defaults, those read off the tensors
    (`num_classes` from the classifier weight, ...), then the user's."""
    entry = get_converter(source, model_name)
    inferred = entry.infer(state_dict) if entry.infer else {}
    out = {**entry.defaults, **inferred, **kwargs}
    if "num_classes" not in out and entry.classifier and entry.classifier in state_dict:
        out["num_classes"] = int(np.shape(state_dict[entry.classifier])[0])
    return out


def from_torch(
    model_name: str,
    state_dict: Mapping[str, np.ndarray],
    source: str = "torchvision",
    **model_kwargs,
) -> dict:
    """Flax variables {"params", "batch_stats"} for `models.create(model_name, **kw)` from a
    torch state dict (names -> numpy arrays) of `source`'s model of the same name.

    kw is `resolve_kwargs(...)`: create the model with the same kwargs to use the variables.
    """
    kwargs = resolve_kwargs(model_name, state_dict, source, **model_kwargs)
    entry = get_converter(source, model_name)
    model = models.create(model_name, **kwargs)
    state = TorchState(state_dict)
    entry.fn(model, state)
    info = models.model_info(model_name)
    size = entry.input_size or info["input_size"]
    channels = kwargs.get("in_channels", info["in_channels"])
    return build(model, state, (1, size, size, channels))


# Importing a family's module registers its converters (after `register` exists).
from cvjax.weights import mobile, resnet_like  # noqa: E402, F401

__all__ = [
    "SOURCES",
    "TorchState",
    "build",
    "from_torch",
    "get_converter",
    "list_convertible",
    "load_converted",
    "load_state_dict",
    "register",
    "resolve_kwargs",
    "save_converted",
]
