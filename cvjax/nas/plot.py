"""Pictures of a search: cells of every search space, search curves and accuracy-vs-cost fronts.

Every function writes one PNG and returns its path. Figures are built as
`matplotlib.figure.Figure` objects on an Agg canvas, never through pyplot, so that neither the
global backend nor pyplot's figure registry is touched (safe inside a training process or a test).

Cell pictures follow the papers' drawings: NAS-Bench-201 (Dong & Yang 2020, Fig. 1) as a 4-node
DAG with an operation on every edge; NASNet/DARTS genotypes (Zoph et al. 2018, Fig. 4; Liu et al.
2019, Fig. 4/5) with the inputs c_{k-2}, c_{k-1} on the left, the intermediate nodes, and the
concatenated output c_{k} on the right.
"""

import math
import os
import re
from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch

from cvjax.errors import UserError, unknown_name
from cvjax.nas import nb201
from cvjax.nas.genotypes import Genotype, get_genotype

# One colour per operation, distinct within each space (NB201's five ops, DARTS' eight + 7x7).
OP_COLORS = {
    "none": "#b0b0b0",
    "skip_connect": "#2ca02c",
    "nor_conv_1x1": "#1f77b4",
    "nor_conv_3x3": "#d62728",
    "avg_pool_3x3": "#ff7f0e",
    "max_pool_3x3": "#9467bd",
    "sep_conv_3x3": "#1f77b4",
    "sep_conv_5x5": "#17becf",
    "sep_conv_7x7": "#0b3d91",
    "dil_conv_3x3": "#d62728",
    "dil_conv_5x5": "#8c564b",
}
_DPI = 110
_NODE_RADIUS = 0.42
_BENDS = (0.0, 0.15, -0.15, 0.3, -0.3, 0.45, -0.45)  # arc3 curvatures an edge may take.
_CELL_MARGIN = 1.3  # Room around a genotype cell's nodes for the edges bent around others.
_COLUMN = 4.0  # Distance between node columns of a genotype cell, in node spacings.


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=_DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str) -> str:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fig.savefig(path, format="png", bbox_inches="tight")
    return path


