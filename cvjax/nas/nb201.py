"""The NAS-Bench-201 cell space (Dong & Yang 2020, Sec. 2): 5 operations on the 6 edges of a
4-node cell, 5^6 = 15,625 cells.

Node 0 is the cell input; node j = 1, 2, 3 is the sum of one operation applied to every earlier
node; node 3 is the output. The NB201 string lists node j's incoming edges in order of their
source: `|op~0|+|op~0|op~1|+|op~0|op~1|op~2|` (`decode` / `encode`). The edge order of that string
is the decision order of the space (`EDGES`) and the row order of supernet weights.

`canonical` keys cells by what they compute, with the benchmark's rules for the two special
operations (NB201 `Structure.to_unique_str`, zeros considered): an edge with `none` or from a
zero node contributes nothing, `skip_connect` passes its input unchanged, and a node's inputs are
summed in any order. The 15,625 cells fall into 5,773 such classes. The benchmark's own key
keeps zero terms in its sums (`x + 0` and `x` differ there) and writes sums without brackets,
which gives its published 6,466 "unique topologies". Edges out of a zero node count as zero here
as there, although a trained convolution's BN would add its bias to zeros.

`cost` is analytic (no model built): parameters of the network of cvjax/models/nb201.py, and the
multiply-accumulates of its convolutions and classifier, at 32x32 inputs by default.
"""

import functools
from collections.abc import Sequence

from cvjax.errors import UserError
from cvjax.nas.spaces import SearchSpace, register_space

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
# (target node, source node) of each edge, in the order of the NB201 string.
EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
NUM_NODES = 4
_FORMAT = "|op~0|+|op~0|op~1|+|op~0|op~1|op~2| with op in " + ", ".join(OPS)

Cell = tuple[tuple[tuple[str, int], ...], ...]  # Node j's (op, source) pairs, j = 1, 2, 3.


def decode(arch: str) -> Cell:
    """Parses an NB201 string into per-node (op, source) pairs; UserError on any other string."""
    nodes = arch.strip().split("+")
    if len(nodes) != NUM_NODES - 1:
        raise UserError(f"NB201 cell {arch!r} must have 3 nodes: {_FORMAT}")
    cell = []
    for j, node in enumerate(nodes, start=1):
        if not (node.startswith("|") and node.endswith("|")):
            raise UserError(f"NB201 cell {arch!r}: node {node!r} must look like |op~i|; {_FORMAT}")
        edges = []
        for item in node[1:-1].split("|"):
            op, _, source = item.partition("~")
            if op not in OPS or not source.isdigit():
                raise UserError(f"NB201 cell {arch!r}: bad edge {item!r}; use {_FORMAT}")
            edges.append((op, int(source)))
        if [s for _, s in edges] != list(range(j)):
            raise UserError(f"NB201 cell {arch!r}: node {j} needs inputs 0..{j - 1}; {_FORMAT}")
        cell.append(tuple(edges))
    return tuple(cell)


def encode(cell: Sequence[Sequence[tuple[str, int]]]) -> str:
    """The NB201 string of per-node (op, source) pairs."""
    return "+".join("|" + "|".join(f"{op}~{source}" for op, source in node) + "|" for node in cell)


def edge_ops(arch: str) -> tuple[str, ...]:
    """The 6 operations in `EDGES` order."""
    return tuple(op for node in decode(arch) for op, _ in node)


def canonical(arch: str) -> str:
    """A string equal for cells that compute the same thing (see the module docstring)."""
    zero = "#"
    exprs = {0: "x"}
    for j, node in enumerate(decode(arch), start=1):
        terms = [
            exprs[source] if op == "skip_connect" else f"{op}({exprs[source]})"
            for op, source in node
            if op != "none" and exprs[source] != zero
        ]
        exprs[j] = "+".join(sorted(terms)) if terms else zero
        if len(terms) > 1:  # Brackets keep op(a+b) apart from a+op(b).
            exprs[j] = f"[{exprs[j]}]"
    return exprs[NUM_NODES - 1]


