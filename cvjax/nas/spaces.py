"""The search-space interface every strategy and estimator works through, and the space table.

An architecture is a string in its space's own notation (an NB201 cell string, a DARTS genotype,
an MBConv stage list, compound-scaling coefficients), so that it goes to JSON, to trials.jsonl and
back to a model without a pickled object. A space also views each architecture as a fixed list of
categorical decisions (`cardinalities`, `to_choices`, `from_choices`): random sampling, one-choice
mutation (regularized evolution) and a factorized REINFORCE policy need nothing else.

A space knows how to build its architectures as trainable models (`model`: a registered model
name and its kwargs, so the ordinary training engine trains them) and what they cost (`cost`:
params and GMACs, for constraints and the Pareto front).
"""

import abc
import math
from collections.abc import Callable, Sequence

import numpy as np

from cvjax.errors import UserError, unknown_name


class SearchSpace(abc.ABC):
    """A finite space of architectures, each a string and a tuple of categorical choices."""

    name: str = ""

    @abc.abstractmethod
    def cardinalities(self) -> tuple[int, ...]:
        """The number of options of each decision, in order."""

    @abc.abstractmethod
    def from_choices(self, choices: Sequence[int]) -> str:
        """The architecture string of one option index per decision."""

    @abc.abstractmethod
    def to_choices(self, arch: str) -> tuple[int, ...]:
        """Inverse of `from_choices`; raises UserError naming the format on a bad string."""

    @abc.abstractmethod
    def model(self, arch: str) -> tuple[str, dict]:
        """(registered model name, create() kwargs) that build `arch` for training."""

    def resolution(self, arch: str) -> int:
        """The input size `arch` trains at; 0 keeps the dataset's own (compound scaling sets it)."""
        return 0

    def is_valid(self, arch: str) -> bool:
        """False for choice combinations the space forbids (sampling and mutation skip them)."""
        return True

    def canonical(self, arch: str) -> str:
        """A key equal for architectures that compute the same function (default: the string)."""
        return arch

    def cost(self, arch: str) -> dict[str, float]:
        """{"params": ..., "gmacs": ...} of `arch` at the space's default data shape, measured on
        the built model once per canonical architecture (equivalent ones cost the same)."""
        from cvjax.models.__main__ import count_params, gmacs

        costs = self.__dict__.setdefault("_costs", {})
        key = self.canonical(arch)
        if key not in costs:
            name, kwargs = self.model(key)
            size = self.resolution(key) or self.image_size
            kwargs = {"num_classes": self.num_classes, **kwargs}
            costs[key] = {
                "params": float(count_params(name, size, **kwargs)),
                "gmacs": float(gmacs(name, size, **kwargs)),
            }
        return dict(costs[key])

    image_size: int = 32  # The data shape `cost` assumes.
    num_classes: int = 10  # The classifier `cost` assumes.

    def size(self) -> int:
        """The number of choice combinations (valid or not)."""
        return math.prod(self.cardinalities())

    def sample(self, rng: np.random.Generator) -> str:
        """A uniformly random valid architecture."""
        for _ in range(10_000):
            arch = self.from_choices([int(rng.integers(n)) for n in self.cardinalities()])
            if self.is_valid(arch):
                return arch
        raise RuntimeError(f"space {self.name!r}: no valid architecture in 10,000 samples")

    def mutate(self, arch: str, rng: np.random.Generator) -> str:
        """`arch` with one decision changed to a different option (Real et al. 2019), valid."""
        choices = list(self.to_choices(arch))
        mutable = [i for i, n in enumerate(self.cardinalities()) if n > 1]
        for _ in range(10_000):
            i = mutable[int(rng.integers(len(mutable)))]
            new = list(choices)
            offset = 1 + int(rng.integers(self.cardinalities()[i] - 1))
            new[i] = (choices[i] + offset) % self.cardinalities()[i]
            child = self.from_choices(new)
            if self.is_valid(child):
                return child
        raise RuntimeError(f"space {self.name!r}: no valid mutation of {arch!r}")

    def validate(self, arch: str) -> str:
        """`arch` if it belongs to the space, else a UserError naming the problem."""
        choices = self.to_choices(arch)
        if self.from_choices(choices) != arch or not self.is_valid(arch):
            raise UserError(f"{arch!r} is not a valid {self.name} architecture")
        return arch


_SPACES: dict[str, Callable[..., SearchSpace]] = {}


def register_space(name: str, factory: Callable[..., SearchSpace]) -> None:
    if name in _SPACES:
        raise ValueError(f"search space {name!r} is registered twice")
    _SPACES[name] = factory


def get_space(name: str, **kwargs) -> SearchSpace:
    """The search space `name` ("nb201", "darts", "mbconv", "compound"), built with kwargs."""
    if name not in _SPACES:
        raise unknown_name("search space", name, _SPACES)
    return _SPACES[name](**kwargs)


def space_names() -> list[str]:
    return sorted(_SPACES)