class _Graph:
    """Nodes and labelled arrows on equal-aspect axes, with edge labels kept from overlapping.

    The frame is fixed first (`pos` gives every node), so that the size of a point in data units
    is known and each label can slide along its edge to the first free spot.
    """

    def __init__(self, ax, pos: dict[int, tuple[float, float]], margin: float = 0.9, also=()):
        self.ax, self.pos = ax, pos
        xs, ys = zip(*pos.values(), *also, strict=True)
        ax.set_xlim(min(xs) - margin, max(xs) + margin)
        ax.set_ylim(min(ys) - margin, max(ys) + margin)
        ax.set_aspect("equal")
        ax.axis("off")
        ax.apply_aspect()
        width_pt = ax.get_position().width * ax.figure.get_figwidth() * 72
        self.unit = (max(xs) - min(xs) + 2 * margin) / width_pt  # Data units per point.
        self.patches: dict[int, Circle] = {}
        self.boxes: list[tuple[float, float, float, float]] = []  # Centre and half sizes.

    def node(self, k: int, text: str, color: str = "white") -> None:
        circle = Circle(self.pos[k], _NODE_RADIUS, fc=color, ec="black", lw=1.2, zorder=3)
        self.ax.add_patch(circle)
        self.ax.text(*self.pos[k], text, ha="center", va="center", fontsize=10, zorder=4)
        self.patches[k] = circle
        self.boxes.append((*self.pos[k], _NODE_RADIUS, _NODE_RADIUS))

    def _curve(self, i: int, j: int, rad: float, t):
        """Points at parameters t of arc3's quadratic Bezier curve from node i to node j."""
        (x1, y1), (x2, y2) = self.pos[i], self.pos[j]
        # arc3's control point; equal aspect makes data and display coordinates agree up to scale.
        cx, cy = (x1 + x2) / 2 + rad * (y2 - y1), (y1 + y2) / 2 - rad * (x2 - x1)
        t = np.asarray(t, dtype=float)
        b0, b1, b2 = (1 - t) ** 2, 2 * t * (1 - t), t**2
        return b0 * x1 + b1 * cx + b2 * x2, b0 * y1 + b1 * cy + b2 * y2

    def bend(self, i: int, j: int, rads: Sequence[float]) -> float:
        """The first of `rads` whose curve i -> j clears the other nodes, else the clearest."""
        others = np.array([p for k, p in self.pos.items() if k not in (i, j)]).reshape(-1, 2)
        (x0, x1), (y0, y1) = self.ax.get_xlim(), self.ax.get_ylim()
        clearance = []
        for rad in rads:
            x, y = self._curve(i, j, rad, np.linspace(0, 1, 50))
            d = np.hypot(x[:, None] - others[:, 0], y[:, None] - others[:, 1])
            inside = x.min() > x0 and x.max() < x1 and y.min() > y0 and y.max() < y1
            clearance.append((d.min() if d.size else np.inf) if inside else -np.inf)
            if clearance[-1] > 1.6 * _NODE_RADIUS:
                return rad
        return rads[int(np.argmax(clearance))]

    def edge(self, i: int, j: int, op: str, rad: float = 0.0, ts: Sequence[float] = ()) -> None:
        """An arrow i -> j bent by `rad` (matplotlib's arc3), labelled at the first free t in ts."""
        faint = op == "none"
        color = OP_COLORS.get(op, "black")
        arrow = FancyArrowPatch(
            self.pos[i],
            self.pos[j],
            patchA=self.patches[i],
            patchB=self.patches[j],
            connectionstyle=f"arc3,rad={rad}",
            arrowstyle="-|>",
            mutation_scale=14,
            color=color,
            lw=1.0 if faint or not ts else 2.0,
            linestyle="--" if faint else "-",
            alpha=0.6 if faint else 1.0,
            zorder=2,
        )
        self.ax.add_patch(arrow)
        if not ts:
            return
        half = (0.5 * (0.55 * 8 * len(op) + 4) * self.unit, 0.5 * 13 * self.unit)

        def at(t):
            return tuple(float(v) for v in self._curve(i, j, rad, t))

        def free(xy):
            return all(
                abs(xy[0] - bx) > half[0] + hx or abs(xy[1] - by) > half[1] + hy
                for bx, by, hx, hy in self.boxes
            )

        x, y = next((xy for xy in map(at, ts) if free(xy)), at(ts[0]))
        self.boxes.append((x, y, *half))
        self.ax.text(
            x,
            y,
            op,
            ha="center",
            va="center",
            fontsize=8,
            color=color,
            style="italic" if faint else "normal",
            zorder=5,
            bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.85),
        )


def _legend(ax, ops: Sequence[str], loc: str) -> None:
    handles = [
        Line2D([], [], color=OP_COLORS.get(op, "black"), lw=2, ls="--" if op == "none" else "-")
        for op in ops
    ]
    ax.legend(handles, list(ops), loc=loc, fontsize=8, frameon=False, ncol=min(len(ops), 5))


def draw_nb201_cell(arch: str, path: str) -> str:
    """A PNG of a NAS-Bench-201 cell (Dong & Yang 2020, Fig. 1): nodes 0..3 on a line.

    Every edge is an arrow labelled with its operation; "none" (zero) edges are drawn faint and
    dashed, so that the picture still shows all six edges of the cell.
    """
    nodes = nb201.decode(arch)
    fig = _figure(8.5, 3.6)
    ax = fig.add_subplot()
    # Arcs above and below the line of nodes need room: (0, 1.8) and (0, -1.3) widen the frame.
    graph = _Graph(ax, {k: (2.6 * k, 0.0) for k in range(4)}, 0.6, also=[(0, 1.8), (0, -1.3)])
    for k, (text, fill) in enumerate(
        [("0\nin", "#dddddd"), ("1", "white"), ("2", "white"), ("3\nout", "#bcd6f0")]
    ):
        graph.node(k, text, fill)
    # Edges between neighbours are straight; skipping ones arc above (0->2, 0->3) or below (1->3).
    for j, node in enumerate(nodes, start=1):
        for op, i in node:
            rad = {1: 0.0, 2: -0.35, 3: -0.4}[j - i] if (i, j) != (1, 3) else 0.35
            graph.edge(i, j, op, rad, ts=(0.5, 0.35, 0.65))
    _legend(ax, nb201.OPS, loc="lower center")
    ax.set_title(arch, fontsize=9, family="monospace")
    return _save(fig, path)


