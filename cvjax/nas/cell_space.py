"""The DARTS cell search space (Liu et al. 2019, Sec. 2.1 and 2.4): a normal and a reduction cell
of 4 intermediate nodes, each the sum of two operations on two distinct earlier states.

An architecture is a genotype string exactly as `str(Genotype)` writes it (cvjax/nas/genotypes.py,
DARTS' own repr): `Genotype(normal=[('sep_conv_3x3', 0), ...], normal_concat=[2, 3, 4, 5],
reduce=[...], reduce_concat=[2, 3, 4, 5])`. Every intermediate node is concatenated, as in DARTS.

Decisions, in order: for the normal then the reduction cell, for node k = 0..3, for its two
edges, the operation (one of the 7 DARTS operations other than "none", `OPS`) then the input
(0..k+1: the two cell inputs, then earlier nodes), i.e. the edge's (op, input) pair of the
genotype. DARTS derives a cell by keeping each node's two strongest edges from *distinct*
predecessors (Sec. 2.4), so a node reading one state twice is not valid here (`is_valid`): of
the 7^16 * 14,400^2 = 6.9e21 choice vectors (`size()`), 7^16 * 2,880^2 = 2.8e20 are valid. A
node's sum does not depend on the order of its two edges, so `canonical` sorts them; that
leaves 2.8e20 / 2^8 = 1.1e18 canonical cell pairs (other isomorphisms, such as renumbering
independent nodes, are not merged).

`model` builds the architecture as "darts_cifar" (cvjax/models/nasnet.py: DARTS' CIFAR network,
36 filters, 20 cells, 3,349,342 parameters with DARTS V2); `filters` and `num_cells` (per stage)
shrink it to a search proxy, as DARTS searches with 16 filters and 8 cells (`num_cells=2`).
"""

import math
from collections.abc import Sequence

import numpy as np

from cvjax.errors import UserError
from cvjax.nas.genotypes import PRIMITIVES, Genotype, get_genotype
from cvjax.nas.spaces import SearchSpace, register_space

OPS = tuple(op for op in PRIMITIVES if op != "none")
NUM_NODES = 4
CONCAT = tuple(range(2, 2 + NUM_NODES))
CELLS = ("normal", "reduce")


def _edge_inputs() -> list[int]:
    """The number of states each edge can read, in decision order within one cell."""
    return [k + 2 for k in range(NUM_NODES) for _ in range(2)]


class DartsCellSpace(SearchSpace):
    """DARTS' normal and reduction cells; the network is "darts_cifar" at `filters` and
    `num_cells` normal cells per stage (DARTS evaluation: 36 and 6)."""

    name = "darts"

    def __init__(
        self,
        filters: int = 36,
        num_cells: int = 6,
        image_size: int = 32,
        num_classes: int = 10,
    ):
        if filters < 2 or num_cells < 1:
            raise UserError(
                f"darts space: filters={filters}, num_cells={num_cells}; use filters >= 2 and "
                "num_cells >= 1"
            )
        self.filters, self.num_cells = filters, num_cells
        self.image_size, self.num_classes = image_size, num_classes

    def cardinalities(self) -> tuple[int, ...]:
        per_cell = [n for inputs in _edge_inputs() for n in (len(OPS), inputs)]
        return tuple(per_cell * len(CELLS))

    def size(self) -> int:
        return math.prod(self.cardinalities())  # 6.9e21 overflows the int64 of the default.

    def sample(self, rng: np.random.Generator) -> str:
        """Uniform over the valid cells without rejection: each node's inputs are a uniform
        ordered pair of distinct states."""
        choices = []
        for _ in CELLS:
            for k in range(NUM_NODES):
                first, second = int(rng.integers(k + 2)), int(rng.integers(k + 1))
                second += second >= first  # Skip `first`: uniform over the other k + 1 states.
                for index in (first, second):
                    choices += [int(rng.integers(len(OPS))), index]
        return self.from_choices(choices)

    def from_choices(self, choices: Sequence[int]) -> str:
        sizes = self.cardinalities()
        if len(choices) != len(sizes) or not all(
            0 <= c < n for c, n in zip(choices, sizes, strict=True)
        ):
            raise UserError(
                f"darts choices {list(choices)} must be {len(sizes)} indices below {list(sizes)}"
            )
        half = len(sizes) // 2
        cells = []
        for cell in (choices[:half], choices[half:]):
            cells.append([(OPS[cell[i]], int(cell[i + 1])) for i in range(0, half, 2)])
        return str(Genotype(cells[0], CONCAT, cells[1], CONCAT))

    def to_choices(self, arch: str) -> tuple[int, ...]:
        genotype = parse(arch)
        return tuple(
            choice
            for edges in (genotype.normal, genotype.reduce)
            for op, index in edges
            for choice in (OPS.index(op), index)
        )

    def is_valid(self, arch: str) -> bool:
        genotype = parse(arch)
        return all(
            edges[i][1] != edges[i + 1][1]
            for edges in (genotype.normal, genotype.reduce)
            for i in range(0, len(edges), 2)
        )

    def canonical(self, arch: str) -> str:
        """The genotype string with each node's two edges in (input, op) order."""
        genotype = parse(arch)

        def sort_nodes(edges):
            pairs = (
                sorted(edges[i : i + 2], key=lambda e: (e[1], e[0]))
                for i in range(0, 2 * NUM_NODES, 2)
            )
            return [edge for pair in pairs for edge in pair]

        return str(
            Genotype(sort_nodes(genotype.normal), CONCAT, sort_nodes(genotype.reduce), CONCAT)
        )

    def model(self, arch: str) -> tuple[str, dict]:
        # DARTS' stem has 3x the first cell's width (its stem_multiplier).
        return "darts_cifar", {
            "genotype": arch,
            "filters": self.filters,
            "num_cells": self.num_cells,
            "stem_size": 3 * self.filters,
        }


def parse(arch: str) -> Genotype:
    """The genotype of a string of this space (a genotype repr, JSON or a name in GENOTYPES);
    UserError when it is no DARTS-space cell pair."""
    try:
        genotype = get_genotype(arch)
    except (ValueError, TypeError, AttributeError) as error:  # Malformed JSON or edge lists.
        raise UserError(
            f"darts space: cannot read {arch[:60]!r}: {error}; write a genotype as "
            "str(Genotype(...)) prints it"
        ) from None
    for kind in CELLS:
        edges, concat = genotype.cell(kind == "reduce")
        if len(edges) != 2 * NUM_NODES or concat != CONCAT:
            raise UserError(
                f"darts space: the {kind} cell needs {NUM_NODES} nodes (8 (op, input) pairs) and "
                f"{kind}_concat={list(CONCAT)}; got {len(edges)} pairs, concat {list(concat)}"
            )
        bad = sorted({op for op, _ in edges if op not in OPS})
        if bad:
            raise UserError(
                f"darts space: the {kind} cell uses {', '.join(bad)}; operations are "
                f"{', '.join(OPS)}"
            )
    return genotype


register_space("darts", DartsCellSpace)
