"""Cell genotypes of the NASNet/DARTS search space, their operations and their text formats.

A genotype (Liu et al. 2019, "DARTS", Sec. 2.1) describes the two cell types of a cell network:
the normal cell keeps the resolution, the reduction cell halves it. A cell has two inputs, the
outputs of the previous two cells (index 0: the one before the previous, 1: the previous), and
`len(edges) // 2` intermediate nodes, numbered from 2. Node k sums two operations, each applied
to an earlier state: edges[2k] and edges[2k + 1] are (operation, input index) pairs. The cell's
output concatenates the states listed in `concat`. In a reduction cell an operation whose input
is one of the two cell inputs has stride 2.

NASNet-A (Zoph et al. 2018, Fig. 4) is written in this format from TF-slim's
`NasNetANormalCell` / `NasNetAReductionCell` tables (whose index 0 is the previous cell and 1 the
one before; here they are swapped to the DARTS order). Unlike the approximation in DARTS'
genotypes.py, its normal cell concatenates input 0 too, as the reference does: 6 states, so the
penultimate layer of "NASNet-A (N @ P)" has P = 24 x the first stage's filters.

Text formats: `str(genotype)` is the DARTS repr (`Genotype(normal=[('sep_conv_3x3', 1), ...],
normal_concat=[2, 3, 4, 5], ...)`, which `from_string` also reads with `range(2, 6)`), and
`to_dict` / `from_dict` give a JSON-ready dict; `get_genotype` accepts a Genotype, a name in
GENOTYPES, a repr or a JSON string.
"""

import ast
import dataclasses
import json
from typing import Any

from cvjax.errors import UserError, unknown_name

# The 8 candidate operations of DARTS (Liu et al. 2019, Sec. 3.1.1); "none" is the zero operation.
PRIMITIVES = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)
# NASNet-A's reduction cell also uses a 7x7 separable convolution (Zoph et al. 2018, Fig. 4).
OPERATIONS = PRIMITIVES + ("sep_conv_7x7",)

Edge = tuple[str, int]


def _edges(value) -> tuple[Edge, ...]:
    return tuple((str(op), int(index)) for op, index in value)