def _genotype_layout(edges) -> dict[int, tuple[float, float]]:
    """Node positions and columns: inputs in column 0, a node one right of its deepest input."""
    states = 2 + len(edges) // 2
    depth = [0] * states
    for k in range(2, states):
        depth[k] = 1 + max(depth[i] for _, i in edges[2 * (k - 2) : 2 * (k - 1)])
    columns: dict[int, list[int]] = {}
    for k in range(states):
        columns.setdefault(depth[k], []).append(k)
    # Inputs 1.5x as far apart as the intermediate nodes keep the labels near the targets apart.
    pos = {}
    for d, members in columns.items():
        gap = 2.4 if d == 0 else 1.6
        for r, k in enumerate(members):
            pos[k] = (_COLUMN * d, gap * ((len(members) - 1) / 2 - r))
    pos[states] = (_COLUMN * (max(depth) + 1), 0.0)  # The output c_{k}.
    return pos


def _draw_genotype_cell(ax, edges, concat, title: str) -> None:
    pos = _genotype_layout(edges)
    out = len(pos) - 1
    graph = _Graph(ax, pos, margin=_CELL_MARGIN)
    names = {0: "$c_{k-2}$", 1: "$c_{k-1}$", out: "$c_{k}$"}
    for k in pos:
        fill = "#dddddd" if k < 2 else "#bcd6f0" if k == out else "white"
        graph.node(k, names.get(k, str(k)), fill)
    for n, (op, i) in enumerate(edges):
        k = 2 + n // 2
        # A node reading one state twice gets two opposite bends; other edges bend only as far as
        # needed to pass beside the nodes in between rather than through them.
        if edges[2 * (k - 2)][1] == edges[2 * (k - 2) + 1][1]:
            rad = 0.2 if n % 2 else -0.2
        else:
            rad = graph.bend(i, k, _BENDS)
        graph.edge(i, k, op, rad, ts=(0.72, 0.6, 0.82, 0.5, 0.4, 0.3))
    for i in concat:
        graph.edge(i, out, "concat", graph.bend(i, out, _BENDS))
    ax.set_title(title, fontsize=11)


def draw_genotype(genotype: "str | Genotype", path: str) -> str:
    """A PNG of a NASNet/DARTS genotype: the normal cell above, the reduction cell below.

    `genotype` is a Genotype, a name in GENOTYPES ("DARTS_V2"), its repr or a JSON dict. Edges carry
    their operation; thin black arrows are the concatenation into the cell output c_{k}.
    """
    g = get_genotype(genotype)
    # Both panels at one scale: each is as tall as its cell, the figure as wide as the wider cell.
    extents = []
    for reduction in (False, True):
        xs, ys = zip(*_genotype_layout(g.cell(reduction)[0]).values(), strict=True)
        extents.append((max(xs) - min(xs) + 2 * _CELL_MARGIN, max(ys) - min(ys) + 2 * _CELL_MARGIN))
    inches = 9.0 / max(w for w, _ in extents)
    fig = _figure(9.0, 1.6 + inches * sum(h for _, h in extents))
    axes = fig.subplots(2, 1, gridspec_kw={"height_ratios": [h for _, h in extents]})
    for ax, reduction in zip(axes, (False, True), strict=True):
        edges, concat = g.cell(reduction)
        kind = "reduction" if reduction else "normal"
        _draw_genotype_cell(ax, edges, concat, f"{kind} cell (concat {list(concat)})")
    ops = [op for op in OP_COLORS if any(op == e[0] for e in g.normal + g.reduce)]
    _legend(axes[1], ops, loc="upper center")
    axes[1].get_legend().set_bbox_to_anchor((0.5, -0.02))
    return _save(fig, path)


_MBCONV_FORM = "k3e6se1d2-k5e3se0d3 (kernel, expansion, squeeze-excitation 0/1, depth per stage)"


