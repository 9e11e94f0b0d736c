"""The model table: `create(name, **kwargs)`, `list_models(pattern)`, `model_info(name)`."""

import dataclasses
import fnmatch
import inspect
from collections.abc import Callable

import flax.linen as nn

from cvjax.errors import UserError, unknown_name


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    factory: Callable[..., nn.Module]
    input_size: int
    num_classes: int
    in_channels: int
    family: str


_MODELS: dict[str, ModelEntry] = {}


def register(
    name: str,
    factory: Callable[..., nn.Module],
    *,
    input_size: int,
    family: str,
    num_classes: int = 1000,
    in_channels: int = 3,
) -> None:
    """Adds `name` to the table; `factory(**kwargs)` builds the module (usually a partial)."""
    if name in _MODELS:
        raise ValueError(f"model {name!r} is registered twice")
    _MODELS[name] = ModelEntry(factory, input_size, num_classes, in_channels, family)


def list_models(pattern: str = "*") -> list[str]:
    """Registered names matching an fnmatch pattern, e.g. 'resnet*', sorted."""
    return sorted(n for n in _MODELS if fnmatch.fnmatch(n, pattern))


def model_info(name: str) -> dict:
    entry = _entry(name)
    return {
        "name": name,
        "input_size": entry.input_size,
        "num_classes": entry.num_classes,
        "in_channels": entry.in_channels,
        "family": entry.family,
    }


def create(name: str, **kwargs) -> nn.Module:
    """Builds a registered model; kwargs override its defaults.

    Every model takes `num_classes`, `drop_rate` (dropout before the classifier), `in_channels`,
    `global_pool` (False: a spatial map of logits) and `dtype` (the compute dtype).
    """
    entry = _entry(name)
    kwargs.setdefault("num_classes", entry.num_classes)
    kwargs.setdefault("in_channels", entry.in_channels)
    module_cls = _module_class(entry.factory)
    valid = {f.name for f in dataclasses.fields(module_cls)} - {"parent", "name"}
    unknown = sorted(set(kwargs) - valid)
    if unknown:
        raise UserError(
            f"model {name!r} takes no argument {', '.join(unknown)}; valid: "
            f"{', '.join(sorted(valid))}"
        )
    return entry.factory(**kwargs)


def _entry(name: str) -> ModelEntry:
    if name not in _MODELS:
        raise unknown_name("model", name, _MODELS)
    return _MODELS[name]


def _module_class(factory) -> type:
    while not inspect.isclass(factory):
        factory = factory.func
    return factory