@dataclasses.dataclass(frozen=True)
class Genotype:
    """The normal and reduction cells: (operation, input) pairs and the states to concatenate."""

    normal: tuple[Edge, ...]
    normal_concat: tuple[int, ...]
    reduce: tuple[Edge, ...]
    reduce_concat: tuple[int, ...]

    def __post_init__(self):
        # Lists and ranges (the DARTS style) become tuples: the genotype is hashable, as a field
        # of a Flax module must be.
        for name in ("normal", "reduce"):
            object.__setattr__(self, name, _edges(getattr(self, name)))
        for name in ("normal_concat", "reduce_concat"):
            object.__setattr__(self, name, tuple(int(i) for i in getattr(self, name)))
        for kind in ("normal", "reduce"):
            _check_cell(kind, *self.cell(kind == "reduce"))

    def cell(self, reduction: bool) -> tuple[tuple[Edge, ...], tuple[int, ...]]:
        """The (edges, concat) of the reduction or the normal cell."""
        if reduction:
            return self.reduce, self.reduce_concat
        return self.normal, self.normal_concat

    def to_dict(self) -> dict[str, Any]:
        return {
            "normal": [list(e) for e in self.normal],
            "normal_concat": list(self.normal_concat),
            "reduce": [list(e) for e in self.reduce],
            "reduce_concat": list(self.reduce_concat),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Genotype":
        missing = {"normal", "normal_concat", "reduce", "reduce_concat"} - set(d)
        if missing:
            raise UserError(f"a genotype needs the keys {sorted(missing)}; got {sorted(d)}")
        return cls(d["normal"], d["normal_concat"], d["reduce"], d["reduce_concat"])

    def __str__(self) -> str:
        def edges(e):
            return "[" + ", ".join(f"({op!r}, {i})" for op, i in e) + "]"

        return (
            f"Genotype(normal={edges(self.normal)}, normal_concat={list(self.normal_concat)}, "
            f"reduce={edges(self.reduce)}, reduce_concat={list(self.reduce_concat)})"
        )

    @classmethod
    def from_string(cls, text: str) -> "Genotype":
        """Reads `str(genotype)` (DARTS' repr, `range(a, b)` allowed) or a JSON dict."""
        text = text.strip()
        if text.startswith("{"):
            return cls.from_dict(json.loads(text))
        try:
            call = ast.parse(text, mode="eval").body
            if not (isinstance(call, ast.Call) and getattr(call.func, "id", "") == "Genotype"):
                raise ValueError("not a Genotype(...) call")
            fields = {kw.arg: _literal(kw.value) for kw in call.keywords}
        except (SyntaxError, ValueError) as error:
            raise UserError(
                f"cannot read genotype {text[:60]!r}...: {error}; write it as "
                "Genotype(normal=[(op, input), ...], normal_concat=[...], reduce=[...], "
                "reduce_concat=[...]) or as a JSON dict with those keys"
            ) from None
        return cls.from_dict(fields)


def _literal(node: ast.AST):
    """A Python literal, or `range(a[, b])` as DARTS writes its concat lists."""
    if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "range":
        return list(range(*(ast.literal_eval(a) for a in node.args)))
    return ast.literal_eval(node)


def _check_cell(kind: str, edges: tuple[Edge, ...], concat: tuple[int, ...]) -> None:
    if not edges or len(edges) % 2:
        raise UserError(f"the {kind} cell needs two (op, input) pairs per node, got {len(edges)}")
    states = 2 + len(edges) // 2
    for k, (op, index) in enumerate(edges):
        if op not in OPERATIONS:
            raise unknown_name("operation", op, OPERATIONS)
        if not 0 <= index < 2 + k // 2:
            raise UserError(
                f"{kind} cell: edge {k} ({op}) reads state {index}; node {2 + k // 2} can only "
                f"read states 0..{1 + k // 2}"
            )
    if not concat or any(not 0 <= i < states for i in concat) or len(set(concat)) != len(concat):
        raise UserError(
            f"{kind} cell: concat {list(concat)} must list distinct states 0..{states - 1}"
        )


# NASNet-A (Zoph et al. 2018, Fig. 4), from TF-slim's nasnet_utils tables.
NASNET_A = Genotype(
    normal=[
        ("sep_conv_5x5", 1),
        ("sep_conv_3x3", 0),
        ("sep_conv_5x5", 0),
        ("sep_conv_3x3", 0),
        ("avg_pool_3x3", 1),
        ("skip_connect", 0),
        ("avg_pool_3x3", 0),
        ("avg_pool_3x3", 0),
        ("sep_conv_3x3", 1),
        ("skip_connect", 1),
    ],
    normal_concat=[0, 2, 3, 4, 5, 6],
    reduce=[
        ("sep_conv_5x5", 1),
        ("sep_conv_7x7", 0),
        ("max_pool_3x3", 1),
        ("sep_conv_7x7", 0),
        ("avg_pool_3x3", 1),
        ("sep_conv_5x5", 0),
        ("skip_connect", 3),
        ("avg_pool_3x3", 2),
        ("sep_conv_3x3", 2),
        ("max_pool_3x3", 1),
    ],
    reduce_concat=[3, 4, 5, 6],
)

# DARTS cells found on CIFAR-10 (Liu et al. 2019, Fig. 4/5): first-order (V1), second-order (V2).
DARTS_V1 = Genotype(
    normal=[
        ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 0),
        ("skip_connect", 0),
        ("sep_conv_3x3", 1),
        ("skip_connect", 0),
        ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 0),
        ("skip_connect", 2),
    ],
    normal_concat=[2, 3, 4, 5],
    reduce=[
        ("max_pool_3x3", 0),
        ("max_pool_3x3", 1),
        ("skip_connect", 2),
        ("max_pool_3x3", 0),
        ("max_pool_3x3", 0),
        ("skip_connect", 2),
        ("skip_connect", 2),
        ("avg_pool_3x3", 0),
    ],
    reduce_concat=[2, 3, 4, 5],
)
DARTS_V2 = Genotype(
    normal=[
        ("sep_conv_3x3", 0),
        ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 0),
        ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 1),
        ("skip_connect", 0),
        ("skip_connect", 0),
        ("dil_conv_3x3", 2),
    ],
    normal_concat=[2, 3, 4, 5],
    reduce=[
        ("max_pool_3x3", 0),
        ("max_pool_3x3", 1),
        ("skip_connect", 2),
        ("max_pool_3x3", 1),
        ("max_pool_3x3", 0),
        ("skip_connect", 2),
        ("skip_connect", 2),
        ("max_pool_3x3", 1),
    ],
    reduce_concat=[2, 3, 4, 5],
)

GENOTYPES: dict[str, Genotype] = {
    "NASNET_A": NASNET_A,
    "DARTS_V1": DARTS_V1,
    "DARTS_V2": DARTS_V2,
}


def get_genotype(value: "Genotype | str") -> Genotype:
    """A Genotype from itself, a name in GENOTYPES (any case), its repr or a JSON dict."""
    if isinstance(value, Genotype):
        return value
    if value.upper() in GENOTYPES:
        return GENOTYPES[value.upper()]
    if "(" in value or "{" in value:
        return Genotype.from_string(value)
    raise unknown_name("genotype", value, GENOTYPES)