def _parse_mbconv(arch: str) -> list[dict[str, float]]:
    stages = []
    for token in arch.strip().split("-"):
        fields = re.findall(r"([a-z]+)(\d+(?:\.\d+)?)", token)
        if "".join(k + v for k, v in fields) != token or not {"k", "e", "d"} <= dict(fields).keys():
            raise UserError(f"cannot read MBConv stage {token!r} of {arch!r}; write {_MBCONV_FORM}")
        stages.append({k: float(v) for k, v in fields})
    return stages


def _draw_mbconv(arch: str, path: str) -> str:
    """One row per stage, one box per block: MBConv<e> k x k, outlined red with SE (Tan et al.)."""
    stages = _parse_mbconv(arch)
    longest = max(int(s["d"]) for s in stages)
    fig = _figure(2.0 + 1.6 * max(longest, 2), 1.2 + 0.75 * len(stages))
    ax = fig.add_subplot()
    kernel_fill = {3: "#deebf7", 5: "#9ecae1", 7: "#4292c6"}
    for row, stage in enumerate(stages):
        y = -row
        extra = " ".join(f"{k}{v:g}" for k, v in stage.items() if k not in ("k", "e", "d", "se"))
        ax.text(-0.2, y, f"stage {row + 1}\n{extra}".strip(), ha="right", va="center", fontsize=9)
        k, e, se = int(stage["k"]), stage["e"], bool(stage.get("se", 0))
        for b in range(int(stage["d"])):
            box = FancyBboxPatch(
                (1.6 * b, y - 0.28),
                1.4,
                0.56,
                boxstyle="round,pad=0.02",
                fc=kernel_fill.get(k, "#dddddd"),
                ec="#d62728" if se else "black",
                lw=2.2 if se else 1.0,
            )
            ax.add_patch(box)
            label = f"MBConv{e:g} {k}x{k}" + (" SE" if se else "")
            ax.text(1.6 * b + 0.7, y, label, ha="center", va="center", fontsize=8)
    ax.set_xlim(-1.6, 1.6 * longest)
    ax.set_ylim(-len(stages) + 0.4, 0.6)
    ax.axis("off")
    ax.set_title(
        f"{arch}\n(fill: kernel 3/5/7 light to dark; red outline: squeeze-excitation)", fontsize=9
    )
    return _save(fig, path)


def _draw_compound(arch: str, path: str) -> str:
    """A table of the compound-scaling coefficients (Tan & Le 2019, Eq. 3) and their product."""
    values = {}
    for item in arch.strip().split(","):
        key, _, value = (part.strip() for part in item.partition("="))
        try:
            values[key] = float(value)
        except ValueError:
            key = ""
        if not key:
            raise UserError(
                f"cannot read {item!r} of {arch!r}; write alpha=1.20,beta=1.10,gamma=1.15"
            )
    roles = {
        "alpha": "depth  d = alpha^phi",
        "beta": "width  w = beta^phi",
        "gamma": "resolution  r = gamma^phi",
    }
    rows = [[k, roles.get(k, ""), f"{v:.3f}"] for k, v in values.items()]
    if roles.keys() <= values.keys():
        flops = values["alpha"] * values["beta"] ** 2 * values["gamma"] ** 2
        rows.append(["alpha beta^2 gamma^2", "FLOPs x per phi (~2)", f"{flops:.3f}"])
    fig = _figure(6.0, 0.9 + 0.35 * len(rows))
    ax = fig.add_subplot()
    ax.axis("off")
    table = ax.table(
        cellText=rows,
        colLabels=["coefficient", "scales", "value"],
        colWidths=[0.38, 0.42, 0.2],
        cellLoc="center",
        loc="center",
    )
    table.auto_set_font_size(False)
    table.set_fontsize(10)
    table.scale(1.0, 1.4)
    ax.set_title(arch, fontsize=9, family="monospace")
    return _save(fig, path)


def draw_cell(space_name: str, arch: str, path: str) -> str:
    """A PNG of `arch` in the notation of search space `space_name`; returns `path`."""
    drawers = {
        "nb201": draw_nb201_cell,
        "darts": draw_genotype,
        "mbconv": _draw_mbconv,
        "compound": _draw_compound,
    }
    if space_name not in drawers:
        raise unknown_name("search space to draw", space_name, drawers)
    return drawers[space_name](arch, path)