def network_cost(
    arch: str,
    width: int = 16,
    cells: int = 5,
    image_size: int = 32,
    in_channels: int = 3,
    num_classes: int = 10,
) -> dict[str, float]:
    """Parameters and GMACs of the NB201 network (cvjax/models/nb201.py) with cell `arch`.

    MACs count convolutions (H_out * W_out * C_in * C_out * k^2) and the classifier; BatchNorm,
    pooling and additions are left out, as in the usual FLOP counters. A cell operation whose
    result cannot reach the cell output (its target node has only `none` edges onwards) is not
    counted: XLA removes it from the compiled network (NB201's PyTorch counter does count it).
    """
    ops = edge_ops(arch)
    # Node j's result is used if a non-`none` edge leads from it towards the output node.
    used = {NUM_NODES - 1}
    for target, source in reversed(EDGES):
        if target in used and ops[EDGES.index((target, source))] != "none":
            used.add(source)

    def conv(c_in: int, c_out: int, k: int, size: int) -> tuple[int, int]:
        return c_in * c_out * k * k, size * size * c_in * c_out * k * k

    target_of = [target for target, _ in EDGES]
    params, macs = 0, 0
    p, m = conv(in_channels, width, 3, image_size)  # Stem: conv 3x3 + BN.
    params, macs = params + p + 2 * width, macs + m
    c, size = width, image_size
    for stage in range(3):
        if stage:  # Residual reduction: ReLU-conv3x3/2-BN, ReLU-conv3x3-BN, avgpool + conv1x1.
            size = -(-size // 2)
            for piece in (
                conv(c, 2 * c, 3, size),
                conv(2 * c, 2 * c, 3, size),
                conv(c, 2 * c, 1, size),
            ):
                params, macs = params + piece[0], macs + piece[1]
            c *= 2
            params += 2 * 2 * c  # The two BNs.
        for op_index, op in enumerate(ops):
            k = {"nor_conv_1x1": 1, "nor_conv_3x3": 3}.get(op)
            if k:
                p, m = conv(c, c, k, size)
                params += cells * (p + 2 * c)
                macs += cells * m if target_of[op_index] in used else 0
    params += 2 * c + c * num_classes + num_classes  # Last BN, classifier.
    macs += c * num_classes
    return {"params": float(params), "gmacs": macs / 1e9}


class NB201Space(SearchSpace):
    """NAS-Bench-201's cell space; the network is `width` channels wide with `cells` per stage
    (the benchmark's C=16, N=5)."""

    name = "nb201"

    def __init__(
        self, width: int = 16, cells: int = 5, image_size: int = 32, num_classes: int = 10
    ):
        self.width, self.cells = width, cells
        self.image_size, self.num_classes = image_size, num_classes

    def cardinalities(self) -> tuple[int, ...]:
        return (len(OPS),) * len(EDGES)

    def from_choices(self, choices: Sequence[int]) -> str:
        if len(choices) != len(EDGES) or not all(0 <= c < len(OPS) for c in choices):
            raise UserError(f"NB201 choices {list(choices)} must be 6 op indices in 0..4")
        cell, it = [], iter(choices)
        for j in range(1, NUM_NODES):
            cell.append(tuple((OPS[next(it)], i) for i in range(j)))
        return encode(cell)

    def to_choices(self, arch: str) -> tuple[int, ...]:
        return tuple(OPS.index(op) for op in edge_ops(arch))

    def canonical(self, arch: str) -> str:
        return canonical(arch)

    def model(self, arch: str) -> tuple[str, dict]:
        return "nb201", {"arch": arch, "width": self.width, "cells": self.cells}

    def cost(self, arch: str) -> dict[str, float]:
        return dict(_cached_cost(arch, self.width, self.cells, self.image_size, self.num_classes))


@functools.lru_cache(maxsize=65536)
def _cached_cost(arch: str, width: int, cells: int, size: int, num_classes: int) -> dict:
    return network_cost(arch, width, cells, size, num_classes=num_classes)


register_space("nb201", NB201Space)