def plot_search_curves(
    curves: "dict[str, tuple[Sequence[int], Sequence[float], Sequence[float]]]",
    path: str,
    optimum: float | None = None,
    title: str = "",
    ylabel: str = "best accuracy (%)",
    band: str = "standard error",
    optimum_label: str = "published optimum",
    log_x: bool = False,
    ylim: tuple[float, float] | None = None,
) -> str:
    """Mean best score vs number of queries, one line per strategy (Real et al. 2019, Fig. 3).

    `curves[name] = (queries, mean, spread)`: the shaded band is mean ± spread, where `band` names
    what spread is (the standard error over seeds by default; say "std" if it is the std).
    `optimum` draws a dashed line labelled "<optimum_label> <value>"; `ylim` zooms the y axis.
    """
    if not curves:
        raise UserError("plot_search_curves needs at least one curve")
    fig = _figure(7.0, 4.5)
    ax = fig.add_subplot()
    for name, (queries, mean, spread) in curves.items():
        x, m, s = (np.asarray(v, dtype=float) for v in (queries, mean, spread))
        if x.ndim != 1 or not len(x) or x.shape != m.shape or x.shape != s.shape:
            raise UserError(
                f"curve {name!r}: queries, mean and spread must be equally long 1-D sequences, "
                f"got shapes {x.shape}, {m.shape}, {s.shape}"
            )
        (line,) = ax.plot(x, m, lw=2, label=name)
        ax.fill_between(x, m - s, m + s, color=line.get_color(), alpha=0.2, lw=0)
    if optimum is not None:
        ax.axhline(optimum, color="black", ls="--", lw=1.2, label=f"{optimum_label} {optimum:.2f}")
    if log_x:
        ax.set_xscale("log")
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_xlabel("number of queries")
    ax.set_ylabel(ylabel)
    ax.set_title(title + ("\n" if title else "") + f"shaded: mean ± 1 {band}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9, loc="lower right")
    return _save(fig, path)


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the non-dominated points (minimize x, maximize y), sorted by x.

    A point is dominated when another is no worse in both and better in one; exact duplicates do not
    dominate each other, so all copies of a front point are listed (in index order). Among points
    with equal x only those with the highest y survive.
    """
    pts = [(float(x), float(y)) for x, y in points]
    if any(math.isnan(v) for p in pts for v in p):
        raise UserError("pareto_front: a point has a NaN coordinate; drop failed trials first")
    order = sorted(range(len(pts)), key=lambda i: (pts[i][0], -pts[i][1], i))
    front: list[int] = []
    best: tuple[float, float] | None = None  # The first (lowest x) point with the best y so far.
    for i in order:
        x, y = pts[i]
        if best is None or y > best[1] or (x, y) == best:
            front.append(i)
            if best is None or y > best[1]:
                best = (x, y)
    return front


def plot_pareto(
    points: Sequence[tuple[float, float]],
    path: str,
    xlabel: str = "GMACs",
    ylabel: str = "accuracy",
    front: Sequence[int] | None = None,
    title: str = "",
) -> str:
    """All (cost, score) points and their Pareto front as a step line (Tan et al. 2019, Fig. 1).

    `front` defaults to `pareto_front(points)`; the step holds each front score until the next
    front point's cost: the best score reachable within a cost budget.
    """
    xy = np.asarray(points, dtype=float)
    if xy.ndim != 2 or xy.shape[1] != 2 or not len(xy):
        raise UserError(
            f"plot_pareto needs a non-empty list of (x, y) points, got shape {xy.shape}"
        )
    front = pareto_front(xy) if front is None else list(front)
    if any(not 0 <= i < len(xy) for i in front):
        raise UserError(f"plot_pareto: front indices must lie in 0..{len(xy) - 1}, got {front}")
    fig = _figure(6.5, 4.5)
    ax = fig.add_subplot()
    ax.scatter(xy[:, 0], xy[:, 1], s=12, color="#9ecae1", label=f"candidates ({len(xy)})")
    on = xy[sorted(front, key=lambda i: (xy[i, 0], -xy[i, 1]))]
    ax.step(on[:, 0], on[:, 1], where="post", color="#d62728", lw=1.8)
    ax.scatter(
        on[:, 0], on[:, 1], s=30, color="#d62728", zorder=3, label=f"Pareto front ({len(on)})"
    )
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9, loc="lower right")
    return _save(fig, path)
